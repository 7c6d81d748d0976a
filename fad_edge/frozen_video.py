"""The frozen video encoder's features of every training frame, computed once before FAD's steps.

Why: a frozen encoder (`ListenerModel.freeze_video`) runs on its BatchNorm's running statistics and gets
no gradient, so each frame's features are the same at every step. Encoding the step's frames anyway
took about a third of a FAD step held to AVX2 (0.10 s of 0.34 for the demo's 384 frames), every one of
the demo's 40,800 training frames being encoded three times on average over its 350 steps; once over
the split takes 3 s in bf16 and about 12 s held to AVX2 (docs/studies.md: the frozen encoder's
features computed once). What is lost: the per-window photometric augmentation of the images in FAD's
steps (the encoder was pretrained with it; the audio keeps its own).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fad_edge.listener_model import ListenerModel
from fad_edge.train_precision import MixedPrecision

ENCODE_BATCH = 512  # frames per forward: large enough to keep the cores busy, small enough for any memory


@torch.no_grad()
def encode_frozen_video(model: ListenerModel, frames: Sequence[np.ndarray], precision: MixedPrecision,
                        batch: int = ENCODE_BATCH) -> list[np.ndarray]:
    """Each session's frames (T, S, S, 3) uint8 -> its video features (T, video_features) float32, on the CPU.

    The features are `ListenerModel.encode_video`'s (the modality mask included), computed on the model's
    device under the training's autocast, in the layout training uses (channels-last).
    """
    if not model.video_frozen:
        raise ValueError("only a frozen video encoder's features stay the same from step to step")
    device = next(model.parameters()).device
    encoded = []
    for session in frames:
        parts = [torch.empty(0, model.config.video_features)]
        for start in range(0, len(session), batch):
            images = torch.from_numpy(session[start : start + batch]).to(device).permute(0, 3, 1, 2)
            images = images.float().div_(255.0).contiguous(memory_format=torch.channels_last)
            with precision.autocast():
                parts.append(model.encode_video(images).float().cpu())
        encoded.append(torch.cat(parts).numpy())
    return encoded
