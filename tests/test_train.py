"""Training: loss goes down, checkpoints resume exactly, DDP keeps ranks identical."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fad_edge.checkpoint import load_checkpoint, load_train_state
from fad_edge.data.synthetic import write_synthetic_dataset
from fad_edge.errors import FadEdgeError
from fad_edge.train import TrainConfig, autocast_dtype, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, sessions=4, seconds=6.0, seed=3, image_size=48)
    return root


def _config(dataset: Path, out: Path, **changes) -> TrainConfig:
    base = dict(data=str(dataset), out=str(out), preset="tiny", epochs=2, batch_size=8, lr=2e-3,
                warmup_steps=2, checkpoint_every=3, val_clips=16, threads=1)
    return TrainConfig(**{**base, **changes})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder).model.state_dict()


@pytest.mark.parametrize("autocast", ["off", "bf16"])
def test_training_writes_checkpoints_and_lowers_the_loss(dataset, tmp_path, autocast):
    result = train(_config(dataset, tmp_path / "run", epochs=3, autocast=autocast))
    assert result.steps > 0 and len(result.history) == 3
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()
    assert (tmp_path / "run" / "best" / "model.json").exists()
    tensors, state = load_train_state(tmp_path / "run" / "checkpoint")
    assert state["step"] == result.steps and "noise_generator" in tensors
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    assert last < first


def test_resume_after_a_stop_gives_the_same_weights_as_an_uninterrupted_run(dataset, tmp_path):
    straight = train(_config(dataset, tmp_path / "straight"))
    partial = train(_config(dataset, tmp_path / "resumed", max_steps=3))
    assert partial.steps == 3
    resumed = train(_config(dataset, tmp_path / "resumed"), resume=True)
    assert resumed.steps == straight.steps
    a, b = _weights(tmp_path / "straight" / "checkpoint"), _weights(tmp_path / "resumed" / "checkpoint")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(dataset, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "fad_edge", "train", "--data", str(dataset), "--out", str(out),
               "--preset", "tiny", "--epochs", "50", "--batch-size", "8", "--checkpoint-every", "1", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "checkpoint" / "train_state.json").exists():
                time.sleep(0.5)  # let it get into the middle of later steps and saves
                break
            time.sleep(0.1)
        assert process.poll() is None, "training ended before it could be killed"
        process.kill()
    finally:
        process.wait()
    step = load_train_state(out / "checkpoint")[1]["step"]
    assert step >= 1
    resumed = train(_config(dataset, out, epochs=50, max_steps=step + 2), resume=True)
    assert resumed.steps == step + 2


def test_ddp_with_two_processes_keeps_identical_weights(dataset, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "fad_edge", "train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
               "--epochs", "1", "--batch-size", "4", "--max-steps", "3", "--threads", "1"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    info = json.loads((out / "checkpoint" / "model.json").read_text())
    hashes = info["rank_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]


def test_autocast_modes():
    assert autocast_dtype("off") is None
    assert autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("auto") in (None, torch.bfloat16)
    with pytest.raises(FadEdgeError, match="autocast"):
        autocast_dtype("fp32")
