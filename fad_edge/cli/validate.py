"""Checks every command runs on its arguments before any work, so bad input costs seconds, not a finished run.

Typer checks what an option's declaration can say (types, fixed ranges); these check the rest:
output paths (an existing file where a folder goes, a folder that cannot be written, an output that would
replace an input or land in a dataset), numbers that
must be finite, preset names, thread counts and frame counts against the machine. Each failure is a
typer.BadParameter, which the CLI prints as one line naming the option.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer

from fad_edge.errors import FadEdgeError
from fad_edge.models.config import ModelConfig
from fad_edge.models.presets import PRESETS
from fad_edge.report_paths import report_path
from fad_edge.resources import check_fits, readable_size
from fad_edge.sampling import check_sampler

MAX_SEED = 2**32 - 1  # what every generator we seed (NumPy, torch) accepts
THREADS_PER_CORE = 4  # more threads than this per core only slows ONNX Runtime and torch down
# Peak memory of a forward pass per frame, as a multiple of that frame's input tensors: measured 10-15x
# (torch, paper and small presets, 64-256 frames). Training also keeps activations for the backward
# pass, so there it is a lower bound: the check refuses only what cannot fit.
MEMORY_PER_INPUT_BYTE = 16
# Where device files are: an atomic write replaces its target by a rename, which would replace /dev/null itself.
DEVICE_FILES = Path("/dev")


def check_output_dir(path: Path, option: str = "--out") -> Path:
    """`path` is, or can be made as, a folder we can write into."""
    path = Path(path)
    check_not_device(path, option)
    try:
        if path.exists() and not path.is_dir():
            _refuse(option, f"{path} exists and is not a folder; give a folder to write into")
        _check_writable_place(path if path.is_dir() else path.parent, path, option)
    except OSError as error:
        _refuse(option, f"{path}: {error.strerror or error}")
    return path


def check_output_file(path: Path, option: str = "--out") -> Path:
    """`path` names a file we can write (replace), in a folder that exists or can be made."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        _refuse(option, f"{path!s} names no file; give a file name")
    check_not_device(path, option)
    try:
        if path.is_dir():
            _refuse(option, f"{path} is a folder; give a file name")
        if path.exists() and not os.access(path, os.W_OK):
            _refuse(option, f"{path} exists and cannot be written (check its permissions)")
        _check_writable_place(path.parent, path, option)
    except OSError as error:
        _refuse(option, f"{path}: {error.strerror or error}")
    return path


def check_output_stem(stem: Path, suffixes: Iterable[str], option: str = "--out") -> list[Path]:
    """The files STEM.SUFFIX a report writes, each checked as an output file."""
    stem = Path(stem)
    if not stem.name or stem.name in (".", ".."):
        _refuse(option, f"{stem!s} names no file; give a path stem such as reports/eval")
    if stem.is_dir():  # the reports would land beside it as STEM.json, not in it
        _refuse(option, f"{stem} is a folder; give a path stem inside it, such as {stem / 'eval'}")
    return [check_output_file(report_path(stem, suffix), option) for suffix in suffixes]


def check_not_device(path: Path, option: str = "--out") -> None:
    """Refuse a path under /dev (as typed or as its links resolve)."""
    for seen in (Path(path).absolute(), Path(path).resolve()):
        if _within(seen, DEVICE_FILES):
            _refuse(option, f"{path} is under {DEVICE_FILES}, where devices are, not files; give a path elsewhere")


def check_outside(path: Path, folder: Path, option: str = "--out") -> None:
    """Refuse an output inside `folder`, the export being measured: it could replace manifest.json or collide
    with the records the export keeps beside its TensorRT engines (GRAPH.json)."""
    if _within(Path(path).resolve(), Path(folder).resolve()):
        _refuse(option, f"{path} is inside the export folder {folder} being measured; write it elsewhere")


def check_not_inputs(outputs: Iterable[Path], inputs: Iterable[Path | None], option: str = "--out") -> None:
    """Refuse an output that would replace an input: the same file (as its links resolve), or a file inside an
    input folder (a checkpoint, an export, a dataset). Unset inputs (None) are skipped."""
    given = [Path(path) for path in inputs if path is not None]
    for output in map(Path, outputs):
        written = output.resolve()
        for source in given:
            if written == source.resolve() or _same_file(output, source):
                _refuse(option, f"{output} would replace the input {source}; write it elsewhere")
            if _within(written, source.resolve()):  # the same file was refused just above
                _refuse(option, f"{output} is inside the input folder {source}; write it elsewhere")


def check_not_dataset(folder: Path, option: str = "--out") -> None:
    """Refuse a folder that is a dataset's session or lies inside a dataset: generate's files carry the names of
    a session's own (listener_coeffs.npy is its ground truth)."""
    from fad_edge.data.layout import META, SPLITS, VIDEO  # here: it imports OpenCV, which --help need not

    place = Path(folder).resolve()
    if held := [name for name in (META, VIDEO) if (place / name).is_file()]:
        _refuse(option, f"{folder} holds {held[0]}, so it is a dataset session; write elsewhere")
    for above in (place, *place.parents):
        if (above / SPLITS).is_file():
            _refuse(option, f"{folder} is inside the dataset {above} ({SPLITS}); write elsewhere")


def _within(path: Path, folder: Path) -> bool:
    """`path` is `folder` or lies below it (both absolute, resolved as the caller needs)."""
    return path == folder or folder in path.parents


def _same_file(first: Path, second: Path) -> bool:
    """Whether two existing paths are one file (hard links included); False when either is missing."""
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def check_finite(value: float | None, option: str, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A finite number in [low, high] (an end excluded with low_open / high_open); None passes (an unset option)."""
    if value is None:
        return
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        bracket, closing = "(" if low_open else "[", ")" if high_open else "]"
        _refuse(option, f"{value:g} is not a finite number in {bracket}{low:g}, {high:g}{closing}")


def check_threads(threads: int | None, option: str = "--threads") -> None:
    """At most THREADS_PER_CORE threads per core (and never fewer than 8 allowed)."""
    cores = os.cpu_count() or 1
    most = max(8, THREADS_PER_CORE * cores)
    if threads is not None and threads > most:
        _refuse(option, f"{threads} threads on {cores} cores; use at most {most}")


def check_preset(name: str, option: str = "--preset") -> ModelConfig:
    """The named preset's config; an unknown name is refused with the list of known ones."""
    if name not in PRESETS:
        _refuse(option, f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def check_choice(value: str, option: str, choices: Iterable[str]) -> str:
    """One of a fixed list of names; anything else is refused with the list."""
    known = list(choices)
    if value not in known:
        _refuse(option, f"unknown value {value!r}; choose one of {', '.join(known)}")
    return value


def check_sampler_name(name: str, option: str = "--sampler") -> str:
    """A known sampler name (fad_edge.sampling.SAMPLERS); an unknown one is refused with the list."""
    try:
        return check_sampler(name)
    except FadEdgeError as error:
        _refuse(option, str(error))


SAMPLER_HELP = ("mean: the model's own setting, a deterministic estimate (the same motion for every seed) "
                "except in the paper and tiny presets, which start it from noise; diverse: a draw from the "
                "reactions it learned (settings calibrated by fad-edge tune-sampler).")


def frame_input_bytes(config: ModelConfig) -> int:
    """Bytes of one frame's model input: the float32 image and mel window."""
    return 4 * (3 * config.image_size**2 + config.audio_window * config.n_mels)


def check_frames_fit(frames: int, config: ModelConfig, option: str, hint: str) -> None:
    """Refuse a frame count whose forward pass cannot fit this machine's memory."""
    try:
        check_fits(frames * frame_input_bytes(config) * MEMORY_PER_INPUT_BYTE, f"{frames:,} frames", hint)
    except FadEdgeError as error:
        _refuse(option, str(error))


def check_training_step(config: ModelConfig, batch_size: int, clips_per_item: int,
                        context_clips: int | None = None) -> None:
    """Refuse a training step whose frames (each window's clips and their context) cannot fit in memory."""
    context = config.context_clips if context_clips is None else context_clips
    frames = batch_size * (clips_per_item + context) * config.clip_len
    check_frames_fit(frames, config, "--batch-size", "lower --batch-size or --clips-per-item")


def check_disk(path: Path, nbytes: float, what: str, option: str = "--out") -> None:
    """Refuse to start writing `nbytes` where the disk holding `path` has less free space."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if nbytes > free:
        _refuse(option, f"{what} needs at least {readable_size(nbytes)}, and {existing} has "
                        f"{readable_size(free)} free")


def _check_writable_place(folder: Path, path: Path, option: str) -> None:
    """The nearest existing folder at or above `folder` must be a folder we may create files in."""
    if path.is_symlink() and not path.exists():
        _refuse(option, f"{path} is a broken symbolic link")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        _refuse(option, f"{path}: {existing} is a file, so nothing can be written under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        _refuse(option, f"{path}: the folder {existing} cannot be written (check its permissions)")
    _probe(existing, path, option)


def _probe(folder: Path, path: Path, option: str) -> None:
    """Create and remove a real file in `folder`: permissions do not tell, since root passes every such check
    and a read-only mount or a pseudo file system (/proc) refuses only the write itself, after the whole run."""
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        _refuse(option, f"{path} cannot be written: no file can be created in {folder} ({error.strerror or error})")


def _refuse(option: str, message: str) -> NoReturn:
    raise typer.BadParameter(message, param_hint=f"'{option}'")  # quoted, as typer quotes its own
