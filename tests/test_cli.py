"""The CLI: bad input gives one red line and exit code 2, never a traceback."""


import numpy as np
import pytest
import torch
from helpers import run_cli

from fad_edge.checkpoint import save_checkpoint
from fad_edge.data import layout
from fad_edge.data.normalization import Normalization
from fad_edge.listener_model import ListenerModel
from fad_edge.models.presets import preset


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ListenerModel(preset("tiny"))
    return save_checkpoint(tmp_path / "ckpt", model, Normalization.identity())


@pytest.fixture
def media(tmp_path):
    rng = np.random.default_rng(0)
    folder = layout.write_session(tmp_path / "s", rng.integers(0, 255, (20, 40, 40, 3), dtype=np.uint8),
                                  (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000,
                                  np.zeros((20, 56), np.float32))
    return folder / layout.VIDEO, folder / layout.AUDIO


def _assert_one_line_error(code, output, fragment):
    assert code == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in output, output


def test_generate_writes_outputs(monkeypatch, capsys, checkpoint, media, tmp_path):
    video, audio = media
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", video,
                           "--audio", audio, "--out", tmp_path / "out")
    assert code == 0, output
    motion = np.load(tmp_path / "out" / "listener_coeffs.npy")
    assert motion.shape == (20, 56) and np.all(np.isfinite(motion))
    assert (tmp_path / "out" / "listener.png").stat().st_size > 1000
    assert (tmp_path / "out" / "listener.json").exists()


def test_missing_video(monkeypatch, capsys, checkpoint, media, tmp_path):
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint,
                           "--video", tmp_path / "nope.mp4", "--audio", media[1], "--out", tmp_path / "o")
    _assert_one_line_error(code, output, "video file not found")


def test_corrupt_video(monkeypatch, capsys, checkpoint, media, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", bad,
                           "--audio", media[1], "--out", tmp_path / "o")
    _assert_one_line_error(code, output, "bad.mp4")


def test_unreadable_wav(monkeypatch, capsys, checkpoint, media, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFFnonsense")
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", media[0],
                           "--audio", bad, "--out", tmp_path / "o")
    _assert_one_line_error(code, output, "bad.wav")


def test_audio_shorter_than_the_video(monkeypatch, capsys, checkpoint, media, tmp_path):
    from fad_edge.data.media import write_wav

    short = write_wav(tmp_path / "short.wav", np.zeros(3000, np.float32), 16000)
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", media[0],
                           "--audio", short, "--out", tmp_path / "o")
    _assert_one_line_error(code, output, "audio is 0.19 s but the video is 0.67 s")
    assert "give --pad-audio to pad it with silence" in output


def test_checkpoint_that_is_not_ours(monkeypatch, capsys, media, tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "model.json").write_text('{"format": "other"}')
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", tmp_path / "fake", "--video", media[0],
                           "--audio", media[1], "--out", tmp_path / "o")
    _assert_one_line_error(code, output, "not a fad-edge checkpoint")


def test_training_data_with_wrong_shape_arrays(monkeypatch, capsys, media, tmp_path):
    session = media[0].parent
    np.save(session / layout.LISTENER, np.zeros((20, 3), np.float32))
    layout.write_splits(tmp_path, {"train": ["s"], "val": [], "test": []})  # the train split is read first
    code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run",
                           "--preset", "tiny")
    _assert_one_line_error(code, output, "expected shape (T, 56), got (20, 3)")


def test_generate_records_the_sampler_it_drew_with(monkeypatch, capsys, checkpoint, media, tmp_path):
    import json

    video, audio = media
    for sampler in ("mean", "diverse"):
        code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", video,
                               "--audio", audio, "--out", tmp_path / sampler, "--sampler", sampler, "--steps", "2",
                               "--face", "none")
        assert code == 0, output
        settings = json.loads((tmp_path / sampler / "listener.json").read_text())["settings"]
        assert settings["sampler"] == sampler and settings["steps"] == 2 and settings["temperature"] == 1.0
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", video,
                           "--audio", audio, "--out", tmp_path / "o", "--sampler", "best")
    _assert_one_line_error(code, output, "unknown sampler 'best'; choose one of mean, diverse")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["", "synth", "convert-vico", "baselines-l2l", "train", "generate", "explain",
                                     "evaluate", "rules", "tune-sampler", "export", "bench", "profile", "demo"])
def test_help_fits_80_columns_and_cuts_nothing_short(monkeypatch, capsys, command):
    monkeypatch.setenv("COLUMNS", "80")
    code, output = run_cli(monkeypatch, capsys, *([command] if command else []), "--help")
    assert code == 0, output
    lines = output.splitlines()
    assert len(lines) > 3 and max(map(len, lines)) <= 80
    cut = [line for line in lines if "…" in line or (line.rstrip().endswith("...") and not line.startswith("Usage:"))]
    assert not cut, output  # ("[ARGS]..." in the usage line is click's notation for more arguments)


def test_an_epoch_line_fits_80_columns_and_gives_the_epochs_step_rate(monkeypatch):
    import io

    from rich.console import Console

    from fad_edge.cli import progress

    clock = iter([100.0, 104.0])  # start, then the epoch line 4 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    reporter = progress.RichTrainReporter(Console(file=out, width=80))
    reporter.start(1000, 10)
    reporter.epoch(12, {"step": 210, "train_loss": 0.36191, "val_loss": 0.33851, "val_l2": 0.47301})
    reporter.finish()
    line = next(line for line in out.getvalue().splitlines() if line.startswith("epoch 12"))
    assert len(line) <= 80 and line.endswith("val L2 0.4730  50 steps/s")  # (210 - 10) steps / 4 s


def test_an_epoch_line_too_long_for_80_columns_wraps_whole_fields():
    import io

    from rich.console import Console

    from fad_edge.cli import progress

    out = io.StringIO()
    reporter = progress.RichTrainReporter(Console(file=out, width=80))
    reporter.start(10**6, 0)
    # A run stopped by its step budget inside epoch 100 validates there: a part of that epoch.
    reporter.epoch(100, {"step": 123456, "whole_epoch": False, "train_loss": 0.36191, "val_loss": 0.33851,
                         "val_l2": 0.47301})
    reporter.finish()
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("epoch 100 (part): step 123456  loss 0.3619"))
    assert lines[start + 1].startswith("  ") and lines[start + 1].endswith(" steps/s")
    assert all(len(line) <= 80 for line in lines)


def test_the_pretraining_line_fits_80_columns_and_names_its_losses():
    import io

    from rich.console import Console

    from fad_edge.cli import progress
    from fad_edge.prosody_pretraining import PretrainReport

    out = io.StringIO()
    progress.RichTrainReporter(Console(file=out, width=80)).pretrained(
        PretrainReport(steps=10000, windows=8, window_frames=256, first_loss=12.3456, last_loss=0.9123, seconds=333.3))
    lines = out.getvalue().splitlines()
    assert lines == ["pretrained the prosody branch: 10000 steps, loss 12.346 -> 0.912 (333 s)"]


def test_progress_messages_become_timed_lines_in_a_log_but_not_on_a_terminal():
    import io

    from rich.console import Console

    from fad_edge.cli.progress import make_progress, status_reporter

    for terminal in (False, True):
        out = io.StringIO()
        console = Console(file=out, width=80, force_terminal=terminal)
        progress = make_progress(console)
        say = status_reporter(console, progress, progress.add_task("bench", total=None, status=""))
        say("timing FAD (cuda), 64 frames")
        say("timing deca on cuda")
        timed = [line for line in out.getvalue().splitlines() if line.startswith("[")]
        if terminal:
            assert timed == []
        else:
            assert timed[0] == "[   0.0 s] timing FAD (cuda), 64 frames"
            assert timed[1].endswith("s] timing deca on cuda")


def test_a_folder_where_an_output_goes_is_refused_before_anything_is_replaced(monkeypatch, capsys, checkpoint, media,
                                                                           tmp_path):
    video, audio = media
    out = tmp_path / "out"
    assert run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", video, "--audio", audio,
                   "--out", out)[0] == 0
    before = (out / "listener.json").read_bytes()
    (out / "preview.mp4").mkdir()
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", checkpoint, "--video", video,
                           "--audio", audio, "--out", out, "--preview", "--seed", "3")
    _assert_one_line_error(code, output, "preview.mp4: a folder is where this output goes")
    assert (out / "listener.json").read_bytes() == before


def test_a_full_disk_is_one_line_and_exit_code_1(monkeypatch, capsys, tmp_path):
    from fad_edge.data import synthetic_dataset

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "d" / "session_000"))

    monkeypatch.setattr(synthetic_dataset, "write_synthetic_dataset", full)
    code, output = run_cli(monkeypatch, capsys, "synth", "--out", tmp_path / "d", "--sessions", "3", "--seconds", "2")
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in output and len(lines) == 1, output
    assert lines[0] == f"error: No space left on device: {tmp_path / 'd' / 'session_000'}"
