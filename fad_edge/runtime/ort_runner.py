"""ONNX Runtime on the CPU: the embedded default backend (FP32, INT8 or the FP16 graph TensorRT builds).

Session options suit small CPUs: `threads` intra-op threads (default 2, one per core of the
target boards), one inter-op thread and sequential execution, since the graphs are chains of
convolutions with nothing to run side by side; no thread spinning; all graph optimizations on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from fad_edge.artifact import AUDIO_ENCODER, ELNET_EPS, ELNET_X0, META_PREFIX, VIDEO_ENCODER, ExportManifest
from fad_edge.backends import get_backend
from fad_edge.errors import EngineMismatchError, ExportError
from fad_edge.runtime.base import ClipRunner
from fad_edge.sampling import SamplerSettings


def session_options(threads: int = 2) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are about its own fusions
    # A runner alternates between three sessions, each with its own thread pool; spinning threads
    # of the idle pools then steal the cores from the busy one (measured: 2.5x slower on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: Path, manifest: ExportManifest, graph: str, threads: int = 2) -> ort.InferenceSession:
    """An ORT session for one graph file, checked to belong to the manifest's checkpoint."""
    if not path.is_file():
        raise ExportError(f"{path}: file not found; re-run fad-edge export")
    try:
        session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own Fail/InvalidProtobuf/... types
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({first[:160]}); the file is corrupt or truncated, re-export") from error
    metadata = session.get_modelmeta().custom_metadata_map
    found_graph = metadata.get(META_PREFIX + "graph")
    found_hash = metadata.get(META_PREFIX + "checkpoint_sha256")
    if found_graph != graph or found_hash != manifest.checkpoint_sha256:
        raise EngineMismatchError(
            f"{path}: belongs to another model (graph {found_graph!r}, checkpoint {str(found_hash)[:12]}; "
            f"the manifest expects {graph!r}, {manifest.checkpoint_sha256[:12]}); re-export this folder"
        )
    return session


class OrtRunner(ClipRunner):
    """Runs an export folder with ONNX Runtime on the CPU."""

    def __init__(self, folder: Path, precision: str = "fp32", threads: int = 2, steps: int | None = None,
                 seed: int = 0, manifest: ExportManifest | None = None) -> None:
        precision = get_backend("ort").check_precision(precision)
        self.folder = Path(folder)
        self.manifest = manifest or ExportManifest.load(self.folder)
        config = self.manifest.model_config
        super().__init__(config, SamplerSettings.from_config(config, steps), seed)
        self.name = f"ort-{precision}"
        self.precision = precision

        def session(graph: str) -> ort.InferenceSession:
            return open_session(self.manifest.file(self.folder, graph, precision), self.manifest, graph, threads)

        self.video, self.audio = session(VIDEO_ENCODER), session(AUDIO_ENCODER)
        # One step runs the folded graph; more steps run the sampler's loop around the noise predictor.
        self.elnet = session(ELNET_X0 if self.settings.steps == 1 else ELNET_EPS)
        normalization = self.manifest.motion_normalization
        self.mean, self.std = normalization.mean, normalization.std

    @classmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int) -> OrtRunner:
        return cls(path, precision=precision, threads=threads, steps=steps, seed=seed)

    def encode_batch(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        video = self.video.run(None, {"images": images.astype(np.float32, copy=False)})[0]
        audio = self.audio.run(None, {"mel": mel.astype(np.float32, copy=False)})[0]
        return np.concatenate([video, audio], axis=1)

    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        conditions = conditions.astype(np.float32, copy=False)
        if self.settings.steps == 1:
            return self.elnet.run(None, {"x_start": state, "condition": conditions})[0]
        x = state
        for t, t_prev in self.sampler.pairs():
            step = np.full(len(x), t, dtype=np.int64)
            epsilon = self.elnet.run(None, {"x_t": x, "step": step, "condition": conditions})[0]
            x = self.sampler.step(epsilon, t, x, t_prev, self.sampler.noise(x.shape, generator, t_prev))
        return x * self.std + self.mean

    def close(self) -> None:
        """ONNX Runtime frees a session's memory when the last reference goes; drop ours."""
        for name in ("video", "audio", "elnet"):
            self.__dict__.pop(name, None)
