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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fad_edge.constants import EXPRESSION, HEAD, JAW, N_COEFFS, N_EXPRESSION, SAMPLE_RATE
from fad_edge.data import layout
from fad_edge.data.audio_features import resample_audio
from fad_edge.data.media import read_audio, read_video
from fad_edge.errors import DataError

log = logging.getLogger(__name__)
BFM_WIDTHS = {70, 73, 80, 257, 258}  # BFM exp+angle+trans (+ identity/texture/light in some dumps)


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
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npy file ({error})") from None


def load_learning_to_listen(root: Path, channel: str, split: str) -> list[CoefficientSequence]:
    """Every segment of one channel and split, in our coefficient layout."""
    folder = Path(root) / channel / split
    k = 1 if channel == "fallon" else 0
    listener = _load_npy(folder / f"p{k}_list_faces_clean_deca.npy")
    speaker = _load_npy(folder / f"p{1 - k}_speak_faces_clean_deca.npy")
    audio = _load_npy(folder / f"p{1 - k}_speak_audio_clean_deca.npy")
    for name, array, width in (("listener", listener, 56), ("speaker", speaker, 56)):
        if array.ndim != 3 or array.shape[2] < width:
            raise DataError(f"{folder}: {name} parameters have shape {array.shape}; expected (N, T, >= 56)")
    if audio.ndim != 3 or audio.shape[1] != 4 * listener.shape[1]:
        raise DataError(f"{folder}: speaker audio has shape {audio.shape}; expected (N, 4 * T, n_mels)")
    if not (len(listener) == len(speaker) == len(audio)):
        raise DataError(f"{folder}: {len(listener)} listener, {len(speaker)} speaker and {len(audio)} audio segments")
    log.warning("Learning to Listen has no raw video frames: it feeds the audio branch and the coefficient "
                "baselines only")
    return [CoefficientSequence(f"{channel}/{split}/{i}", l2l_to_ours(speaker[i]), l2l_to_ours(listener[i]),
                                np.asarray(audio[i], np.float32)) for i in range(len(listener))]


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
    return _pose_first_to_ours(array.astype(np.float32), head_first=True)


def convert_vico(root: Path, out: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, list[str]]:
    """Write ViCo (FLAME re-extraction) sessions in our layout, with splits.json; returns the splits."""
    root, out = Path(root), Path(out)
    found: dict[str, list[str]] = {}
    for split in splits:
        folder = root / split
        if not folder.is_dir():
            continue
        names = []
        for video in sorted((folder / "speaker").glob("*.mp4")):
            clip_id = video.stem
            frames, fps = read_video(video)
            if abs(fps - 30) > 0.5:
                raise DataError(f"{video}: {fps:.2f} fps; ViCo clips are 30 fps")
            samples, rate = read_audio(folder / "audio" / f"{clip_id}.wav")
            samples, rate = resample_audio(samples, rate, SAMPLE_RATE), SAMPLE_RATE  # our layout is 16 kHz
            listener = read_flame(folder / "listener_flame" / f"{clip_id}.npy", len(frames))
            speaker_path = folder / "speaker_flame" / f"{clip_id}.npy"
            speaker = read_flame(speaker_path, len(frames)) if speaker_path.exists() else None
            name = f"{split}_{clip_id}"
            layout.write_session(out / name, frames, samples, rate, listener, speaker,
                                 source="ViCo (FLAME re-extraction)")
            names.append(name)
        found[split] = names
    if not any(found.values()):
        raise DataError(f"{root}: no ViCo clips found (expected <split>/speaker/<id>.mp4)")
    layout.write_splits(out, {split: found.get(split, []) for split in ("train", "val", "test")})
    return found
