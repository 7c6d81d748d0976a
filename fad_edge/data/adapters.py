"""Readers for the real datasets' own layouts, for users who have them.

Learning to Listen (Ng et al. 2022)
    `ROOT/<channel>/<split>/p{0,1}_{list,speak}_faces_clean_deca.npy`, each (N, 64, 184): N segments
    of 64 frames of DECA parameters; the first 56 are [expression 50, head pose 3, jaw 3], reordered
    here to ours, [expression 50, jaw 3, head 3]. Speaker p{1-k} pairs with listener p{k}, with
    k = 1 for the "fallon" channel and 0 for the others. Speaker audio is
    `p{1-k}_speak_audio_clean_deca.npy`, (N, 256, 128): a mel spectrogram, 4 mel frames per video
    frame. There are no raw video frames, so this data feeds the audio branch and the
    coefficient baselines only.

ViCo (Zhou et al. 2022), with FLAME re-extractions
    `ROOT/<split>/speaker/<id>.mp4` (30 fps), `ROOT/<split>/audio/<id>.wav`, and per-frame FLAME
    parameters of the listener and (optionally) the speaker in `ROOT/<split>/listener_flame/<id>.npy`
    and `ROOT/<split>/speaker_flame/<id>.npy`, each (T, 56) = [expression 50, global pose 3, jaw 3]
    (DECA's order), reordered to ours. ViCo's released coefficients are BFM (64 expression + 3
    angles + 3 translation per frame), a different face model: such files are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fad_edge.constants import EXPRESSION, FPS, HEAD, JAW, N_COEFFS, N_EXPRESSION, SAMPLE_RATE
from fad_edge.data import layout
from fad_edge.data.audio_features import resample_audio
from fad_edge.data.media import read_audio, read_video
from fad_edge.errors import DataError

BFM_WIDTHS = {70, 73, 80, 257, 258}  # BFM exp+angle+trans (+ identity/texture/light in some dumps)
# Printed once per run of the Learning to Listen baselines; under 80 columns.
NO_VIDEO_NOTE = "note: Learning to Listen has no video: no FAD row, coefficient baselines only"


def _pose_first_to_ours(array: np.ndarray, head_first: bool) -> np.ndarray:
    """[exp 50, A 3, B 3] -> [exp 50, jaw 3, head 3]; A is the head pose when `head_first`."""
    ours = np.empty(array.shape[:-1] + (N_COEFFS,), np.float32)
    ours[..., EXPRESSION] = array[..., :N_EXPRESSION]
    first, second = array[..., N_EXPRESSION : N_EXPRESSION + 3], array[..., N_EXPRESSION + 3 : N_EXPRESSION + 6]
    ours[..., JAW] = second if head_first else first
    ours[..., HEAD] = first if head_first else second
    return ours


def l2l_to_ours(array: np.ndarray) -> np.ndarray:
    """Learning to Listen's DECA parameters (..., >=56) [exp, head, jaw] -> ours (..., 56) [exp, jaw, head]."""
    return _pose_first_to_ours(np.asarray(array, np.float32)[..., :N_COEFFS], head_first=True)


@dataclass
class CoefficientSequence:
    """A segment with speaker and listener motion (T, 56) and the speaker's mel (T * 4, n_mels)."""

    name: str
    speaker: np.ndarray
    listener: np.ndarray
    mel: np.ndarray


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy file ({error})") from None


def _check_finite(path: Path, array: np.ndarray) -> None:
    """Refuse non-numbers, NaN and infinities here, naming the file: downstream they fail far from their cause."""
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{path}: expected real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{path}: contains NaN or infinite values; re-extract or drop this file")


def _load_l2l(path: Path, what: str, used: int | None = None) -> np.ndarray:
    """One Learning to Listen array (N, T, width): the first `used` values per frame (None: all) must be finite."""
    array = _load_npy(path)
    if array.ndim != 3 or array.shape[2] < (used or 1):
        raise DataError(f"{path}: {what} has shape {array.shape}; expected (N, T, >= {used or 1})")
    _check_finite(path, array[..., :used])
    return array


def l2l_paths(root: Path, channel: str, split: str) -> dict[str, Path]:
    """The listener, speaker and speaker audio files of one channel and split."""
    folder = Path(root) / channel / split
    k = 1 if channel == "fallon" else 0
    return {"listener": folder / f"p{k}_list_faces_clean_deca.npy",
            "speaker": folder / f"p{1 - k}_speak_faces_clean_deca.npy",
            "audio": folder / f"p{1 - k}_speak_audio_clean_deca.npy"}


def load_learning_to_listen(root: Path, channel: str, split: str) -> list[CoefficientSequence]:
    """Every segment of one channel and split, in our coefficient layout."""
    paths = l2l_paths(root, channel, split)
    folder = paths["audio"].parent
    listener = _load_l2l(paths["listener"], "listener parameters", N_COEFFS)
    speaker = _load_l2l(paths["speaker"], "speaker parameters", N_COEFFS)
    audio = _load_l2l(paths["audio"], "speaker audio")
    if audio.shape[1] != 4 * listener.shape[1]:
        raise DataError(f"{paths['audio']}: speaker audio has shape {audio.shape}; expected (N, 4 * T, n_mels) "
                        f"with T = {listener.shape[1]}")
    if not (len(listener) == len(speaker) == len(audio)):
        raise DataError(f"{folder}: {len(listener)} listener, {len(speaker)} speaker and {len(audio)} audio segments")
    return [CoefficientSequence(f"{channel}/{split}/{i}", l2l_to_ours(speaker[i]), l2l_to_ours(listener[i]),
                                np.asarray(audio[i], np.float32)) for i in range(len(listener))]


def load_learning_to_listen_splits(root: Path, channel: str, split: str
                                   ) -> tuple[list[CoefficientSequence], list[CoefficientSequence]]:
    """The train split (what the baselines fit on) and `split`, refused when their mel spectrograms differ in width."""
    train = load_learning_to_listen(root, channel, "train")
    test = train if split == "train" else load_learning_to_listen(root, channel, split)
    if train and test and train[0].mel.shape[1] != test[0].mel.shape[1]:
        raise DataError(f"{l2l_paths(root, channel, split)['audio']}: mel spectrograms of shape {test[0].mel.shape}, "
                        f"but the train split's are {train[0].mel.shape}; both splits need the same mel bands")
    return train, test


def read_flame(path: Path, frames: int | None = None) -> np.ndarray:
    """A ViCo FLAME re-extraction (T, 56) [exp, global pose, jaw] -> ours; BFM files are refused."""
    array = _load_npy(path)
    if array.ndim != 2:
        raise DataError(f"{path}: expected (T, 56) per-frame FLAME parameters, got shape {array.shape}")
    if array.shape[1] in BFM_WIDTHS:
        raise DataError(f"{path}: {array.shape[1]} values per frame look like BFM coefficients (64 expression + "
                        "3 angles + 3 translation), not FLAME; re-extract FLAME parameters (e.g. with DECA) first")
    if array.shape[1] != N_COEFFS:
        raise DataError(f"{path}: {array.shape[1]} values per frame; "
                        "a FLAME re-extraction has 56 (expression 50 + pose 6)")
    if frames is not None and len(array) != frames:
        raise DataError(f"{path}: {len(array)} frames of parameters but the video has {frames}")
    _check_finite(path, array)
    return _pose_first_to_ours(array.astype(np.float32), head_first=True)


def convert_vico(root: Path, out: Path, splits: tuple[str, ...] = ("train", "val", "test"),
                 overwrite: bool = False) -> dict[str, list[str]]:
    """Write ViCo (FLAME re-extraction) sessions in our layout, with splits.json; returns the splits.

    Each clip is checked as training will read it. The dataset is built beside `out` and swapped in
    once whole (`layout.staged_dataset`), so a clip refused halfway leaves an earlier dataset there as it was.
    """
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve() or out.resolve() in root.resolve().parents:
        raise DataError(f"{root}: --src is inside --out {out}, which the conversion replaces; give another --out")
    found: dict[str, list[str]] = {}
    with layout.staged_dataset(out, overwrite) as staging:
        for split in splits:
            if (root / split).is_dir():
                found[split] = [_convert_clip(root / split, video.stem, staging / f"{split}_{video.stem}")
                                for video in sorted((root / split / "speaker").glob("*.mp4"))]
        if not any(found.values()):
            raise DataError(f"{root}: no ViCo clips found (expected <split>/speaker/<id>.mp4)")
        layout.write_splits(staging, {split: found.get(split, []) for split in ("train", "val", "test")})
    return found


def _convert_clip(folder: Path, clip_id: str, session: Path) -> str:
    """Check one ViCo clip and write it as the session folder `session`; its name."""
    video = folder / "speaker" / f"{clip_id}.mp4"
    frames, fps = read_video(video)
    if abs(fps - FPS) > 0.5:
        raise DataError(f"{video}: {fps:.2f} fps; ViCo clips are {FPS} fps")
    wav = folder / "audio" / f"{clip_id}.wav"
    samples, rate = read_audio(wav)
    samples = resample_audio(samples, rate, SAMPLE_RATE)  # our layout is 16 kHz
    layout.check_audio_covers(wav, len(samples) / SAMPLE_RATE, len(frames))
    listener = read_flame(folder / "listener_flame" / f"{clip_id}.npy", len(frames))
    speaker_path = folder / "speaker_flame" / f"{clip_id}.npy"
    speaker = read_flame(speaker_path, len(frames)) if speaker_path.exists() else None
    layout.write_session(session, frames, samples, SAMPLE_RATE, listener, speaker, source="ViCo (FLAME re-extraction)")
    return session.name
