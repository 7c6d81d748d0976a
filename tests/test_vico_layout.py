"""convert-vico on ViCo as it is distributed: split CSVs, flat videos/ and audios/, FLAME files by uuid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli
from test_adapters import _assert_one_line_error, _vico

from fad_edge.data import layout
from fad_edge.data.media import write_video, write_wav
from fad_edge.data.vico import RELEASE_LAYOUT, ValSplit, carve_val_split, find_vico_clips
from fad_edge.errors import DataError

HEADER = "video_id,uuid,speaker_id,listener_id"
# Speakers of each split's clips, one entry per clip.
SPEAKERS = {"train": ["s1", "s2"], "val": ["s3"], "test": ["s4"]}


def _release(root, speakers=SPEAKERS, frames: int = 24, media: bool = True) -> dict[str, list[str]]:
    """ViCo's release layout under `root`; the uuids of each split. `media=False` writes the CSVs only."""
    rng = np.random.default_rng(2)
    for folder in ("videos", "audios", "listener_flame"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    uuids: dict[str, list[str]] = {}
    for split, ids in speakers.items():
        uuids[split] = [f"{split}{i:02d}q7x" for i in range(len(ids))]
        rows = [f"v{i},{uuid},{speaker},l{i}" for i, (uuid, speaker) in enumerate(zip(uuids[split], ids))]
        (root / f"{split}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
        for uuid in uuids[split] if media else []:
            for role, side in (("speaker", 32), ("listener", 48)):  # two sizes: which one was read shows
                write_video(root / "videos" / f"{uuid}.{role}.mp4",
                            rng.integers(0, 255, (frames, side, side, 3), np.uint8), 30)
            write_wav(root / "audios" / f"{uuid}.wav", 0.1 * rng.standard_normal(frames * 1600).astype(np.float32),
                      48000)
            np.save(root / "listener_flame" / f"{uuid}.npy", rng.standard_normal((frames, 56)).astype(np.float32))
    return uuids


def _convert(monkeypatch, capsys, src, out, *more) -> tuple[int, str]:
    return run_cli(monkeypatch, capsys, "convert-vico", "--src", src, "--out", out, *more)


def test_the_release_layout_converts_with_the_speaker_video_and_the_csv_speaker(tmp_path, monkeypatch, capsys):
    uuids = _release(tmp_path / "vico")
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    assert code == 0, output
    assert "(train 2, val 1, test 1) from ViCo's release layout" in " ".join(output.split()), output
    assert layout.read_splits(tmp_path / "ours") == {split: [f"{split}_{uuid}" for uuid in names]
                                                     for split, names in uuids.items()}
    session = layout.load_session(tmp_path / "ours" / f"train_{uuids['train'][1]}", None)
    assert session.frames.shape[1:3] == (32, 32)  # the speaker's video, not the listener's 48 px one
    assert session.meta["speaker"] == "s2"
    raw = np.load(tmp_path / "vico" / "listener_flame" / f"{uuids['train'][1]}.npy")
    np.testing.assert_allclose(session.listener[:, 50:53], raw[:, 53:56])  # jaw
    np.testing.assert_allclose(session.listener[:, 53:56], raw[:, 50:53])  # head


def test_the_listener_video_is_never_opened(tmp_path, monkeypatch, capsys):
    uuids = _release(tmp_path / "vico")
    for uuid in sum(uuids.values(), []):
        (tmp_path / "vico" / "videos" / f"{uuid}.listener.mp4").write_bytes(b"not a video")
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    assert code == 0, output


@pytest.mark.parametrize("kind", ["video", "audio", "flame"])
def test_a_listed_clip_whose_file_is_missing_is_refused_naming_it(tmp_path, monkeypatch, capsys, kind):
    uuid = _release(tmp_path / "vico")["test"][0]
    missing = {"video": tmp_path / "vico" / "videos" / f"{uuid}.speaker.mp4",
               "audio": tmp_path / "vico" / "audios" / f"{uuid}.wav",
               "flame": tmp_path / "vico" / "listener_flame" / f"{uuid}.npy"}[kind]
    missing.unlink()
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, f"{missing}: file not found, for clip {uuid} listed in "
                                         f"{tmp_path / 'vico' / 'test.csv'}")
    assert not (tmp_path / "ours").exists()


def test_a_split_csv_of_another_name_is_refused_naming_what_was_found_and_expected(tmp_path, monkeypatch, capsys):
    _release(tmp_path / "vico", media=False)
    (tmp_path / "vico" / "val.csv").rename(tmp_path / "vico" / "valid.csv")
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, "found test.csv, train.csv, valid.csv; expected split names train.csv, "
                                         "val.csv, test.csv (rename valid.csv")


def test_a_split_folder_of_another_name_is_refused(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico", clips=1, splits=("train", "valid", "test"))
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, "found test/, train/, valid/; expected split names train/, val/, test/")


def test_a_misnamed_subfolder_is_refused_not_written_as_an_empty_split(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico", clips=1)
    (tmp_path / "vico" / "test" / "speaker").rename(tmp_path / "vico" / "test" / "videos")
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, f"{tmp_path / 'vico' / 'test'}: no clips in speaker/*.mp4 (found audio/, "
                                         "listener_flame/, speaker_flame/, videos/); expected speaker/<id>.mp4")


def test_a_split_csv_listing_no_clips_is_refused(tmp_path, monkeypatch, capsys):
    _release(tmp_path / "vico", media=False)
    (tmp_path / "vico" / "test.csv").write_text(HEADER + "\n")
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, f"{tmp_path / 'vico' / 'test.csv'}: lists no clips")


@pytest.mark.parametrize("rows, fragment", [
    ("video_id,uuid,listener_id\nv0,abc,l0\n", "no column speaker_id (found video_id, uuid, listener_id)"),
    (f"{HEADER}\nv0,../abc,s1,l0\n", "line 2 has uuid '../abc'"),
    (f"{HEADER}\nv0,,s1,l0\n", "line 2 has uuid ''"),
])
def test_a_malformed_split_csv_is_refused_naming_it(tmp_path, monkeypatch, capsys, rows, fragment):
    _release(tmp_path / "vico", media=False)
    (tmp_path / "vico" / "train.csv").write_text(rows)
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, f"{tmp_path / 'vico' / 'train.csv'}: {fragment}")


def test_a_clip_listed_in_two_splits_is_refused(tmp_path):
    uuids = _release(tmp_path / "vico", media=False)
    with (tmp_path / "vico" / "test.csv").open("a") as handle:
        handle.write(f"v9,{uuids['train'][0]},s1,l9\n")
    with pytest.raises(DataError, match=f"train.csv: lists clip {uuids['train'][0]} also in test.csv; each clip"):
        find_vico_clips(tmp_path / "vico")


def test_a_missing_val_split_is_refused_saying_how_to_carve_one(tmp_path, monkeypatch, capsys):
    speakers = {"train": ["s1", "s1", "s2", "s3"], "test": ["s4"]}
    _release(tmp_path / "vico", speakers)
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, "no val split (found test.csv, train.csv); expected train, val and test: "
                                         "give --val-fraction")
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours", "--val-fraction", "0.2")
    assert code == 0, output
    splits = layout.read_splits(tmp_path / "ours")
    assert len(splits["val"]) >= 1 and len(splits["train"]) + len(splits["val"]) == 4
    speaker_of = {name: json.loads((tmp_path / "ours" / name / "meta.json").read_text())["speaker"]
                  for names in splits.values() for name in names}
    train, val = ({speaker_of[name] for name in splits[split]} for split in ("train", "val"))
    assert train and val and not train & val


def test_val_fraction_moves_whole_speakers_the_same_way_for_a_seed_and_never_a_test_speaker(tmp_path):
    train_speakers = [f"s{i % 9}" for i in range(40)]  # 9 speakers, 4-5 clips each
    _release(tmp_path / "vico", {"train": train_speakers, "test": ["s0", "s1", "x"]}, media=False)
    clips = find_vico_clips(tmp_path / "vico")
    assert clips.layout == RELEASE_LAYOUT
    carved = carve_val_split(clips, ValSplit(0.25, seed=3))
    assert carved == carve_val_split(clips, ValSplit(0.25, seed=3))
    speakers = {split: {clip.speaker_id for clip in carved.splits[split]} for split in ("train", "val", "test")}
    assert not speakers["val"] & speakers["train"] and not speakers["val"] & speakers["test"]
    assert 10 <= len(carved.splits["val"]) < 15 and len(carved.splits["train"]) + len(carved.splits["val"]) == 40
    assert {clip.split for clip in carved.splits["val"]} == {"val"}
    others = {frozenset(c.clip_id for c in carve_val_split(clips, ValSplit(0.25, seed)).splits["val"])
              for seed in range(6)}
    assert len(others) > 1  # the seed chooses


@pytest.mark.parametrize("speakers, fraction, fragment", [
    ({"train": ["s1", "s2"], "test": ["s1", "s2"]}, 0.5, "train has 2 speakers, 0 of them not in test"),
    ({"train": ["s1", "s1"], "test": ["s2"]}, 0.5, "would move all 1 of train's speakers to val"),
    ({"train": ["s1", "s2", "s3"], "test": ["s4"]}, 0.99, "would move all 3 of train's speakers to val"),
    (SPEAKERS, 0.5, "has a val split already (test.csv, train.csv, val.csv); drop --val-fraction"),
])
def test_val_fraction_is_refused_where_it_cannot_carve_by_speaker(tmp_path, speakers, fraction, fragment):
    _release(tmp_path / "vico", speakers, media=False)
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        carve_val_split(find_vico_clips(tmp_path / "vico"), ValSplit(fraction, seed=0))


def test_val_fraction_is_refused_in_per_split_folders_which_have_no_speaker_ids(tmp_path, monkeypatch, capsys):
    _vico(tmp_path / "vico", clips=1, splits=("train", "test"))
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours", "--val-fraction", "0.5")
    _assert_one_line_error(code, output, "--val-fraction splits by speaker, which only ViCo's release CSVs give")


def test_an_absurd_flame_value_is_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    uuid = _release(tmp_path / "vico")["val"][0]
    bad = tmp_path / "vico" / "listener_flame" / f"{uuid}.npy"
    flame = np.load(bad)
    flame[5, 2] = 1e38  # finite, but its square overflows float32
    np.save(bad, flame)
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    _assert_one_line_error(code, output, f"{bad}: a coefficient of magnitude 1e+38, beyond 10000")


def test_real_world_deviations_convert_with_notes_or_are_refused_whole(tmp_path, monkeypatch, capsys):
    """A header with spaces after its commas, FLAME one frame longer than the video, stereo in opposite phase
    and audio far longer than the video: converted, with notes. Speaker FLAME for some clips only: refused."""
    uuids = _release(tmp_path / "vico")
    first = uuids["train"][0]
    for split in SPEAKERS:
        table = tmp_path / "vico" / f"{split}.csv"
        table.write_text(table.read_text().replace(HEADER, HEADER.replace(",", ", ")))
    flame = tmp_path / "vico" / "listener_flame" / f"{first}.npy"
    np.save(flame, np.concatenate([np.load(flame), np.load(flame)[-1:]]))  # 25 rows for 24 frames
    tone = (0.3 * np.sin(np.arange(48000 * 3) / 7)).astype(np.float32)
    write_wav(tmp_path / "vico" / "audios" / f"{first}.wav", np.stack([tone, -tone], axis=1), 48000)
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "ours")
    assert code == 0, output
    text = " ".join(output.split())
    assert "cancel each other out" in text and "3.0 s of audio for 0.8 s of video" in text
    assert "also in train" not in text  # SPEAKERS: each split its own people
    session = layout.load_session(tmp_path / "ours" / f"train_{first}", None)
    assert len(session.listener) == len(session.frames) == 24
    (tmp_path / "vico" / "speaker_flame").mkdir()
    np.save(tmp_path / "vico" / "speaker_flame" / f"{first}.npy", np.zeros((24, 56), np.float32))
    code, output = _convert(monkeypatch, capsys, tmp_path / "vico", tmp_path / "other")
    _assert_one_line_error(code, output, "give every clip's, or none")
    assert not (tmp_path / "other").exists()


def test_speakers_of_test_also_in_train_are_noted(tmp_path):
    from fad_edge.data.vico import convert_vico

    _release(tmp_path / "vico", {"train": ["s1", "s2"], "val": ["s3"], "test": ["s2"]})
    conversion = convert_vico(tmp_path / "vico", tmp_path / "ours")
    assert conversion.notes == ["1 speaker(s) of test are also in train (e.g. s2): its figures on their clips are "
                                "not of new speakers"]
