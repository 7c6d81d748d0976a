"""Listener motion for a speaker video + audio file: .npy, JSON with timestamps and settings, PNG plot, preview MP4.

Media handling, as documented for users: the video is any file OpenCV reads; a frame rate other than
30 fps is brought to 30 fps by taking, for each 1/30 s, the frame shown at that time (frames are
repeated or skipped, never blended). Each frame is then cropped to the speaker's face (`face`: the
detector, a fixed box, or the whole frame; see `fad_edge.runtime.face`). The audio is a .wav/.flac
file, or the video's own audio track when no audio file is given; any sample rate is resampled to
16 kHz. Audio shorter than the video is an error unless `pad_audio` (silence is added); longer audio
is cut to the video.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fad_edge import __version__
from fad_edge.atomic import atomic_save_npy, atomic_write_bytes
from fad_edge.constants import FPS, N_COEFFS, SAMPLE_RATE
from fad_edge.data.inputs import SpeakerInputs, fit_audio, prepare_inputs
from fad_edge.data.media import read_audio, read_audio_track, read_video
from fad_edge.errors import DataError
from fad_edge.json_report import json_report_bytes
from fad_edge.models.config import ModelConfig
from fad_edge.plots import plot_motion
from fad_edge.resources import check_fits
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.face import FaceCropper, FaceTrack, crop_frames, track_faces


@dataclass
class GenerateResult:
    motion_path: Path
    json_path: Path
    plot_path: Path
    n_frames: int
    seconds: float
    preview_path: Path | None = None
    face: FaceTrack | None = None


def retime_frames(frames: np.ndarray, fps: float) -> np.ndarray:
    """Frames at `fps` -> frames at 30 fps: for each 1/30 s, the frame on screen at that moment."""
    if abs(fps - FPS) < 0.01:
        return frames
    if fps <= 0:
        raise DataError(f"the video reports {fps} fps; cannot place its frames in time")
    count = max(1, int(round(len(frames) * FPS / fps)))
    check_fits(count * frames[0].nbytes, f"the video brought to {FPS} fps ({count} frames)",
               "re-encode it at 30 fps or cut it into shorter parts", DataError)
    index = np.minimum(np.floor(np.arange(count) * fps / FPS + 1e-6).astype(int), len(frames) - 1)
    return frames[index]


MOTION_NAME, JSON_NAME, PLOT_NAME, PREVIEW_NAME = "listener_coeffs.npy", "listener.json", "listener.png", "preview.mp4"
OUTPUT_NAMES = (MOTION_NAME, JSON_NAME, PLOT_NAME, PREVIEW_NAME)  # every file generate may write into its folder


@dataclass
class SpeakerMedia:
    """A speaker's video brought to 30 fps, where its face is in each frame, and its audio fitted to the frames."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB at FPS, uncropped
    source_fps: float
    samples: np.ndarray  # mono float32 at SAMPLE_RATE, covering the frames
    source_sample_rate: int
    track: FaceTrack

    def faces(self, size: int) -> np.ndarray:
        """(T, size, size, 3) face crops: what the model sees of each frame."""
        return crop_frames(self.frames, self.track, size)


def read_speaker(video: Path, audio: Path | None, face: FaceCropper | None = None, pad_audio: bool = False,
                 pad_option: str | None = None) -> SpeakerMedia:
    """The speaker's media as generate reads it (the module's docstring): one function, so that whatever
    else reads a speaker for a model (explain) sees what generate's model saw.

    The audio is fitted before the faces are tracked, so audio too short is refused (naming `pad_option`,
    the caller's option that pads it) before that work.
    """
    frames, fps = read_video(Path(video))
    frames = retime_frames(frames, fps)
    samples, sample_rate = read_audio(Path(audio)) if audio is not None else read_audio_track(Path(video))
    fitted = fit_audio(samples, sample_rate, len(frames), pad_audio, pad_option)
    track = track_faces(frames, face or FaceCropper("none"))
    return SpeakerMedia(frames, fps, fitted, sample_rate, track)


def speaker_inputs(media: SpeakerMedia, config: ModelConfig) -> SpeakerInputs:
    """The model's inputs for the speaker: the face crops and mel windows, padded to whole clips."""
    return prepare_inputs(media.faces(config.image_size), media.samples, SAMPLE_RATE, config.image_size,
                          config.audio_window_frames, config.n_mels)


def generate_files(
    runner: ClipRunner,
    video: Path,
    audio: Path | None,
    out: Path,
    pad_audio: bool = False,
    settings: dict | None = None,
    preview: bool = False,
    face: FaceCropper | None = None,
    pad_option: str | None = None,
) -> GenerateResult:
    """Read the speaker's media, crop the face (`face`; None: the whole frame), run the runner, write into `out`.

    `pad_option` names the caller's option that sets `pad_audio`, for the error about audio too short.
    """
    media = read_speaker(video, audio, face, pad_audio, pad_option)
    frames, track = media.frames, media.track
    started = time.perf_counter()
    motion = runner.run_inputs(speaker_inputs(media, runner.config))
    seconds = time.perf_counter() - started
    if motion.shape != (len(frames), N_COEFFS) or not np.all(np.isfinite(motion)):
        raise AssertionError(f"runner {runner.name} returned {motion.shape} or non-finite motion")
    out = Path(out)
    names = OUTPUT_NAMES if preview else OUTPUT_NAMES[:-1]
    if in_the_way := [name for name in names if (out / name).is_dir()]:
        raise DataError(f"{out / in_the_way[0]}: a folder is where this output goes; move it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    preview_path = None
    if preview:  # first: the largest write, the likeliest to fail, and it fails before the others replace theirs
        from fad_edge.preview import SIDE, render_preview

        preview_path = render_preview(crop_frames(frames, track, SIDE), motion, runner.mean, runner.std,
                                      out / PREVIEW_NAME)
    motion_path = atomic_save_npy(out / MOTION_NAME, motion)
    record = {
        "fad_edge_version": __version__,
        "backend": runner.name,
        "video": str(video),
        "audio": str(audio) if audio is not None else f"{video} (its audio track)",
        "fps": FPS,
        "source_fps": media.source_fps,
        "source_sample_rate": media.source_sample_rate,
        "n_frames": len(frames),
        "layout": "[expression 0:50, jaw 50:53, head rotation 53:56], FLAME",
        "timestamps_s": [round(i / FPS, 6) for i in range(len(frames))],
        "inference_seconds": seconds,
        "face": track.record(),
        "settings": settings or {},
    }
    json_path = out / JSON_NAME
    atomic_write_bytes(json_path, json_report_bytes(record))
    plot_path = plot_motion(motion, out / PLOT_NAME, title=f"listener motion ({runner.name})")
    return GenerateResult(Path(motion_path), json_path, plot_path, len(frames), seconds, preview_path, track)


def face_summary(track: FaceTrack, n_frames: int) -> str:
    """What the face crop did, for the terminal: one line, and a note about the detector if it has one."""
    if track.mode == "none":
        return "face: the whole frame (--face none)"
    if track.mode == "box":
        return f"face: the box {track.record()['boxes'][0]} (x, y, w, h) in every frame"
    missing = track.frames_without_face
    if not track.face_found:
        line = (f"face: NO FACE FOUND in any of the {n_frames} frames, so the whole frame was used; "
                "give --face box --box x,y,w,h, or --face none")
    else:
        line = f"face: found in {n_frames - missing} of {n_frames} frames by {track.detector}"
        line = f"{line}; the {missing} others kept the last box" if missing else line
    return f"{line}\nnote: {track.note}" if track.note else line
