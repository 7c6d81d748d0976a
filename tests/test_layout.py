"""Our dataset layout: round trip, and a clear error naming the file for every kind of bad input."""

import json

import numpy as np
import pytest

from fad_edge.data import layout
from fad_edge.errors import DataError


def _write(folder, frames=30, audio_seconds=1.0, listener_rows=30, rate=16_000):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(int(audio_seconds * rate))).astype(np.float32)
    listener = rng.standard_normal((listener_rows, 56)).astype(np.float32)
    layout.write_session(folder, video, audio, rate, listener, listener * 0.5, source="test")
    return listener


def test_round_trip(tmp_path):
    listener = _write(tmp_path / "s")
    session = layout.load_session(tmp_path / "s", image_size=16)
    assert session.frames.shape == (30, 16, 16, 3) and session.frames.dtype == np.uint8
    np.testing.assert_array_equal(session.listener, listener)
    np.testing.assert_allclose(session.speaker, listener * 0.5)
    assert session.sample_rate == 16_000 and session.meta["source"] == "test"


def test_one_frame_difference_is_trimmed(tmp_path):
    _write(tmp_path / "s", listener_rows=31)
    assert len(layout.load_session(tmp_path / "s").listener) == 30


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda f: (f / layout.VIDEO).unlink(), "speaker.mp4: video file not found"),
        (lambda f: (f / layout.VIDEO).write_bytes(b"not a video at all" * 50), "speaker.mp4"),
        (lambda f: (f / layout.AUDIO).write_bytes(b"RIFF garbage"), "speaker.wav: not a readable audio"),
        (lambda f: np.save(f / layout.LISTENER, np.zeros((30, 55), np.float32)), "expected shape"),
        (lambda f: np.save(f / layout.LISTENER, np.full((30, 56), np.nan, np.float32)), "NaN"),
        (lambda f: (f / layout.LISTENER).write_bytes(b"\x93NUMPY garbage"), "listener_coeffs.npy: not a readable"),
        (lambda f: (f / layout.META).write_text("{oops"), "meta.json: not valid JSON"),
    ],
)
def test_bad_files_name_themselves(tmp_path, damage, message):
    _write(tmp_path / "s")
    damage(tmp_path / "s")
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        layout.load_session(tmp_path / "s")


def test_audio_shorter_than_the_video(tmp_path):
    _write(tmp_path / "s", audio_seconds=0.5)
    with pytest.raises(DataError, match=r"audio is 0\.50 s but the video is 1\.00 s"):
        layout.load_session(tmp_path / "s")


def test_wrong_sample_rate_says_to_resample(tmp_path):
    _write(tmp_path / "s", rate=44_100)
    with pytest.raises(DataError, match="resample"):
        layout.load_session(tmp_path / "s")


def test_listener_rows_far_from_the_frame_count(tmp_path):
    _write(tmp_path / "s", listener_rows=20)
    with pytest.raises(DataError, match="20 rows but the video has 30 frames"):
        layout.load_session(tmp_path / "s")


def test_splits(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "b")
    layout.write_splits(tmp_path, {"train": ["a"], "val": [], "test": ["b"]})
    assert layout.list_sessions(tmp_path, "train") == [tmp_path / "a"]
    with pytest.raises(DataError, match="empty"):
        layout.list_sessions(tmp_path, "val")
    with pytest.raises(DataError, match="no split named"):
        layout.list_sessions(tmp_path, "bogus")
    (tmp_path / layout.SPLITS).write_text(json.dumps({"train": ["missing"]}))
    with pytest.raises(DataError, match="missing"):
        layout.read_splits(tmp_path)


@pytest.mark.parametrize("listed", [5, None, ["a"], ""])
def test_a_split_listing_a_non_name_is_refused_naming_the_split(tmp_path, listed):
    _write(tmp_path / "a")
    (tmp_path / layout.SPLITS).write_text(json.dumps({"train": ["a"], "val": ["a"], "test": [listed]}))
    with pytest.raises(DataError, match=r"splits\.json: split 'test' lists .*not a session folder name"):
        layout.read_splits(tmp_path)


@pytest.mark.parametrize("fps", ["abc", None, [30], True, "nan"])
def test_a_meta_fps_that_is_not_a_number_is_refused_naming_the_field(tmp_path, fps):
    _write(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / layout.META).read_text())
    (tmp_path / "s" / layout.META).write_text(json.dumps({**meta, "fps": fps}))
    with pytest.raises(DataError, match=r"meta\.json: field 'fps' is .*not a number"):
        layout.load_session(tmp_path / "s")


def test_a_meta_fps_written_as_text_of_30_still_reads(tmp_path):
    _write(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / layout.META).read_text())
    (tmp_path / "s" / layout.META).write_text(json.dumps({**meta, "fps": "30"}))
    assert len(layout.load_session(tmp_path / "s").listener) == 30


def test_a_dataset_target_must_be_new_empty_or_a_dataset_to_overwrite(tmp_path):
    assert layout.check_dataset_target(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    layout.check_dataset_target(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="not empty and holds no dataset"):
            layout.check_dataset_target(tmp_path / "other", overwrite)
    _write(tmp_path / "data" / "a")
    layout.write_splits(tmp_path / "data", {"train": ["a"], "val": ["a"], "test": ["a"]})
    with pytest.raises(DataError, match="holds a dataset; give another folder, or --overwrite to replace it"):
        layout.check_dataset_target(tmp_path / "data")
    layout.check_dataset_target(tmp_path / "data", overwrite=True)
    with pytest.raises(DataError, match="give the dataset folder a name"):
        layout.check_dataset_target(tmp_path / "data" / "..", overwrite=True)
    # Its own: splits.json, the sessions, the feature cache, a session no split lists yet. Anything else
    # (a run trained inside it, notes) would go with the folder, so overwriting is refused.
    (tmp_path / "data" / layout.CACHE_DIR).mkdir()
    _write(tmp_path / "data" / "b")
    layout.check_dataset_target(tmp_path / "data", overwrite=True)
    for foreign in ("NOTES.md", "runs"):
        (tmp_path / "data" / foreign).mkdir()
        with pytest.raises(DataError, match=f"holds '{foreign}', which is not part of its dataset"):
            layout.check_dataset_target(tmp_path / "data", overwrite=True)
        (tmp_path / "data" / foreign).rmdir()
    (tmp_path / "data" / layout.SPLITS).write_text("{broken")  # still a dataset by its sessions
    layout.check_dataset_target(tmp_path / "data", overwrite=True)


def test_a_failed_staged_dataset_leaves_the_earlier_one_as_it_was(tmp_path):
    _write(tmp_path / "data" / "a")
    layout.write_splits(tmp_path / "data", {"train": ["a"], "val": ["a"], "test": ["a"]})
    before = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match="halfway"), layout.staged_dataset(tmp_path / "data", True) as staging:
        (staging / "b").mkdir()
        layout.write_splits(staging, {"train": ["b"], "val": ["b"], "test": ["b"]})
        raise DataError("halfway")
    after = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("splits, message", [
    ({"train": ["s", "s"], "val": ["v"], "test": ["t"]}, "lists session 's' twice in 'train'"),
    ({"train": ["s", "t"], "val": ["v"], "test": ["t"]}, "lists session 't' in both 'train' and 'test'"),
])
def test_a_session_listed_twice_or_in_two_splits_is_refused(tmp_path, splits, message):
    for name in ("s", "v", "t"):
        (tmp_path / name).mkdir()
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(DataError, match=message):
        layout.read_splits(tmp_path)


def test_sessions_shorter_than_a_window_name_themselves_and_what_to_change():
    from fad_edge.data.dataset import ClipDataset, SessionFeatures
    from fad_edge.data.normalization import Normalization

    sessions = [SessionFeatures(f"short_{k}", np.zeros((20, 4, 4, 3), np.uint8), np.zeros((80, 80), np.float32),
                                np.zeros((20, 56), np.float32), None) for k in range(2)]
    with pytest.raises(DataError, match=r"no window of 32 frames \(4 clips\) fits in the sessions short_0, short_1 "
                                        r"\(the longest has 20 frames\).*--clips-per-item"):
        ClipDataset(sessions, Normalization.identity(), audio_window_frames=2, clips_per_item=4)
    short = [SessionFeatures("tiny_0", np.zeros((5, 4, 4, 3), np.uint8), np.zeros((20, 80), np.float32),
                             np.zeros((5, 56), np.float32), None)]
    with pytest.raises(DataError, match=r"no window of 8 frames \(one clip\) fits in the val split's sessions tiny_0 "
                                        r"\(the longest has 5 frames\); give longer sessions$"):
        ClipDataset(short, Normalization.identity(), audio_window_frames=2, split="val")  # validation: one clip


@pytest.mark.parametrize(("value", "message"), [(np.nan, "NaN or infinite"), (1e38, "magnitude 1e\\+38")])
def test_coefficients_that_are_not_finite_or_absurd_are_refused_naming_the_file(tmp_path, value, message):
    path = tmp_path / layout.LISTENER
    coefficients = np.zeros((30, 56), np.float32)
    coefficients[3, 7] = value
    np.save(path, coefficients)
    with pytest.raises(DataError, match=f"{path}: .*{message}"):
        layout.load_coefficients(path)
    coefficients[3, 7] = -9.5e3  # large, but a value a coefficient may have
    np.save(path, coefficients)
    assert layout.load_coefficients(path)[3, 7] == pytest.approx(-9.5e3)


def test_a_dataset_whose_feature_cache_cannot_be_written_still_loads_the_same_features(tmp_path, monkeypatch):
    """A dataset on a read-only (or full) disk: the cache is skipped, and the features equal a cached load's."""
    import errno

    from fad_edge.data import dataset
    from fad_edge.data.synthetic import SyntheticConfig, generate_session

    session = generate_session(2, SyntheticConfig(seconds=1.0, image_size=32))
    folder = layout.write_session(tmp_path / "data" / "s", session.frames, session.audio, 16000, session.listener)
    cached = dataset.load_features(folder, 32, 80)
    assert (tmp_path / "data" / dataset.CACHE_DIR).is_dir()

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(dataset, "atomic_write_bytes", read_only)
    monkeypatch.setattr(dataset, "CACHE_DIR", "elsewhere")  # not cached yet there: the write is attempted
    uncached = dataset.load_features(folder, 32, 80)
    assert np.array_equal(uncached.mel, cached.mel) and np.array_equal(uncached.frames, cached.frames)
