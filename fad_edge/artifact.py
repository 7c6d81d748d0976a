"""The export folder's format, in one place: graph and tensor names, metadata keys, manifest.json, engine records.

`fad-edge export` writes this format and every runner reads it, so it sits below both: the runtime
imports this module and never `fad_edge.export`. An export folder holds one .onnx file per graph and
variant (fp32, int8, fp16) and, after `--trt`, one .engine per graph with a JSON record beside it;
manifest.json names every file. Each ONNX file also carries the checkpoint hash in its
metadata_props, so a graph copied in from another model is caught when it is loaded.

Everything read from a folder is checked: file names must resolve inside the folder (symlinks
included), the config and normalization must be valid, and all four graphs must be present. The
manifest records each file's SHA-256, and a runner compares it as it opens the file, so a graph
edited or damaged after the export is refused rather than run.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fad_edge.atomic import atomic_write_bytes
from fad_edge.data.normalization import Normalization
from fad_edge.digests import file_sha256
from fad_edge.errors import EngineMismatchError, ExportError, FadEdgeError
from fad_edge.models.config import ModelConfig

# The four graphs. Encoders take a batch of frames; ELNet graphs take a batch of clips.
VIDEO_ENCODER, AUDIO_ENCODER, ELNET_X0, ELNET_EPS = "video_encoder", "audio_encoder", "elnet_x0", "elnet_eps"
GRAPH_NAMES = (VIDEO_ENCODER, AUDIO_ENCODER, ELNET_X0, ELNET_EPS)


@dataclass(frozen=True)
class GraphSignature:
    """A graph's input names (in call order), its output name and the name of its dynamic batch axis."""

    inputs: tuple[str, ...]
    output: str
    batch_axis: str


SIGNATURES: dict[str, GraphSignature] = {
    VIDEO_ENCODER: GraphSignature(("images",), "video_features", "frames"),
    AUDIO_ENCODER: GraphSignature(("mel",), "audio_features", "frames"),
    # The 1-step sampler folded in: start state and condition in, de-normalized motion out.
    ELNET_X0: GraphSignature(("x_start", "condition"), "motion", "clips"),
    # The noise predictor, for samplers of more than one step.
    ELNET_EPS: GraphSignature(("x_t", "step", "condition"), "epsilon", "clips"),
}

# metadata_props keys are this prefix + graph, precision, version, checkpoint_sha256, config, normalization.
META_PREFIX = "fad_edge."

MANIFEST = "manifest.json"
# The config fields the samplers read at run time, from the manifest, and no graph holds: the mean sampler's steps
# and start noise, and the diverse sampler's settings (which `fad-edge tune-sampler` calibrates). Every other field
# is fixed in the graphs (their shapes, weights, schedule; `elnet_x0` folds in sample_start_step and clip_sample),
# so a manifest whose config differs from its graphs' in any other field was edited and would fail mid-run.
RUN_TIME_SAMPLER_FIELDS = frozenset({"inference_steps", "sample_start_noise", "diverse_start_step",
                                     "diverse_start_noise", "diverse_steps", "diverse_temperature",
                                     "diverse_rotation_noise"})
FORMAT = "fad-edge-export/1"
ONNX_VARIANTS = ("fp32", "int8", "fp16")  # the ONNX graph variants an export can hold
ENGINE_VARIANT = "trt"  # the manifest key of TensorRT engines


def confined(folder: Path, name: str) -> Path:
    """folder / name, refused unless it resolves inside folder (no absolute names, `..` or outward symlinks)."""
    root = Path(folder).resolve()
    candidate = Path(name)
    path = (root / candidate).resolve()
    if candidate.is_absolute() or not path.is_relative_to(root) or path == root:
        raise ExportError(f"{Path(folder) / MANIFEST}: file name {name!r} points outside the export folder; re-export")
    return path


@dataclass
class ExportManifest:
    """The contents of manifest.json."""

    version: str
    checkpoint_sha256: str
    config: dict
    normalization: dict
    opset: int
    graphs: dict[str, dict[str, str]] = field(default_factory=dict)  # graph -> variant -> file name
    reports: dict[str, object] = field(default_factory=dict)  # parity, int8, fp16, trt
    format: str = FORMAT
    # File name -> SHA-256 of its bytes, for every file in `graphs`, recorded by `save`. Empty in exports made
    # before it was recorded: those are read unchecked.
    files: dict[str, str] = field(default_factory=dict)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)

    @property
    def motion_normalization(self) -> Normalization:
        return Normalization.from_dict(self.normalization)

    def file(self, folder: Path, graph: str, variant: str) -> Path:
        """Path of one graph's variant inside `folder`; a clear error if it was never exported or points outside."""
        name = self.graphs.get(graph, {}).get(variant)
        if name is None:
            hint = {"int8": " --int8", "fp16": " --fp16", ENGINE_VARIANT: " --trt"}.get(variant, "")
            raise ExportError(f"{folder}: no {variant} {graph} in this export; re-run fad-edge export{hint}")
        return confined(folder, name)

    def variants(self) -> list[str]:
        """Variants (ONNX precisions, then engines) for which every graph is present."""
        every = [*ONNX_VARIANTS, ENGINE_VARIANT]
        return [v for v in every if self.graphs and all(v in files for files in self.graphs.values())]

    def save(self, folder: Path) -> Path:
        """Write manifest.json, recording the digest of every file it names as the folder holds it now (a name
        that does not resolve to a file inside the folder gets none: `load` refuses it)."""
        self.files = {}
        for files in self.graphs.values():
            for name in files.values():
                with contextlib.suppress(ExportError):
                    if (path := confined(folder, name)).is_file():
                        self.files[name] = file_sha256(path)
        data = json.dumps(asdict(self), indent=2, sort_keys=True).encode()
        return atomic_write_bytes(Path(folder) / MANIFEST, data)

    def check_contents(self, path: Path) -> None:
        """A clear error unless the file's bytes are those `save` recorded for it (a file edited or damaged since)."""
        if not self.files:
            return
        recorded = self.files.get(path.name)
        if recorded is None or file_sha256(path) != recorded:
            raise ExportError(f"{path}: its contents are not the ones this export recorded (changed or damaged "
                              "since); re-export this folder")

    def check_graph_config(self, path: Path, recorded: str | None) -> None:
        """Refuse a graph whose recorded config (its `config` metadata, JSON) differs from the manifest's in a field
        the graph fixes: a manifest edited by hand would otherwise fail mid-run, or run with other shapes than it
        says. Graphs that record no config are read unchecked."""
        if recorded is None:
            return
        try:
            graph_config = json.loads(recorded)
        except json.JSONDecodeError:
            graph_config = None
        if not isinstance(graph_config, dict):
            raise EngineMismatchError(f"{path}: its recorded model config is unreadable; re-export this folder")
        manifest_config = json.loads(json.dumps(self.config))  # tuples as lists, as the graph's JSON holds them
        differ = sorted(name for name in set(graph_config) | set(manifest_config)
                        if name not in RUN_TIME_SAMPLER_FIELDS and graph_config.get(name) != manifest_config.get(name))
        if differ:
            shown = ", ".join(f"{name} {manifest_config.get(name)!r} (graph: {graph_config.get(name)!r})"
                              for name in differ[:3]) + (", ..." if len(differ) > 3 else "")
            raise EngineMismatchError(f"{path}: manifest.json's model config is not the one this graph was exported "
                                      f"with ({shown}): manifest.json was edited; re-export this folder")

    @classmethod
    def load(cls, folder: Path) -> ExportManifest:
        """Read and check manifest.json as a whole; every problem is one ExportError line."""
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise ExportError(f"{folder}: no {MANIFEST}; not a fad-edge export folder (run fad-edge export)")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ExportError(f"{path}: unreadable ({error}); re-export") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ExportError(f"{path}: not a {FORMAT} manifest; re-export with this version of fad-edge")
        try:
            manifest = cls(**data)
            manifest.model_config  # noqa: B018 - validates the config
            manifest.motion_normalization  # noqa: B018 - validates the statistics
        except (TypeError, ValueError, FadEdgeError) as error:
            raise ExportError(f"{path}: malformed manifest ({error}); re-export") from error
        manifest._check_graphs(Path(folder), path)
        return manifest

    def _check_graphs(self, folder: Path, path: Path) -> None:
        if not isinstance(self.graphs, dict) or not all(isinstance(v, dict) for v in self.graphs.values()):
            raise ExportError(f"{path}: malformed manifest (graphs must map each graph to its files); re-export")
        missing = [graph for graph in GRAPH_NAMES if "fp32" not in self.graphs.get(graph, {})]
        if missing:
            raise ExportError(f"{path}: no fp32 graph for {', '.join(missing)}; re-export this folder")
        for files in self.graphs.values():
            for name in files.values():
                if not isinstance(name, str):
                    raise ExportError(f"{path}: malformed manifest (file name {name!r}); re-export")
                confined(folder, name)
        if not isinstance(self.files, dict) or not all(isinstance(v, str) for v in self.files.values()):
            raise ExportError(f"{path}: malformed manifest (files must map each file to its SHA-256); re-export")


@dataclass(frozen=True)
class GpuTarget:
    """What a TensorRT engine is tied to: it runs only on the TensorRT version and GPU that built it."""

    tensorrt: str
    gpu: str
    compute_capability: str


def engine_record_path(engine: Path) -> Path:
    """The JSON record beside an engine file."""
    return engine.with_suffix(".json")


def check_engine_target(engine: Path, current: GpuTarget) -> dict:
    """The engine's record, after checking it was built for this TensorRT and GPU (else: rebuild)."""
    record_path = engine_record_path(engine)
    try:
        record = json.loads(record_path.read_text())
        built = GpuTarget(record["tensorrt"], record["gpu"], record["compute_capability"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EngineMismatchError(f"{record_path}: missing or unreadable engine record ({error}); "
                                  "rebuild with fad-edge export --trt") from None
    if built != current:
        raise EngineMismatchError(
            f"{engine.name} was built for TensorRT {built.tensorrt} on {built.gpu} (sm {built.compute_capability}); "
            f"this is TensorRT {current.tensorrt} on {current.gpu} (sm {current.compute_capability}): "
            "rebuild with fad-edge export --trt"
        )
    return record


def check_engine_checkpoint(engine: Path, record: dict, manifest: ExportManifest) -> None:
    """An engine built from another checkpoint than the manifest's is refused, as an ONNX graph would be."""
    if record.get("checkpoint_sha256") != manifest.checkpoint_sha256:
        found = str(record.get("checkpoint_sha256"))[:12]
        raise EngineMismatchError(f"{engine}: built from checkpoint {found}, the manifest expects "
                                  f"{manifest.checkpoint_sha256[:12]}; rebuild with fad-edge export --trt")
