"""Open the right runner for a path: a checkpoint folder runs in PyTorch, an export folder in ONNX Runtime
or TensorRT."""

from __future__ import annotations

from pathlib import Path

from fad_edge.artifact import MANIFEST
from fad_edge.backends import AUTO, CHECKPOINT, get_backend
from fad_edge.errors import FadEdgeError
from fad_edge.runtime.base import ClipRunner
from fad_edge.sampling import DEFAULT_SAMPLER, check_sampler


def resolve_backend(path: Path, backend: str = AUTO) -> str:
    """`auto` is torch for a checkpoint (model.json) and ONNX Runtime for an export (manifest.json)."""
    if backend == AUTO:
        return "ort" if (Path(path) / MANIFEST).exists() else "torch"
    return get_backend(backend).name


def open_runner(path: Path, backend: str = AUTO, precision: str | None = None, steps: int | None = None,
                seed: int = 0, threads: int = 2, sampler: str = DEFAULT_SAMPLER) -> ClipRunner:
    """A runner for `path` on `backend` at `precision` (the backend's default for None), checked against the table.

    `sampler` names the model's sampler settings ("mean" or "diverse", see `fad_edge.sampling`); `steps`
    overrides its number of denoising steps.
    """
    path = Path(path)
    check_sampler(sampler)  # before anything is loaded
    chosen = get_backend(resolve_backend(path, backend))
    precision = chosen.check_precision(precision)
    if chosen.reads == CHECKPOINT and (path / MANIFEST).exists():
        raise FadEdgeError(f"{path} is an export folder; backend {chosen.name} runs a checkpoint folder")
    runner: type[ClipRunner] = chosen.runner_class()
    return runner.open(path, precision=precision, steps=steps, seed=seed, threads=threads, sampler=sampler)
