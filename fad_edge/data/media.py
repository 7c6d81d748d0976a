"""Reading and writing speaker video (OpenCV) and audio (soundfile), with errors that name the file."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile

from fad_edge import resources
from fad_edge.atomic import atomic_output, atomic_write_bytes
from fad_edge.data.inputs import downmix
from fad_edge.errors import DataError

MIN_FPS, MAX_FPS = 1.0, 240.0  # frame rates a camera or screen recording really has
IMAGE_READER = cv2.videoio_registry.getBackendName(cv2.CAP_IMAGES)  # OpenCV's image sequence "video" backend


class VideoReader:
    """A video file's frames as uint8 RGB, decoded one at a time, each with its time in seconds.

    Opening checks the file (readable, not a still image, a frame rate of 1..240 fps) before any frame is
    decoded. Each frame's time is the container's presentation time, so a variable frame rate is read as
    recorded; where the container gives none (a raw stream) or one that does not advance, the frame takes
    the last time plus one period of the declared rate. Times count from the first frame. Iterate once;
    use as a context manager, or call `close()`.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(missing_file(self.path, "video"))
        self._capture = cv2.VideoCapture(str(self.path))
        try:
            if not self._capture.isOpened():
                raise DataError(f"{self.path}: not a readable video (OpenCV could not open it)")
            if _is_image(self.path, self._capture):
                raise DataError(f"{self.path}: an image, not a video (OpenCV would read it as one frame at a "
                                "made-up frame rate); give the speaker's video file")
            self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
            if not MIN_FPS <= self.fps <= MAX_FPS:  # also refuses NaN
                raise DataError(f"{self.path}: the video declares {self.fps:g} fps; fad-edge reads {MIN_FPS:g} to "
                                f"{MAX_FPS:g} fps (re-encode it, e.g. ffmpeg -i IN -r 30 OUT.mp4)")
            self.declared_frames = max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            self.frame_bytes = _frame_bytes(self._capture)  # one decoded RGB frame at full size
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._capture.release()

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        shape, first, last, count = None, None, None, 0
        while True:
            ok, frame = self._capture.read()
            if not ok:
                break
            if shape is not None and frame.shape != shape:
                raise DataError(f"{self.path}: frame {count} is {frame.shape[:2]}, earlier frames {shape[:2]}")
            shape = frame.shape
            stamp = float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000
            first = stamp if first is None else first
            time = stamp - first
            if last is not None and not (math.isfinite(time) and time > last):
                time = last + 1 / self.fps
            last = time
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), time
        if count == 0:
            raise DataError(f"{self.path}: the video has no readable frames (corrupt or empty file)")


def read_video(path: Path, size: int | None = None) -> tuple[np.ndarray, float]:
    """All frames as uint8 RGB (T, H, W, 3), resized to size x size (INTER_AREA) when given, and the fps.

    For files whose frames are kept whole (datasets at the model's size); `VideoReader` reads one frame
    at a time. The declared frame count is checked against memory before decoding (a crafted header
    must not make us allocate gigabytes), and decoding stops once the frames read exceed that bound.
    """
    with VideoReader(path) as reader:
        frame_bytes = size * size * 3 if size is not None else reader.frame_bytes
        declared = reader.declared_frames
        # Two copies are alive at the end: the list of frames and the stacked array.
        resources.check_fits(2 * declared * frame_bytes, f"{reader.path}: its {declared} frames",
                             "cut the video into shorter parts", DataError)
        total = resources.memory_bytes()
        most = total // (2 * frame_bytes) if total else None  # None: memory unknown, no bound
        frames = []
        for frame, _ in reader:
            if size is not None:
                frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
            frames.append(frame)
            if most is not None and len(frames) > most:
                raise DataError(f"{reader.path}: more frames than this machine's memory holds (the header said "
                                f"{declared}); cut the video into shorter parts")
        return np.stack(frames), reader.fps


def _is_image(path: Path, capture: cv2.VideoCapture) -> bool:
    """Whether an opened capture reads a still image: OpenCV's image sequence reader, or (as its FFmpeg backend
    opens a PNG or JPEG too, as a one-frame 25 fps video) a file whose signature OpenCV's image codecs know."""
    return capture.getBackendName() == IMAGE_READER or cv2.haveImageReader(str(path))


def _frame_bytes(capture: cv2.VideoCapture) -> int:
    """Bytes of one decoded RGB frame at the video's own size."""
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    return max(width, 1) * max(height, 1) * 3


def write_video(path: Path, frames_rgb: np.ndarray | Iterable[np.ndarray], fps: float) -> Path:
    """Write uint8 RGB frames as an mp4 (mp4v), atomically: a (T, H, W, 3) array, or (H, W, 3) frames one at a
    time from an iterable (a long video's frames need never all be in memory at once)."""
    if isinstance(frames_rgb, np.ndarray) and (frames_rgb.ndim != 4 or len(frames_rgb) == 0):
        raise DataError(f"video frames must be non-empty uint8 (T, H, W, 3), got {frames_rgb.dtype} "
                        f"{frames_rgb.shape}")
    frames = iter(frames_rgb)
    first = next(frames, None)
    if first is None or first.dtype != np.uint8 or first.ndim != 3 or first.shape[-1] != 3:
        got = "nothing" if first is None else f"{first.dtype} {first.shape}"
        raise DataError(f"video frames must be non-empty uint8 (T, H, W, 3), got frames of {got}")
    path = Path(path)
    height, width = first.shape[:2]
    written = 0
    with atomic_output(path) as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height))
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a failed write warns per frame
        try:
            if not writer.isOpened():
                raise DataError(f"{path}: OpenCV cannot write mp4 here")
            for frame in itertools.chain([first], frames):
                if frame.shape != first.shape or frame.dtype != np.uint8:
                    raise DataError(f"video frame {written} is {frame.dtype} {frame.shape}, not uint8 {first.shape} "
                                    "as the first")
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                written += 1
        finally:
            writer.release()
            cv2.utils.logging.setLogLevel(level)
        # VideoWriter.write reports nothing: read the file back, so a failed write never replaces a good video.
        if _frame_count(temporary) != written:
            raise DataError(f"{path}: the video could not be written whole (is the disk full?); the earlier file, "
                            "if any, is kept")
    return path


def _frame_count(path: Path) -> int:
    """Frames in a video file by its container, 0 when it cannot be opened."""
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def missing_file(path: Path, kind: str) -> str:
    """Why `path` cannot be read as a `kind` file: a folder in its place, or nothing there."""
    if path.is_dir():
        return f"{path}: is a folder, not a {kind} file"
    return f"{path}: {kind} file not found"


def read_audio(path: Path, notes: list[str] | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the sample rate (channels mixed down by `downmix`, which may add to `notes`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(missing_file(path, "audio"))
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as error:
        raise DataError(f"{path}: not a readable audio file ({str(error).splitlines()[0]})") from None
    samples = downmix(samples.T, notes)
    if samples.size == 0:
        raise DataError(f"{path}: the audio file is empty")
    if not np.all(np.isfinite(samples)):
        raise DataError(f"{path}: the audio contains NaN or infinite samples")
    return samples.astype(np.float32), int(rate)


def read_audio_track(path: Path, notes: list[str] | None = None) -> tuple[np.ndarray, int]:
    """The audio track of a video file (any container FFmpeg reads, via PyAV), mono float32 (`downmix`, which
    may add to `notes`), and its rate.

    Its sample 0 is at the video's first frame: where the audio stream starts later than the video stream
    (by the container's start times), silence fills the gap; where it starts earlier, the audio before the
    first frame is cut. A separate audio file has no such times, and is taken to start with the video.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(missing_file(path, "video"))
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(f"{path}: the video has no audio track; give the speaker audio with --audio")
            stream = container.streams.audio[0]
            chunks, rate = [], int(stream.rate or stream.codec_context.sample_rate)
            lead = _start_seconds(stream) - (_start_seconds(container.streams.video[0])
                                              if container.streams.video else 0.0)
            for frame in container.decode(stream):
                raw = frame.to_ndarray()
                count = len(frame.layout.channels)
                # (channels, samples): planar arrays are that already; packed ones interleave the channels
                array = (raw if frame.format.is_planar else raw.reshape(-1, count).T).astype(np.float32)
                if np.issubdtype(raw.dtype, np.integer):
                    array /= float(np.iinfo(raw.dtype).max)
                chunks.append(array.reshape(count, -1))
    except av.error.FFmpegError as error:
        raise DataError(f"{path}: cannot read its audio track ({error})") from None
    samples = downmix(np.concatenate(chunks, axis=1), notes) if chunks else np.zeros(0, np.float32)
    shift = int(round(lead * rate))
    samples = np.concatenate([np.zeros(shift, np.float32), samples]) if shift > 0 else samples[-shift:]
    if samples.size == 0:
        raise DataError(f"{path}: the audio track is empty; give the speaker audio with --audio")
    if not np.all(np.isfinite(samples)):
        raise DataError(f"{path}: the audio track contains NaN or infinite samples")
    return samples, rate


def _start_seconds(stream: Any) -> float:
    """A PyAV stream's start time in seconds; 0 where the container gives none."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM wav, atomically."""
    buffer = io.BytesIO()
    clipped = np.clip(np.asarray(samples, np.float32), -1, 1)
    soundfile.write(buffer, clipped, sample_rate, subtype="PCM_16", format="WAV")
    return atomic_write_bytes(Path(path), buffer.getvalue())
