"""manifest.json: what an export folder holds, which checkpoint it came from, and how well it matched.

Every runner starts here. The manifest names each graph's file per precision (fp32, int8, fp16,
and TensorRT engines), and each ONNX file carries the same checkpoint hash in its metadata_props,
so a graph copied in from another model is caught when it is loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fad_edge.atomic import atomic_write_bytes
from fad_edge.errors import ExportError
from fad_edge.models.config import ModelConfig

MANIFEST = "manifest.json"
FORMAT = "fad-edge-export/1"
PRECISIONS = ("fp32", "int8", "fp16")


@dataclass
class ExportManifest:
    """The contents of manifest.json."""

    version: str
    checkpoint_sha256: str
    config: dict
    normalization: dict
    opset: int
    graphs: dict[str, dict[str, str]] = field(default_factory=dict)  # graph -> precision -> file name
    reports: dict[str, object] = field(default_factory=dict)  # parity, int8, fp16, trt
    format: str = FORMAT

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)

    def file(self, folder: Path, graph: str, precision: str) -> Path:
        """Path of one graph at one precision; a clear error if that variant was never exported."""
        name = self.graphs.get(graph, {}).get(precision)
        if name is None:
            hint = "--int8" if precision == "int8" else "--fp16" if precision == "fp16" else ""
            raise ExportError(f"{folder}: no {precision} {graph} in this export; re-run fad-edge export {hint}".rstrip())
        return Path(folder) / name

    def precisions(self) -> list[str]:
        """Precisions for which every graph is present."""
        return [p for p in PRECISIONS if self.graphs and all(p in files for files in self.graphs.values())]

    def save(self, folder: Path) -> Path:
        data = json.dumps(asdict(self), indent=2, sort_keys=True).encode()
        return atomic_write_bytes(Path(folder) / MANIFEST, data)

    @classmethod
    def load(cls, folder: Path) -> "ExportManifest":
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
        except (TypeError, ValueError) as error:
            raise ExportError(f"{path}: malformed manifest ({error}); re-export") from error
        return manifest
