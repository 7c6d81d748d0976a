"""Listener motion for a speaker video + audio file: .npy, JSON with timestamps and settings, PNG plot, preview MP4.

Media handling, as documented for users (README: "Frame rates, timing and memory"): the video is any
file OpenCV reads; it is brought to 30 fps by time, taking for each 1/30 s the frame on screen at that
moment by the frames' own timestamps (frames are repeated or skipped, never blended). Each frame is
cropped to the speaker's face (`face`: the detector, a fixed box, or the whole frame; see
`fad_edge.runtime.face`) as it is decoded, and only the crops are kept. The audio is a .wav/.flac file,
or the video's own audio track (placed by the container's start times) when no audio file is given;
any sample rate from 1 kHz to 384 kHz is resampled to 16 kHz. Audio shorter than the video is an error
unless `pad_audio` (silence is added); longer audio is cut to the video, with a note when it is much
longer.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fad_edge import __version__
from fad_edge.atomic import atomic_save_npy, atomic_write_bytes
from fad_edge.constants import FPS, N_COEFFS, SAMPLE_RATE
from fad_edge.data.inputs import SpeakerInputs, fit_audio, prepare_inputs
from fad_edge.data.media import VideoReader, read_audio, read_audio_track
from fad_edge.errors import DataError
from fad_edge.json_report import json_report_bytes
from fad_edge.models.config import ModelConfig
from fad_edge.resources import check_fits
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.face import FaceCropper, FaceTrack, crop_faces, track_faces


@dataclass
class GenerateResult:
    motion_path: Path
    json_path: Path
    plot_path: Path | None  # None where matplotlib is not installed (`plotter`)
    n_frames: int
    seconds: float
    preview_path: Path | None = None
    face: FaceTrack | None = None
    notes: list[str] = field(default_factory=list)  # what a person should know about how the media was read


# Containers keep times in their own units (Matroska in whole milliseconds: a 30 fps frame due at 66.67 ms
# says 67): a time this close to its frame's place at the declared rate is taken to be that place.
TIME_RESOLUTION = 0.001


def at_30_fps(timed: Iterable[tuple[np.ndarray, float]], fps: float) -> Iterator[np.ndarray]:
    """Frames with their times (seconds from the first) -> frames at 30 fps: for each 1/30 s, the frame on screen
    at that moment (repeated or skipped, never blended). Frame i's time is i / fps where the container's is
    within its resolution of that, else the container's (a variable rate, a gap). The last frame stays on
    screen as long as the one before it did, so a steady rate gives round(T * 30 / fps) frames."""
    if not fps > 0:
        raise DataError(f"the video reports {fps} fps; cannot place its frames in time")
    slot, shown, previous, slots = 0, None, None, 0
    tolerance = 1e-6 / fps  # a frame due exactly at a slot's time is on screen at it
    for index, (frame, stamp) in enumerate(timed):
        steady = abs(stamp - index / fps) <= TIME_RESOLUTION
        at = index / fps if steady else stamp
        if shown is not None:
            while slot / FPS < at - tolerance:
                yield shown
                slot += 1
        # Where the last frame goes off screen, in slots (for a steady rate, exactly as round(T * 30 / fps)).
        slots = round((index + 1) * FPS / fps) if steady and previous in (None, (index - 1) / fps) else \
            round((at + (at - previous if previous is not None else 1 / fps)) * FPS)
        shown, previous = frame, at
    if shown is not None:
        for _ in range(slot, max(1, slots)):
            yield shown


MOTION_NAME, JSON_NAME, PLOT_NAME, PREVIEW_NAME = "listener_coeffs.npy", "listener.json", "listener.png", "preview.mp4"
OUTPUT_NAMES = (MOTION_NAME, JSON_NAME, PLOT_NAME, PREVIEW_NAME)  # every file generate may write into its folder


@dataclass
class SpeakerMedia:
    """A speaker's video brought to 30 fps as face crops, where its face is in each frame, and its audio fitted."""

    crops: dict[int, np.ndarray]  # size -> (T, size, size, 3) uint8 RGB face crops at FPS
    source_fps: float
    samples: np.ndarray  # mono float32 at SAMPLE_RATE, covering the frames
    source_sample_rate: int
    track: FaceTrack
    notes: list[str]  # what a person should know about how the media was read

    @property
    def n_frames(self) -> int:
        return len(self.track.boxes)

    def faces(self, size: int) -> np.ndarray:
        """(T, size, size, 3) face crops: what the model sees of each frame."""
        return self.crops[size]


# Audio this much longer than the video is worth a note: a wrong frame rate in the file's header, say.
AUDIO_LONGER_NOTE_SECONDS = 0.5


def read_speaker(video: Path, audio: Path | None, face: FaceCropper | None = None, pad_audio: bool = False,
                 pad_option: str | None = None, sizes: Sequence[int] = ()) -> SpeakerMedia:
    """The speaker's media as generate reads it (the module's docstring), cropped to each of `sizes`: one
    function, so that whatever else reads a speaker for a model (explain) sees what generate's model saw.

    The video is decoded one frame at a time and only its crops are kept, so memory grows with the crops'
    size, not the video's: a face detector's boxes are found in a first reading (frames before the first
    face take its box), the crops in a second. The audio is read first and fitted once the frame count is
    known: with the detector after the first reading, so that audio too short is refused (naming
    `pad_option`, the caller's option that pads it) before the crops; otherwise after the one reading.
    """
    cropper = face or FaceCropper("none")
    first: np.ndarray | None = None  # the first frame, where the crop is the same in every frame
    with VideoReader(Path(video)) as reader:  # the first reading; its header is checked before any decoding
        fps, declared = reader.fps, reader.declared_frames
        expected = max(1, int(round(declared * FPS / fps)))
        check_fits(expected * sum(size * size * 3 for size in sizes),
                   f"{video}: the face crops of its {declared} frames", "cut the video into shorter parts", DataError)
        notes: list[str] = []
        samples, sample_rate = (read_audio(Path(audio), notes) if audio is not None
                                else read_audio_track(Path(video), notes))
        if cropper.mode == "detect":  # frames before the first face take its box: find every box first
            track = track_faces(at_30_fps(reader, fps), cropper)
        else:  # a box or the whole frame: the same region in every frame, known from the first
            first = next(at_30_fps(reader, fps))
            track = track_faces([first], cropper)
    boxes: Iterable[np.ndarray | None] = track.boxes if cropper.mode == "detect" else itertools.repeat(track.boxes[0])
    if cropper.mode == "detect":
        fitted = fit_audio(samples, sample_rate, len(track.boxes), pad_audio, pad_option)  # too short: refused now
    with VideoReader(Path(video)) as reader:
        crops, n_frames = crop_faces(at_30_fps(reader, fps), boxes, track.mode, sizes)
    if cropper.mode != "detect":
        track.boxes = track.boxes[:1] * n_frames
    elif n_frames != len(track.boxes):
        raise DataError(f"{video}: {n_frames} frames on a second reading, {len(track.boxes)} on the first")
    if cropper.mode == "none" and first is not None and first.shape[0] != first.shape[1]:
        notes.append(f"the whole {first.shape[1]}x{first.shape[0]} frame is squeezed to the model's square input "
                     "(--face none); --face detect or --box x,y,w,h keeps the face's proportions")
    if (extra := len(samples) / sample_rate - n_frames / FPS) > AUDIO_LONGER_NOTE_SECONDS:
        notes.append(f"the audio is {extra:.1f} s longer than the video ({n_frames / FPS:.1f} s at the {fps:g} fps "
                     "it declares); its end is not used. If the video looks sped up, its frame rate is wrong")
    if cropper.mode != "detect":
        fitted = fit_audio(samples, sample_rate, n_frames, pad_audio, pad_option)
    return SpeakerMedia(crops, fps, fitted, sample_rate, track, notes)


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

    The outputs are written beside each other in a hidden folder inside `out` and moved into place only once
    all are written, so a failure (a full disk) leaves the earlier outputs as they were, never a mix of two
    runs; for the same reason a run without `preview` removes an earlier run's preview.mp4.
    `pad_option` names the caller's option that sets `pad_audio`, for the error about audio too short.
    """
    from fad_edge.preview import SIDE, render_preview

    out = Path(out)
    if in_the_way := [name for name in OUTPUT_NAMES if (out / name).is_dir()]:
        raise DataError(f"{out / in_the_way[0]}: a folder is where this output goes; move it or choose another --out")
    sizes = (runner.config.image_size, SIDE) if preview else (runner.config.image_size,)
    media = read_speaker(video, audio, face, pad_audio, pad_option, sizes)
    track, n_frames = media.track, media.n_frames
    started = time.perf_counter()
    motion = runner.run_inputs(speaker_inputs(media, runner.config))
    seconds = time.perf_counter() - started
    if motion.shape != (n_frames, N_COEFFS) or not np.all(np.isfinite(motion)):
        raise AssertionError(f"runner {runner.name} returned {motion.shape} or non-finite motion")
    plot = plotter()
    if plot is None:
        media.notes.append("no plot: matplotlib is not installed (pip install matplotlib)")
    record = {
        "fad_edge_version": __version__,
        "backend": runner.name,
        "video": str(video),
        "audio": str(audio) if audio is not None else f"{video} (its audio track)",
        "fps": FPS,
        "source_fps": media.source_fps,
        "source_sample_rate": media.source_sample_rate,
        "n_frames": n_frames,
        "layout": "[expression 0:50, jaw 50:53, head rotation 53:56], FLAME",
        "timestamps_s": [round(i / FPS, 6) for i in range(n_frames)],
        "inference_seconds": seconds,
        "face": track.record(),
        "notes": media.notes,
        "settings": settings or {},
    }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".generate-") as staging:
        written = [atomic_save_npy(Path(staging) / MOTION_NAME, motion)]
        written.append(atomic_write_bytes(Path(staging) / JSON_NAME, json_report_bytes(record)))
        if plot is not None:
            written.append(plot(motion, Path(staging) / PLOT_NAME, title=f"listener motion ({runner.name})"))
        if preview:
            written.append(render_preview(media.faces(SIDE), motion, runner.mean, runner.std,
                                          Path(staging) / PREVIEW_NAME))
        for path in written:
            os.replace(path, out / path.name)
    for name, made in ((PREVIEW_NAME, preview), (PLOT_NAME, plot is not None)):
        if not made:  # an earlier run's would show another run's motion
            (out / name).unlink(missing_ok=True)
    return GenerateResult(out / MOTION_NAME, out / JSON_NAME, out / PLOT_NAME if plot is not None else None,
                          n_frames, seconds, out / PREVIEW_NAME if preview else None, track, media.notes)


def plotter() -> Callable[..., Path] | None:
    """`plots.plot_motion`, or None where matplotlib is not installed: the edge runtime's command line (`[cli]`)
    reads media and runs exports without it, and writes no plot."""
    try:
        from fad_edge.plots import plot_motion
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "matplotlib":
            raise
        return None
    return plot_motion


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
