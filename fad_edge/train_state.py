"""The resumable part of a training checkpoint: optimizer moments, RNG states, loss scale, counters.

With a weight average (`TrainConfig.ema_decay`) a checkpoint's model weights are the average, the
weights to infer with, and the optimizer's own weights travel in the training state
(`training_weights.*`), so every checkpoint loads for inference as it is and resumes exactly.

Everything is saved on the CPU (safetensors + JSON, no pickle) and loaded onto whichever device the
resumed run uses, so a run started on a GPU can be resumed on a CPU and the other way round. The
diffusion noise generator always lives on the CPU, so its state means the same on either.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel

from fad_edge.checkpoint import (
    LoadedCheckpoint,
    load_checkpoint,
    load_train_state,
    resolve_checkpoint,
    save_checkpoint,
)
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
    planned_steps: int | None = None  # the run's step total when last saved (its cosine decays toward it)


Tensors = list[torch.Tensor] | tuple[torch.Tensor, ...]
TRAINING_WEIGHTS = "training_weights."  # prefix of the optimizer's own weights in the training state


def training_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The optimizer's own weights in a training state's tensors, by parameter name (empty: none saved)."""
    return {name[len(TRAINING_WEIGHTS):]: t for name, t in tensors.items() if name.startswith(TRAINING_WEIGHTS)}


def average_decay(decay: float, updates: int) -> float:
    """The decay of the average's next update: `decay`, but less while few updates are in.

    A fixed 0.98 would keep the first steps' untrained weights in the average for hundreds of
    steps; (1 + n) / (10 + n) lets a short run's average follow its weights (the usual warm-up).
    """
    return min(decay, (1 + updates) / (10 + updates))


def weight_average(model: ListenerModel, decay: float) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights, updated after each step (None for decay 0).

    The last step's weights carry the noise of the last few batches; their average over the last
    ~1 / (1 - decay) steps scores a lower held-out L2 (README, "Design notes": weight average).
    """
    if decay == 0:
        return None

    @torch.no_grad()
    def update(averaged: Tensors, current: Tensors, _on_device: torch.Tensor | int) -> None:
        # The count is read from the CPU buffer: reading the device copy handed in would sync a GPU each step.
        weight = 1 - average_decay(decay, int(average.n_averaged))
        if len(averaged) != len(current):
            raise ValueError(f"the average holds {len(averaged)} tensors, the model {len(current)}")
        # One multi-tensor kernel on a GPU instead of a launch per parameter (as torch's own EMA helper does).
        torch._foreach_lerp_(list(averaged), list(current), weight)

    average = AveragedModel(model, multi_avg_fn=update)
    return average


def inference_model(model: ListenerModel, average: AveragedModel | None) -> ListenerModel:
    """The weights to validate, save as best and infer with: the average where there is one."""
    return model if average is None else average.module  # type: ignore[return-value]  # it wraps a ListenerModel


def rank_random_states(noise: torch.Generator, world: int) -> list[dict[str, torch.Tensor]] | None:
    """Under DDP, every rank's noise generator and torch RNG states, in rank order (None for one process).

    Each rank draws its own diffusion noise, so a resumed run continues exactly only if each gets its own
    stream back. A collective: every rank calls it at the same save.
    """
    if world == 1:
        return None
    gathered: list = [None] * world
    dist.all_gather_object(gathered, {"noise_generator": noise.get_state(), "torch_rng": torch.get_rng_state()})
    return gathered


def save_latest(folder: Path, model: ListenerModel, optimizer: torch.optim.Optimizer, noise: torch.Generator,
                precision: MixedPrecision, normalization: Normalization, extra: dict, progress: Progress,
                average: AveragedModel | None = None,
                rank_states: list[dict[str, torch.Tensor]] | None = None) -> None:
    """Rank 0's save; `rank_states` (`rank_random_states`) adds the other ranks' RNG states as NAME.rankN."""
    tensors, state = _optimizer_tensors(optimizer)
    tensors["noise_generator"] = noise.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    for rank, states in enumerate(rank_states or []):
        if rank:  # rank 0's are the states above
            tensors.update({f"{name}.rank{rank}": value for name, value in states.items()})
    train_json = {"step": progress.step, "history": progress.history, "best_val_l2": progress.best_val_l2,
                  "planned_steps": progress.planned_steps, "optimizer": state, "grad_scaler": precision.state_dict()}
    if average is not None:
        tensors.update({TRAINING_WEIGHTS + name: value for name, value in model.state_dict().items()})
        train_json["average_updates"] = int(average.n_averaged)
    save_checkpoint(folder, inference_model(model, average), normalization, {**extra, "step": progress.step},
                    tensors, train_json)


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


# What a resumed run must share with the run it continues for the two to be one run (the step budget,
# --epochs and --max-steps, may grow; where the files are and how many threads run may change; and a run
# may start keeping a weight average, --ema-decay, as `restore` provides for).
TRAJECTORY_FIELDS = ("preset", "batch_size", "clips_per_item", "noise_draws", "lr", "weight_decay", "warmup_steps",
                     "seed", "stride", "context_clips", "modalities", "augment", "augment_shift", "autocast",
                     "frozen_video_once", "overrides")


def check_same_run(folder: Path, saved: dict, now: dict, saved_normalization: Normalization,
                   normalization: Normalization) -> None:
    """Refuse to resume a run with other training settings or other data: it would continue as another run."""
    for name in TRAJECTORY_FIELDS:  # compared as saved: JSON has lists where the config may hold tuples
        if name in saved and name in now and saved[name] != json.loads(json.dumps(now[name])):
            option = "--" + name.replace("_", "-")
            raise CheckpointError(f"{folder}: the run was trained with {option} {saved[name]!r}, not {now[name]!r}; "
                                  "resume with the run's settings, or start afresh in a new --out")
    same = all(np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in
               ((saved_normalization.mean, normalization.mean), (saved_normalization.std, normalization.std)))
    if not same:
        raise CheckpointError(f"{folder}: the run was trained on other data (its motion statistics differ from "
                              "--data's); resume on the run's data, or start afresh in a new --out")


def restore(folder: Path, model: ListenerModel, optimizer: torch.optim.Optimizer, noise: torch.Generator,
            precision: MixedPrecision, rank: int, model_config: ModelConfig,
            average: AveragedModel | None = None, train_config: dict | None = None,
            normalization: Normalization | None = None, world: int | None = None) -> Progress:
    """Load a checkpoint's weights and training state into a run's model, optimizer, generators and scaler.

    The model and optimizer may be on any device: weights are copied into the model's own tensors
    and `Optimizer.load_state_dict` moves the moments to each parameter's device. A checkpoint saved
    without an average resumes the optimizer's weights from its model weights, and the average (if
    this run keeps one) starts again from the next step's weights.
    """
    loaded = load_checkpoint(folder)
    if loaded.config != model_config:
        saved_fields, now_fields = loaded.config.to_dict(), model_config.to_dict()
        differing = [f"{name} {saved_fields.get(name)!r}, not {now_fields.get(name)!r}"
                     for name in sorted(set(saved_fields) | set(now_fields))
                     if saved_fields.get(name) != now_fields.get(name)]
        raise CheckpointError(f"{resolve_checkpoint(folder)}: saved with another model config "
                              f"({'; '.join(differing[:3])}{'; ...' if len(differing) > 3 else ''}); resume with the "
                              "run's settings, or use a new --out to start afresh")
    if train_config is not None and normalization is not None:
        check_same_run(resolve_checkpoint(folder), loaded.info.get("train_config") or {}, train_config,
                       loaded.normalization, normalization)
    saved_world = loaded.info.get("world_size")
    if saved_world is not None and world is not None and saved_world != world:
        raise CheckpointError(f"{resolve_checkpoint(folder)}: the run was trained by {saved_world} process(es), not "
                              f"{world}: each draws its own data and noise, so resume it with as many (torchrun "
                              "--nproc_per_node), or start afresh in a new --out")
    saved = load_train_state(folder)
    if saved is None:
        raise CheckpointError(f"{folder}: has no training state to resume from")
    try:
        return _restore_state(saved, loaded, model, optimizer, noise, precision, rank, average)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise CheckpointError(f"{resolve_checkpoint(folder)}: its training state is malformed ({error!s:.120}); "
                              "start afresh in a new --out") from error


def _restore_state(saved: tuple[dict[str, torch.Tensor], dict], loaded: LoadedCheckpoint, model: ListenerModel,
                   optimizer: torch.optim.Optimizer, noise: torch.Generator, precision: MixedPrecision, rank: int,
                   average: AveragedModel | None) -> Progress:
    tensors, state = saved
    training = training_weights(tensors)
    model.load_state_dict(training or loaded.model.state_dict())
    if average is not None and training:
        average.module.load_state_dict(loaded.model.state_dict())
        average.n_averaged.fill_(int(state.get("average_updates", 0)))
    optimizer_state: dict = {"param_groups": state["optimizer"]["param_groups"], "state": {}}
    for index, values in state["optimizer"]["state"].items():
        entry = dict(values)
        prefix = f"optimizer.{index}."
        entry.update({name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)})
        optimizer_state["state"][int(index)] = entry
    optimizer.load_state_dict(optimizer_state)
    suffix = f".rank{rank}" if rank else ""  # each rank's own streams (a checkpoint from before they were saved
    if "noise_generator" + suffix in tensors:  # per rank restarts the other ranks' noise from the seed)
        noise.set_state(tensors["noise_generator" + suffix])
    torch.set_rng_state(tensors.get("torch_rng" + suffix, tensors["torch_rng"]))
    precision.load_state_dict(state.get("grad_scaler") or {})
    step, history, best = int(state["step"]), list(state["history"]), float(state["best_val_l2"])
    if step < 0 or not all(isinstance(record, dict) for record in history):
        raise ValueError(f"step {step!r} or history entries that are not records")
    planned = state.get("planned_steps")  # absent from checkpoints saved before it was recorded
    return Progress(step, history, best, None if planned is None else int(planned))
