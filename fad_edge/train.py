"""Training FAD/ELNet: AdamW on the diffusion loss, resumable, on a CPU or a GPU, alone or under torchrun (DDP).

Reproducibility: the clip order of epoch e is a permutation drawn from (seed, e) and each batch is
a pure function of its step (train_batches.py); the diffusion noise comes from a CPU generator whose
state is saved in every checkpoint with the optimizer, the loss scale and the step (train_state.py),
so `resume` continues exactly where the last checkpoint stood, on the same or another device.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist

from fad_edge.checkpoint import save_checkpoint
from fad_edge.constants import CLIP_LEN, MAX_AUGMENT_SHIFT
from fad_edge.data.augment import AugmentConfig
from fad_edge.data.dataset import ClipDataset, load_split
from fad_edge.data.normalization import Normalization
from fad_edge.devices import parse_device, resolve_device
from fad_edge.digests import motion_fingerprint
from fad_edge.errors import FadEdgeError
from fad_edge.frozen_video import encode_frozen_video
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig
from fad_edge.models.presets import preset
from fad_edge.prosody_pretraining import PretrainReport, group_weights, pretrain_prosody, session_pairs
from fad_edge.train_batches import StepBatches, augment_step, default_workers, step_loader
from fad_edge.train_precision import MixedPrecision, autocast_dtype
from fad_edge.train_setup import (
    drop_previous_run,
    prepare_output,
    reproducible_kernels,
    restore_previous_run,
    set_aside_previous_run,
    start_distributed,
)
from fad_edge.train_state import (
    Progress,
    inference_model,
    rank_random_states,
    restore,
    save_latest,
    weight_average,
)
from fad_edge.train_validation import validate
from fad_edge.video_pretraining import FramePool, pretrain_video

MAX_GRAD_NORM = 1.0


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in the checkpoint."""

    data: str
    out: str
    preset: str = "small"
    epochs: int = 2  # passes over the training windows (the demo instead sets a step budget, max_steps)
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
    augment: bool = True  # photometric/gain/frequency-mask augmentation of speaker inputs (data.augment)
    augment_shift: int | None = None  # pixels of a random shift per window as well; None: AugmentConfig's (none)
    autocast: str = "auto"  # "off", "bf16", "fp16" (CUDA only) or "auto" (see train_precision.py)
    device: str = "auto"  # cpu, cuda, cuda:N, or auto: CUDA when torch sees a GPU
    workers: int | None = None  # DataLoader worker processes; None: 0 on a CPU, a few on a GPU
    # On a GPU: cuDNN's deterministic algorithms, so a resumed run repeats an unbroken one; False lets cuDNN
    # pick the fastest algorithm per shape (benchmark mode), and runs differ in the last bits.
    deterministic: bool = True
    channels_last: bool = True  # NHWC weights for the encoders' convolutions (a single process only)
    # A frozen video encoder's features of every training frame computed once, not each step (frozen_video.py);
    # False keeps encoding each step's frames, with their photometric augmentation.
    frozen_video_once: bool = True
    # The weights validated, saved and inferred with: an exponential moving average of the trained
    # weights with this decay per step (0: the last step's weights). See train_state.weight_average.
    ema_decay: float = 0.98
    overrides: dict = field(default_factory=dict)  # any other ModelConfig field


@dataclass
class TrainResult:
    checkpoint: Path
    best: Path
    steps: int
    epochs_done: int
    history: list[dict]
    seconds: float  # the prosody pretraining included
    weights_sha256_per_rank: list[str]
    data_wait_seconds: float = 0.0  # of `seconds`, spent waiting for the loader: above a few percent, add --workers
    prosody_pretraining: PretrainReport | None = None  # None where the run did not pretrain (or resumed)
    video_pretraining: PretrainReport | None = None  # the same for the video encoder
    video_encoding_seconds: float = 0.0  # of `seconds`, encoding a frozen video encoder's features once
    steps_run: int | None = None  # the steps this call ran (fewer than `steps` when resumed; None: all of them)

    @property
    def steps_this_call(self) -> int:
        """The steps this call of `train` ran."""
        return self.steps if self.steps_run is None else self.steps_run

    def parts_seconds(self) -> dict[str, float]:
        """Where `seconds` went: each pretraining, the encoding, and FAD's steps (validation and saving included)."""
        before = {"prosody_pretraining": self.prosody_pretraining.seconds if self.prosody_pretraining else 0.0,
                  "video_pretraining": self.video_pretraining.seconds if self.video_pretraining else 0.0,
                  "video_encoding": self.video_encoding_seconds}
        return {**before, "fad_steps": self.seconds - sum(before.values())}


class TrainReporter(Protocol):
    def pretrained(self, report: PretrainReport) -> None: ...
    def encoded_video(self, frames: int, seconds: float) -> None: ...
    def start(self, total_steps: int, done: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...
    def epoch(self, epoch: int, record: dict) -> None: ...
    def note(self, message: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    """A reporter that reports nothing (library use, tests, non-zero DDP ranks)."""

    def pretrained(self, report: PretrainReport) -> None: ...
    def encoded_video(self, frames: int, seconds: float) -> None: ...
    def start(self, total_steps: int, done: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...
    def epoch(self, epoch: int, record: dict) -> None: ...
    def note(self, message: str) -> None: ...
    def finish(self) -> None: ...


def check_config(config: TrainConfig) -> None:
    """Refuse values that would train nonsense (an infinite learning rate trains NaN weights)."""
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise FadEdgeError(f"--lr must be a finite number above 0, got {config.lr}")
    if not (math.isfinite(config.ema_decay) and 0 <= config.ema_decay < 1):
        raise FadEdgeError(f"--ema-decay must be in [0, 1), got {config.ema_decay}")
    if config.workers is not None and config.workers < 0:
        raise FadEdgeError(f"--workers must be 0 or more, got {config.workers}")
    if config.augment_shift is not None and not 0 <= config.augment_shift <= MAX_AUGMENT_SHIFT:
        raise FadEdgeError(f"--augment-shift must be in 0..{MAX_AUGMENT_SHIFT} pixels, got {config.augment_shift}")
    parse_device(config.device)


def _learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (one device sync)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(checks).all())


def _diverged(what: str, lr: float) -> FadEdgeError:
    return FadEdgeError(f"training diverged: {what}; lower --lr (now {lr:g}) and --resume from the last "
                        "checkpoint, or start afresh with --overwrite")


def _mean_over_ranks(loss: torch.Tensor, world: int) -> float:
    """The step's loss averaged over DDP ranks, so every rank takes the same stop decision."""
    value = loss.detach().float()
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


Datasets = tuple[ModelConfig, Normalization, ClipDataset, ClipDataset]
DatasetLoader = Callable[[TrainConfig], Datasets]


def train(config: TrainConfig, reporter: TrainReporter | None = None, resume: bool = False,
          overwrite: bool = False, datasets: DatasetLoader | None = None) -> TrainResult:
    """Train (or resume, or start afresh over an earlier run) and return where the checkpoints went.

    `datasets` loads the config's splits (default `load_datasets`); a caller timing several runs on
    the same data passes one that loads each split once.
    """
    check_config(config)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None)
    dtype = autocast_dtype(config.autocast, device)
    if int(os.environ.get("RANK", "0")) == 0:  # one process checks the folder (and may put an earlier run back);
        prepare_output(Path(config.out), resume, overwrite)  # should it refuse, torchrun stops the others
    rank, started_group = start_distributed(world, device)
    try:
        with reproducible_kernels(device, config.deterministic), warnings.catch_warnings():
            # DDP compares each gradient's strides with its bucket's literally; a 1x1 convolution's weight
            # gradient (the spatial softmax's keypoints) comes out with other, equivalent strides for its
            # size-1 axes, and the warning that follows, twice a run, costs nothing but a copy.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            return _train(config, reporter if rank == 0 and reporter is not None else SilentReporter(),
                          resume, overwrite, rank, world, device, dtype, datasets or load_datasets)
    except BaseException:
        if rank == 0:  # an --overwrite run that never saved: the run it was to replace goes back in place
            restore_previous_run(Path(config.out))
        raise
    finally:
        if started_group:
            dist.destroy_process_group()


def load_datasets(config: TrainConfig) -> Datasets:
    """The model config, the motion normalization and the training and validation splits' datasets."""
    chosen = {} if config.context_clips is None else {"context_clips": config.context_clips}
    model_config = preset(config.preset, modalities=config.modalities, **chosen, **config.overrides)
    train_sessions = load_split(Path(config.data), "train", model_config.image_size, model_config.n_mels)
    val_sessions = load_split(Path(config.data), "val", model_config.image_size, model_config.n_mels)
    model_config = _video_encoder_trainable(model_config, any(s.speaker is not None for s in train_sessions))
    normalization = Normalization.fit(train_sessions)
    speaker_normalization = Normalization.fit(train_sessions, speaker=True)
    make = lambda sessions, stride, clips, split: ClipDataset(  # noqa: E731
        sessions, normalization, model_config.audio_window_frames, model_config.context_clips, stride,
        clips_per_item=clips, speaker_normalization=speaker_normalization, split=split,
    )
    train_set = make(train_sessions, config.stride, config.clips_per_item, "train")
    return model_config, normalization, train_set, make(val_sessions, CLIP_LEN, 1, "val")


def _pretrain_prosody(model: ListenerModel, train_set: ClipDataset, seed: int) -> PretrainReport | None:
    """The config's prosody pretraining on the training split (prosody_pretraining.py), where it asks for one.

    Skipped where the branch hears nothing: a video-only model's spectra are masked to zeros.
    """
    config, branch = model.config, model.elnet.prosody
    if not config.prosody_pretrain_steps or branch is None or config.modalities == "video":
        return None
    pairs = session_pairs(train_set.sessions, train_set.motion)
    return pretrain_prosody(branch, pairs, group_weights(model.motion_std.device), config.prosody_pretrain_steps,
                            config.prosody_pretrain_windows, seed)


def _video_pretraining_frames(model: ListenerModel, train_set: ClipDataset) -> FramePool | None:
    """The frames of the config's video pretraining (video_pretraining.py), or None where it asks for none.

    None also where the encoder sees nothing (an audio-only model) or no session knows the speaker's coefficients.
    """
    config, heads = model.config, model.speaker_heads
    if not config.video_pretrain_steps or heads is None or config.modalities == "audio":
        return None
    pool = FramePool([s.frames for s in train_set.sessions], train_set.speaker)
    return pool if len(pool) else None


def _video_encoder_trainable(model_config: ModelConfig, speaker_known: bool) -> ModelConfig:
    """The config with the whole diffusion gradient to the video encoder where the speaker loss cannot train it.

    A preset may leave the video encoder to the speaker loss alone (`video_diffusion_gradient` 0); on data
    without the speaker's coefficients, or with no speaker loss, that encoder would never learn. The
    checkpoint saves the config as trained.
    """
    if model_config.video_diffusion_gradient > 0 or (speaker_known and model_config.speaker_aux_weight > 0):
        return model_config
    return replace(model_config, video_diffusion_gradient=1.0)


def _train(config: TrainConfig, reporter: TrainReporter, resume: bool, overwrite: bool, rank: int, world: int,
           device: torch.device, dtype: torch.dtype | None, datasets: DatasetLoader) -> TrainResult:
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    latest, best = out / "checkpoint", out / "best"
    model_config, normalization, train_set, val_set = datasets(config)

    torch.manual_seed(config.seed)  # identical initial weights on every rank and device
    model = ListenerModel(model_config)
    model.set_normalization(torch.from_numpy(normalization.mean), torch.from_numpy(normalization.std))
    model.to(device)
    started = time.time()  # the run's seconds include the pretraining
    resuming = resume and (latest.exists() or latest.with_name("checkpoint.old").exists())
    augmentation = AugmentConfig() if config.augment_shift is None else AugmentConfig(max_shift=config.augment_shift)
    pretraining = None if resuming else _pretrain_prosody(model, train_set, config.seed)
    if pretraining is not None:
        reporter.pretrained(pretraining)
    frames = _video_pretraining_frames(model, train_set)
    video_pretraining = None
    if frames is not None and not resuming:
        assert model.speaker_heads is not None  # frames are drawn only for a model with the heads
        video_pretraining = pretrain_video(model.video_encoder, model.speaker_heads[0], frames,
                                           model_config.video_pretrain_steps, model_config.video_pretrain_frames,
                                           config.seed, MixedPrecision(device, dtype),
                                           augmentation if config.augment else None)
        reporter.pretrained(video_pretraining)
    if frames is not None and model_config.freeze_pretrained_video:  # resumed too: it was pretrained then
        model.freeze_video()
    if world == 1 and config.channels_last:  # (under DDP, channels-last weights would not match its gradient buckets)
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted; not in torch's stubs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    average = weight_average(model, config.ema_decay)
    inferred = inference_model(model, average)
    precision = MixedPrecision(device, dtype)
    noise = torch.Generator().manual_seed(config.seed * 1000 + rank)  # on the CPU whatever the device
    progress = Progress()
    if resuming:
        progress = restore(latest, model, optimizer, noise, precision, rank, model_config, average, asdict(config),
                           normalization, world)
    encoding_seconds = 0.0
    finished = config.max_steps is not None and progress.step >= config.max_steps  # resumed with nothing left to do
    # After `restore`: a resumed run's encoder is the saved one.
    if model.video_frozen and config.frozen_video_once and not finished:
        encoding = time.time()
        train_set = train_set.with_video_features(
            encode_frozen_video(model, [s.frames for s in train_set.sessions], precision))
        encoding_seconds = time.time() - encoding
        reporter.encoded_video(sum(s.n_frames for s in train_set.sessions), encoding_seconds)
    batches = StepBatches(train_set, config.batch_size, config.seed, rank, world)
    steps_per_epoch = batches.steps_per_epoch
    if steps_per_epoch == 0:
        raise FadEdgeError(f"the training split has {len(train_set)} windows of {config.clips_per_item} clips, "
                           f"fewer than one batch of {config.batch_size}; lower --batch-size or --clips-per-item")
    if overwrite and rank == 0:  # every check passed: the earlier run's checkpoints are set aside only now
        set_aside_previous_run(out)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    # Steps up to the warm-up's end take the same rate whatever the total; later ones do not.
    if progress.planned_steps not in (None, total) and progress.step > config.warmup_steps + 1:
        reporter.note(f"the run was planned for {progress.planned_steps} steps and now runs to {total}: its "
                      f"learning rate decays toward {total} from step {progress.step}, so it differs from an "
                      f"unbroken {total}-step run")
    progress.planned_steps = total

    trainable: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        trainable = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    model.train()
    workers = config.workers if config.workers is not None else default_workers(device, world)
    loader = step_loader(batches, progress.step, total, workers, pin_memory=device.type == "cuda")
    # What `evaluate` tells its split's sessions apart from the training ones by, whatever their names.
    fingerprints = sorted({motion_fingerprint(session.listener) for session in train_set.sessions})
    extra = {"train_config": asdict(config), "world_size": world, "train_motion_fingerprints": fingerprints}
    waits: list[float] = []
    first_step = progress.step
    reporter.start(total, progress.step)
    try:  # the progress display ends (and the cursor shows again) however the loop ends
        for batch in _timed(loader, waits):
            step = progress.step
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step, total)
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            if config.augment:
                batch = augment_step(batch, config.seed, rank, step, augmentation)
            video = batch["video_features"] if "video_features" in batch else batch["images"]
            with precision.autocast():
                loss = trainable(video, batch["mel"], batch["valid"], batch["motion"], noise,
                                 config.noise_draws, batch["speaker"], batch["speaker_valid"])
            optimizer.zero_grad(set_to_none=True)
            precision.backward_and_step(loss, optimizer, MAX_GRAD_NORM)
            if average is not None:
                average.update_parameters(model)
            loss_value = _mean_over_ranks(loss, world)
            if not math.isfinite(loss_value):
                raise _diverged(f"the loss is {loss_value} at step {step + 1}", config.lr)
            progress.step = step = step + 1
            reporter.step(step, loss_value)
            end_of_epoch = step % steps_per_epoch == 0 or step == total
            if not (end_of_epoch or step % config.checkpoint_every == 0):
                continue
            if not (weights_finite(model) and weights_finite(inferred)):  # never saved, as best or to resume from
                raise _diverged(f"the weights are not finite after step {step}", config.lr)
            if end_of_epoch:
                # A run stopped by its step budget validates where it stops: that epoch's record is
                # marked part, and a resumed run adds the whole epoch's record at its end.
                record = {"epoch": (step - 1) // steps_per_epoch + 1, "step": step,
                          "whole_epoch": step % steps_per_epoch == 0, "train_loss": loss_value,
                          **validate(inferred, val_set, config.val_clips, config.seed)}
                progress.history.append(record)
                reporter.epoch(record["epoch"], record)
                if rank == 0 and record["val_l2"] < progress.best_val_l2:
                    progress.best_val_l2 = record["val_l2"]
                    save_checkpoint(best, inferred, normalization, {**extra, "step": step, "val": record})
            states = rank_random_states(noise, world)  # every rank takes part
            if rank == 0:
                save_latest(latest, model, optimizer, noise, precision, normalization, extra, progress, average,
                            states)
                drop_previous_run(out)  # the new run has a checkpoint of its own (a no-op after the first save)
    finally:
        reporter.finish()

    if world > 1:
        # DDP syncs buffers (the encoders' feature statistics) at the start of each forward, so
        # after the last step each rank holds its own; rank 0's are the ones saved: share them.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
        if average is not None:  # the average copied each rank's buffers at its last update
            for averaged, shared in zip(average.module.buffers(), model.buffers(), strict=True):
                averaged.copy_(shared)
    hashes = [_weights_sha256(model)]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, hashes[0])
        hashes = [str(h) for h in gathered]
        states = rank_random_states(noise, world)
        if rank == 0:
            save_latest(latest, model, optimizer, noise, precision, normalization,
                        {**extra, "rank_weight_hashes": hashes}, progress, average, states)
        dist.barrier()
    if not best.exists() and rank == 0 and weights_finite(inferred):
        save_checkpoint(best, inferred, normalization, {**extra, "step": progress.step})
    if rank == 0:
        drop_previous_run(out)
    return TrainResult(latest, best, progress.step, progress.step // steps_per_epoch, progress.history,
                       time.time() - started, hashes, sum(waits), pretraining, video_pretraining, encoding_seconds,
                       progress.step - first_step)


def _timed(batches: Iterable[dict[str, torch.Tensor]], waits: list[float]) -> Iterator[dict[str, torch.Tensor]]:
    """The batches, appending to `waits` how long each took to arrive (the training loop blocked on the loader)."""
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        batch = next(iterator, None)
        waits.append(time.perf_counter() - asked)
        if batch is None:
            return
        yield batch
