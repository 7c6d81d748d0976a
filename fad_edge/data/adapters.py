"""Learning to Listen's own layout, for users who have it, and what the real datasets' readers share.

Learning to Listen (Ng et al. 2022)
    `ROOT/<channel>/<split>/p{0,1}_{list,speak}_faces_clean_deca.npy`, each (N, 64, 184): N segments
    of 64 frames of DECA parameters; the first 56 are [expression 50, head pose 3, jaw 3], reordered
    here to ours, [expression 50, jaw 3, head 3]. Speaker p{1-k} pairs with listener p{k}, with
    k = 1 for the "fallon" channel and 0 for the others. Speaker audio is
    `p{1-k}_speak_audio_clean_deca.npy`, (N, 256, 128): Learning to Listen's own mel spectrogram
    (128 bands, its own scaling), 4 mel frames per video frame. It is not our log-mel (80 Slaney
    bands, `data/audio_features.py`) and no model reads it: only `fad-edge baselines-l2l` reads this
    data, whose NN audio baseline compares these spectrograms with each other. There is no video.

ViCo's reader is `data/vico.py`; both share the reordering of DECA's pose here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fad_edge.constants import EXPRESSION, HEAD, JAW, N_COEFFS, N_EXPRESSION
from fad_edge.data import layout
from fad_edge.errors import DataError

# Printed once per run of the Learning to Listen baselines; under 80 columns.
NO_VIDEO_NOTE = "note: Learning to Listen has no video: no FAD row, coefficient baselines only"
# The split the Learning to Listen baselines are fitted on; scoring them there is in-sample.
L2L_FIT_SPLIT = "train"


def pose_first_to_ours(array: np.ndarray, head_first: bool) -> np.ndarray:
    """[exp 50, A 3, B 3] -> [exp 50, jaw 3, head 3]; A is the head pose when `head_first`."""
    ours = np.empty(array.shape[:-1] + (N_COEFFS,), np.float32)
    ours[..., EXPRESSION] = array[..., :N_EXPRESSION]
    first, second = array[..., N_EXPRESSION : N_EXPRESSION + 3], array[..., N_EXPRESSION + 3 : N_EXPRESSION + 6]
    ours[..., JAW] = second if head_first else first
    ours[..., HEAD] = first if head_first else second
    return ours


def l2l_to_ours(array: np.ndarray) -> np.ndarray:
    """Learning to Listen's DECA parameters (..., >=56) [exp, head, jaw] -> ours (..., 56) [exp, jaw, head]."""
    return pose_first_to_ours(np.asarray(array, np.float32)[..., :N_COEFFS], head_first=True)


@dataclass
class CoefficientSequence:
    """A segment with speaker and listener motion (T, 56) and the speaker's mel (T * 4, n_mels)."""

    name: str
    speaker: np.ndarray
    listener: np.ndarray
    mel: np.ndarray


def load_npy(path: Path) -> np.ndarray:
    """An .npy array (never a pickle), or a DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy file ({error})") from None


def _load_l2l(path: Path, what: str, used: int | None = None) -> np.ndarray:
    """One Learning to Listen array (N, T, width) with N, T > 0.

    `used`: the coefficients per frame that are read (the first `used`, checked as coefficients);
    None: the speaker audio, all of it read and checked only to be finite.
    """
    array = load_npy(path)
    if array.ndim != 3 or array.shape[2] < (used or 1):
        raise DataError(f"{path}: {what} has shape {array.shape}; expected (N, T, >= {used or 1})")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: {what} has shape {array.shape}: no segments or no frames")
    if used is None:
        layout.check_finite_values(path, array)
    else:
        layout.check_coefficient_values(path, array[..., :used])
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
    if speaker.shape[1] != listener.shape[1]:  # a transposed or cut speaker file fails far downstream otherwise
        raise DataError(f"{paths['speaker']}: speaker parameters have shape {speaker.shape}, {speaker.shape[1]} "
                        f"frames a segment, but the listener's {paths['listener'].name} has {listener.shape[1]}; "
                        "expected (N, T, >= 56) with the listener's T")
    if audio.shape[1] != 4 * listener.shape[1]:
        raise DataError(f"{paths['audio']}: speaker audio has shape {audio.shape}; expected (N, 4 * T, n_mels) "
                        f"with T = {listener.shape[1]}")
    if not (len(listener) == len(speaker) == len(audio)):
        raise DataError(f"{folder}: {len(listener)} listener, {len(speaker)} speaker and {len(audio)} audio segments")
    return [CoefficientSequence(f"{channel}/{split}/{i}", l2l_to_ours(speaker[i]), l2l_to_ours(listener[i]),
                                np.asarray(audio[i], np.float32)) for i in range(len(listener))]


def load_learning_to_listen_splits(root: Path, channel: str, split: str
                                   ) -> tuple[list[CoefficientSequence], list[CoefficientSequence]]:
    """The train split (what the baselines fit on) and `split`, refused when their mel spectrograms differ in width.

    `split` may not be the train split: the nearest-neighbour baselines would find each test segment
    itself and score an L2 of 0.
    """
    if split == L2L_FIT_SPLIT:
        raise DataError(f"--split {split}: the baselines are fitted on {L2L_FIT_SPLIT}, so scoring them there is "
                        "in-sample (the nearest neighbours find each segment itself); give --split val or test")
    train = load_learning_to_listen(root, channel, L2L_FIT_SPLIT)
    test = load_learning_to_listen(root, channel, split)
    if train[0].mel.shape[1] != test[0].mel.shape[1]:
        raise DataError(f"{l2l_paths(root, channel, split)['audio']}: mel spectrograms of shape {test[0].mel.shape}, "
                        f"but the train split's are {train[0].mel.shape}; both splits need the same mel bands")
    return train, test
