"""The resumable part of a training checkpoint: optimizer moments, RNG states, loss scale, counters.

Everything is saved on the CPU (safetensors + JSON, no pickle) and loaded onto whichever device the
resumed run uses, so a run started on a GPU can be resumed on a CPU and the other way round. The
diffusion noise generator always lives on the CPU, so its state means the same on either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fad_edge.checkpoint import load_checkpoint, load_train_state, resolve_checkpoint, save_checkpoint
from fad_edge.data.normalization import Normalization
from fad_edge.errors import CheckpointError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig
from fad_edge.train_precision import MixedPrecision


@dataclass
class Progress:
    """Where a run stands: steps done, per-epoch records, and the best validation L2 so far."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    best_val_l2: float = math.inf


def save_latest(folder: Path, model: ListenerModel, optimizer: torch.optim.Optimizer, noise: torch.Generator,
                precision: MixedPrecision, normalization: Normalization, extra: dict, progress: Progress) -> None:
    tensors, state = _optimizer_tensors(optimizer)
    tensors["noise_generator"] = noise.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    train_json = {"step": progress.step, "history": progress.history, "best_val_l2": progress.best_val_l2,
                  "optimizer": state, "grad_scaler": precision.state_dict()}
    save_checkpoint(folder, model, normalization, {**extra, "step": progress.step}, tensors, train_json)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten AdamW's state into named tensors (for safetensors) and JSON-able scalars."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict = {"param_groups": state_dict["param_groups"], "state": {}}
    for index, values in state_dict["state"].items():
        scalars["state"][str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars["state"][str(index)][key] = value
    return tensors, scalars


def restore(folder: Path, model: ListenerModel, optimizer: torch.optim.Optimizer, noise: torch.Generator,
            precision: MixedPrecision, rank: int, model_config: ModelConfig) -> Progress:
    """Load a checkpoint's weights and training state into a run's model, optimizer, generators and scaler.

    The model and optimizer may be on any device: weights are copied into the model's own tensors
    and `Optimizer.load_state_dict` moves the moments to each parameter's device.
    """
    loaded = load_checkpoint(folder)
    if loaded.config != model_config:
        raise CheckpointError(
            f"{resolve_checkpoint(folder)}: saved with another model config; use a new --out to start afresh"
        )
    model.load_state_dict(loaded.model.state_dict())
    saved = load_train_state(folder)
    if saved is None:
        raise CheckpointError(f"{folder}: has no training state to resume from")
    tensors, state = saved
    optimizer_state: dict = {"param_groups": state["optimizer"]["param_groups"], "state": {}}
    for index, values in state["optimizer"]["state"].items():
        entry = dict(values)
        prefix = f"optimizer.{index}."
        entry.update({name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)})
        optimizer_state["state"][int(index)] = entry
    optimizer.load_state_dict(optimizer_state)
    if rank == 0:
        noise.set_state(tensors["noise_generator"])
    torch.set_rng_state(tensors["torch_rng"])
    precision.load_state_dict(state.get("grad_scaler") or {})
    return Progress(int(state["step"]), list(state["history"]), float(state["best_val_l2"]))
