"""Atomic outputs: the usual file modes, and folders replaced whole."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from fad_edge.atomic import atomic_output, atomic_save_npy, atomic_write_bytes, staging_folder, swap_in_folder


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
    staging = staging_folder(target)
    (staging / "new.txt").write_text("new")
    swap_in_folder(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_swap_after_one_killed_between_its_renames_keeps_the_whole_old_folder_until_the_new_is_in(
        tmp_path, monkeypatch):
    """A killed swap leaves FOLDER.old (whole) and no FOLDER: the next swap must not delete it before its own
    folder is in place, or a kill then leaves no whole folder at all."""
    target, old = tmp_path / "checkpoint", tmp_path / "checkpoint.old"
    old.mkdir()
    (old / "model.txt").write_text("the only whole checkpoint")
    staging = staging_folder(target)
    (staging / "model.txt").write_text("new")
    real_replace = os.replace

    def killed_at_the_rename(source, destination):
        raise KeyboardInterrupt  # the process dies where the new folder would be renamed in

    monkeypatch.setattr(os, "replace", killed_at_the_rename)
    with pytest.raises(KeyboardInterrupt):
        swap_in_folder(staging, target)
    assert (old / "model.txt").read_text() == "the only whole checkpoint"
    monkeypatch.setattr(os, "replace", real_replace)
    swap_in_folder(staging, target)
    assert (target / "model.txt").read_text() == "new" and not old.exists()


def test_a_staging_folder_starts_empty(tmp_path):
    first = staging_folder(tmp_path / "out")
    (first / "left-by-a-killed-run").write_text("x")
    assert list(staging_folder(tmp_path / "out").iterdir()) == []


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
