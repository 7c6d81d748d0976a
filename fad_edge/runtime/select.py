"""Open the right runner for a path: a checkpoint folder runs in PyTorch, an export folder in ONNX Runtime or TensorRT."""

from __future__ import annotations

from pathlib import Path

from fad_edge.errors import FadEdgeError
from fad_edge.runtime.base import ClipRunner

BACKENDS = ("auto", "torch", "ort", "trt")


def open_runner(path: Path, backend: str = "auto", precision: str = "fp32", steps: int | None = None,
                seed: int = 0, threads: int = 2) -> ClipRunner:
    """`auto` picks torch for a checkpoint (model.json) and ONNX Runtime for an export (manifest.json)."""
    from fad_edge.export.manifest import MANIFEST

    path = Path(path)
    if backend not in BACKENDS:
        raise FadEdgeError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "ort" if (path / MANIFEST).exists() else "torch"
    if backend == "torch":
        from fad_edge.runtime.torch_runner import TorchRunner

        return TorchRunner.from_checkpoint(path, steps=steps, seed=seed)
    if backend == "trt":
        from fad_edge.runtime.trt_runner import TrtRunner

        return TrtRunner(path, steps=steps, seed=seed)
    from fad_edge.runtime.ort_runner import OrtRunner

    return OrtRunner(path, precision=precision, threads=threads, steps=steps, seed=seed)
