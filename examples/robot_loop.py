"""A robot's listening loop: camera (or a video file) + microphone (or a wav), played at real time.

    python examples/robot_loop.py --model engines/demo --video talk.mp4 --audio talk.wav
    python examples/robot_loop.py --model engines/demo --camera 0 --audio talk.wav

Frames and audio are pushed into a ListenerStream as they "arrive" (paced by the wall clock, as a
capture loop would be); each clip's listener motion is printed with its latency when it is ready.
Replace `print_clip` with whatever drives your robot's face or avatar.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from fad_edge.backends import BACKENDS
from fad_edge.data.media import read_audio
from fad_edge.runtime.stream import ClipMotion, ListenerStream
from fad_edge.sampling import SAMPLERS


def print_clip(clip: ClipMotion) -> None:
    jaw, head = clip.motion[:, 50], clip.motion[:, 53:56]
    print(f"clip {clip.index:4d} t={clip.timestamps[0]:7.2f}s latency {clip.latency * 1000:6.1f} ms "
          f"jaw {jaw.mean():+.3f} head pitch/yaw/roll {head.mean(0).round(3)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="export folder (fad-edge export)")
    parser.add_argument("--video", type=Path, help="speaker video file")
    parser.add_argument("--camera", type=int, help="camera index instead of a file")
    parser.add_argument("--audio", type=Path, required=True, help="speaker audio (.wav/.flac)")
    parser.add_argument("--precision", default="int8", choices=BACKENDS["ort"].precisions)
    parser.add_argument("--face", default="detect", choices=["detect", "none"])
    parser.add_argument("--sampler", default="mean", choices=SAMPLERS,
                        help="mean: the same motion for the same speaker; diverse: a draw from the learned reactions")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    args = parser.parse_args()

    capture = cv2.VideoCapture(args.camera if args.camera is not None else str(args.video))
    if not capture.isOpened():
        raise SystemExit(f"cannot open {'camera ' + str(args.camera) if args.camera is not None else args.video}")
    samples, rate = read_audio(args.audio)
    chunk = rate // 50  # 20 ms of audio per push, as a sound card callback would deliver
    stream = ListenerStream.from_export(args.model, precision=args.precision, color="bgr", face=args.face,
                                        sampler=args.sampler, on_clip=print_clip)
    start = time.perf_counter()
    audio_at, frame_at = 0, 0
    try:
        while (now := time.perf_counter() - start) < args.seconds:
            while audio_at < len(samples) and audio_at / rate <= now:  # the microphone's chunks so far
                stream.push_audio(samples[audio_at : audio_at + chunk], rate, audio_at / rate)
                audio_at += chunk
            if frame_at / 30 <= now:
                ok, frame = capture.read()
                if not ok:
                    break
                stream.push_video(frame, frame_at / 30 if args.camera is None else now)
                frame_at += 1
            time.sleep(0.002)
    finally:
        capture.release()
        stream.close()
    stats = stream.stats()
    print(f"{stats.clips} clips; per-clip latency p50 {stats.latency_p50_ms:.1f} ms, "
          f"p99 {stats.latency_p99_ms:.1f} ms; "
          f"frames repeated {stats.frames_repeated}, skipped {stats.frames_skipped}")


if __name__ == "__main__":
    np.set_printoptions(suppress=True)
    main()
