"""A procedural dyadic dataset in which the listener truly reacts to what the speaker shows and says.

No real dyadic dataset can be downloaded where fad-edge is developed and tested, so this generator
stands in for one. Everything is drawn from `numpy.random.default_rng(seed)`:
the same seed gives the same bytes of every .npy file.

The speaker
    Phrases scheduled 1.5-4 s long, 0.4-1.5 s apart; inside a phrase, syllables at 3-6 Hz make the
    speech envelope. A phrase ends with its last syllable (within 0.22 s of its scheduled end, so the
    silences last 0.18-1.72 s), and each pause begins in the frame after the speech is last heard: the
    reactions timed from it can be timed from what a listener hears. Each phrase has a pitch contour
    around the session's base pitch (100-220 Hz) and ends either RISING (+35% over its last 0.5 s) or
    FALLING (-25%), at random. Independent of speech:
    smile events (0-1, 1.5-4 s long, ~6 a minute), brow raises (~3 a minute), blinks every 2-6 s, and
    a head rotation made of slow sinusoids (yaw +-0.25, pitch +-0.12, roll +-0.06 rad).
    Speaker coefficients (T, 56): expression = a fixed mixing of [smile, brow, blink, mouth, idle]
    (one "FLAME basis" shared by all sessions) + noise; jaw opening = 0.25 rad x envelope; head = pose.
    Video: an OpenCV face (varied skin, background, lighting gradient, camera jitter) whose pose moves
    and rotates the face, eyes blink, brows rise, and the mouth opens with the envelope and curves up
    with the smile. Audio: 10 harmonics of the moving pitch shaped by the syllable envelope.

The listener, rule by rule (each with a base lag, plus a per-session jitter of +-2 frames, plus noise)
    1. NOD, audible only: a damped 1.5-cycle head-pitch oscillation (0.15 rad, 20 frames) starting
       `lag_nod` = 8 frames after a pause begins, but only after a phrase that ended with FALLING
       pitch. Pauses are visible (the mouth stops), which pauses cause a nod is only audible.
    2. SMILE MIRROR, visible only: the listener's smile factor is 0.8 x the speaker's smile, smoothed
       and delayed by `lag_smile` = 6 frames.
    3. BROW RAISE, audible only: a 24-frame brow raise `lag_brow` = 4 frames after a phrase that ended
       with RISING pitch.
    4. HEAD FOLLOW, visible only: listener yaw = 0.5 x speaker yaw delayed by `lag_head` = 12 frames.
    5. IDLE, unpredictable: slow random drift of head pose (~0.02 rad) and two expression factors,
       random blinks, and 0.03 per-dimension noise.
    The 50 expression dims are a fixed correlated mixture of the listener factors [smile, brow,
    blink, idle1, idle2] (another constant basis, decaying scale like 3DMM components).

Rule components
    `listener_rules(seed, config)` recomputes, without drawing video, a session's listener and the true
    per-frame part each predictable rule adds to it (nod, brow, smile, head): what a model could learn,
    the idle drift, blinks and noise left out; and the pauses the nods and brow raises follow.
    `listener_basis()` maps expression vectors to factors.
    Every session folder `synthetic_dataset.write_synthetic_dataset` writes records its seed and config
    in synthetic.json.

Alternative listeners
    The same speaker can be given K more listeners who follow the same rules, each with its own lags,
    gains, blinks, idle drift and noise (its own random stream, so the session's files do not
    change): the set of appropriate reactions that the REACT metrics score against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fad_edge.constants import EXPRESSION, FPS, HEAD, JAW, N_COEFFS, N_EXPRESSION, SAMPLE_RATE
from fad_edge.data.synthetic_face import speaker_video

# Constant seeds for the two "FLAME bases": the same for every session and dataset.
_SPEAKER_BASIS_SEED = 20_231_001
_LISTENER_BASIS_SEED = 20_231_002

LAG_NOD, LAG_SMILE, LAG_BROW, LAG_HEAD = 8, 6, 4, 12
# The pulses a phrase end sets off: 1.5 damped nods of head pitch in 20 frames, one brow raise in 24.
NOD_SHAPE = 0.15 * np.sin(np.linspace(0, 3 * np.pi, 20)) * np.exp(-np.linspace(0, 2, 20))
BROW_SHAPE = np.sin(np.linspace(0, np.pi, 24)) ** 2
_ALTERNATIVE_STREAM = 1  # alternative listener k of session `seed` draws from default_rng([seed, 1, k])
DEFAULT_ALTERNATIVES = 5  # alternative listeners written per session (listener_alternatives.npy)
# The speaker's expression factors, in the columns of its basis, and their scales.
SPEAKER_FACTORS = ("smile", "brow", "blink", "mouth", "idle1", "idle2")
_SPEAKER_SCALES = np.array([1, 0.8, 0.4, 0.7, 0.3, 0.3])
# The listener's expression factors, in the columns of its basis, and their scales.
LISTENER_FACTORS = ("smile", "brow", "blink", "idle1", "idle2")
_LISTENER_SCALES = np.array([1, 0.8, 0.4, 0.5, 0.5])
# The predictable rules whose true components `listener_rule_components` gives.
RULES = ("nod", "brow", "smile", "head")


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (defaults are the documented rules)."""

    seconds: float = 40.0
    image_size: int = 128
    lag_jitter: int = 2
    coefficient_noise: float = 0.03
    idle_head: float = 0.02
    idle_expression: float = 0.12


@dataclass
class SyntheticSession:
    frames: np.ndarray  # (T, S, S, 3) uint8 RGB
    audio: np.ndarray  # (T * 16000 / 30,) float32
    speaker: np.ndarray  # (T, 56) float32
    listener: np.ndarray  # (T, 56) float32
    lags: dict[str, int]
    alternatives: np.ndarray | None = None  # (K, T, 56) float32: other listeners of the same speaker


@dataclass
class _Speech:
    active: np.ndarray  # (T,) bool, inside a phrase
    envelope: np.ndarray  # (samples,) syllable envelope, 0..1
    pitch: np.ndarray  # (T,) Hz
    pauses: list[tuple[int, bool]]  # (frame where the pause begins, phrase ended rising)


def _basis(seed: int, factors: int, scales: np.ndarray) -> np.ndarray:
    """A fixed (50, factors) mixing matrix with 3DMM-like decaying scale over dims."""
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(N_EXPRESSION) / 12.0)[:, None]
    basis = rng.standard_normal((N_EXPRESSION, factors)) * decay
    basis /= np.linalg.norm(basis, axis=0, keepdims=True)
    return basis * scales[None, :] * 2.5


def _smooth(signal: np.ndarray, frames: int) -> np.ndarray:
    frames = min(frames, (len(signal) - 1) // 2)  # a kernel longer than the signal would lengthen it
    kernel = np.hanning(2 * frames + 1) if frames > 0 else np.ones(1)
    kernel /= kernel.sum()
    return np.convolve(signal, kernel, mode="same")


def _delay(signal: np.ndarray, lag: int) -> np.ndarray:
    """signal delayed by `lag` frames (the start repeats the first value); a lag beyond the signal repeats it
    throughout."""
    lag = min(lag, len(signal))
    return np.concatenate([np.full(lag, signal[0]), signal[: len(signal) - lag]]) if lag > 0 else signal.copy()


def _events(rng: np.random.Generator, n: int, per_minute: float, length: tuple[float, float]) -> np.ndarray:
    """Raised-cosine events of random length and amplitude 0.6-1 at Poisson times, clipped to 0..1."""
    out = np.zeros(n)
    count = rng.poisson(per_minute * n / FPS / 60.0)
    for start in rng.integers(0, n, count):
        duration = int(rng.uniform(*length) * FPS)
        shape = np.sin(np.linspace(0, np.pi, duration)) ** 2 * rng.uniform(0.6, 1.0)
        stop = min(n, start + duration)
        out[start:stop] += shape[: stop - start]
    return np.clip(out, 0, 1)


def _blinks(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    t = int(rng.uniform(0.5, 3) * FPS)
    while t < n:
        out[t : t + 4] = [0.6, 1.0, 1.0, 0.5][: max(0, min(4, n - t))]
        t += int(rng.uniform(2, 6) * FPS)
    return out


def _sinusoids(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    t = np.arange(n) / FPS
    parts = [np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    return amplitude * np.sum(parts, axis=0) / 1.7


def _speech(rng: np.random.Generator, n: int) -> _Speech:
    samples = int(round(n * SAMPLE_RATE / FPS))
    active, pitch = np.zeros(n, bool), np.zeros(n)
    envelope = np.zeros(samples)
    base, rate = rng.uniform(100, 220), rng.uniform(3, 6)
    pauses: list[tuple[int, bool]] = []
    t = rng.uniform(0.3, 0.8)
    while t < n / FPS:
        length = rng.uniform(1.5, 4.0)
        rising = bool(rng.random() < 0.5)
        syllable, speech_end = t, t
        while syllable < t + length - 0.1:
            duration = 0.8 / rate * rng.uniform(0.8, 1.2)
            a, b = int(syllable * SAMPLE_RATE), min(samples, int((syllable + duration) * SAMPLE_RATE))
            if b > a:
                envelope[a:b] = np.maximum(envelope[a:b], np.sin(np.linspace(0, np.pi, b - a)) * rng.uniform(0.6, 1.0))
            speech_end = syllable + duration
            syllable += duration + rng.uniform(0.02, 0.12)
        # The phrase ends where its last syllable does, up to 0.22 s before or after its scheduled end: the
        # pause, and every reaction timed from it, begins when the speaker audibly stops, and the pitch's
        # final rise or fall ends there too. The schedule (and so every later draw) is the one it always was.
        start, stop = int(t * FPS), min(n, int(np.ceil(speech_end * FPS)))
        frames = np.arange(start, stop)
        contour = base * (1.05 - 0.1 * (frames - start) / max(1, stop - start))  # declination
        tail = np.clip(((frames - stop) / FPS + 0.5) / 0.5, 0, 1)
        contour *= 1 + (0.35 if rising else -0.25) * tail
        pitch[start:stop] = contour * (1 + 0.02 * np.sin(2 * np.pi * 5 * frames / FPS))
        active[start:stop] = True
        if stop < n:
            pauses.append((stop, rising))
        t += length + rng.uniform(0.4, 1.5)
    return _Speech(active, envelope, pitch, pauses)


def _audio(rng: np.random.Generator, speech: _Speech) -> np.ndarray:
    samples = len(speech.envelope)
    frame_times = (np.arange(len(speech.pitch)) + 0.5) / FPS
    filled = np.where(speech.pitch > 0, speech.pitch, np.nan)
    valid = ~np.isnan(filled)
    if valid.any():
        filled = np.interp(frame_times, frame_times[valid], filled[valid])
    else:
        filled = np.full_like(frame_times, 150.0)
    f0 = np.interp(np.arange(samples) / SAMPLE_RATE, frame_times, filled)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 11))
    audio = 0.25 * voice * speech.envelope + 0.002 * rng.standard_normal(samples)
    return audio.astype(np.float32)


def _frame_envelope(speech: _Speech, n: int) -> np.ndarray:
    edges = np.round(np.arange(n + 1) * SAMPLE_RATE / FPS).astype(int)
    return np.array([speech.envelope[a:b].mean() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])


def _pulse(n: int, onsets: list[int], shape: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    for onset in onsets:
        stop = min(n, onset + len(shape))
        if onset < n:
            out[onset:stop] += shape[: stop - onset]
    return out


@dataclass
class _SpeakerState:
    """What the speaker does in one session: every cue a listener can react to."""

    speech: _Speech
    envelope: np.ndarray  # (T,) per-frame speech envelope
    smile: np.ndarray
    brow: np.ndarray
    blink: np.ndarray
    head: np.ndarray  # (T, 3) pitch, yaw, roll
    coefficients: np.ndarray  # (T, 56)


def _speaker(rng: np.random.Generator, n: int, config: SyntheticConfig) -> _SpeakerState:
    speech = _speech(rng, n)
    envelope = _frame_envelope(speech, n)
    smile = _events(rng, n, 6.0, (1.5, 4.0))
    brow = _events(rng, n, 3.0, (0.8, 2.0))
    blink = _blinks(rng, n)
    head = np.stack([_sinusoids(rng, n, 0.12), _sinusoids(rng, n, 0.25), _sinusoids(rng, n, 0.06)], axis=1)

    speaker = np.zeros((n, N_COEFFS))
    idle_s = np.stack([_smooth(rng.standard_normal(n), 20) * 2, _smooth(rng.standard_normal(n), 20) * 2], axis=1)
    factors_s = np.stack([smile, brow, blink, envelope, idle_s[:, 0] * 0.1, idle_s[:, 1] * 0.1], axis=1)
    speaker[:, EXPRESSION] = factors_s @ speaker_basis().T
    speaker[:, EXPRESSION] += config.coefficient_noise * rng.standard_normal((n, N_EXPRESSION))
    speaker[:, JAW.start] = 0.25 * envelope
    speaker[:, HEAD] = head
    return _SpeakerState(speech, envelope, smile, brow, blink, head, speaker)


@dataclass
class ListenerRules:
    """One listener's motion and the true per-frame part of it that each predictable rule adds.

    `components` are float64 (T,) arrays, before the idle drift, blinks and noise are added:
    "nod" the nod pulse train added to head pitch (rad), "brow" and "smile" the listener's brow and
    smile factors (coefficients on the columns of `listener_basis()`), "head" the yaw follow (rad).
    """

    motion: np.ndarray  # (T, 56) float32, the listener as written to listener_coeffs.npy
    lags: dict[str, int]
    components: dict[str, np.ndarray]
    pauses: list[tuple[int, bool]]  # the speaker's (first pause frame, phrase ended rising) the pulses follow


def _listener_rules(rng: np.random.Generator, state: _SpeakerState, config: SyntheticConfig) -> ListenerRules:
    """One listener reacting to `state` by the five rules; `rng` decides who the listener is (lags, gains, idle)."""
    n = len(state.head)
    jitter = lambda: int(rng.integers(-config.lag_jitter, config.lag_jitter + 1))  # noqa: E731
    lags = {"nod": LAG_NOD + jitter(), "smile": LAG_SMILE + jitter(), "brow": LAG_BROW + jitter(),
            "head": LAG_HEAD + jitter()}
    lags = {k: max(0, v) for k, v in lags.items()}
    nods = [frame + lags["nod"] for frame, rising in state.speech.pauses if not rising]
    raises = [frame + lags["brow"] for frame, rising in state.speech.pauses if rising]
    nod = _pulse(n, nods, NOD_SHAPE) * rng.uniform(0.85, 1.15)
    listener_brow = np.clip(_pulse(n, raises, BROW_SHAPE), 0, 1.2) * rng.uniform(0.85, 1.15)
    listener_smile = 0.8 * _delay(_smooth(state.smile, 5), lags["smile"])
    listener_yaw = 0.5 * _delay(state.head[:, 1], lags["head"])

    idle = lambda scale: _smooth(rng.standard_normal(n), 25) * scale * 4  # noqa: E731
    listener = np.zeros((n, N_COEFFS))
    factors_l = np.stack([listener_smile, listener_brow, _blinks(rng, n) * 0.5,
                          idle(config.idle_expression), idle(config.idle_expression)], axis=1)
    listener[:, EXPRESSION] = factors_l @ listener_basis().T
    listener[:, EXPRESSION] += config.coefficient_noise * rng.standard_normal((n, N_EXPRESSION))
    listener[:, JAW.start] = 0.02 + 0.01 * np.abs(idle(1.0))
    listener[:, HEAD.start] = nod + idle(config.idle_head)
    listener[:, HEAD.start + 1] = listener_yaw + idle(config.idle_head)
    listener[:, HEAD.start + 2] = idle(config.idle_head)
    listener[:, JAW] += 0.005 * rng.standard_normal((n, 3))
    components = {"nod": nod, "brow": listener_brow, "smile": listener_smile, "head": listener_yaw}
    return ListenerRules(listener.astype(np.float32), lags, components, list(state.speech.pauses))


def _listener(
    rng: np.random.Generator, state: _SpeakerState, config: SyntheticConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """One listener's (T, 56) motion and lags (see `_listener_rules`)."""
    rules = _listener_rules(rng, state, config)
    return rules.motion, rules.lags


def _alternatives(seed: int, state: _SpeakerState, config: SyntheticConfig, count: int) -> np.ndarray:
    """(count, T, 56): other listeners of the same speaker, each from its own stream of `seed`.

    The session's own stream is left untouched, so adding alternatives changes no other output.
    """
    empty = np.zeros((0, len(state.head), N_COEFFS), np.float32)
    listeners = [_listener(np.random.default_rng([seed, _ALTERNATIVE_STREAM, k]), state, config)[0]
                 for k in range(count)]
    return np.stack(listeners) if listeners else empty


def generate_session(
    seed: int, config: SyntheticConfig = SyntheticConfig(), alternatives: int = 0
) -> SyntheticSession:
    """One synthetic dyadic session, deterministic by seed; `alternatives` other listeners of the same speaker."""
    rng = np.random.default_rng(seed)
    n = int(round(config.seconds * FPS))
    state = _speaker(rng, n, config)
    listener, lags = _listener(rng, state, config)
    mouth = state.envelope / max(state.envelope.max(), 1e-6)
    frames = speaker_video(rng, config.image_size, state.head, state.smile, state.brow, state.blink, mouth)
    audio = _audio(rng, state.speech)
    others = _alternatives(seed, state, config, alternatives) if alternatives else None
    return SyntheticSession(frames, audio, state.coefficients.astype(np.float32), listener, lags, others)


def alternative_listeners(seed: int, count: int, config: SyntheticConfig = SyntheticConfig()) -> np.ndarray:
    """(count, T, 56): the same as `generate_session(seed, config, count).alternatives`, without drawing video.

    Each is another listener of session `seed`'s speaker, following the same five rules with its own
    lags, gains, blinks, idle drift and noise: a set of reactions that are all appropriate, where a
    real dataset has only the one listener who was there.
    """
    state = _speaker(np.random.default_rng(seed), int(round(config.seconds * FPS)), config)
    return _alternatives(seed, state, config, count)


def speaker_basis() -> np.ndarray:
    """(50, 6): the speaker's expression basis, columns `SPEAKER_FACTORS`; expression = factors @ basis.T + noise."""
    return _basis(_SPEAKER_BASIS_SEED, len(SPEAKER_FACTORS), _SPEAKER_SCALES)


def listener_basis() -> np.ndarray:
    """(50, 5): the listener's expression basis, columns `LISTENER_FACTORS`; expression = factors @ basis.T."""
    return _basis(_LISTENER_BASIS_SEED, len(LISTENER_FACTORS), _LISTENER_SCALES)


def listener_rules(seed: int, config: SyntheticConfig = SyntheticConfig()) -> ListenerRules:
    """Session `seed`'s own listener, with each predictable rule's true component, without drawing video.

    The same code path as `generate_session`, so `.motion` is its `listener`, bit for bit.
    """
    rng = np.random.default_rng(seed)
    state = _speaker(rng, int(round(config.seconds * FPS)), config)
    return _listener_rules(rng, state, config)


def listener_rule_components(seed: int, config: SyntheticConfig = SyntheticConfig()) -> dict[str, np.ndarray]:
    """`RULES` -> (T,) float64: the true part of session `seed`'s listener that each predictable rule makes."""
    return listener_rules(seed, config).components
