"""Face detectors for the generate/stream face crop, measured on real photographs in room-sized frames.

    PYTHONPATH=. python bench/face_detectors.py --out bench/results/face_detectors

Scenes are 640x480 frames: real photographs' faces (scikit-image's astronaut and cameraman,
matplotlib's Grace Hopper; face boxes labelled by hand, eyebrows to chin and cheek to cheek) pasted
with their head and shoulders at face sizes of 40-200 px onto real photographs without faces
(scikit-learn's and scikit-image's sample images, a cat among them); scikit-image's 100 LFW face
crops (25 px, grey) at 40-80 px; fad-edge's synthetic cartoon faces at 40-200 px; and frames
without any face (some holding LFW's non-face crops). Each frame gets a light gain, sensor noise
and JPEG compression, as a webcam would give. A face counts as found when a returned box overlaps
its labelled box with IoU >= 0.4 (detectors draw their boxes a little differently); every other
box is a false positive. Cost is CPU time per 640x480 frame (the process's, all threads), with
OpenCV held to one thread: the machine is shared, so wall time (also stored) depends on its load.

Candidates that are not installed are listed as such: OpenCV's Haar cascades (fad-edge's own
detector, always there), MediaPipe's BlazeFace (the legacy
solution in mediapipe 0.10.21 carries its models inside the wheel; later releases do not) and dlib's
HOG detector (dlib-bin). Only PyPI packages; nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.report_paths import report_path
from fad_edge.runtime.face import HaarFaceDetector, box_iou

FRAME_W, FRAME_H = 640, 480
FACE_SIDES = (40, 56, 80, 112, 160, 200)
HIT_IOU = 0.4
Detector = Callable[[np.ndarray], np.ndarray]


@dataclass
class Scene:
    frame: np.ndarray  # (480, 640, 3) uint8 RGB
    truth: np.ndarray | None  # face box x, y, w, h, or None for a frame without a face
    group: str  # real, lfw, synthetic or none
    source: str = ""  # which photograph, for the real faces


def _rgb(path: Path | str) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read an image from {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def real_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Real photographs shipped inside pip wheels, with hand-labelled face boxes."""
    import matplotlib.cbook
    import skimage.data

    hopper = _rgb(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return [("astronaut", skimage.data.astronaut(), np.array([176, 70, 96, 96.0])),
            ("grace_hopper", hopper, np.array([170, 135, 195, 195.0])),
            ("cameraman", cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2RGB), np.array([199, 122, 75, 76.0]))]


def backgrounds() -> list[np.ndarray]:
    """Real photographs without faces (a temple, a flower, a coffee cup, a cat, a rocket, a motorbike, bricks)."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    grey = cv2.cvtColor(skimage.data.brick(), cv2.COLOR_GRAY2RGB)
    return [load_sample_image("china.jpg"), load_sample_image("flower.jpg"), skimage.data.coffee(),
            skimage.data.chelsea(), skimage.data.rocket(), skimage.data.stereo_motorcycle()[0], grey]


def room(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 640x480 view of a background photograph: scaled to cover, cropped at random, maybe mirrored."""
    scale = max(FRAME_W / image.shape[1], FRAME_H / image.shape[0]) * rng.uniform(1.0, 1.4)
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    y, x = rng.integers(0, big.shape[0] - FRAME_H + 1), rng.integers(0, big.shape[1] - FRAME_W + 1)
    view = big[y : y + FRAME_H, x : x + FRAME_W]
    return view[:, ::-1].copy() if rng.random() < 0.5 else view.copy()


def paste(frame: np.ndarray, image: np.ndarray, face: np.ndarray, side: int, context: float,
          rng: np.random.Generator) -> np.ndarray:
    """Paste image's region around `face` (grown by `context` sides each way) so the face is `side` px wide.

    The region's edge is feathered. Returns the face's box in the frame.
    """
    scale = side / face[2]
    x0, y0 = max(0, int(face[0] - context * face[2])), max(0, int(face[1] - context * face[3]))
    x1 = min(image.shape[1], int(face[0] + (1 + context) * face[2]))
    y1 = min(image.shape[0], int(face[1] + (1 + context) * face[3]))
    region = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale,
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        region, face_x = region[:, ::-1], (x1 - face[0] - face[2]) * scale
    else:
        face_x = (face[0] - x0) * scale
    face_y, face_w, face_h = (face[1] - y0) * scale, face[2] * scale, face[3] * scale
    fx = rng.uniform(4, FRAME_W - face_w - 4)  # the face lies inside the frame; the region may not
    fy = rng.uniform(4, FRAME_H - face_h - 4)
    left, top = int(round(fx - face_x)), int(round(fy - face_y))
    h, w = region.shape[:2]
    ramp = max(2, int(0.08 * min(h, w)))
    alpha = np.minimum(np.minimum(np.arange(w) + 1, np.arange(w)[::-1] + 1)[None, :],
                       np.minimum(np.arange(h) + 1, np.arange(h)[::-1] + 1)[:, None]).clip(0, ramp) / ramp
    fy0, fx0 = max(top, 0), max(left, 0)
    fy1, fx1 = min(top + h, FRAME_H), min(left + w, FRAME_W)
    part = region[fy0 - top : fy1 - top, fx0 - left : fx1 - left].astype(np.float32)
    a = alpha[fy0 - top : fy1 - top, fx0 - left : fx1 - left, None]
    frame[fy0:fy1, fx0:fx1] = (a * part + (1 - a) * frame[fy0:fy1, fx0:fx1]).astype(np.uint8)
    return np.array([left + face_x, top + face_y, face_w, face_h])


def camera(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A gain, sensor noise and JPEG compression."""
    noisy = frame.astype(np.float32) * rng.uniform(0.6, 1.2) + rng.normal(0, 3, frame.shape)
    ok, data = cv2.imencode(".jpg", np.clip(noisy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 70])
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if ok else None
    if decoded is None:
        raise RuntimeError("OpenCV failed to round-trip a frame through JPEG")
    return decoded


def scenes(seed: int = 0, draws: int = 5) -> list[Scene]:
    import skimage.data

    rng = np.random.default_rng(seed)
    rooms = backgrounds()
    out: list[Scene] = []
    for name, image, face in real_faces():
        for side in FACE_SIDES:
            for _ in range(draws):
                frame = room(rooms[rng.integers(len(rooms))], rng)
                box = paste(frame, image, face, side, 0.6, rng)
                out.append(Scene(camera(frame, rng), box, "real", name))
    lfw = (skimage.data.lfw_subset() * 255).astype(np.uint8)
    for crop in lfw[:100]:
        frame = room(rooms[rng.integers(len(rooms))], rng)
        side = int(rng.integers(40, 81))
        box = paste(frame, cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB), np.array([0, 0, 25, 25.0]), side, 0, rng)
        out.append(Scene(camera(frame, rng), box, "lfw"))
    for seed_ in range(4):
        session = generate_session(100 + seed_, SyntheticConfig(seconds=1.0, image_size=128))
        for i in range(0, 30, 4):
            pitch, yaw, _ = session.speaker[i, 53:56]
            cx, cy = 64 + yaw * 0.35 * 128, 64 + pitch * 0.35 * 128  # the drawing's face centre
            face = np.array([cx - 0.34 * 128, cy - 0.19 * 128, 0.68 * 128, 0.63 * 128])  # brows to chin
            frame = room(rooms[rng.integers(len(rooms))], rng)
            box = paste(frame, session.frames[i], face, int(rng.choice(FACE_SIDES)), 0.2, rng)
            out.append(Scene(camera(frame, rng), box, "synthetic"))
    for i in range(60):
        frame = room(rooms[i % len(rooms)], rng)
        if i % 2:  # LFW's non-face crops: image patches that are not faces
            crop = cv2.cvtColor(lfw[100 + i % 100], cv2.COLOR_GRAY2RGB)
            paste(frame, crop, np.array([0, 0, 25, 25.0]), int(rng.integers(40, 81)), 0, rng)
        out.append(Scene(camera(frame, rng), None, "none"))
    return out


def _dlib_hog(hog: Callable, upsample: int, grey: bool, frame: np.ndarray) -> np.ndarray:
    """dlib's HOG detector's boxes as x, y, w, h rows."""
    found = hog(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if grey else frame, upsample)
    return np.array([[r.left(), r.top(), r.width(), r.height()] for r in found], np.float64).reshape(-1, 4)


def candidates() -> dict[str, Detector | str]:
    """Each candidate's detector, or why it is not available here."""
    found: dict[str, Detector | str] = {
        "opencv-haar default @320 (sf 1.15)": HaarFaceDetector(max_side=320, scale_factor=1.15),
        "opencv-haar default @320": HaarFaceDetector(max_side=320),
        "opencv-haar default @640": HaarFaceDetector(max_side=640),
        "opencv-haar alt2 @320": HaarFaceDetector(max_side=320, cascade="haarcascade_frontalface_alt2.xml"),
        "opencv-haar alt2 @640": HaarFaceDetector(max_side=640, cascade="haarcascade_frontalface_alt2.xml"),
    }
    for selection, label in ((0, "short range"), (1, "full range")):
        name = f"mediapipe blazeface {label}"
        try:
            import mediapipe

            solution = mediapipe.solutions.face_detection.FaceDetection(model_selection=selection,
                                                                        min_detection_confidence=0.5)
            found[name] = functools.partial(_blazeface, solution)
        except (ImportError, AttributeError) as error:
            found[name] = f"mediapipe with the legacy solutions (<= 0.10.21) not installed ({error})"
    try:
        import dlib

        hog = dlib.get_frontal_face_detector()
        for upsample, grey in ((0, False), (1, False), (1, True)):
            found[f"dlib hog, upsample {upsample}{', grey' if grey else ''}"] = functools.partial(
                _dlib_hog, hog, upsample, grey)
    except ImportError:
        found["dlib hog"] = "dlib (dlib-bin) not installed"
    return found


def _blazeface(solution, frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    result = solution.process(frame)
    boxes = [[b.xmin * width, b.ymin * height, b.width * width, b.height * height]
             for b in (d.location_data.relative_bounding_box for d in result.detections or [])]
    return np.array(boxes, np.float64).reshape(-1, 4)


def measure(detector: Detector, frames: list[Scene]) -> dict:
    groups: dict[str, dict] = {}
    sizes: dict[int, list[bool]] = {}
    sources: dict[str, list[bool]] = {}
    times, cpu_times = [], []
    for scene in frames:
        start, cpu_start = time.perf_counter(), time.process_time()
        boxes = detector(scene.frame)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        g = groups.setdefault(scene.group, {"frames": 0, "found": 0, "false_positives": 0, "iou": []})
        g["frames"] += 1
        if scene.truth is None:
            g["false_positives"] += len(boxes)
            continue
        overlap = box_iou(scene.truth, boxes) if len(boxes) else np.zeros(0)
        hit = bool(len(boxes) and overlap.max() >= HIT_IOU)
        g["found"] += hit
        g["false_positives"] += int((overlap < HIT_IOU).sum())
        if hit:
            g["iou"].append(float(overlap.max()))
        if scene.group == "real":
            sizes.setdefault(int(round(scene.truth[2])), []).append(hit)
            sources.setdefault(scene.source, []).append(hit)
    summary = {name: {"frames": g["frames"], "found": g["found"], "false_positives": g["false_positives"],
                      "found_rate": round(g["found"] / g["frames"], 3) if name != "none" else None,
                      "false_positives_per_frame": round(g["false_positives"] / g["frames"], 3),
                      "mean_iou_found": round(float(np.mean(g["iou"])), 3) if g["iou"] else None}
               for name, g in groups.items()}
    by_size = {str(side): round(float(np.mean(hits)), 3) for side, hits in sorted(sizes.items())}
    by_source = {source: round(float(np.mean(hits)), 3) for source, hits in sources.items()}
    return {"groups": summary, "real_found_rate_by_face_px": by_size, "real_found_rate_by_photo": by_source,
            "cpu_ms_per_frame_median": round(1000 * float(np.median(cpu_times)), 1),
            "wall_ms_per_frame_median": round(1000 * float(np.median(times)), 1)}


def machine() -> dict:
    from fad_edge.bench.timing import cpu_name

    cpu = cpu_name()
    versions = {}
    for package in ("mediapipe", "dlib"):
        with contextlib.suppress(ImportError):
            versions[package] = __import__(package).__version__
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__,
            "load_average_at_start": os.getloadavg()[0], **versions}


def markdown(record: dict) -> str:
    m = record["machine"]
    lines = [f"Face detectors on {record['frames']['total']} frames of 640x480 ({m['cpu']}, {m['cores']} cores, "
             f"OpenCV {m['opencv']}); made by `bench/face_detectors.py`.", "",
             "| detector | real faces found | of them 40-56 px | turned face (cameraman) | LFW crops found | "
             "synthetic found | false pos. / frame without face | false pos. / face frame | IoU | CPU ms / frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in record["candidates"].items():
        if "unavailable" in result:
            lines.append(f"| {name} | not measured: {result['unavailable']} ||||||||||")
            continue
        g, small = result["groups"], result["real_found_rate_by_face_px"]
        face_frames = sum(g[k]["frames"] for k in ("real", "lfw", "synthetic"))
        face_fp = sum(g[k]["false_positives"] for k in ("real", "lfw", "synthetic")) / face_frames
        small_rate = np.mean([small[k] for k in ("40", "56")])
        turned = result["real_found_rate_by_photo"]["cameraman"]
        lines.append(f"| {name} | {g['real']['found_rate']:.0%} | {small_rate:.0%} | {turned:.0%} | "
                     f"{g['lfw']['found_rate']:.0%} | {g['synthetic']['found_rate']:.0%} | "
                     f"{g['none']['false_positives_per_frame']:.2f} | "
                     f"{face_fp:.2f} | {g['real']['mean_iou_found']} | {result['cpu_ms_per_frame_median']:.0f} |")
    versions = ", ".join(f"{k} {m[k]}" for k in ("mediapipe", "dlib") if k in m)
    lines += ["", f"Real faces: {record['frames']['real']} frames (3 photographs x 6 sizes x 5); LFW: "
              f"{record['frames']['lfw']}; synthetic: {record['frames']['synthetic']}; without a face: "
              f"{record['frames']['none']}. Packages: {versions or 'OpenCV only'}. Load average at the start: "
              f"{m['load_average_at_start']:.1f} (the machine was shared; CPU time is less affected than wall time)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results/face_detectors"),
                        help="writes OUT.json and OUT.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="measure only the candidates whose name contains this")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = scenes(args.seed)
    counts = {group: sum(s.group == group for s in frames) for group in ("real", "lfw", "synthetic", "none")}
    measured: dict[str, dict] = {}
    record = {"machine": machine(), "frames": {"total": len(frames), **counts}, "hit_iou": HIT_IOU,
              "candidates": measured}
    for name, detector in candidates().items():
        if args.only not in name:
            continue
        if isinstance(detector, str):
            measured[name] = {"unavailable": detector}
            continue
        for scene in frames[:3]:
            detector(scene.frame)  # warm-up
        measured[name] = measure(detector, frames)
        print(f"{name}: {json.dumps(measured[name]['groups'])}", flush=True)
    from fad_edge.atomic import atomic_write_bytes

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(report_path(args.out, ".json"), json.dumps(record, indent=2).encode())
    atomic_write_bytes(report_path(args.out, ".md"), markdown(record).encode())
    print(markdown(record))


if __name__ == "__main__":
    main()
