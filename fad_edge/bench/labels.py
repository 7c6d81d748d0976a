"""Names of the FAD variants the bench times, read off the backend table (light: the CLI's help text uses them)."""

from __future__ import annotations

from fad_edge.backends import BACKENDS
from fad_edge.errors import FadEdgeError


def bench_labels() -> tuple[str, ...]:
    """FAD variants the bench can time, from the backend table: the backend's name for its default
    precision, name-precision for the others (ort, ort-int8, ort-fp16, torch, trt)."""
    return tuple(name if precision == backend.default_precision else f"{name}-{precision}"
                 for name, backend in BACKENDS.items() for precision in backend.precisions)


def parse_label(label: str) -> tuple[str, str | None]:
    """A bench label -> (backend, precision), None for the backend's default; backend names may hold '-'."""
    for name in sorted(BACKENDS, key=len, reverse=True):
        if label == name:
            return name, None
        if label.startswith(name + "-"):
            return name, label[len(name) + 1 :]
    raise FadEdgeError(f"unknown bench backend {label!r}; choose one of {', '.join(bench_labels())}")
