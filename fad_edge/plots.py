"""Matplotlib figures of listener motion (headless, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fad_edge.atomic import atomic_write_bytes  # noqa: E402
from fad_edge.constants import FPS, HEAD, JAW  # noqa: E402


def save_figure(figure, path: Path) -> Path:
    """Save a figure as PNG atomically and close it."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def plot_motion(
    motion: np.ndarray, path: Path, title: str = "listener motion", reference: np.ndarray | None = None
) -> Path:
    """The main curves of (T, 56) motion: jaw, head rotation and the first expression components."""
    time = np.arange(len(motion)) / FPS
    figure, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    groups = [("jaw (rad)", JAW, ["x", "y", "z"]), ("head rotation (rad)", HEAD, ["pitch", "yaw", "roll"]),
              ("expression", slice(0, 4), [f"exp {i}" for i in range(4)])]
    for axis, (label, dims, names) in zip(axes, groups):
        for offset, name in enumerate(names):
            index = dims.start + offset
            line, = axis.plot(time, motion[:, index], label=name, linewidth=1.2)
            if reference is not None:
                axis.plot(time, reference[:, index], color=line.get_color(), linestyle=":", linewidth=1.0)
        axis.set_ylabel(label)
        axis.legend(loc="upper right", fontsize=7, ncol=4)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    axes[0].set_title(title + (" (dotted: ground truth)" if reference is not None else ""))
    return save_figure(figure, path)
