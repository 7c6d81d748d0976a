"""examples/robot_loop.py: its arguments, its one-line errors, Ctrl-C, and a file's own frame rate."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from fad_edge.data.media import write_video, write_wav
from fad_edge.runtime.stream import ListenerStream


@pytest.fixture(scope="module")
def robot_loop() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "examples" / "robot_loop.py"
    spec = importlib.util.spec_from_file_location("robot_loop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["robot_loop"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def media(tmp_path) -> tuple[Path, Path]:
    """Half a second of video at 25 fps and a second of audio."""
    video = write_video(tmp_path / "talk.mp4", np.full((12, 32, 32, 3), 100, np.uint8), 25)
    return video, write_wav(tmp_path / "talk.wav", np.zeros(16000, np.float32), 16000)


class FakeStream:
    """What the loop uses of a ListenerStream, recording what it is given; `interrupt_at` frames raise Ctrl-C."""

    def __init__(self, interrupt_at: int | None = None, **options) -> None:
        self.options, self.interrupt_at = options, interrupt_at
        self.frame_times: list[float] = []
        self.closed = False

    def push_audio(self, samples, rate, t) -> None:
        pass

    def push_video(self, frame, t: float) -> None:
        if len(self.frame_times) == self.interrupt_at:
            raise KeyboardInterrupt
        self.frame_times.append(t)

    def close(self) -> None:
        self.closed = True

    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(clips=len(self.frame_times) // 8, latency_p50_ms=1.0, latency_p99_ms=2.0,
                               frames_repeated=0, frames_skipped=0)


def _fake_streams(monkeypatch, interrupt_at: int | None = None) -> list[FakeStream]:
    made: list[FakeStream] = []

    def from_export(folder, **options):
        made.append(FakeStream(interrupt_at, folder=folder, **options))
        return made[-1]

    monkeypatch.setattr(ListenerStream, "from_export", from_export)
    return made


def test_frames_are_paced_and_stamped_at_the_files_own_rate(robot_loop, media, monkeypatch, capsys):
    streams = _fake_streams(monkeypatch)
    video, audio = media
    code = robot_loop.main(["--model", "m", "--video", str(video), "--audio", str(audio), "--backend", "trt"])
    assert code == 0 and streams[0].closed
    np.testing.assert_allclose(streams[0].frame_times, np.arange(12) / 25)
    assert streams[0].options["backend"] == "trt" and streams[0].options["precision"] is None
    assert "1 clips; per-clip latency p50 1.0 ms" in capsys.readouterr().out


def test_ctrl_c_prints_the_stats_and_exits_130(robot_loop, media, monkeypatch, capsys):
    streams = _fake_streams(monkeypatch, interrupt_at=9)
    video, audio = media
    assert robot_loop.main(["--model", "m", "--video", str(video), "--audio", str(audio)]) == 130
    assert streams[0].closed and "1 clips; per-clip latency" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [
    (["--model", "m", "--audio", "a.wav"], "one of the arguments --video --camera is required"),
    (["--model", "m", "--video", "v.mp4", "--camera", "0", "--audio", "a.wav"], "not allowed with argument"),
    (["--model", "m", "--video", "v.mp4", "--audio", "a.wav", "--seconds", "-1"], "not a finite number of seconds"),
    (["--model", "m", "--video", "v.mp4", "--audio", "a.wav", "--seconds", "nan"], "not a finite number of seconds"),
    (["--model", "m", "--video", "v.mp4", "--audio", "a.wav", "--backend", "onnx"], "invalid choice: 'onnx'"),
])
def test_bad_arguments_exit_2(robot_loop, args, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        robot_loop.main(args)
    assert exit_info.value.code == 2 and fragment in capsys.readouterr().err


def test_what_the_user_can_fix_is_one_line_and_exit_2(robot_loop, media, tmp_path, capsys):
    from helpers import tiny_checkpoint

    video, audio = media
    missing = robot_loop.main(["--model", "m", "--video", str(video), "--audio", str(tmp_path / "none.wav")])
    assert missing == 2 and capsys.readouterr().err == f"error: {tmp_path / 'none.wav'}: audio file not found\n"
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    assert robot_loop.main(["--model", str(checkpoint), "--video", str(video), "--audio", str(audio)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "export" in error and len(error.splitlines()) == 1, error
    assert robot_loop.main(["--model", "m", "--video", str(audio), "--audio", str(audio)]) == 2
    assert "not a video file" in capsys.readouterr().err


@pytest.mark.slow
def test_the_loop_runs_an_export(robot_loop, media, tiny_export, capsys):
    video, audio = media
    assert robot_loop.main(["--model", str(tiny_export), "--video", str(video), "--audio", str(audio),
                            "--face", "none", "--seconds", "2"]) == 0
    output = capsys.readouterr().out
    assert output.splitlines()[-1].startswith("2 clips; per-clip latency p50")
    clips = [line for line in output.splitlines() if line.startswith("clip ")]
    assert len(clips) == 2 and all(len(line) <= 80 and "  head " in line for line in clips)
