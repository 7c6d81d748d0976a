"""Names of the FAD variants the bench times, read off the backend table (light: the CLI's help text uses them).

A label is a backend's name for its default precision and name-precision for the others (ort,
ort-int8, torch, cuda-fp16, ...). The CUDA runner also takes run options as suffixes, so that one
bench run can set CUDA graphs against eager PyTorch on the same GPU: `-eager` (no CUDA graphs),
`-cl` (channels-last convolutions) and `-compiled` (torch.compile before capture), e.g. cuda-eager,
cuda-fp16-cl, cuda-fp16-compiled.
"""

from __future__ import annotations

from dataclasses import dataclass

from fad_edge.backends import BACKENDS
from fad_edge.errors import FadEdgeError

# Suffixes of the cuda backend's labels.
MODES = {"eager": "no CUDA graphs", "cl": "channels-last convolutions", "compiled": "torch.compile before capture"}
MODE_BACKENDS = ("cuda",)
# The device bench's FAD variants unless --backends says otherwise: those that cannot run are listed as skipped.
# The compiled variants (e.g. cuda-fp16-cl-compiled) are asked for by name: each compiles its networks first,
# tens of seconds each.
GPU_BACKENDS = ("cuda-eager", "cuda", "cuda-fp16", "cuda-fp16-cl", "ort-cuda", "ort-trt", "trt")


@dataclass(frozen=True)
class Variant:
    """What a bench label asks for: a backend, its precision (None: the default) and the CUDA runner's modes."""

    backend: str
    precision: str | None = None
    eager: bool = False
    channels_last: bool = False
    compiled: bool = False


def bench_labels() -> tuple[str, ...]:
    """FAD variants the bench can time: every backend and precision of the table, then the CUDA runner's modes,
    alone and channels-last compiled (eager excludes the others: it captures no graphs)."""
    plain = [name if precision == backend.default_precision else f"{name}-{precision}"
             for name, backend in BACKENDS.items() for precision in backend.precisions]
    moded = [f"{label}-{mode}" for label in plain if label.split("-")[0] in MODE_BACKENDS
             for mode in (*MODES, "cl-compiled")]
    return (*plain, *moded)


def parse_label(label: str) -> Variant:
    """A bench label -> its Variant; backend names may hold '-' (ort-int8 is ort at int8, ort-cuda a backend)."""
    modes: list[str] = []
    base = label
    while base.rsplit("-", 1)[-1] in MODES and "-" in base:
        base, mode = base.rsplit("-", 1)
        modes.append(mode)
    for name in sorted(BACKENDS, key=len, reverse=True):
        if base == name or base.startswith(name + "-"):
            if modes and name not in MODE_BACKENDS:
                break
            precision = None if base == name else base[len(name) + 1 :]
            return Variant(name, precision, "eager" in modes, "cl" in modes, "compiled" in modes)
    raise FadEdgeError(f"unknown bench backend {label!r}; choose one of {', '.join(bench_labels())}")


def shown_label(label: str, device: str | None) -> str:
    """A label as the tables print it: with the device where a GPU backend ran on another (the device bench's CPU
    check runs the `cuda` runners on the CPU), so a row never reads as a GPU figure it is not."""
    if device is None or device.startswith("cuda"):
        return label
    try:
        variant = parse_label(label)
    except FadEdgeError:  # the replicas' labels (torch-cpu) name their device already
        return label
    return f"{label} on {device}" if BACKENDS[variant.backend].device == "cuda" else label
