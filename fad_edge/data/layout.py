"""Our on-disk dataset layout (docs/architecture.md), with a validator that names the bad file.

    DATA/splits.json            {"train": [...], "val": [...], "test": [...]} session folder names
    DATA/<session>/speaker.mp4  speaker video, 30 fps
    DATA/<session>/speaker.wav  speaker audio, mono 16 kHz
    DATA/<session>/listener_coeffs.npy  (T, 56) float32 FLAME [exp 50, jaw 3, head 3]
    DATA/<session>/speaker_coeffs.npy   (T, 56) float32, optional
    DATA/<session>/listener_alternatives.npy  (K, T, 56) float32, optional: other listeners' reactions
                                that are as appropriate as the real one (the synthetic generator writes them)
    DATA/<session>/meta.json    {"fps": 30, "sample_rate": 16000, "source": ..., "n_frames": T}
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fad_edge.atomic import atomic_save_npy, atomic_write_bytes, staged_folder
from fad_edge.constants import FPS, N_COEFFS, SAMPLE_RATE
from fad_edge.data.media import read_audio, read_video, write_video, write_wav
from fad_edge.errors import DataError

VIDEO = "speaker.mp4"
AUDIO = "speaker.wav"
LISTENER = "listener_coeffs.npy"
SPEAKER = "speaker_coeffs.npy"
LISTENER_ALTERNATIVES = "listener_alternatives.npy"
META = "meta.json"
SPLITS = "splits.json"
CACHE_DIR = ".fad_cache"  # the training's decoded sessions, beside the session folders (data.dataset)
SPLIT_NAMES = ("train", "val", "test")
# Far beyond any FLAME value (expression within about +-10, axis-angle pose within +-pi): a larger one is a
# corrupt file, whose finite 1e38 would overflow the metrics to inf far from its cause.
MAX_COEFFICIENT_MAGNITUDE = 1e4


@dataclass
class Session:
    """One dyadic session, validated."""

    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    audio: np.ndarray  # mono float32, 16 kHz
    sample_rate: int
    listener: np.ndarray  # (T, 56) float32
    speaker: np.ndarray | None  # (T, 56) float32
    meta: dict = field(default_factory=dict)


def write_session(
    folder: Path,
    frames: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    listener: np.ndarray,
    speaker: np.ndarray | None = None,
    source: str = "unknown",
    alternatives: np.ndarray | None = None,
) -> Path:
    """Write one session folder (every file atomically); `alternatives` (K, T, 56) other appropriate listeners."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / VIDEO, frames, FPS)
    write_wav(folder / AUDIO, audio, sample_rate)
    atomic_save_npy(folder / LISTENER, np.asarray(listener, np.float32))
    if speaker is not None:
        atomic_save_npy(folder / SPEAKER, np.asarray(speaker, np.float32))
    if alternatives is not None and len(alternatives):
        atomic_save_npy(folder / LISTENER_ALTERNATIVES, np.asarray(alternatives, np.float32))
    meta = {"fps": FPS, "sample_rate": sample_rate, "source": source, "n_frames": int(len(listener))}
    atomic_write_bytes(folder / META, json.dumps(meta, indent=2).encode())
    return folder


def check_finite_values(path: Path, array: np.ndarray) -> None:
    """Refuse non-numbers, NaN and infinities here, naming the file: downstream they fail far from their cause."""
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{path}: expected real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{path}: contains NaN or infinite values; re-extract or drop this file")


def check_coefficient_values(path: Path, array: np.ndarray) -> None:
    """Refuse FLAME coefficients that are not finite or absurdly large, naming the file.

    A finite 1e38 passes a finiteness check but overflows the metrics to inf far from its cause.
    """
    check_finite_values(path, array)
    largest = float(np.max(np.abs(array))) if array.size else 0.0
    if largest > MAX_COEFFICIENT_MAGNITUDE:
        raise DataError(f"{path}: a coefficient of magnitude {largest:.3g}, beyond {MAX_COEFFICIENT_MAGNITUDE:g}; "
                        "FLAME values are within about +-10, so this file is corrupt or not FLAME parameters")


def load_coefficients(path: Path) -> np.ndarray:
    """A (T, 56) float32 coefficient array of sane values, or a DataError naming the file and the problem."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy array ({str(error).splitlines()[0]})") from None
    if array.ndim != 2 or array.shape[1] != N_COEFFS:
        raise DataError(f"{path}: expected shape (T, {N_COEFFS}), got {array.shape}")
    check_coefficient_values(path, array)
    return array.astype(np.float32)


def load_listener_alternatives(folder: Path, frames: int) -> np.ndarray | None:
    """The session's alternative listeners (K, frames, 56) cut to `frames`, or None where it has none."""
    path = Path(folder) / LISTENER_ALTERNATIVES
    if not path.exists():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy array ({str(error).splitlines()[0]})") from None
    if array.ndim != 3 or array.shape[2] != N_COEFFS or array.shape[1] < frames:
        raise DataError(f"{path}: expected shape (K, >= {frames}, {N_COEFFS}), got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise DataError(f"{path}: expected finite numbers")
    return array[:, :frames].astype(np.float32)


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object")
    if abs(_meta_number(path, meta, "fps", FPS) - FPS) > 1e-3:
        raise DataError(f"{path}: fps is {meta.get('fps')}, fad-edge expects {FPS}")
    return meta


def _meta_number(path: Path, meta: dict, key: str, default: float) -> float:
    """meta[key] as a finite number: a hand-edited meta.json may hold text or null there."""
    value = meta.get(key, default)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"{path}: field {key!r} is {value!r}, not a number; write it as a number, e.g. {default:g}")
    return number


def load_session(folder: Path, image_size: int | None = None) -> Session:
    """Read and validate a session; frames resized to image_size x image_size when given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: session folder not found")
    meta = _read_meta(folder / META)
    listener = load_coefficients(folder / LISTENER)
    speaker = load_coefficients(folder / SPEAKER) if (folder / SPEAKER).exists() else None
    frames, fps = read_video(folder / VIDEO, image_size)
    if fps and abs(fps - FPS) > 0.5:
        raise DataError(f"{folder / VIDEO}: video is {fps:.2f} fps, fad-edge expects {FPS}")
    audio, rate = read_audio(folder / AUDIO)
    if rate != SAMPLE_RATE:
        raise DataError(f"{folder / AUDIO}: sample rate is {rate} Hz; resample it to {SAMPLE_RATE} Hz mono")
    n = len(frames)
    for name, array in ((LISTENER, listener), (SPEAKER, speaker)):
        if array is not None and abs(len(array) - n) > 1:
            raise DataError(f"{folder / name}: {len(array)} rows but the video has {n} frames")
    n = min([n, len(listener)] + ([len(speaker)] if speaker is not None else []))
    check_audio_covers(folder / AUDIO, len(audio) / SAMPLE_RATE, n)
    return Session(folder.name, frames[:n], audio, rate, listener[:n], None if speaker is None else speaker[:n], meta)


def check_audio_covers(path: Path, audio_seconds: float, frames: int) -> None:
    """Refuse audio that ends more than a frame before the video: every frame's motion is conditioned on its audio."""
    video_seconds = frames / FPS
    if audio_seconds < video_seconds - 1.0 / FPS:
        raise DataError(f"{path}: audio is {audio_seconds:.2f} s but the video is {video_seconds:.2f} s; "
                        "give audio that covers the whole video")


def write_splits(root: Path, splits: dict[str, list[str]]) -> Path:
    return atomic_write_bytes(Path(root) / SPLITS, json.dumps(splits, indent=2).encode())


def read_splits(root: Path) -> dict[str, list[str]]:
    """The split lists, each session folder checked to exist."""
    path = Path(root) / SPLITS
    if Path(root).exists() and not Path(root).is_dir():
        raise DataError(f"{root}: is a file, not a dataset folder")
    if not path.is_file():
        raise DataError(f"{path}: file not found (is {root} a fad-edge dataset?)")
    try:
        splits = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise DataError(f"{path}: expected {{split: [session, ...]}}")
    for split, names in splits.items():
        for name in names:
            if not isinstance(name, str) or name in ("", ".", ".."):
                raise DataError(f"{path}: split {split!r} lists {json.dumps(name)}, which is not a session folder "
                                "name; list each session as its folder's name in quotes")
            if not (Path(root) / name).is_dir():
                raise DataError(f"{path}: lists session {name!r}, but {Path(root) / name} does not exist")
    seen: dict[str, str] = {}
    for split, names in splits.items():  # a session in two places would be trained on and scored, or counted twice
        for name in names:
            if name in seen:
                where = f"twice in {split!r}" if seen[name] == split else f"in both {seen[name]!r} and {split!r}"
                raise DataError(f"{path}: lists session {name!r} {where}; each session belongs to one split, once")
            seen[name] = split
    return splits


def list_sessions(root: Path, split: str) -> list[Path]:
    """Session folders of one split; DataError when the split is unknown or empty."""
    splits = read_splits(root)
    if split not in splits:
        raise DataError(f"{Path(root) / SPLITS}: no split named {split!r} (has {sorted(splits)})")
    if not splits[split]:
        raise DataError(f"{Path(root) / SPLITS}: split {split!r} is empty")
    return [Path(root) / name for name in splits[split]]


def check_dataset_target(out: Path, overwrite: bool = False) -> Path:
    """Refuse an `out` that a dataset writer may not replace; returns the folder it replaces (a link's target).

    A writer replaces its folder whole: so `out` must be new, empty, or (with `overwrite`) a dataset.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):  # the swap renames OUT itself: it needs a name of its own
        raise DataError(f"--out {out}: give the dataset folder a name, e.g. data/synthetic")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; give --out a new or dataset folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SPLITS).is_file():
            raise DataError(f"{out}: the output folder is not empty and holds no dataset (no {SPLITS}); "
                            "give a new or empty folder")
        if not overwrite:
            raise DataError(f"{out}: the output folder holds a dataset; give another folder, "
                            "or --overwrite to replace it")
        if foreign := _not_of_the_dataset(out):
            raise DataError(f"{out}: holds {foreign[0]!r}, which is not part of its dataset; --overwrite replaces "
                            "the folder whole, so move that out first")
    return out.resolve() if out.is_symlink() else out


def _not_of_the_dataset(root: Path) -> list[str]:
    """What a dataset folder holds beside its own files: splits.json, the feature cache and its sessions (the
    ones its splits name, or any folder holding a session's meta.json)."""
    try:
        named = {Path(name).parts[0] for names in read_splits(root).values() for name in names if Path(name).parts}
    except DataError:  # a broken splits.json: the sessions are what look like sessions
        named = set()
    own = {SPLITS, CACHE_DIR, *named}
    return sorted(entry.name for entry in root.iterdir()
                  if entry.name not in own and not (entry.is_dir() and (entry / META).is_file()))


@contextlib.contextmanager
def staged_dataset(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder to write a dataset in; it replaces `out` only once the block ends without error.

    So a failed or killed run leaves the earlier dataset at `out` as it was, never a mix of two.
    """
    final = check_dataset_target(out, overwrite)
    stack = contextlib.ExitStack()
    try:
        staging = stack.enter_context(staged_folder(final))
    except OSError as error:
        raise DataError(f"{out}: cannot create {final.name}.new beside it to build the dataset in "
                        f"({error.strerror or error})") from None
    with stack:  # its exit swaps the dataset in, or removes it after an error
        yield staging
