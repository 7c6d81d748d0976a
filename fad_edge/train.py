"""Training FAD/ELNet: AdamW on the diffusion loss, resumable, on one process or under torchrun (DDP, gloo).

Reproducibility: the clip order of epoch e is a permutation drawn from (seed, e); the diffusion noise
comes from a generator whose state is saved in every checkpoint with the optimizer and the step, so
`resume` continues exactly where the last checkpoint stood.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from fad_edge.constants import CLIP_LEN
from fad_edge.checkpoint import load_checkpoint, load_train_state, resolve_checkpoint, save_checkpoint
from fad_edge.data.augment import augment_batch
from fad_edge.data.dataset import ClipDataset, load_split
from fad_edge.data.normalization import Normalization
from fad_edge.errors import CheckpointError, FadEdgeError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig, preset


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in the checkpoint."""

    data: str
    out: str
    preset: str = "small"
    epochs: int = 2  # the demo's data (96 x 20 s synthetic sessions): 1224 steps, 12 min on 2 cores
    batch_size: int = 8  # windows per step (per process)
    clips_per_item: int = 4  # K consecutive clips per window: batch_size * K clips a step
    noise_draws: int = 4  # (step, noise) draws per clip and step
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    seed: int = 0
    stride: int = 8
    context_clips: int | None = None  # None: the preset's
    modalities: str = "both"
    checkpoint_every: int = 200
    max_steps: int | None = None  # stop early (for tests and quick runs)
    val_clips: int = 256
    threads: int | None = None
    augment: bool = True  # photometric/shift/gain/frequency-mask augmentation of speaker inputs
    autocast: str = "auto"  # "off", "bf16" or "auto": bf16 where the CPU computes it natively
    overrides: dict = field(default_factory=dict)  # any other ModelConfig field


@dataclass
class TrainResult:
    checkpoint: Path
    best: Path
    steps: int
    epochs_done: int
    history: list[dict]
    seconds: float
    weights_sha256_per_rank: list[str]


class TrainReporter(Protocol):
    def start(self, total_steps: int, done: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...
    def epoch(self, epoch: int, record: dict) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    """A reporter that reports nothing (library use, tests, non-zero DDP ranks)."""

    def start(self, total_steps: int, done: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...
    def epoch(self, epoch: int, record: dict) -> None: ...
    def finish(self) -> None: ...


def _distributed() -> tuple[int, int]:
    """(rank, world size), starting the gloo process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# Training's mixed precision (torch autocast); not to be confused with an export's graph precision.
AUTOCAST_MODES = ("auto", "off", "bf16")


def autocast_dtype(mode: str) -> torch.dtype | None:
    """The autocast dtype for a training autocast mode, or None for plain float32.

    bf16 autocast runs the convolutions and linear layers in bfloat16 (weights, optimizer and loss
    stay float32); on a CPU with native bf16 (AVX512-BF16, AMX) that halves the time of a step.
    Elsewhere bf16 is emulated and slower, so "auto" picks it only where it is native.
    """
    if mode not in AUTOCAST_MODES:
        raise FadEdgeError(f"autocast must be one of {', '.join(AUTOCAST_MODES)}, got {mode!r}")
    if mode == "auto":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        mode = "bf16" if native else "off"
    return torch.bfloat16 if mode == "bf16" else None


def _batch(dataset: ClipDataset, indices: np.ndarray) -> dict[str, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def validate(model: ListenerModel, dataset: ClipDataset, clips: int, seed: int) -> dict:
    """Validation loss and 1-step L2 (FLAME units, all 56 dims) on a fixed subset of clips."""
    model.eval()
    order = np.random.default_rng(seed).permutation(len(dataset))[:clips]
    generator = torch.Generator().manual_seed(seed)
    sample_noise = np.random.default_rng(seed)
    losses, errors = [], []
    for start in range(0, len(order), 64):
        batch = _batch(dataset, order[start : start + 64])
        condition = model.batch_condition(batch["images"], batch["mel"], batch["valid"])
        motion = model.clip_motion(batch["motion"])
        losses.append(float(model.loss(condition, motion, generator)) * len(motion))
        sample = model.sample_clips(condition, model.default_sampler(1), sample_noise)
        error = model.denormalize(sample) - model.denormalize(motion)  # in FLAME units, as evaluation measures L2
        errors.append(float(error.norm(dim=-1).mean()) * len(motion))
    model.train()
    return {"val_loss": sum(losses) / len(order), "val_l2": sum(errors) / len(order)}


def train(config: TrainConfig, reporter: TrainReporter | None = None, resume: bool = False) -> TrainResult:
    """Train (or resume) and return where the checkpoints went."""
    rank, world = _distributed()
    reporter = reporter if (reporter is not None and rank == 0) else SilentReporter()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    latest, best = out / "checkpoint", out / "best"

    chosen = {} if config.context_clips is None else {"context_clips": config.context_clips}
    model_config = preset(config.preset, modalities=config.modalities, **chosen, **config.overrides)
    train_sessions = load_split(Path(config.data), "train", model_config.image_size, model_config.n_mels)
    val_sessions = load_split(Path(config.data), "val", model_config.image_size, model_config.n_mels)
    normalization = Normalization.fit(train_sessions)
    speaker_normalization = Normalization.fit(train_sessions, speaker=True)
    make = lambda sessions, stride, clips: ClipDataset(  # noqa: E731
        sessions, normalization, model_config.audio_window_frames, model_config.context_clips, stride,
        clips_per_item=clips, speaker_normalization=speaker_normalization,
    )
    train_set = make(train_sessions, config.stride, config.clips_per_item)
    val_set = make(val_sessions, CLIP_LEN, 1)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = ListenerModel(model_config)
    model.set_normalization(torch.from_numpy(normalization.mean), torch.from_numpy(normalization.std))
    if world == 1:  # (under DDP, channels-last weights would not match its gradient buckets' strides)
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    noise = torch.Generator().manual_seed(config.seed * 1000 + rank)
    steps_per_epoch = len(train_set) // (config.batch_size * world)
    if steps_per_epoch == 0:
        raise FadEdgeError(f"the training split has {len(train_set)} clips, fewer than one batch of {config.batch_size}")
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)

    step, history, best_l2 = 0, [], math.inf
    if resume and (latest.exists() or latest.with_name("checkpoint.old").exists()):
        step, history, best_l2 = _restore(latest, model, optimizer, noise, rank, model_config)

    trainable: torch.nn.Module = model
    if world > 1:
        trainable = torch.nn.parallel.DistributedDataParallel(model)
    model.train()
    dtype = autocast_dtype(config.autocast)
    started = time.time()
    reporter.start(total, step)
    extra = {"train_config": asdict(config)}
    while step < total:
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_set))
        order = order[: steps_per_epoch * config.batch_size * world][rank::world]
        indices = order[position * config.batch_size : (position + 1) * config.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step, total)
        batch = _batch(train_set, indices)
        if config.augment:
            # Drawn from (seed, rank, step), so a resumed run augments exactly as an unbroken one.
            batch = augment_batch(batch, torch.Generator().manual_seed((config.seed * 1_000_003 + rank) * 10_000_019 + step))
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = trainable(batch["images"], batch["mel"], batch["valid"], batch["motion"], noise,
                             config.noise_draws, batch["speaker"], batch["speaker_valid"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        reporter.step(step, loss.item())
        end_of_epoch = step % steps_per_epoch == 0 or step == total
        if end_of_epoch:
            record = {"epoch": epoch + 1, "step": step, "train_loss": loss.item(), **validate(model, val_set, config.val_clips, config.seed)}
            history.append(record)
            reporter.epoch(epoch + 1, record)
            if rank == 0 and record["val_l2"] < best_l2:
                best_l2 = record["val_l2"]
                save_checkpoint(best, model, normalization, {**extra, "step": step, "val": record})
        if rank == 0 and (end_of_epoch or step % config.checkpoint_every == 0):
            _save_latest(latest, model, optimizer, noise, normalization, extra, step, history, best_l2)
    reporter.finish()

    if world > 1:
        # DDP syncs buffers (the encoders' feature statistics) at the start of each forward, so
        # after the last step each rank holds its own; rank 0's are the ones saved: share them.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    hashes = [_weights_sha256(model)]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, hashes[0])
        hashes = [str(h) for h in gathered]
        if rank == 0:
            _save_latest(latest, model, optimizer, noise, normalization, {**extra, "rank_weight_hashes": hashes},
                         step, history, best_l2)
        dist.barrier()
    if not best.exists() and rank == 0:
        save_checkpoint(best, model, normalization, {**extra, "step": step})
    return TrainResult(latest, best, step, len(history), history, time.time() - started, hashes)


def _save_latest(folder, model, optimizer, noise, normalization, extra, step, history, best_l2) -> None:
    tensors, state = _optimizer_tensors(optimizer)
    tensors["noise_generator"] = noise.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    train_json = {"step": step, "history": history, "best_val_l2": best_l2, "optimizer": state}
    save_checkpoint(folder, model, normalization, {**extra, "step": step}, tensors, train_json)


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


def _restore(folder: Path, model, optimizer, noise, rank: int, model_config: ModelConfig) -> tuple[int, list, float]:
    loaded = load_checkpoint(folder)
    if loaded.config != model_config:
        raise CheckpointError(f"{resolve_checkpoint(folder)}: saved with another model config; use a new --out to start afresh")
    model.load_state_dict(loaded.model.state_dict())
    saved = load_train_state(folder)
    if saved is None:
        raise CheckpointError(f"{folder}: has no training state to resume from")
    tensors, state = saved
    optimizer_state = {"param_groups": state["optimizer"]["param_groups"], "state": {}}
    for index, values in state["optimizer"]["state"].items():
        entry = dict(values)
        prefix = f"optimizer.{index}."
        entry.update({name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)})
        optimizer_state["state"][int(index)] = entry
    optimizer.load_state_dict(optimizer_state)
    if rank == 0:
        noise.set_state(tensors["noise_generator"])
    torch.set_rng_state(tensors["torch_rng"])
    return int(state["step"]), list(state["history"]), float(state["best_val_l2"])
