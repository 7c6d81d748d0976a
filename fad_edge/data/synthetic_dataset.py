"""Synthetic datasets on disk: sessions from `fad_edge.data.synthetic` written in our layout, with splits.

Each session folder also gets `SESSION_RECORD` (the generator's seed and config), from which the
rule diagnostic recomputes what its listener's rules added (`synthetic.listener_rules`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fad_edge.atomic import atomic_write_bytes
from fad_edge.constants import FPS, SAMPLE_RATE
from fad_edge.data.layout import META, staged_dataset, write_session, write_splits
from fad_edge.data.synthetic import DEFAULT_ALTERNATIVES, SyntheticConfig, generate_session
from fad_edge.errors import DataError
from fad_edge.resources import check_fits

# A session is generated whole in memory: its uint8 frames and about eight float64 copies of its audio.
AUDIO_BYTES_PER_SAMPLE = 64
# Each session folder written by `write_synthetic_dataset` records its seed and config in this file.
SESSION_RECORD = "synthetic.json"
RECORD_GENERATOR = "fad-edge synthetic"
# Below this many seconds of sessions in all, writing in-process beats starting worker processes.
PARALLEL_MIN_SECONDS = 120.0
# One session to write: the dataset folder, the dataset's seed, the session's index, its config and alternatives.
Job = tuple[Path, int, int, SyntheticConfig, int]
_SOURCE = re.compile(r"fad-edge synthetic \(seed (\d+), index (\d+),")  # meta.json's source, before the record


def split_names(names: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """About 70/15/15, each split at least one session."""
    order = [names[i] for i in rng.permutation(len(names))]
    n_val = n_test = max(1, round(0.15 * len(names)))
    return {"train": sorted(order[n_val + n_test :]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val : n_val + n_test])}


def check_synthetic_size(seconds: float, image_size: int, at_once: int = 1) -> None:
    """Refuse a session length or image size that is not finite and positive, or whose `at_once` sessions (drawn
    side by side by the worker processes, `drawn_at_once`) cannot fit in memory."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise DataError(f"session length must be a finite number of seconds above 0, got {seconds}")
    if image_size < 1:
        raise DataError(f"image size must be positive, got {image_size}")
    frames = round(seconds * FPS)
    nbytes = frames * image_size**2 * 3 + seconds * SAMPLE_RATE * AUDIO_BYTES_PER_SAMPLE
    what = f"a synthetic session of {seconds:g} s at {image_size} px" + (f", {at_once} at once" if at_once > 1 else "")
    check_fits(at_once * nbytes, what, "use fewer seconds or pixels", DataError)


def drawn_at_once(sessions: int, seconds: float, workers: int | None = None) -> int:
    """How many sessions `write_synthetic_dataset` draws side by side: one per worker process (None: per core),
    where there is enough to write for workers at all."""
    if sessions * seconds < PARALLEL_MIN_SECONDS:
        return 1
    return max(1, min(sessions, workers or _cores()))


SEED_STRIDE = 100_003  # session seeds of consecutive dataset seeds lie this far apart


def session_seed(dataset_seed: int, index: int) -> int:
    """The generator seed of session `index` of a dataset written with `dataset_seed`."""
    return dataset_seed * SEED_STRIDE + index


def session_name(index: int) -> str:
    """The folder name of session `index`."""
    return f"session_{index:03d}"


def session_index(name: str) -> int:
    """The index of the session folder `name` (`session_name` undone); a DataError for another name."""
    number = name.removeprefix("session_")
    if not (name.startswith("session_") and number.isdigit()):
        raise DataError(f"{name}: not a synthetic session's folder name (session_NNN)")
    return int(number)


def dataset_seed_of(seed: int, index: int) -> int:
    """The dataset seed whose session `index` has the generator seed `seed` (`session_seed` undone)."""
    return (seed - index) // SEED_STRIDE


def write_synthetic_dataset(out_dir: Path, sessions: int, seconds: float, seed: int, image_size: int = 128,
                            alternatives: int = DEFAULT_ALTERNATIVES, workers: int | None = None,
                            overwrite: bool = False) -> dict:
    """Write `sessions` synthetic sessions and splits.json in our layout; returns the splits.

    The dataset is built beside `out_dir` and swapped in once whole (`layout.staged_dataset`): `out_dir`
    must be new or empty, or a dataset to replace with `overwrite`; a failed run leaves it as it was.

    With `alternatives` > 0 each session also gets listener_alternatives.npy (K, T, 56); every other
    file is the same, byte for byte, whatever `alternatives` is. Each session folder also gets
    `SESSION_RECORD` (its seed and config), so that its listener's rules can be recomputed.
    Sessions are drawn and encoded by `workers` processes (None: one per core); each session comes
    from its own seed, so the files are the same, byte for byte, whatever the number of workers.
    """
    if sessions < 3:
        raise DataError(f"need at least 3 sessions (train, val and test), got {sessions}")
    if seed < 0:
        raise DataError(f"the seed must be 0 or more, got {seed}")
    at_once = drawn_at_once(sessions, seconds, workers)
    check_synthetic_size(seconds, image_size, at_once)
    config = SyntheticConfig(seconds=seconds, image_size=image_size)
    with staged_dataset(Path(out_dir), overwrite) as staging:
        jobs = [(staging, seed, index, config, alternatives) for index in range(sessions)]
        names = _write_all(jobs, at_once)
        splits = split_names(names, np.random.default_rng(seed))
        write_splits(staging, splits)
    return splits


def _write_all(jobs: list[Job], workers: int) -> list[str]:
    """Run `_write_one` on every job, in `workers` processes where more than one; the folder names."""
    if workers > 1:
        # spawn, not fork: the parent may hold OpenCV's or torch's threads, which a forked child inherits locked.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_write_one, jobs))
    return [_write_one(job) for job in jobs]


def _write_one(job: Job) -> str:
    """Draw and write session `index` of the dataset (a worker process's unit of work); its folder name."""
    out_dir, seed, index, config, alternatives = job
    session = generate_session(session_seed(seed, index), config, alternatives)
    name = session_name(index)
    write_session(out_dir / name, session.frames, session.audio, SAMPLE_RATE, session.listener, session.speaker,
                  source=f"fad-edge synthetic (seed {seed}, index {index}, lags {session.lags})",
                  alternatives=session.alternatives)
    write_session_record(out_dir / name, session_seed(seed, index), config)
    return name


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_session_record(folder: Path, seed: int, config: SyntheticConfig) -> Path:
    """`SESSION_RECORD` in a session folder: the generator's seed and config, from which its listener's rules
    can be recomputed (`listener_rules`)."""
    record = {"generator": RECORD_GENERATOR, "seed": int(seed), "config": dataclasses.asdict(config)}
    return atomic_write_bytes(Path(folder) / SESSION_RECORD, json.dumps(record, indent=2).encode())


def read_session_record(folder: Path) -> tuple[int, SyntheticConfig]:
    """The seed and config that generated a synthetic session folder, or a DataError saying it is not one.

    Folders written before `SESSION_RECORD` existed are read from meta.json's source line
    ("fad-edge synthetic (seed S, index I, ...)": `session_seed(S, I)`, the default config at its
    n_frames); `listener_rules` of what this returns must then reproduce the folder's listener.
    """
    folder = Path(folder)
    path = folder / SESSION_RECORD
    if path.is_file():
        try:
            record = json.loads(path.read_text())
            fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
            if record.get("generator") != RECORD_GENERATOR or not set(record["config"]) <= fields:
                raise ValueError("not a record of this generator")
            return int(record["seed"]), SyntheticConfig(**record["config"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise DataError(f"{path}: not a fad-edge synthetic session record ({error})") from None
    meta = folder / META
    try:
        found = json.loads(meta.read_text()) if meta.is_file() else {}
        match = _SOURCE.match(str(found.get("source", ""))) if isinstance(found, dict) else None
        frames = int(found["n_frames"]) if match else 0
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{meta}: unreadable ({error})") from None
    if not match or frames < 1:
        raise DataError(f"{folder}: not a fad-edge synthetic session (no {SESSION_RECORD}, and {META} names "
                        "another source); the rule diagnostic needs data written by fad-edge synth")
    return session_seed(int(match[1]), int(match[2])), SyntheticConfig(seconds=frames / FPS)
