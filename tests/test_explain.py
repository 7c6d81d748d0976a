"""`fad-edge explain`: the saliency of the very prediction `generate` makes, and its refusals and output lines."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_checkpoint

import fad_edge.explain as explain_module
from fad_edge.data.media import write_video
from fad_edge.explain import _predicted_motion, save_saliency_figure, window_of_frame
from fad_edge.models.presets import preset

pytestmark = pytest.mark.slow


def _talk(path, seconds: float = 2.0, fps: int = 25, rate: int = 16000):
    """A video at `fps` whose audio track is a chirp and whose frames brighten, with a face-sized square."""
    rng = np.random.default_rng(0)
    count = int(seconds * fps)
    frames = rng.integers(0, 80, (count, 64, 64, 3), dtype=np.uint8)
    frames[:, 8:48, 8:48] += np.linspace(0, 150, count, dtype=np.uint8)[:, None, None, None]
    time = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * (200 + 300 * time) * time)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        chunk = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
        chunk.sample_rate = rate
        container.mux(sound.encode(chunk))
        for stream in (video, sound):
            container.mux(stream.encode(None))
    return path


def test_explain_differentiates_the_motion_generate_writes(tmp_path, monkeypatch, capsys):
    # Context clips, a noisy start and two steps: a prediction that needs all of generate's inputs and draws.
    checkpoint = tiny_checkpoint(tmp_path / "ck", context_clips=2, inference_steps=2)
    video = _talk(tmp_path / "talk.mp4")  # 25 fps, audio in its track, the face in a box
    face = ["--face", "box", "--box", "8,8,40,40"]
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", checkpoint, "--video", video,
                           "--out", tmp_path / "gen", *face)
    assert code == 0, output
    generated = np.load(tmp_path / "gen" / "listener_coeffs.npy")
    explained = []

    def recording(model, images, mel, frame, target, device, settings, draws):
        with torch.no_grad():
            explained.append(model.denormalize(_predicted_motion(model, images, mel, settings, draws))[0].numpy())
        return np.ones(images.shape[-2:], np.float32)

    monkeypatch.setattr(explain_module, "saliency_map", recording)
    code, output = run_cli(monkeypatch, capsys, "explain", "--checkpoint", checkpoint, "--video", video,
                           "--frame", "45", "--out", tmp_path / "s.png", *face)
    assert code == 0, output
    np.testing.assert_allclose(explained[0], generated[40:48], rtol=1e-4, atol=1e-5)


def test_the_window_of_a_frame_holds_its_context_clips_but_none_before_the_video():
    config = preset("tiny", context_clips=2)
    late, early = window_of_frame(45, 60, config), window_of_frame(3, 60, config)
    assert (late.start, late.clip, late.frame) == (24, 5, 21)
    assert (early.start, early.clip, early.frame) == (0, 0, 3)


def test_an_audio_only_model_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ck", modalities="audio")
    code, output = run_cli(monkeypatch, capsys, "explain", "--checkpoint", checkpoint,
                           "--video", _talk(tmp_path / "talk.mp4"), "--face", "none", "--out", tmp_path / "s.png")
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "audio alone" in output, output
    assert not (tmp_path / "s.png").exists()


def test_the_written_line_names_the_largest_gradient_and_is_never_wrapped(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    video = write_video(tmp_path / "take$^$1.mp4", np.full((16, 48, 48, 3), 90, np.uint8), 30)
    out = tmp_path / ("a_rather_long_folder_name_for_the_saliency_maps_" * 2) / "saliency.png"
    code, output = run_cli(monkeypatch, capsys, "explain", "--checkpoint", checkpoint, "--video", video,
                           "--face", "none", "--pad-audio", "--audio", _silence(tmp_path), "--out", out)
    assert code == 0, output
    assert f"wrote {out} " in output and "largest gradient magnitude" in output
    assert out.read_bytes().startswith(b"\x89PNG")


def _silence(folder):
    from fad_edge.data.media import write_wav

    return write_wav(folder / "quiet.wav", np.zeros(8000, np.float32), 16000)


def test_a_title_with_dollar_signs_is_plain_text(tmp_path):
    path = save_saliency_figure(np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.float32), tmp_path / "s.png",
                                "take$^$1.mp4, frame 0 (motion)")
    assert path.read_bytes().startswith(b"\x89PNG")
