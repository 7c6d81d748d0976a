"""Training batches through a DataLoader, each a pure function of its step number.

Epoch e visits the windows in a permutation drawn from (seed, e), each process (DDP rank) taking
every world-th of them; step s takes its slice of that order and stacks the windows. Nothing
depends on which process builds a batch or when, so worker processes can stack ahead of a GPU (into
pinned memory) and any number of workers gives the same run, and a resumed run starts its loader at
the step where it stopped. The training process then augments the batch where it trains, with a
generator seeded from (seed, rank, s) (`augment_step`): on a GPU that takes microseconds, where a
worker needed a second of one core for a batch of 32 paper-preset windows.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fad_edge.data.augment import AugmentConfig, augment_batch
from fad_edge.data.dataset import ClipDataset

PREFETCH_BATCHES = 4  # batches each worker keeps ready
CUDA_WORKERS = 4  # default workers on a GPU: decoding a batch takes a fraction of a step


def stack_windows(dataset: ClipDataset, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """The dataset's windows at `indices`, stacked into one batch."""
    items = [dataset[int(i)] for i in indices]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


class StepBatches(Dataset):
    """Map-style dataset whose item s is training step s's batch of windows, stacked."""

    def __init__(self, windows: ClipDataset, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.windows, self.batch_size, self.seed = windows, batch_size, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = len(windows) // (batch_size * world)
        self._epoch: int | None = None
        self._order = np.empty(0, dtype=np.int64)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's share of epoch `epoch`'s permutation (cached: a worker builds consecutive steps)."""
        if self._epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.windows))
            self._order = order[: self.steps_per_epoch * self.batch_size * self.world][self.rank :: self.world]
            self._epoch = epoch
        return self._order

    def indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.steps_per_epoch)
        return self._epoch_order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        return stack_windows(self.windows, self.indices(step))


def augment_step(batch: dict[str, torch.Tensor], seed: int, rank: int, step: int,
                 config: AugmentConfig = AugmentConfig()) -> dict[str, torch.Tensor]:
    """Step `step`'s batch augmented on its own device, with the draws of a CPU generator seeded from (seed, rank,
    step): the same augmentation on any device, with any number of workers, resumed or not."""
    # Below 2^63 as manual_seed needs (any seed the CLI takes); identical to the plain product where that fits.
    generator = torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 10_000_019 + step) % (2**63 - 1))
    return augment_batch(batch, generator, config)


def default_workers(device: torch.device, world: int = 1) -> int:
    """No workers on a CPU (there they would take cores from the training itself); a few per GPU."""
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(CUDA_WORKERS, cores // world - 1))


def step_loader(batches: StepBatches, first: int, last: int, workers: int, pin_memory: bool) -> DataLoader:
    """Steps first..last-1 in order; with workers, each prepares batches ahead while the model trains."""
    return DataLoader(
        batches,
        batch_size=None,  # each item already is a batch
        sampler=range(first, last),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
        # Only seeds the workers' own RNGs, which no batch uses; given so that starting the loader
        # draws nothing from the global RNG, whose state a checkpoint saves.
        generator=torch.Generator().manual_seed(0),
    )
