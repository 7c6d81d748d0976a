"""SHA-256 digests: a file's bytes (what ties a checkpoint's weights and an export's graphs to their records),
and a session's listener motion (what tells a training session when it is evaluated again)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fad_edge.constants import CLIP_LEN


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def motion_fingerprint(listener: np.ndarray) -> str:
    """The first 16 hex digits of the SHA-256 of a session's listener motion (T, 56), cut to whole clips as the
    model reads it: the same session under another name, in another copy or split of a dataset, gives the
    same fingerprint."""
    whole = len(listener) // CLIP_LEN * CLIP_LEN
    return hashlib.sha256(np.ascontiguousarray(listener[:whole], dtype=np.float32).tobytes()).hexdigest()[:16]
