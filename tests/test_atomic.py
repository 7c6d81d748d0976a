"""Atomic outputs: the usual file modes, and folders replaced whole."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest

from fad_edge.atomic import (
    STAGING_MARK,
    OutputInUseError,
    atomic_output,
    atomic_save_npy,
    atomic_write_bytes,
    staged_folder,
)


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_atomic_output_gets_the_mode_open_gives(tmp_path, umask):
    from helpers import tiny_checkpoint

    from fad_edge.data.media import write_video, write_wav

    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    usual = _mode(tmp_path / "plain.txt")
    assert usual == 0o666 & ~umask
    written = [
        atomic_write_bytes(tmp_path / "a.bin", b"x"),
        atomic_save_npy(tmp_path / "a.npy", np.zeros(3)),
        write_video(tmp_path / "preview.mp4", np.zeros((2, 16, 16, 3), np.uint8), 30),
        write_wav(tmp_path / "a.wav", np.zeros(10, np.float32), 16000),
    ]
    with atomic_output(tmp_path / "b.bin") as temporary:
        temporary.write_bytes(b"y")
    written.append(tmp_path / "b.bin")
    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    written += list(checkpoint.iterdir())
    assert {path.name: _mode(path) for path in written} == {path.name: usual for path in written}
    assert _mode(checkpoint) == 0o777 & ~umask


def test_swap_replaces_a_folder_whole_and_leaves_no_siblings(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_folder(target) as staging:
        assert list(staging.iterdir()) == [staging / STAGING_MARK]  # only the mark, which does not stay
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "new.txt").write_text("half")
        raise RuntimeError("the writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "old.txt").read_text() == "old"


def _leave_as_killed(path, files: dict[str, str]) -> None:
    """What a fad-edge run killed mid-write (FOLDER.new) or mid-swap (FOLDER.old) leaves: its files and the mark."""
    path.mkdir()
    (path / STAGING_MARK).touch()
    for name, text in files.items():
        (path / name).write_text(text)


def test_a_swap_after_one_killed_between_its_renames_keeps_the_whole_old_folder_until_the_new_is_in(
        tmp_path, monkeypatch):
    """A killed swap leaves FOLDER.old (whole) and no FOLDER: the next swap must not delete it before its own
    folder is in place, or a kill then leaves no whole folder at all."""
    target, old = tmp_path / "checkpoint", tmp_path / "checkpoint.old"
    _leave_as_killed(old, {"model.txt": "the only whole checkpoint"})
    real_replace = os.replace

    def killed_at_the_rename(source, destination):
        raise KeyboardInterrupt  # the process dies where the new folder would be renamed in

    monkeypatch.setattr(os, "replace", killed_at_the_rename)
    with pytest.raises(KeyboardInterrupt), staged_folder(target) as staging:
        (staging / "model.txt").write_text("new")
    assert (old / "model.txt").read_text() == "the only whole checkpoint"
    monkeypatch.setattr(os, "replace", real_replace)
    with staged_folder(target) as staging:
        (staging / "model.txt").write_text("new")
    assert (target / "model.txt").read_text() == "new" and not old.exists()


def test_what_a_killed_run_left_is_cleared_and_a_folder_not_ours_is_never_deleted(tmp_path):
    from fad_edge.errors import FadEdgeError

    target = tmp_path / "data"
    _leave_as_killed(tmp_path / "data.new", {"left-by-a-killed-run": "x"})
    with staged_folder(target) as staging:
        assert sorted(p.name for p in staging.iterdir()) == [STAGING_MARK]
    for name in ("data.new", "data.old"):  # the user's own folders that happen to bear those names
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("mine")
        refused = pytest.raises(FadEdgeError, match=f"{name}: this folder is in the way of writing data, and is not")
        with refused, staged_folder(target) as staging:  # refused before the block: no work is lost
            raise AssertionError("the block ran")
        assert (tmp_path / name / "notes.txt").read_text() == "mine"
        (tmp_path / name / "notes.txt").unlink()
        (tmp_path / name).rmdir()


def test_a_second_writer_of_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    target = tmp_path / "data"
    with staged_folder(target) as first:
        (first / "a.txt").write_text("first")
        with pytest.raises(OutputInUseError, match="another run is writing it now"), staged_folder(target):
            pass
        assert (first / "a.txt").read_text() == "first"  # untouched by the refused writer
    assert (target / "a.txt").read_text() == "first"


def test_a_video_write_that_loses_frames_is_an_error_and_keeps_the_earlier_video(tmp_path, monkeypatch):
    import cv2

    from fad_edge.data import media
    from fad_edge.errors import DataError

    good = media.write_video(tmp_path / "preview.mp4", np.zeros((6, 16, 16, 3), np.uint8), 30)
    before = good.read_bytes()

    real = cv2.VideoWriter

    class FullDisk:  # OpenCV's writer says nothing when a frame cannot be written (a wrapper: a subclass of
        fourcc = staticmethod(real.fourcc)  # the native class crashed the interpreter when collected later)

        def __init__(self, *args):
            self.writer, self.written = real(*args), 0

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return self.writer.isOpened()

        def write(self, image):
            self.written += 1
            if self.written <= 2:
                self.writer.write(image)

        def release(self):
            self.writer.release()

    monkeypatch.setattr(media.cv2, "VideoWriter", FullDisk)
    with pytest.raises(DataError, match="could not be written whole"):
        media.write_video(good, np.full((6, 16, 16, 3), 255, np.uint8), 30)
    assert good.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["preview.mp4"]


def test_a_full_disk_while_writing_names_the_file(tmp_path, monkeypatch):
    import errno

    real_fdopen = os.fdopen

    class FullDisk(io.RawIOBase):
        def __init__(self, handle, mode):
            self.file = real_fdopen(handle, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write's error comes: no file named

        def close(self):
            self.file.close()

    monkeypatch.setattr(os, "fdopen", FullDisk)
    with pytest.raises(OSError) as error:
        atomic_write_bytes(tmp_path / "summary.json", b"{}")
    assert error.value.filename == str(tmp_path / "summary.json") and error.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # nor a temporary left behind
