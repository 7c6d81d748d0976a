"""Listener motion for a speaker video + audio file: .npy, JSON with timestamps and settings, PNG plot."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fad_edge import __version__
from fad_edge.atomic import atomic_save_npy, atomic_write_bytes
from fad_edge.constants import FPS, N_COEFFS
from fad_edge.data.media import read_audio, read_video
from fad_edge.errors import DataError
from fad_edge.plots import plot_motion
from fad_edge.runtime.base import Runner


@dataclass
class GenerateResult:
    motion_path: Path
    json_path: Path
    plot_path: Path
    n_frames: int
    seconds: float


def generate_files(
    runner: Runner,
    video: Path,
    audio: Path,
    out: Path,
    pad_audio: bool = False,
    settings: dict | None = None,
) -> GenerateResult:
    """Read the speaker's media, run the runner, and write the outputs into folder `out`."""
    frames, fps = read_video(Path(video))
    if abs(fps - FPS) > 0.5:
        raise DataError(f"{video}: video is {fps:.2f} fps; fad-edge expects {FPS} fps (re-encode it at {FPS} fps)")
    samples, sample_rate = read_audio(Path(audio))
    started = time.perf_counter()
    motion = runner.run(frames, samples, sample_rate, pad_audio=pad_audio)
    seconds = time.perf_counter() - started
    if motion.shape != (len(frames), N_COEFFS) or not np.all(np.isfinite(motion)):
        raise AssertionError(f"runner {runner.name} returned {motion.shape} or non-finite motion")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    motion_path = atomic_save_npy(out / "listener_coeffs.npy", motion)
    record = {
        "fad_edge_version": __version__,
        "backend": runner.name,
        "video": str(video),
        "audio": str(audio),
        "fps": FPS,
        "n_frames": len(frames),
        "layout": "[expression 0:50, jaw 50:53, head rotation 53:56], FLAME",
        "timestamps_s": [round(i / FPS, 6) for i in range(len(frames))],
        "inference_seconds": seconds,
        "settings": settings or {},
    }
    json_path = out / "listener.json"
    atomic_write_bytes(json_path, json.dumps(record, indent=2).encode())
    plot_path = plot_motion(motion, out / "listener.png", title=f"listener motion ({runner.name})")
    return GenerateResult(Path(motion_path), json_path, plot_path, len(frames), seconds)
