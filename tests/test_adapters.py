"""Dataset adapters on small fixture files written in the real datasets' layouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import run_cli

from fad_edge.data import layout
from fad_edge.data.adapters import l2l_to_ours, load_learning_to_listen
from fad_edge.data.media import write_video, write_wav
from fad_edge.data.vico import FOLDER_LAYOUT, convert_vico, read_flame
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


def _vico(root, clips: int = 2, frames: int = 24, bfm: bool = False, splits=("train", "val", "test")):
    """ViCo clips in per-split folders (`test_vico_layout.py` has its release layout)."""
    rng = np.random.default_rng(1)
    for split in splits:
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


def test_vico_clips_whose_video_ends_in_upper_case_mp4_are_converted_too(tmp_path):
    _vico(tmp_path / "vico")
    speaker = tmp_path / "vico" / "train" / "speaker"
    (speaker / "1.mp4").rename(speaker / "1.MP4")
    conversion = convert_vico(tmp_path / "vico", tmp_path / "ours")
    assert conversion.splits["train"] == ["train_0", "train_1"] and conversion.notes == []


def test_vico_converts_to_our_layout(tmp_path):
    _vico(tmp_path / "vico")
    conversion = convert_vico(tmp_path / "vico", tmp_path / "ours")
    assert conversion.layout == FOLDER_LAYOUT
    assert conversion.splits == {"train": ["train_0", "train_1"], "val": ["val_0", "val_1"],
                                 "test": ["test_0", "test_1"]}
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


def _assert_one_line_error(code: int, output: str, fragment: str) -> None:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in output and len(lines) == 1 and lines[0].startswith("error:"), output
    assert fragment in output.replace("\n", ""), output


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_reconversion_leaves_the_earlier_dataset_whole(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico")
    convert_vico(tmp_path / "vico", tmp_path / "ours")
    before = _files(tmp_path / "ours")
    np.save(tmp_path / "vico" / "train" / "listener_flame" / "0.npy", np.ones((24, 56), np.float32))
    truncated = tmp_path / "vico" / "test" / "listener_flame" / "1.npy"
    truncated.write_bytes(truncated.read_bytes()[:200])
    code, output = run_cli(monkeypatch, capsys, "convert-vico", "--src", tmp_path / "vico", "--out", tmp_path / "ours")
    _assert_one_line_error(code, output, "--overwrite")
    code, output = run_cli(monkeypatch, capsys, "convert-vico", "--src", tmp_path / "vico", "--out", tmp_path / "ours",
                           "--overwrite")
    _assert_one_line_error(code, output, f"{truncated}: not a readable .npy file")
    assert _files(tmp_path / "ours") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "vico"]  # no ours.new or ours.old left


def test_an_overwriting_conversion_replaces_the_dataset_whole(tmp_path):
    _vico(tmp_path / "vico")
    convert_vico(tmp_path / "vico", tmp_path / "ours")
    # A session of the earlier dataset that the new one lacks (no split lists it: a session by its meta.json).
    shutil.copytree(tmp_path / "ours" / "train_0", tmp_path / "ours" / "train_9")
    convert_vico(tmp_path / "vico", tmp_path / "ours", overwrite=True)
    assert "train_9" not in {p.name for p in (tmp_path / "ours").iterdir()}
    assert layout.read_splits(tmp_path / "ours")["train"] == ["train_0", "train_1"]


def test_synth_refuses_another_dataset_unless_overwrite_and_then_replaces_it_whole(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico", clips=1)
    convert_vico(tmp_path / "vico", tmp_path / "ours")
    before = _files(tmp_path / "ours")
    synth = ["synth", "--sessions", "3", "--seconds", "2", "--image-size", "32", "--out", tmp_path / "ours"]
    code, output = run_cli(monkeypatch, capsys, *synth)
    _assert_one_line_error(code, output, "holds a dataset; give another folder, or --overwrite to replace it")
    assert _files(tmp_path / "ours") == before
    code, output = run_cli(monkeypatch, capsys, *synth, "--overwrite")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [
        "session_000", "session_001", "session_002", "splits.json"]


def test_synth_never_replaces_a_folder_that_is_not_a_dataset(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, output = run_cli(monkeypatch, capsys, "synth", "--sessions", "3", "--seconds", "2", "--image-size", "32",
                           "--out", tmp_path / "mine", "--overwrite")
    _assert_one_line_error(code, output, "holds no dataset")
    assert _files(tmp_path / "mine") == {"notes.txt": b"keep me"}


def test_vico_flame_with_nan_is_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico")
    bad = tmp_path / "vico" / "test" / "speaker_flame" / "1.npy"
    flame = np.load(bad)
    flame[3, 7] = np.nan
    np.save(bad, flame)
    code, output = run_cli(monkeypatch, capsys, "convert-vico", "--src", tmp_path / "vico", "--out", tmp_path / "o")
    _assert_one_line_error(code, output, f"{bad}: contains NaN or infinite values")
    assert not (tmp_path / "o").exists()


def test_vico_audio_shorter_than_its_video_is_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico")
    short = tmp_path / "vico" / "train" / "audio" / "1.wav"
    write_wav(short, np.zeros(4800, np.float32), 48000)  # 0.1 s for a 0.8 s video
    code, output = run_cli(monkeypatch, capsys, "convert-vico", "--src", tmp_path / "vico", "--out", tmp_path / "o")
    _assert_one_line_error(code, output, f"{short}: audio is 0.10 s but the video is 0.80 s")


def test_l2l_parameters_with_nan_are_refused_at_load_naming_the_file(tmp_path, monkeypatch, capsys):
    _l2l(tmp_path, "conan", segments=4)
    bad = tmp_path / "conan" / "train" / "p0_list_faces_clean_deca.npy"
    array = np.load(bad)
    array[1, 5, 52] = np.nan
    np.save(bad, array)
    code, output = run_cli(monkeypatch, capsys, "baselines-l2l", "--data", tmp_path, "--channel", "conan",
                           "--out", tmp_path / "report")
    _assert_one_line_error(code, output, f"{bad}: contains NaN or infinite values")


def test_l2l_test_mels_of_another_width_are_refused_naming_both_shapes(tmp_path, monkeypatch, capsys):
    import shutil

    _l2l(tmp_path, "conan", segments=4)
    (tmp_path / "conan" / "test").unlink()
    shutil.copytree(tmp_path / "conan" / "train", tmp_path / "conan" / "test")
    audio = tmp_path / "conan" / "test" / "p1_speak_audio_clean_deca.npy"
    np.save(audio, np.zeros((4, 256, 80), np.float32))
    code, output = run_cli(monkeypatch, capsys, "baselines-l2l", "--data", tmp_path, "--channel", "conan",
                           "--out", tmp_path / "report")
    _assert_one_line_error(code, output, f"{audio}: mel spectrograms of shape (256, 80), but the train split's are "
                                         "(256, 128)")


def test_l2l_baselines_say_once_and_in_80_columns_that_there_is_no_video(tmp_path, monkeypatch, capsys):
    _l2l(tmp_path, "conan", segments=4)
    code, output = run_cli(monkeypatch, capsys, "baselines-l2l", "--data", tmp_path, "--channel", "conan",
                           "--out", tmp_path / "report")
    assert code == 0, output
    notes = [line for line in output.splitlines() if "no video" in line or "no raw video" in line]
    assert len(notes) == 1 and len(notes[0]) < 80, output


def _run_l2l(monkeypatch, capsys, root, *more) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, "baselines-l2l", "--data", root, "--channel", "conan",
                   "--out", root / "report", *more)


def test_l2l_speaker_frames_other_than_the_listeners_are_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    _l2l(tmp_path, "conan", segments=4)
    speaker = tmp_path / "conan" / "train" / "p1_speak_faces_clean_deca.npy"
    np.save(speaker, np.ascontiguousarray(np.load(speaker).transpose(0, 2, 1)))  # (N, 184, 64): 64 >= 56 passes
    code, output = _run_l2l(monkeypatch, capsys, tmp_path)
    _assert_one_line_error(code, output, f"{speaker}: speaker parameters have shape (4, 184, 64), 184 frames a "
                                         "segment, but the listener's p0_list_faces_clean_deca.npy has 64")


def test_l2l_scoring_on_the_split_the_baselines_fit_on_is_refused(tmp_path, monkeypatch, capsys):
    _l2l(tmp_path, "conan", segments=4)
    code, output = _run_l2l(monkeypatch, capsys, tmp_path, "--split", "train")
    _assert_one_line_error(code, output, "--split train: the baselines are fitted on train, so scoring them there "
                                         "is in-sample")
    assert not (tmp_path / "report.json").exists()


def test_l2l_a_split_without_segments_is_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    import shutil

    _l2l(tmp_path, "conan", segments=4)
    (tmp_path / "conan" / "test").unlink()
    shutil.copytree(tmp_path / "conan" / "train", tmp_path / "conan" / "test")
    for path in (tmp_path / "conan" / "test").glob("*.npy"):
        np.save(path, np.load(path)[:0])
    code, output = _run_l2l(monkeypatch, capsys, tmp_path)
    _assert_one_line_error(code, output, f"{tmp_path / 'conan' / 'test' / 'p0_list_faces_clean_deca.npy'}: "
                                         "listener parameters has shape (0, 64, 184): no segments")


def test_l2l_a_refusal_after_loading_is_one_line_without_the_no_video_note(tmp_path, monkeypatch, capsys):
    _l2l(tmp_path, "conan", segments=4, frames=32)  # loads, but shorter than the baselines' 64-frame window
    code, output = _run_l2l(monkeypatch, capsys, tmp_path)
    _assert_one_line_error(code, output, "no training session has 64 frames")


def test_l2l_an_absurd_coefficient_is_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    _l2l(tmp_path, "conan", segments=4)
    bad = tmp_path / "conan" / "train" / "p0_list_faces_clean_deca.npy"
    array = np.load(bad)
    array[0, 0, 3] = 1e38  # finite: passes a NaN check, then overflows the metrics to inf
    np.save(bad, array)
    code, output = _run_l2l(monkeypatch, capsys, tmp_path)
    _assert_one_line_error(code, output, f"{bad}: a coefficient of magnitude 1e+38, beyond 10000")


def test_l2l_columns_past_the_56_coefficients_are_not_bounded(tmp_path):
    _l2l(tmp_path, "conan", segments=2)
    path = tmp_path / "conan" / "train" / "p0_list_faces_clean_deca.npy"
    array = np.load(path)
    array[..., 150] = 1e6  # not a FLAME coefficient we read (DECA's camera, light, ...)
    np.save(path, array)
    assert len(load_learning_to_listen(tmp_path, "conan", "train")) == 2


def test_docs_say_learning_to_listen_feeds_no_model_and_how_to_reorder_deca():
    from pathlib import Path

    from fad_edge.data import adapters

    assert adapters.__doc__ is not None and "audio branch" not in adapters.__doc__
    contract = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert "np.concatenate([exp, pose[:, 3:6], pose[:, 0:3]], axis=1)" in contract
