"""Helpers shared by the tests: running the CLI, and small real models."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from fad_edge.checkpoint import save_checkpoint
from fad_edge.cli import main
from fad_edge.data.normalization import Normalization
from fad_edge.listener_model import ListenerModel
from fad_edge.models.presets import preset
from fad_edge.train import TrainConfig


def bench_script(name: str) -> ModuleType:
    """The module of `bench/NAME.py`: the bench scripts are run by path, not installed as a package."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run `fad-edge ARGS` in-process; returns (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["fad-edge", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out + captured.err


def tiny_checkpoint(folder: Path, seed: int = 0, **overrides) -> Path:
    """A tiny-preset checkpoint with random weights and a non-trivial normalization."""
    torch.manual_seed(seed)
    model = ListenerModel(preset("tiny", **overrides))
    rng = np.random.default_rng(seed)
    mean = (0.1 * rng.standard_normal(56)).astype(np.float32)
    std = (0.05 + 0.1 * rng.random(56)).astype(np.float32)
    model.set_normalization(torch.from_numpy(mean), torch.from_numpy(std))
    return save_checkpoint(folder, model, Normalization(mean, std))


class TrainingStopped(Exception):
    """Raised in place of training by `capture_train_configs`."""


def stop_at(monkeypatch, module, name: str, stop: type[Exception]) -> list:
    """Replace `module.name` by a stand-in that records its first argument and raises `stop`; returns the records."""
    seen: list = []

    def record_and_stop(first, *args, **kwargs):
        seen.append(first)
        raise stop

    monkeypatch.setattr(module, name, record_and_stop)
    return seen


def capture_train_configs(monkeypatch) -> list:
    """Make `fad-edge train` stop with TrainingStopped where it would train; returns the TrainConfigs it was given."""
    import fad_edge.train as training

    return stop_at(monkeypatch, training, "train", TrainingStopped)


def assert_seed_decides(first: torch.nn.Module, same_seed: torch.nn.Module, other_seed: torch.nn.Module) -> None:
    """`first` and `same_seed` (trained alike with one seed) hold equal weights, `other_seed` (another seed)
    differs somewhere: what was trained depended on the seed."""
    same, other = first.state_dict(), other_seed.state_dict()
    for name, tensor in same_seed.state_dict().items():
        assert torch.equal(tensor, same[name]), name
    assert any(not torch.equal(tensor, other[name]) for name, tensor in same.items())


def tiny_run_config(data: Path, out: Path, overrides: dict, **changes) -> TrainConfig:
    """A seconds-long training of the tiny preset on one thread of the CPU, `overrides` on its model config."""
    settings = {"preset": "tiny", "epochs": 1, "batch_size": 8, "warmup_steps": 2, "val_clips": 16, "threads": 1,
                "device": "cpu", **changes}
    return TrainConfig(data=str(data), out=str(out), overrides=overrides, **settings)


def tiny_dataset(folder: Path) -> Path:
    """`folder`/data: 4 synthetic sessions of 6 s at 32 pixels, enough for `tiny_run_config`'s runs."""
    from fad_edge.data.synthetic_dataset import write_synthetic_dataset

    data = folder / "data"
    write_synthetic_dataset(data, sessions=4, seconds=6.0, seed=3, image_size=32)
    return data
