"""`--device cpu|cuda|cuda:N|auto`: where PyTorch computes, checked before any work starts.

Parsing needs no torch (an edge install without it still validates `--device` for its backends);
resolving to a `torch.device` imports torch and checks that the asked-for GPU exists, so a typo or a
machine without CUDA gives one clear line instead of a CUDA error deep inside a model call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fad_edge.errors import BackendUnavailableError, FadEdgeError

if TYPE_CHECKING:
    import torch

AUTO, CPU, CUDA = "auto", "cpu", "cuda"
DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"
_PATTERN = re.compile(r"(cpu|cuda|auto)(?::(\d+))?")


@dataclass(frozen=True)
class DeviceRequest:
    """What `--device` asked for: a kind (cpu, cuda, auto) and, for cuda, an optional index."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(text: str) -> DeviceRequest:
    """`cpu`, `cuda`, `cuda:N` or `auto` (case and surrounding spaces ignored); a FadEdgeError otherwise."""
    match = _PATTERN.fullmatch(str(text).strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != CUDA):
        raise FadEdgeError(f"--device must be {DEVICE_CHOICES}, got {text!r}")
    index = match.group(2)
    return DeviceRequest(match.group(1), None if index is None else int(index))


def resolve_device(text: str, local_rank: int | None = None) -> torch.device:
    """The torch.device for `--device TEXT`; auto is CUDA when torch sees a GPU, else the CPU.

    `local_rank` is the process's index on its node under torchrun: each process then takes
    `cuda:LOCAL_RANK`, and an explicit `cuda:N` is refused (every process would share one GPU).
    """
    import torch

    request = parse_device(text)
    if request.kind == CPU or (request.kind == AUTO and not torch.cuda.is_available()):
        return torch.device(CPU)
    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"--device {request}: {_no_cuda_reason()}; use --device cpu")
    count = torch.cuda.device_count()
    if local_rank is not None:
        if request.index is not None:
            raise FadEdgeError(f"--device {request}: under torchrun each process takes cuda:LOCAL_RANK; "
                               "give --device cuda")
        index = local_rank
    else:
        index = 0 if request.index is None else request.index
    if index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        asked = f"process {local_rank} needs cuda:{index}" if local_rank is not None else f"no cuda:{index}"
        raise BackendUnavailableError(f"--device {request}: {asked}, this machine has {count} CUDA device(s) ({have})")
    return torch.device(CUDA, index)


def _no_cuda_reason() -> str:
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build, install a CUDA build of torch"
    return "no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it)"
