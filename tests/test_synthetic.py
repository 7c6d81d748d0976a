"""The synthetic dyadic generator: determinism, the data contract, and that each listener rule holds."""

import hashlib

import numpy as np
import pytest

from fad_edge.constants import FPS, HEAD, SAMPLE_RATE
from fad_edge.data import layout, synthetic, synthetic_face
from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.data.synthetic_dataset import write_synthetic_dataset


@pytest.fixture(scope="module")
def session():
    return generate_session(7, SyntheticConfig(seconds=30, image_size=48))


def test_face_points_are_placed_as_one_point_at_a_time_would_place_them():
    """Drawing places all of a frame's points at once; each must land where its own matrix product puts it, to the
    bit (the datasets behind every published figure were drawn point by point)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        roll, size = rng.uniform(-0.6, 0.6), int(rng.choice([48, 96, 192]))
        rotation = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
        shift, centre = rng.uniform(-20, 20, 2), rng.uniform(0, size, 2)
        xy = rng.uniform(-0.5, 0.5, (31, 2))
        one_by_one = np.array([rotation @ (point * size + shift) + centre for point in xy])
        np.testing.assert_array_equal(synthetic_face.canvas_positions(xy, size, rotation, shift, centre), one_by_one)
        expected = [(int(round(x * 16)), int(round(y * 16))) for x, y in one_by_one]
        points = synthetic_face.canvas_points(xy, size, rotation, shift, centre)
        assert [tuple(map(int, p)) for p in points] == expected


def test_shapes_dtypes_and_alignment(session):
    n = 30 * FPS
    assert session.frames.shape == (n, 48, 48, 3) and session.frames.dtype == np.uint8
    assert session.audio.shape == (n * SAMPLE_RATE // FPS,) and session.audio.dtype == np.float32
    assert session.speaker.shape == session.listener.shape == (n, 56)
    assert all(0 <= lag <= 22 for lag in session.lags.values())
    assert np.abs(session.listener[:, :50]).max() < 4 and np.abs(session.listener[:, HEAD]).max() < 0.5


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.npy"))}

    write_synthetic_dataset(tmp_path / "a", sessions=3, seconds=3, seed=5, image_size=32)
    write_synthetic_dataset(tmp_path / "b", sessions=3, seconds=3, seed=5, image_size=32)
    write_synthetic_dataset(tmp_path / "c", sessions=3, seconds=3, seed=6, image_size=32)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_worker_processes_write_the_same_bytes(tmp_path, monkeypatch):
    import fad_edge.data.synthetic_dataset as synthetic_dataset

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    started = []
    real_pool = synthetic_dataset.ProcessPoolExecutor

    def pool(*args, **kwargs):
        started.append(args)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(synthetic_dataset, "ProcessPoolExecutor", pool)
    monkeypatch.setattr(synthetic_dataset, "PARALLEL_MIN_SECONDS", 0.0)
    write_synthetic_dataset(tmp_path / "one", sessions=3, seconds=2, seed=5, image_size=32, workers=1)
    assert not started
    write_synthetic_dataset(tmp_path / "two", sessions=3, seconds=2, seed=5, image_size=32, workers=2)
    assert started == [(2,)]
    assert digest(tmp_path / "one") == digest(tmp_path / "two") and len(digest(tmp_path / "one")) > 10


def _lagged_correlation(a, b, lag):
    return np.corrcoef(a[: len(a) - lag], b[lag:])[0, 1]


def test_head_follows_the_speaker_yaw_with_its_lag(session):
    yaw_speaker, yaw_listener = session.speaker[:, HEAD.start + 1], session.listener[:, HEAD.start + 1]
    curve = [_lagged_correlation(yaw_speaker, yaw_listener, lag) for lag in range(0, 40)]
    assert abs(int(np.argmax(curve)) - session.lags["head"]) <= 2
    assert max(curve) > 0.9


def test_listener_smile_mirrors_the_speaker_smile(session):
    basis = synthetic._basis(synthetic._LISTENER_BASIS_SEED, 5, np.ones(5))
    factors = np.linalg.lstsq(basis, session.listener[:, :50].T, rcond=None)[0].T  # recover the listener factors
    speaker_basis = synthetic._basis(synthetic._SPEAKER_BASIS_SEED, 6, np.ones(6))
    speaker_factors = np.linalg.lstsq(speaker_basis, session.speaker[:, :50].T, rcond=None)[0].T
    curve = [_lagged_correlation(speaker_factors[:, 0], factors[:, 0], lag) for lag in range(0, 40)]
    assert abs(int(np.argmax(curve)) - session.lags["smile"]) <= 3
    assert max(curve) > 0.8


def test_nods_follow_only_pauses_after_falling_pitch():
    rng = np.random.default_rng(3)
    speech = synthetic._speech(rng, 60 * FPS)
    rising = [frame for frame, up in speech.pauses if up]
    falling = [frame for frame, up in speech.pauses if not up]
    assert rising and falling
    session = generate_session(11, SyntheticConfig(seconds=60, image_size=32))
    # Re-derive the pauses of that session with the same RNG draws the generator made first.
    pauses = synthetic._speech(np.random.default_rng(11), 60 * FPS).pauses
    pitch = session.listener[:, HEAD.start]
    lag = session.lags["nod"]
    energy = lambda frame: float(np.abs(pitch[frame + lag : frame + lag + 20]).max())  # noqa: E731
    after_falling = [energy(f) for f, up in pauses if not up and f + lag + 20 < len(pitch)]
    after_rising = [energy(f) for f, up in pauses if up and f + lag + 20 < len(pitch)]
    assert np.mean(after_falling) > 0.08 > np.mean(after_rising)


def test_speech_is_silent_in_pauses(session):
    rng = np.random.default_rng(7)
    speech = synthetic._speech(rng, 30 * FPS)
    frame_energy = np.array([np.abs(session.audio[i * 533 : (i + 1) * 533]).mean() for i in range(30 * FPS)])
    assert frame_energy[~speech.active].mean() < 0.1 * frame_energy[speech.active].mean()


def test_each_pause_begins_in_the_frame_after_the_speech_stops():
    """Reactions are timed from the pause: it must start where the speaker is heard to stop, not before or after."""
    speech = synthetic._speech(np.random.default_rng(5), 90 * FPS)
    voiced_frames = np.unique(np.nonzero(speech.envelope > 0)[0] * FPS // SAMPLE_RATE)
    assert len(speech.pauses) > 10
    for frame, _ in speech.pauses:
        # Silences last at least 0.18 s: nothing is voiced in the 5 frames from the pause's first one.
        last_voiced = voiced_frames[voiced_frames < frame + 5].max()
        assert last_voiced == frame - 1
        assert speech.active[frame - 1] and not speech.active[frame]


def test_alternative_listeners_react_to_the_same_speaker_as_other_people():
    config = SyntheticConfig(seconds=30, image_size=32)
    plain = generate_session(7, config)
    session = generate_session(7, config, alternatives=3)
    # asking for alternatives changes nothing else
    for name in ("frames", "audio", "speaker", "listener"):
        np.testing.assert_array_equal(getattr(session, name), getattr(plain, name))
    assert plain.alternatives is None and session.alternatives.shape == (3, 30 * FPS, 56)
    np.testing.assert_array_equal(synthetic.alternative_listeners(7, 3, config), session.alternatives)
    np.testing.assert_array_equal(synthetic.alternative_listeners(7, 2, config), session.alternatives[:2])
    others = [session.listener, *session.alternatives]
    assert all(not np.allclose(a, b) for i, a in enumerate(others) for b in others[i + 1 :])  # other identities
    yaw_speaker = session.speaker[:, HEAD.start + 1]
    for alternative in session.alternatives:  # each follows this speaker's head, as the real listener does
        curve = [_lagged_correlation(yaw_speaker, alternative[:, HEAD.start + 1], lag) for lag in range(40)]
        assert max(curve) > 0.9 and 8 <= int(np.argmax(curve)) <= 16  # head lag 12 +- 2 jitter +- smoothing
    other_speaker = generate_session(8, config, alternatives=1)
    assert not np.allclose(other_speaker.alternatives[0], session.alternatives[0])


def test_the_dataset_writes_alternatives_without_changing_the_other_files(tmp_path):
    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.npy"))}

    write_synthetic_dataset(tmp_path / "with", sessions=3, seconds=3, seed=5, image_size=32, alternatives=2)
    write_synthetic_dataset(tmp_path / "without", sessions=3, seconds=3, seed=5, image_size=32, alternatives=0)
    with_alternatives, without = digest(tmp_path / "with"), digest(tmp_path / "without")
    extra = {name for name in with_alternatives if name.endswith(layout.LISTENER_ALTERNATIVES)}
    assert len(extra) == 3 and {k: v for k, v in with_alternatives.items() if k not in extra} == without
    loaded = layout.load_listener_alternatives(tmp_path / "with" / "session_000", 80)
    assert loaded is not None and loaded.shape == (2, 80, 56)
    assert layout.load_listener_alternatives(tmp_path / "without" / "session_000", 80) is None


@pytest.mark.parametrize("seconds", [0.3, 0.5])
def test_a_session_shorter_than_the_listeners_lags_is_whole(seconds):
    """The library call has no CLI minimum: a session shorter than a reaction lag is all first-value motion
    for that rule, and still one listener frame per video frame."""
    short = generate_session(3, SyntheticConfig(seconds=seconds, image_size=32))
    assert len(short.listener) == len(short.frames) == round(seconds * FPS)
    assert np.all(np.isfinite(short.listener))


def test_the_memory_check_counts_every_session_drawn_side_by_side():
    from fad_edge.data.synthetic_dataset import PARALLEL_MIN_SECONDS, check_synthetic_size, drawn_at_once
    from fad_edge.errors import DataError

    assert drawn_at_once(8, 300.0, workers=4) == 4 and drawn_at_once(3, 300.0, workers=16) == 3
    assert drawn_at_once(3, PARALLEL_MIN_SECONDS / 4, workers=4) == 1  # written in-process, one at a time
    check_synthetic_size(600.0, 128)  # 0.9 GB: one fits
    with pytest.raises(DataError, match="600 s at 128 px, 10000 at once"):
        check_synthetic_size(600.0, 128, at_once=10000)  # 8.8 TB
