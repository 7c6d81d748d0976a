"""Training data: sessions decoded once into a compact cache, normalization, and clip sampling.

Each session is decoded (OpenCV video resized to the model's image size, log-mel) once and
cached as an uncompressed .npz of uint8 frames and float16 mel beside the dataset, keyed by the image
size and the source files' sizes and times, so epochs never re-decode video.
"""

from __future__ import annotations

import copy
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fad_edge.atomic import atomic_write_bytes
from fad_edge.constants import CLIP_LEN, N_COEFFS
from fad_edge.data import layout
from fad_edge.data.audio_features import frame_windows, log_mel
from fad_edge.data.normalization import Normalization
from fad_edge.errors import DataError

CACHE_DIR = layout.CACHE_DIR


@dataclass
class SessionFeatures:
    """One session as the model consumes it: frames at model size, mel, and motion."""

    name: str
    frames: np.ndarray  # (T, S, S, 3) uint8 RGB
    mel: np.ndarray  # (T * 4, n_mels) float32
    listener: np.ndarray  # (T, 56) float32, de-normalized
    speaker: np.ndarray | None  # (T, 56) float32 or None

    @property
    def n_frames(self) -> int:
        return len(self.listener)


def _cache_key(folder: Path, image_size: int, n_mels: int) -> str:
    parts = [f"{image_size}", f"{n_mels}"]
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def load_features(folder: Path, image_size: int, n_mels: int, use_cache: bool = True) -> SessionFeatures:
    """A session's features, from the cache when its source files are unchanged."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: session folder does not exist")
    cache = folder.parent / CACHE_DIR / f"{folder.name}-{_cache_key(folder, image_size, n_mels)}.npz"
    if use_cache and cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as data:
                speaker = data["speaker"] if data["has_speaker"] else None
                return SessionFeatures(folder.name, data["frames"], data["mel"].astype(np.float32),
                                       data["listener"], speaker)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    session = layout.load_session(folder, image_size)
    mel = log_mel(session.audio, session.listener.shape[0], n_mels)
    features = SessionFeatures(folder.name, session.frames, mel, session.listener, session.speaker)
    if use_cache:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            frames=features.frames,
            mel=mel.astype(np.float16),
            listener=features.listener,
            speaker=features.speaker if features.speaker is not None else np.zeros((0, N_COEFFS), np.float32),
            has_speaker=np.array(features.speaker is not None),
        )
        try:
            cache.parent.mkdir(exist_ok=True)
            atomic_write_bytes(cache, buffer.getvalue())
        except OSError:
            pass  # a dataset on a read-only or full disk trains all the same, reading its files each time
        features.mel = mel.astype(np.float16).astype(np.float32)  # identical to what a cache hit returns
    return features


def load_split(root: Path, split: str, image_size: int, n_mels: int, use_cache: bool = True) -> list[SessionFeatures]:
    """Every session of a split (DataError on an empty or unknown split)."""
    return [load_features(path, image_size, n_mels, use_cache) for path in layout.list_sessions(Path(root), split)]


class ClipDataset(torch.utils.data.Dataset):
    """Windows of K consecutive clips of L frames with their speaker inputs and `context_clips` C before.

    Item: images (F, 3, S, S) float in [0, 1], mel (F, 1, W, M), valid (F,) 1 where the frame exists
    (0 for context before the session start), motion (K * L, 56) normalized, with F = (C + K) * L.
    Windows start every `stride` frames, so successive epochs see the data at many offsets. A copy made
    by `with_video_features` gives each frame's precomputed video features (F, video_features) as
    "video_features" instead of its image.
    """

    def __init__(
        self,
        sessions: list[SessionFeatures],
        normalization: Normalization,
        audio_window_frames: int,
        context_clips: int = 0,
        stride: int = 4,
        clip_len: int = CLIP_LEN,
        clips_per_item: int = 1,
        speaker_normalization: Normalization | None = None,
        split: str | None = None,  # the split's name, for errors
    ) -> None:
        self.sessions = sessions
        # The speaker's own normalized coefficients per frame, for the encoders' auxiliary target
        # (zeros, and `speaker_valid` 0, where a dataset does not have them).
        speaker_norm = speaker_normalization or Normalization.identity()
        self.speaker = [
            None if s.speaker is None else speaker_norm.normalize(s.speaker).astype(np.float32)
            for s in sessions
        ]
        self.clip_len, self.context = clip_len, context_clips
        self.span = clips_per_item * clip_len
        self.windows = [frame_windows(s.mel, audio_window_frames) for s in sessions]  # (T, 1, W, M) each
        self.motion = [normalization.normalize(s.listener) for s in sessions]
        self.index = [
            (i, start)
            for i, s in enumerate(sessions)
            for start in range(0, s.n_frames - self.span + 1, stride)
        ]
        if not self.index:
            names = ", ".join(s.name for s in sessions[:3]) + (", ..." if len(sessions) > 3 else "")
            longest = max((s.n_frames for s in sessions), default=0)
            where = f"the {split} split's sessions" if split else "the sessions"
            clips = f"{clips_per_item} clips" if clips_per_item > 1 else "one clip"
            smaller = " or a smaller --clips-per-item" if clips_per_item > 1 else ""
            raise DataError(f"no window of {self.span} frames ({clips}) fits in {where} {names} (the longest has "
                            f"{longest} frames); give longer sessions{smaller}")
        self.video_features: list[np.ndarray] | None = None

    def with_video_features(self, features: list[np.ndarray]) -> ClipDataset:
        """A copy of this dataset whose items carry these per-session video features (T, D) instead of images.

        A copy, so that the dataset a caller passes to several runs keeps its images for the next one.
        """
        lengths, frames = [len(f) for f in features], [s.n_frames for s in self.sessions]
        if lengths != frames:
            raise ValueError(f"video features of {lengths} frames for sessions of {frames}")
        clone = copy.copy(self)
        clone.video_features = features
        return clone

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        session, start = self.index[item]
        first = start - self.context * self.clip_len
        frame_ids = np.arange(first, start + self.span)
        valid = frame_ids >= 0
        safe = np.clip(frame_ids, 0, None)
        speaker = self.speaker[session]
        known = valid & (speaker is not None)
        return {
            **self._video(session, safe),
            "mel": torch.from_numpy(np.ascontiguousarray(self.windows[session][safe])),
            "valid": torch.from_numpy(valid.astype(np.float32)),
            "speaker": torch.from_numpy(
                speaker[safe] if speaker is not None else np.zeros((len(safe), N_COEFFS), np.float32)
            ),
            "speaker_valid": torch.from_numpy(known.astype(np.float32)),
            "motion": torch.from_numpy(self.motion[session][start : start + self.span].astype(np.float32)),
        }

    def _video(self, session: int, frames: np.ndarray) -> dict[str, torch.Tensor]:
        if self.video_features is not None:
            return {"video_features": torch.from_numpy(self.video_features[session][frames])}
        images = self.sessions[session].frames[frames]  # (F, S, S, 3) uint8
        return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)}
