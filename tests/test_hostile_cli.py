"""A hostile but realistic user: every bad argument, output path or export folder is one red line and exit 2.

Each case runs the real CLI in-process. The checks run before any work, so most cases need no real
model or data; those that read a file get small real ones.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import run_cli, tiny_checkpoint

from fad_edge.artifact import ExportManifest
from fad_edge.data import layout
from fad_edge.data.normalization import Normalization
from fad_edge.models.presets import preset


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A tiny checkpoint, a short speaker session, a plain file and a folder that is not an export."""
    root = tmp_path_factory.mktemp("hostile")
    tiny_checkpoint(root / "ckpt")
    rng = np.random.default_rng(0)
    layout.write_session(root / "session", rng.integers(0, 255, (20, 40, 40, 3), dtype=np.uint8),
                         (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000, np.zeros((20, 56), np.float32))
    (root / "afile").write_text("not a folder")
    (root / "report.json").mkdir()  # where a report file would go
    (root / "export").mkdir()  # an export folder, where a checkpoint is asked for
    (root / "export" / "manifest.json").write_text("{}")
    return root


def assert_one_line_error(code: int, output: str, fragment: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    assert fragment in output, output


GENERATE = ["generate", "--checkpoint", "{place}/ckpt", "--video", "{place}/session/speaker.mp4",
            "--audio", "{place}/session/speaker.wav"]
EVALUATE = ["evaluate", "--checkpoint", "{place}/ckpt", "--data", "{place}"]
TRAIN = ["train", "--data", "{place}", "--preset", "tiny"]
SYNTH = ["synth", "--sessions", "3", "--seconds", "2", "--image-size", "32"]
TUNE = ["tune-sampler", "--checkpoint", "{place}/ckpt", "--data", "{place}"]

CASES = {
    # output paths: an existing file where a folder goes, a file in the way of a folder, a folder where a file goes
    "generate out is a file": (GENERATE + ["--out", "{place}/afile"], "exists and is not a folder"),
    "generate video is a folder": (["generate", "--checkpoint", "{place}/ckpt", "--video", "{place}/session",
                                    "--out", "{place}/g"], "is a folder, not a video file"),
    "evaluate checkpoint is an export": (["evaluate", "--checkpoint", "{place}/export", "--data", "{place}"],
                                         "is an export folder"),
    "train data is a file": (["train", "--data", "{place}/afile", "--out", "{place}/r", "--preset", "tiny"],
                             "is a file, not a dataset folder"),
    "generate out under a file": (GENERATE + ["--out", "{place}/afile/sub"], "is a file, so nothing"),
    "evaluate out under a file": (EVALUATE + ["--out", "{place}/afile/eval"], "is a file, so nothing"),
    "evaluate out is a folder": (EVALUATE + ["--out", "{place}/report"], "is a folder"),
    "evaluate steps out under a file": (EVALUATE + ["--out", "{place}/afile/e", "--steps-curve", "1,2"], "is a file"),
    "export out is a file": (["export", "--checkpoint", "{place}/ckpt", "--out", "{place}/afile"], "is not a folder"),
    "export out holds other files": (["export", "--checkpoint", "{place}/ckpt", "--out", "{place}/session"],
                                     "which no export writes"),
    "export out is the current folder": (["export", "--checkpoint", "{place}/ckpt", "--out", "."],
                                         "give the export folder a name"),
    "train out is a file": (TRAIN + ["--out", "{place}/afile"], "exists and is not a folder"),
    "bench out under a file": (["bench", "--out", "{place}/afile/b"], "is a file, so nothing"),
    "bench out is a folder": (["bench", "--out", "{place}/report"], "is a folder"),
    "synth out is a file": (SYNTH + ["--out", "{place}/afile"], "exists and is not a folder"),
    "demo out is a file": (["demo", "--out", "{place}/afile"], "exists and is not a folder"),
    "explain out is a folder": (["explain", "--checkpoint", "{place}/ckpt", "--video", "{place}/session/speaker.mp4",
                                 "--out", "{place}/session"], "is a folder"),
    "convert-vico out is a file": (["convert-vico", "--src", "{place}", "--out", "{place}/afile"], "is not a folder"),
    "baselines-l2l out under a file": (["baselines-l2l", "--data", "{place}", "--channel", "conan",
                                        "--out", "{place}/afile/x"], "is a file"),
    # seeds, presets, sizes, numbers
    "generate seed -1": (GENERATE + ["--out", "{place}/o", "--seed", "-1"], "--seed"),
    "generate seed 2**32": (GENERATE + ["--out", "{place}/o", "--seed", str(2**32)], "--seed"),
    "generate threads 100000": (GENERATE + ["--out", "{place}/o", "--threads", "100000"], "--threads"),
    "generate steps 0": (GENERATE + ["--out", "{place}/o", "--steps", "0"], "--steps"),
    "generate unknown backend": (GENERATE + ["--out", "{place}/o", "--backend", "cuda-magic"], "cuda-magic"),
    "evaluate samples 0": (EVALUATE + ["--samples", "0"], "--samples"),
    "evaluate start noise nan": (EVALUATE + ["--start-noise", "nan"], "--start-noise"),
    "evaluate steps curve 1000": (EVALUATE + ["--steps-curve", "1,1000"], "--steps-curve"),
    "export tolerance nan": (["export", "--checkpoint", "{place}/ckpt", "--out", "{place}/e", "--tolerance", "nan"],
                             "--tolerance"),
    "export tolerance inf": (["export", "--checkpoint", "{place}/ckpt", "--out", "{place}/e", "--tolerance", "inf"],
                             "--tolerance"),
    "export threads 100000": (["export", "--checkpoint", "{place}/ckpt", "--out", "{place}/e", "--threads", "100000"],
                              "--threads"),
    "train preset typo": (["train", "--data", "{place}", "--out", "{place}/r", "--preset", "tny"],
                          "unknown preset 'tny'"),
    "train lr inf": (TRAIN + ["--out", "{place}/r", "--lr", "inf"], "--lr"),
    "train lr nan": (TRAIN + ["--out", "{place}/r", "--lr", "nan"], "--lr"),
    "train lr 0": (TRAIN + ["--out", "{place}/r", "--lr", "0"], "--lr"),
    "train weight decay inf": (TRAIN + ["--out", "{place}/r", "--weight-decay", "inf"], "--weight-decay"),
    "train context clips 100000": (TRAIN + ["--out", "{place}/r", "--context-clips", "100000"], "--context-clips"),
    "train seed -1": (TRAIN + ["--out", "{place}/r", "--seed", "-1"], "--seed"),
    "train batch beyond memory": (TRAIN + ["--out", "{place}/r", "--batch-size", "100000000"], "memory"),
    "train modalities typo": (TRAIN + ["--out", "{place}/r", "--modalities", "smell"], "--modalities"),
    "train pretraining without a branch": (TRAIN + ["--out", "{place}/r", "--prosody-pretrain-steps", "10"],
                                           "no prosody branch"),
    "train pretraining steps -1": (TRAIN + ["--out", "{place}/r", "--prosody-pretrain-steps", "-1"],
                                   "--prosody-pretrain-steps"),
    "bench a billion frames": (["bench", "--frames", "1000000000"], "memory"),
    "bench frames 0": (["bench", "--frames", "0"], "--frames"),
    "bench frames text": (["bench", "--frames", "lots"], "--frames"),
    "bench runs 10**8": (["bench", "--runs", "100000000"], "--runs"),
    "bench preset typo": (["bench", "--preset", "papr"], "unknown preset 'papr'"),
    "bench backend typo": (["bench", "--backends", "ort,onnx"], "--backends"),
    "bench replica budget inf": (["bench", "--replica-budget", "inf"], "--replica-budget"),
    "synth seconds inf": (SYNTH[:3] + ["--seconds", "inf", "--out", "{place}/d"], "--seconds"),
    "synth seconds nan": (SYNTH[:3] + ["--seconds", "nan", "--out", "{place}/d"], "--seconds"),
    "synth seconds negative": (SYNTH[:3] + ["--seconds", "-5", "--out", "{place}/d"], "--seconds"),
    "synth seed -1": (SYNTH + ["--seed", "-1", "--out", "{place}/d"], "--seed"),
    "synth image size beyond memory": (SYNTH[:5] + ["--image-size", "1000000", "--out", "{place}/d"], "memory"),
    "synth sessions beyond the disk": (["synth", "--sessions", "1000000000000", "--seconds", "40",
                                        "--out", "{place}/d"], "free"),
    "demo seconds inf": (["demo", "--out", "{place}/demo", "--seconds", "inf"], "--seconds"),
    "demo preset typo": (["demo", "--out", "{place}/demo", "--preset", "smal"], "unknown preset"),
    "demo autocast typo": (["demo", "--out", "{place}/demo", "--autocast", "fp32"], "--autocast"),
    "explain frame past the end": (["explain", "--checkpoint", "{place}/ckpt", "--video",
                                    "{place}/session/speaker.mp4", "--audio", "{place}/session/speaker.wav",
                                    "--frame", "500", "--out", "{place}/s.png"],
                                   "past the video's last frame"),
    "explain out not a png": (["explain", "--checkpoint", "{place}/ckpt", "--video", "{place}/session/speaker.mp4",
                               "--out", "{place}/s.jpg"], "does not end in .png"),
    "explain target typo": (["explain", "--checkpoint", "{place}/ckpt", "--video", "{place}/session/speaker.mp4",
                             "--target", "eyes"], "--target"),
    # outputs that would replace an input, or land in a dataset
    "explain out is its video": (["explain", "--checkpoint", "{place}/ckpt", "--video", "{place}/session/speaker.mp4",
                                  "--out", "{place}/session/speaker.mp4"], "would replace the input"),
    "explain out in the checkpoint": (["explain", "--checkpoint", "{place}/ckpt", "--video",
                                       "{place}/session/speaker.mp4", "--out", "{place}/ckpt/s.png"],
                                      "inside the input folder"),
    "rules out in the checkpoint": (["rules", "{place}/ckpt", "--data", "{place}", "--out", "{place}/ckpt/model.json"],
                                    "inside the input folder"),
    "rules out in the data": (["rules", "{place}/ckpt", "--data", "{place}", "--out", "{place}/session/r.json"],
                              "inside the input folder"),
    "tune-sampler out in the checkpoint": (TUNE + ["--out", "{place}/ckpt/model"], "inside the input folder"),
    "evaluate out in the checkpoint": (EVALUATE + ["--out", "{place}/ckpt/model"], "inside the input folder"),
    "evaluate out in the data": (EVALUATE + ["--out", "{place}/splits"], "inside the input folder"),
    "tune-sampler write-to in the data": (TUNE + ["--write-to", "{place}/calibrated"], "inside the input folder"),
    "generate out is a dataset session": (GENERATE + ["--out", "{place}/session"], "is a dataset session"),
    "generate out is the checkpoint": (GENERATE + ["--out", "{place}/ckpt"], "would replace the input"),
    # sampler names and the sampler grid
    "generate sampler typo": (GENERATE + ["--out", "{place}/o", "--sampler", "noisy"], "unknown sampler 'noisy'"),
    "evaluate sampler typo": (EVALUATE + ["--sampler", "Diverse"], "unknown sampler 'Diverse'"),
    "bench sampler typo": (["bench", "--sampler", "random"], "unknown sampler 'random'"),
    "tune-sampler steps text": (TUNE + ["--steps", "many"], "--steps"),
    "tune-sampler start step 100": (TUNE + ["--start-steps", "50,100"], "start step 100 is outside 0..99"),
    "tune-sampler temperature 3": (TUNE + ["--temperature", "1,3"], "temperature 3 is outside"),
    "tune-sampler rotation noise -1": (TUNE + ["--rotation-noise", "1,-1"], "rotation noise -1 is outside"),
    "tune-sampler start noise nan": (TUNE + ["--start-noise", "nan"], "start noise nan is outside"),
    "tune-sampler pick past the grid": (TUNE + ["--pick", "99"], "--pick"),
    "tune-sampler writes over its checkpoint": (TUNE + ["--write-to", "{place}/ckpt"], "--overwrite"),
    "tune-sampler out is a folder": (TUNE + ["--out", "{place}/report"], "is a folder"),
    # the command line itself
    "unknown option": (["synth", "--secnds", "3", "--out", "{place}/d"], "No such option"),
    "unknown command": (["sinth"], "No such command"),
    "missing option": (["synth"], "--out"),
}


@pytest.mark.parametrize("args, fragment", CASES.values(), ids=CASES.keys())
def test_hostile_arguments_are_one_line_and_exit_2(monkeypatch, capsys, place, args, fragment):
    code, output = run_cli(monkeypatch, capsys, *[arg.format(place=place) for arg in args])
    assert_one_line_error(code, output, fragment)


def test_the_command_alone_prints_its_help(monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys)
    assert code == 2 and output.startswith("Usage: fad-edge [OPTIONS] COMMAND")
    assert all(command in output for command in ("synth", "train", "generate", "demo"))


def test_refused_arguments_leave_nothing_behind(monkeypatch, capsys, tmp_path, place):
    code, _ = run_cli(monkeypatch, capsys, *[a.format(place=place) for a in GENERATE],
                      "--out", tmp_path / "out", "--seed", "-1")
    assert code == 2 and not (tmp_path / "out").exists()
    code, _ = run_cli(monkeypatch, capsys, *[a.format(place=place) for a in SYNTH],
                      "--seconds", "inf", "--out", tmp_path / "data")
    assert code == 2 and not (tmp_path / "data").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_a_folder_that_cannot_be_written(monkeypatch, capsys, tmp_path, place):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, output = run_cli(monkeypatch, capsys, *[a.format(place=place) for a in GENERATE], "--out", locked / "o")
        assert_one_line_error(code, output, "cannot be written")
        code, output = run_cli(monkeypatch, capsys, "bench", "--out", locked / "bench")
        assert_one_line_error(code, output, "cannot be written")
    finally:
        locked.chmod(0o755)


def test_help_still_exits_0(monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "generate", "--help")
    assert code == 0 and "--seed" in output


# Rich markup in user-supplied paths is printed as it is, never read as markup.

def test_markup_in_an_output_path(monkeypatch, capsys, tmp_path, place):
    out = tmp_path / "[/bold]x[red]"
    code, output = run_cli(monkeypatch, capsys, *[a.format(place=place) for a in GENERATE], "--out", out)
    assert code == 0, output
    printed = json.loads(next(line for line in output.splitlines() if line.startswith("{")))  # stdout's JSON line
    assert printed["motion"] == str(out / "listener_coeffs.npy")
    assert (out / "listener_coeffs.npy").exists()


def test_markup_in_a_missing_input_path(monkeypatch, capsys, tmp_path, place):
    video = tmp_path / "[/bold]talk[x].mp4"
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", place / "ckpt", "--video", video,
                           "--audio", place / "session" / "speaker.wav", "--out", tmp_path / "o")
    assert_one_line_error(code, output, f"{video}: video file not found")


def test_markup_in_a_synth_folder(monkeypatch, capsys, tmp_path):
    out = tmp_path / "[/bold]data"
    code, output = run_cli(monkeypatch, capsys, *SYNTH, "--out", out)
    assert code == 0, output
    assert f"wrote {out}" in output.replace("\n", "")


def test_markup_in_an_option_value(monkeypatch, capsys, place):
    code, output = run_cli(monkeypatch, capsys, "train", "--data", place, "--out", place / "r", "--preset", "[/bold]")
    assert_one_line_error(code, output, "unknown preset '[/bold]'")


# Export folders: every file the manifest names stays inside the folder; the manifest is checked whole.

def _fake_export(folder, graphs=None, **config_overrides):
    """A manifest (and empty graph files) that fails before any graph is loaded."""
    folder.mkdir(parents=True)
    config = {**preset("tiny").to_dict(), **config_overrides}
    names = {"video_encoder": "video_encoder.onnx", "audio_encoder": "audio_encoder.onnx",
             "elnet_x0": "elnet_x0.onnx", "elnet_eps": "elnet_eps.onnx"}
    if graphs is None:
        graphs = {graph: {"fp32": name} for graph, name in names.items()}
    for name in names.values():
        (folder / name).write_bytes(b"")
    ExportManifest("0.1.0", "0" * 64, config, Normalization.identity().to_dict(), 18, graphs=graphs).save(folder)
    return folder


def _with_video_file(name):
    graphs = {g: {"fp32": f"{g}.onnx"} for g in ("video_encoder", "audio_encoder", "elnet_x0", "elnet_eps")}
    graphs["video_encoder"]["fp32"] = name
    return graphs


def _generate_with(monkeypatch, capsys, model, place, tmp_path):
    return run_cli(monkeypatch, capsys, "generate", "--model", model, "--video", place / "session" / "speaker.mp4",
                   "--audio", place / "session" / "speaker.wav", "--out", tmp_path / "o")


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.onnx", "sub/../../outside.onnx"])
def test_a_manifest_naming_a_file_outside_the_folder(monkeypatch, capsys, tmp_path, place, name):
    (tmp_path / "outside.onnx").write_bytes(b"")
    model = _fake_export(tmp_path / "model", graphs=_with_video_file(name))
    code, output = _generate_with(monkeypatch, capsys, model, place, tmp_path)
    assert_one_line_error(code, output, "points outside the export folder")


def test_a_symlink_pointing_outside_the_folder(monkeypatch, capsys, tmp_path, place):
    (tmp_path / "secret.onnx").write_bytes(b"")
    model = _fake_export(tmp_path / "model", graphs=_with_video_file("link.onnx"))
    (model / "link.onnx").symlink_to(tmp_path / "secret.onnx")
    code, output = _generate_with(monkeypatch, capsys, model, place, tmp_path)
    assert_one_line_error(code, output, "'link.onnx' points outside")


@pytest.mark.parametrize("graphs, overrides, fragment", [
    ({}, {}, "no fp32 graph for video_encoder, audio_encoder"),
    (None, {"image_size": -4}, "image_size must be a positive integer, got -4"),
    (None, {"inference_steps": 0}, "inference_steps must be a positive integer, got 0"),
    (None, {"sample_start_step": 100}, "sample_start_step must be in 0..99"),
    (None, {"clip_len": 0}, "clip_len must be a positive integer"),
], ids=["no graphs", "image_size -4", "inference_steps 0", "start step past the schedule", "clip_len 0"])
def test_a_manifest_is_checked_whole(monkeypatch, capsys, tmp_path, place, graphs, overrides, fragment):
    model = _fake_export(tmp_path / "model", graphs=graphs, **overrides)
    code, output = _generate_with(monkeypatch, capsys, model, place, tmp_path)
    assert_one_line_error(code, output, fragment)


def test_a_checkpoint_with_an_invalid_config(monkeypatch, capsys, tmp_path, place):
    folder = tiny_checkpoint(tmp_path / "ckpt")
    info = json.loads((folder / "model.json").read_text())
    info["config"]["inference_steps"] = 0
    (folder / "model.json").write_text(json.dumps(info))
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", folder,
                           "--video", place / "session" / "speaker.mp4", "--audio", place / "session" / "speaker.wav",
                           "--out", tmp_path / "o")
    assert_one_line_error(code, output, "inference_steps must be a positive integer")


def test_flipped_weight_bytes_are_one_line(monkeypatch, capsys, tmp_path, place):
    folder = tiny_checkpoint(tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40
    weights.write_bytes(bytes(data))
    code, output = run_cli(monkeypatch, capsys, "generate", "--checkpoint", folder,
                           "--video", place / "session" / "speaker.mp4", "--audio", place / "session" / "speaker.wav",
                           "--out", tmp_path / "o")
    assert_one_line_error(code, output, "model.safetensors: SHA-256")


def test_a_file_that_is_not_a_video_is_one_line_with_nothing_from_ffmpeg(tmp_path, place):
    """FFmpeg logs to the process's stderr itself ("moov atom not found"), past Python: so a real process."""
    import subprocess
    import sys

    bad = tmp_path / "speaker.mp4"
    bad.write_text("not a video")
    env = {key: value for key, value in os.environ.items() if key != "OPENCV_FFMPEG_LOGLEVEL"}
    completed = subprocess.run(
        [sys.executable, "-m", "fad_edge", "generate", "--checkpoint", str(place / "ckpt"), "--video", str(bad),
         "--audio", str(place / "session" / "speaker.wav"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300, env={**env, "COLUMNS": "200"})
    assert_one_line_error(completed.returncode, completed.stdout + completed.stderr, "not a readable video")


def test_sigterm_unwinds_a_command_as_ctrl_c_does_and_leaves_no_half_written_folder(tmp_path):
    """A scheduler's or `kill`'s SIGTERM: 'terminated', exit 143, and the staged dataset removed as after Ctrl-C."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "data"
    process = subprocess.Popen([sys.executable, "-m", "fad_edge", "synth", "--out", str(out), "--sessions", "8",
                                "--seconds", "300"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "data.new").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)  # into the writing
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143 and output.strip().endswith("terminated"), output
    assert "Traceback" not in output and sorted(p.name for p in tmp_path.iterdir()) == []
