"""Where a training run writes and computes: its output folder, its process group, its GPU kernels.

Each is checked or set up before any data is read, so a wrong --out or a missing GPU costs nothing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from fad_edge.errors import FadEdgeError

RUN_FOLDERS = ("checkpoint", "best")  # what a run writes into its --out folder


def prepare_output(out: Path, resume: bool, overwrite: bool) -> None:
    """Check that a run may write into `out`: an empty (or new) folder, its run to continue (resume), or its run
    to replace (overwrite, see `discard_previous_run`)."""
    if resume and overwrite:
        raise FadEdgeError("--resume continues the run in --out and --overwrite discards it; give one of them")
    if out.exists() and not out.is_dir():
        raise FadEdgeError(f"{out}: --out is a file; give a folder for the run")
    if not (resume or overwrite) and out.is_dir() and any(out.iterdir()):
        raise FadEdgeError(f"{out}: the output folder is not empty; give --resume to continue its run "
                           "or --overwrite to start afresh")
    if resume and not _run_output(out, "checkpoint") and _run_output(out, "best"):
        raise FadEdgeError(f"{out}: holds a best model but no checkpoint/ to resume from; give --overwrite to "
                           "start afresh (replacing best/), or a new --out")


def _run_output(out: Path, name: str) -> bool:
    """Whether the run folder holds `name` (or its twin of a save cut between renames)."""
    return (out / name).exists() or (out / (name + ".old")).exists()


def discard_previous_run(out: Path) -> None:
    """--overwrite: remove what an earlier run wrote (checkpoint/ and best/ with their swap twins), nothing else.

    Called once the new run's data and model are loaded, so a run refused for its input leaves the earlier one.
    """
    for name in RUN_FOLDERS:
        for suffix in ("", ".old", ".new"):
            shutil.rmtree(out / (name + suffix), ignore_errors=True)


def start_distributed(world: int, device: torch.device) -> tuple[int, bool]:
    """(rank, whether this call started the process group): NCCL between GPUs, gloo between CPU processes."""
    if world == 1:
        return 0, False
    if dist.is_initialized():
        return dist.get_rank(), False
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives and all_gather_object use the current device
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), True


@contextlib.contextmanager
def reproducible_kernels(device: torch.device, deterministic: bool = True) -> Iterator[None]:
    """On a GPU, cuDNN's deterministic algorithms, so a resumed run repeats an unbroken one, or with
    `deterministic=False` its benchmark mode (the fastest algorithm per shape); the caller's settings after."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = deterministic, not deterministic
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved
