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

from fad_edge.errors import FadEdgeError


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
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is not None:
            raise
        # a write's error (a full disk) names no file: name the one being written
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
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


# The mark of a FOLDER.new (or FOLDER.old) that fad-edge made: only a folder holding it is ever cleared, so a
# user's own folder of that name is never deleted. A FOLDER.new's mark is locked while it is written.
STAGING_MARK = ".fad-edge-staging"


class OutputInUseError(FadEdgeError):
    """Another process is writing the same output folder now, or a folder not ours stands where we stage it."""


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty FOLDER.new to build `folder`'s replacement in; it replaces `folder` by renames when the block
    ends without error (`_swap_in`), and is removed otherwise.

    The name is fixed, not random, so that what a killed run left there is cleared by the next one. Its mark file
    is locked (flock) while the block runs: a second writer of the same folder is refused rather than mixing its
    files with the first's.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(folder.name + ".new")
    _clear_ours(staging, folder)
    old = folder.with_name(folder.name + ".old")
    if folder.exists() and (old.exists() or old.is_symlink()) and not (old / STAGING_MARK).is_file():
        _clear_ours(old, folder)  # refused now, not after the work: the swap would need that name
    try:
        staging.mkdir()
    except FileExistsError:  # made by another run between the check and now
        raise _in_use(folder, staging) from None
    lock = os.open(staging / STAGING_MARK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        if not _try_lock(lock):
            raise _in_use(folder, staging)
        try:
            yield staging
            _swap_in(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        os.close(lock)  # releases the lock


def clear_staging(folder: Path) -> None:
    """Remove the FOLDER.new a killed `staged_folder` left; refuse (OutputInUseError) one another run is
    writing now, or one fad-edge did not make."""
    folder = Path(folder)
    _clear_ours(folder.with_name(folder.name + ".new"), folder)


def _try_lock(descriptor: int) -> bool:
    """An exclusive lock on an open file, without waiting; where flock does not exist (Windows), always granted."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _in_use(folder: Path, staging: Path) -> OutputInUseError:
    return OutputInUseError(f"{folder}: another run is writing it now ({staging.name} beside it is in use); wait for "
                            "it to end, or write elsewhere")


def _clear_ours(path: Path, folder: Path) -> None:
    """Remove `path` (FOLDER.new or FOLDER.old) if a fad-edge run left it; refuse if it is someone else's or in use."""
    if not path.exists() and not path.is_symlink():
        return
    mark = path / STAGING_MARK
    if path.is_symlink() or not mark.is_file():
        raise OutputInUseError(f"{path}: this folder is in the way of writing {folder.name}, and is not one fad-edge "
                               "left; move or rename it")
    descriptor = os.open(mark, os.O_RDWR)
    try:
        if not _try_lock(descriptor):
            raise _in_use(folder, path)
        shutil.rmtree(path)
    finally:
        os.close(descriptor)


def _swap_in(staging: Path, folder: Path) -> Path:
    """Replace `folder` with the finished `staging` folder by renames.

    The old folder is renamed to FOLDER.old (and marked as ours) first and removed only once the new one is in
    place, so a kill at any moment leaves a whole folder at FOLDER or, between the two renames, at FOLDER.old.
    Its files get the usual mode too: some writers (safetensors) leave theirs 0600.
    """
    (staging / STAGING_MARK).unlink()  # the finished folder holds only what its writer wrote
    for path in staging.rglob("*"):  # make the bytes durable before the swap
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            _readable_by_all(path)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        _clear_ours(old, folder)  # a killed swap's FOLDER.old, with FOLDER whole: ours to clear
        os.replace(folder, old)
        (old / STAGING_MARK).touch()
    # else FOLDER.old, if there and ours, is what a swap killed between its renames left: the one whole folder
    # until the new one is in place
    os.replace(staging, folder)
    if (old / STAGING_MARK).is_file():
        shutil.rmtree(old, ignore_errors=True)
    return folder
