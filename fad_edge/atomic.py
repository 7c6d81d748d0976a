"""Atomic writes: a temp file (or folder) beside the target, fsync, then a rename: a crash never leaves half an output.

Every file written here ends with the mode a plain open() would give it (0666 minus the umask),
although tempfile creates its names private (0600).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` so readers see the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        _readable_by_all(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_save_npy(path: Path, array: np.ndarray) -> Path:
    """np.save, atomically (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def temporary_sibling(path: Path) -> Path:
    """A fresh temp path beside `path` for writers that need a file name; use it through atomic_output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    return Path(temporary)


def _umask() -> int:
    # The only portable way to read the umask is to set it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _readable_by_all(path: Path) -> None:
    """mkstemp makes files 0600; give finished outputs the usual mode (0666 minus the umask)."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        _readable_by_all(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_together(files: dict[Path, bytes]) -> list[Path]:
    """Write every file to a temporary beside it, then rename each into place: a failure while writing leaves
    every old file as it was (never a new JSON beside an old chart). An OSError names the target, not the
    temporary."""
    targets: dict[str, Path] = {}
    current = Path()
    try:
        with contextlib.ExitStack() as stack:
            for current, data in files.items():
                temporary = stack.enter_context(atomic_output(current))
                targets[str(temporary)] = current
                temporary.write_bytes(data)
    except OSError as error:
        target = targets.get(str(error.filename), current)
        raise OSError(error.errno, error.strerror or str(error), str(target)) from error
    return list(files)


def staging_folder(folder: Path) -> Path:
    """A fresh, empty FOLDER.new beside `folder` to build its replacement in (then `swap_in_folder`).

    The name is fixed, not random, so that what a killed run left there is cleared by the next one.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(folder.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def swap_in_folder(staging: Path, folder: Path) -> Path:
    """Replace `folder` with the finished `staging` folder by renames.

    The old folder is renamed to FOLDER.old first and removed only once the new one is in place, so
    a kill at any moment leaves a whole folder at FOLDER or, between the two renames, at FOLDER.old.
    Its files get the usual mode too: some writers (safetensors) leave theirs 0600.
    """
    staging, folder = Path(staging), Path(folder)
    for path in staging.rglob("*"):  # make the bytes durable before the swap
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            _readable_by_all(path)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    # else FOLDER.old, if there, is what a swap killed between its renames left: the one whole folder until
    # the new one is in place
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
