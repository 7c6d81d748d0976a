"""Dataset adapters on small fixture files written in the real datasets' layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli

from fad_edge.data import layout
from fad_edge.data.adapters import convert_vico, l2l_to_ours, load_learning_to_listen, read_flame
from fad_edge.data.media import write_video, write_wav
from fad_edge.errors import DataError


def _l2l(root, channel: str, segments: int = 3, frames: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder = root / channel / "train"
    folder.mkdir(parents=True)
    k = 1 if channel == "fallon" else 0
    arrays = {}
    for person in (0, 1):
        for role in ("list", "speak"):
            array = rng.standard_normal((segments, frames, 184)).astype(np.float32)
            array[..., 50:53] = 10 + person  # head pose marker
            array[..., 53:56] = 20 + person  # jaw marker
            np.save(folder / f"p{person}_{role}_faces_clean_deca.npy", array)
            arrays[(person, role)] = array
        np.save(folder / f"p{person}_speak_audio_clean_deca.npy",
                rng.standard_normal((segments, 4 * frames, 128)).astype(np.float32))
    (root / channel / "test").symlink_to(folder)
    return arrays, k


@pytest.mark.parametrize("channel", ["conan", "fallon"])
def test_learning_to_listen_reorders_and_pairs(tmp_path, channel):
    arrays, k = _l2l(tmp_path, channel)
    sequences = load_learning_to_listen(tmp_path, channel, "train")
    assert len(sequences) == 3
    first = sequences[0]
    assert first.listener.shape == (64, 56) and first.mel.shape == (256, 128)
    # listener is person k, speaker the other; ours is [exp, jaw, head]
    assert np.all(first.listener[:, 50:53] == 20 + k) and np.all(first.listener[:, 53:56] == 10 + k)
    assert np.all(first.speaker[:, 50:53] == 21 - k) and np.all(first.speaker[:, 53:56] == 11 - k)
    np.testing.assert_array_equal(first.listener[:, :50], arrays[(k, "list")][0, :, :50])


def test_l2l_reorder_is_a_permutation():
    x = np.arange(60, dtype=np.float32)
    ours = l2l_to_ours(x)
    assert list(ours[50:]) == [53, 54, 55, 50, 51, 52]


def test_l2l_baselines_command(tmp_path, monkeypatch, capsys):
    _l2l(tmp_path, "conan", segments=4)
    code, output = run_cli(monkeypatch, capsys, "baselines-l2l", "--data", tmp_path, "--channel", "conan",
                           "--out", tmp_path / "report")
    assert code == 0, output
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"Median", "Mirror", "NN audio", "GT"} <= set(report["rows"])


def test_l2l_missing_file_is_named(tmp_path):
    (tmp_path / "conan" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match="p0_list_faces_clean_deca.npy"):
        load_learning_to_listen(tmp_path, "conan", "test")


def _vico(root, clips: int = 2, frames: int = 24, bfm: bool = False):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for name in ("speaker", "audio", "listener_flame", "speaker_flame"):
            (root / split / name).mkdir(parents=True)
        for i in range(clips):
            write_video(root / split / "speaker" / f"{i}.mp4",
                        rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8), 30)
            write_wav(root / split / "audio" / f"{i}.wav",
                      0.1 * rng.standard_normal(frames * 1600).astype(np.float32), 48000)
            width = 70 if bfm else 56
            flame = rng.standard_normal((frames, width)).astype(np.float32)
            np.save(root / split / "listener_flame" / f"{i}.npy", flame)
            np.save(root / split / "speaker_flame" / f"{i}.npy", rng.standard_normal((frames, 56)).astype(np.float32))


def test_vico_converts_to_our_layout(tmp_path):
    _vico(tmp_path / "vico")
    splits = convert_vico(tmp_path / "vico", tmp_path / "ours")
    assert splits == {"train": ["train_0", "train_1"], "test": ["test_0", "test_1"]}
    session = layout.load_session(tmp_path / "ours" / "train_0", None)
    raw = np.load(tmp_path / "vico" / "train" / "listener_flame" / "0.npy")
    np.testing.assert_allclose(session.listener[:, 50:53], raw[:, 53:56])  # jaw
    np.testing.assert_allclose(session.listener[:, 53:56], raw[:, 50:53])  # head
    assert session.frames.shape[0] == 24


def test_vico_bfm_files_are_refused_with_a_clear_message(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico", bfm=True)
    with pytest.raises(DataError, match="BFM"):
        read_flame(tmp_path / "vico" / "train" / "listener_flame" / "0.npy")
    code, output = run_cli(monkeypatch, capsys, "convert-vico", "--src", tmp_path / "vico", "--out", tmp_path / "o")
    assert code == 2 and "BFM" in output and "Traceback" not in output
