"""A robot's listening loop: camera or video file, microphone or wav, in real time.

    fad-edge demo   # among the rest, exports a model to demo_out/model
    python examples/robot_loop.py --model demo_out/model --precision int8 \\
        --video talk.mp4 --audio talk.wav
    python examples/robot_loop.py --model demo_out/model --precision int8 \\
        --camera 0 --audio talk.wav
    python examples/robot_loop.py --model engines/NAME --backend trt \\
        --camera 0 --audio talk.wav    # on a Jetson

Frames and audio are pushed into a ListenerStream as they "arrive" (paced by the
wall clock, as a capture loop would be: a file's frames at its own frame rate, a
camera's as it delivers them); each clip's listener motion is printed with its
latency when it is ready. Ctrl-C stops the loop and still prints the stream's
statistics (exit code 130). Replace `print_clip` with whatever drives your
robot's face or avatar.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from fad_edge.backends import all_precisions, backend_names
from fad_edge.data.media import MAX_FPS, MIN_FPS, read_audio
from fad_edge.errors import FadEdgeError
from fad_edge.runtime.stream import ClipMotion, ListenerStream
from fad_edge.sampling import SAMPLERS

AUDIO_CHUNK_SECONDS = 0.02  # audio per push, as a sound card callback would deliver it
INTERRUPTED = 130  # the exit code of a program stopped by Ctrl-C


def print_clip(clip: ClipMotion) -> None:
    jaw, head = clip.motion[:, 50], clip.motion[:, 53:56]
    pitch, yaw, roll = head.mean(0)  # the clip's mean jaw opening and head rotation
    print(f"clip {clip.index:4d} at {clip.timestamps[0]:7.2f} s {clip.latency * 1000:6.1f} ms  jaw {jaw.mean():+.3f}"
          f"  head {pitch:+.3f} {yaw:+.3f} {roll:+.3f}")


def seconds_to_run(text: str) -> float:
    """A finite, positive number of seconds (argparse refuses anything else in its one error line)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of seconds above 0")
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="export folder (fad-edge export)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=Path, help="speaker video file")
    source.add_argument("--camera", type=int, help="camera index")
    parser.add_argument("--audio", type=Path, required=True, help="speaker audio (.wav/.flac)")
    parser.add_argument("--backend", default="ort", choices=backend_names(),
                        help="ort: ONNX Runtime on the CPU; trt: TensorRT engines on an NVIDIA GPU (a Jetson)")
    parser.add_argument("--precision", choices=all_precisions(),
                        help="one the backend runs (default: its first; int8 is ort's fastest on a CPU)")
    parser.add_argument("--face", default="detect", choices=["detect", "none"])
    parser.add_argument("--sampler", default="mean", choices=SAMPLERS,
                        help="mean: the same motion for the same speaker; diverse: a draw from the learned reactions")
    parser.add_argument("--seconds", type=seconds_to_run, default=30.0, help="stop after this long")
    return parser.parse_args(argv)


def open_capture(args: argparse.Namespace) -> tuple[cv2.VideoCapture, float | None]:
    """The capture, and a file's frame rate (None for a camera, whose frames are stamped as they come)."""
    if args.camera is not None:
        capture = cv2.VideoCapture(args.camera)
        if not capture.isOpened():
            raise FadEdgeError(f"cannot open camera {args.camera}")
        return capture, None
    capture = cv2.VideoCapture(str(args.video))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if not capture.isOpened() or not MIN_FPS <= fps <= MAX_FPS:
        capture.release()
        raise FadEdgeError(f"{args.video}: not a video file OpenCV can read at {MIN_FPS:g} to {MAX_FPS:g} fps")
    return capture, fps


def play(capture: cv2.VideoCapture, file_fps: float | None, samples: np.ndarray, rate: int, stream: ListenerStream,
         seconds: float) -> None:
    """Push the audio and the frames as they fall due on the wall clock, until `seconds` pass or the video ends."""
    chunk = max(1, round(rate * AUDIO_CHUNK_SECONDS))
    start = time.perf_counter()
    audio_at, frame_at = 0, 0
    while (now := time.perf_counter() - start) < seconds:
        while audio_at < len(samples) and audio_at / rate <= now:  # the microphone's chunks so far
            stream.push_audio(samples[audio_at : audio_at + chunk], rate, audio_at / rate)
            audio_at += chunk
        if file_fps is None or frame_at / file_fps <= now:  # a camera's read waits for its next frame
            ok, frame = capture.read()
            if not ok:
                break
            stream.push_video(frame, now if file_fps is None else frame_at / file_fps)
            frame_at += 1
        time.sleep(0.002)


def listen(args: argparse.Namespace) -> int:
    """Run the loop; Ctrl-C ends it early, with the statistics printed all the same."""
    samples, rate = read_audio(args.audio)
    capture, file_fps = open_capture(args)
    interrupted = False
    try:
        stream = ListenerStream.from_export(args.model, precision=args.precision, backend=args.backend,
                                            color="bgr", face=args.face, sampler=args.sampler, on_clip=print_clip)
        try:
            play(capture, file_fps, samples, rate, stream, args.seconds)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stream.close()
    finally:
        capture.release()
    stats = stream.stats()
    print(f"{stats.clips} clips; per-clip latency p50 {stats.latency_p50_ms:.1f} ms, "
          f"p99 {stats.latency_p99_ms:.1f} ms; "
          f"frames repeated {stats.frames_repeated}, skipped {stats.frames_skipped}")
    return INTERRUPTED if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    """The loop's exit code: 2 and one line for what the user can fix (a missing file, a checkpoint for an export)."""
    args = parse_args(argv)
    try:
        return listen(args)
    except FadEdgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the loop began (opening the model)
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    np.set_printoptions(suppress=True)
    sys.exit(main())
