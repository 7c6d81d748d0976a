"""Where a training run writes and computes: its output folder, its process group, its GPU kernels.

Each is checked or set up before any data is read, so a wrong --out or a missing GPU costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from fad_edge.atomic import OutputInUseError, clear_staging
from fad_edge.checkpoint import MODEL_JSON
from fad_edge.errors import FadEdgeError

RUN_FOLDERS = ("checkpoint", "best")  # what a run writes into its --out folder


PREVIOUS_RUN = ".previous-run"  # where --overwrite keeps the earlier run until the new one has saved


def prepare_output(out: Path, resume: bool, overwrite: bool) -> None:
    """Check that a run may write into `out`: an empty (or new) folder, its run to continue (resume), or its run
    to replace (overwrite, see `set_aside_previous_run`).

    An earlier run that an --overwrite run set aside and never replaced (it was killed before its first save) is
    first put back: the folder then holds what it held before that run.
    """
    if resume and overwrite:
        raise FadEdgeError("--resume continues the run in --out and --overwrite discards it; give one of them")
    if out.exists() and not out.is_dir():
        raise FadEdgeError(f"{out}: --out is a file; give a folder for the run")
    if (out / PREVIOUS_RUN).is_dir():
        if _run_output(out, "checkpoint"):  # the new run saved, then died before dropping the old one
            shutil.rmtree(out / PREVIOUS_RUN, ignore_errors=True)
        else:
            restore_previous_run(out)
    if not (resume or overwrite) and out.is_dir() and any(out.iterdir()):
        raise FadEdgeError(f"{out}: the output folder is not empty; give --resume to continue its run "
                           "or --overwrite to start afresh")
    if resume and not _run_output(out, "checkpoint"):
        if _run_output(out, "best"):
            raise FadEdgeError(f"{out}: holds a best model but no checkpoint/ to resume from; give --overwrite to "
                               "start afresh (replacing best/), or a new --out")
        if out.is_dir() and any(out.iterdir()):
            raise FadEdgeError(f"{out}: holds no run to resume (no checkpoint/), but other files; give a new or "
                               "empty --out, or the folder of the run to continue")
    if overwrite:
        for name in _run_names(out):
            if not (out / name / MODEL_JSON).is_file():
                raise FadEdgeError(f"{out / name}: not a checkpoint of fad-edge (no {MODEL_JSON}), so --overwrite "
                                   "will not delete it; move it away or give a new --out")


def _run_output(out: Path, name: str) -> bool:
    """Whether the run folder holds `name` (or its twin of a save cut between renames)."""
    return (out / name).exists() or (out / (name + ".old")).exists()


def _run_names(out: Path) -> list[str]:
    """The run's folders in `out`, with the twins a save cut between its renames leaves (not FOLDER.new, a
    half-written folder that the next save clears anyway)."""
    return [name + suffix for name in RUN_FOLDERS for suffix in ("", ".old") if (out / (name + suffix)).exists()]


def set_aside_previous_run(out: Path) -> None:
    """--overwrite: move what an earlier run wrote (checkpoint/ and best/ with their swap twins) into
    OUT/.previous-run, nothing else. Called once the new run's data and model are loaded, so a run refused for
    its input leaves the earlier one in place; `drop_previous_run` deletes it after the new run's first save,
    and until then an interrupted run puts it back (`restore_previous_run`, here or at the next start)."""
    aside = out / PREVIOUS_RUN
    shutil.rmtree(aside, ignore_errors=True)
    for name in RUN_FOLDERS:
        clear_staging(out / name)  # a killed save's leftover; refused where another run is writing it now
    names = _run_names(out)
    if names:
        aside.mkdir()
        for name in names:
            os.replace(out / name, aside / name)


def drop_previous_run(out: Path) -> None:
    """The new run has saved a checkpoint of its own: the earlier run it replaces goes."""
    shutil.rmtree(out / PREVIOUS_RUN, ignore_errors=True)


def restore_previous_run(out: Path) -> None:
    """Put the set-aside earlier run back, in place of whatever the new run wrote."""
    aside = out / PREVIOUS_RUN
    if not aside.is_dir():
        return
    for name in RUN_FOLDERS:
        for suffix in ("", ".old"):
            shutil.rmtree(out / (name + suffix), ignore_errors=True)
        with contextlib.suppress(OutputInUseError):  # another run's, live or not ours: left alone
            clear_staging(out / name)
    for child in aside.iterdir():
        os.replace(child, out / child.name)
    aside.rmdir()


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
