"""Training: loss goes down, checkpoints resume exactly (on a CPU or a GPU), DDP keeps ranks identical, bad
runs stop."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli

import fad_edge.train as training
from fad_edge import train_precision
from fad_edge.checkpoint import load_checkpoint, load_train_state
from fad_edge.data.synthetic_dataset import write_synthetic_dataset
from fad_edge.errors import FadEdgeError
from fad_edge.train import TrainConfig, train
from fad_edge.train_batches import StepBatches, step_loader
from fad_edge.train_precision import MixedPrecision, arithmetic_name, autocast_dtype
from fad_edge.train_state import average_decay, training_weights

pytestmark = pytest.mark.slow
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, sessions=4, seconds=6.0, seed=3, image_size=48)
    return root


def _config(dataset: Path, out: Path, **changes) -> TrainConfig:
    base = dict(data=str(dataset), out=str(out), preset="tiny", epochs=2, batch_size=8, lr=2e-3,
                warmup_steps=2, checkpoint_every=3, val_clips=16, threads=1, device="cpu")
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
    # The training sessions' fingerprints, for evaluate to tell them from held-out ones.
    from fad_edge.data.dataset import load_split
    from fad_edge.digests import motion_fingerprint

    train_sessions = load_split(dataset, "train", 48, 80, use_cache=False)
    info = load_checkpoint(tmp_path / "run" / "best").info
    assert info["train_motion_fingerprints"] == sorted(motion_fingerprint(s.listener) for s in train_sessions)
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    assert last < first


def test_resume_after_a_stop_gives_the_same_weights_as_an_uninterrupted_run(dataset, tmp_path):
    straight = train(_config(dataset, tmp_path / "straight"))
    partial = train(_config(dataset, tmp_path / "resumed", max_steps=3))
    assert partial.steps == 3
    resumed = train(_config(dataset, tmp_path / "resumed"), resume=True)
    assert resumed.steps == straight.steps
    # The stopped run validated where it stopped (step 3, part of epoch 1); after that, the same records
    # as the straight run, each a whole epoch.
    assert resumed.history == partial.history + [record for record in straight.history if record["step"] > 3]
    assert [record["whole_epoch"] for record in resumed.history] == [False, True, True]
    assert (partial.epochs_done, resumed.epochs_done) == (0, 2)
    a, b = _weights(tmp_path / "straight" / "checkpoint"), _weights(tmp_path / "resumed" / "checkpoint")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    # The optimizer's own weights (the checkpoint's model weights are their average) resume exactly too.
    a = _training_weights(tmp_path / "straight" / "checkpoint")
    b = _training_weights(tmp_path / "resumed" / "checkpoint")
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


class _Notes(training.SilentReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_resuming_past_the_warm_up_with_a_larger_budget_says_the_schedule_changed(dataset, tmp_path):
    # Warm-up 2 steps: steps 1-3 take the same rates whatever the total, step 4 takes a 4-step cosine's.
    train(_config(dataset, tmp_path / "past", max_steps=4))
    grown, same = _Notes(), _Notes()
    train(_config(dataset, tmp_path / "past", max_steps=6), grown, resume=True)
    assert len(grown.notes) == 1 and "planned for 4 steps and now runs to 6" in grown.notes[0]
    train(_config(dataset, tmp_path / "past", max_steps=6), same, resume=True)  # the same plan: nothing to say
    train(_config(dataset, tmp_path / "within", max_steps=3))
    within = _Notes()
    train(_config(dataset, tmp_path / "within", max_steps=6), within, resume=True)
    assert same.notes == within.notes == []


def _training_weights(folder: Path) -> dict[str, torch.Tensor]:
    return training_weights(load_train_state(folder)[0])


def test_the_saved_weights_are_the_moving_average_of_the_trained_ones(dataset, tmp_path):
    # Two steps with decay 0.5: the average copies step 1's weights, then moves min(0.5, 2/11) of the
    # way to step 2's. The warm-up does not depend on the run's length, so a 1-step run gives step 1's.
    two = train(_config(dataset, tmp_path / "two", max_steps=2, ema_decay=0.5))
    one = train(_config(dataset, tmp_path / "one", max_steps=1, ema_decay=0.0))
    first, second = _weights(tmp_path / "one" / "checkpoint"), _training_weights(tmp_path / "two" / "checkpoint")
    averaged, best = _weights(tmp_path / "two" / "checkpoint"), _weights(tmp_path / "two" / "best")
    assert average_decay(0.5, 1) == pytest.approx(2 / 11) and not _training_weights(tmp_path / "one" / "checkpoint")
    parameters = {name for name, _ in load_checkpoint(tmp_path / "two" / "checkpoint").model.named_parameters()}
    moved = 0
    for name, value in averaged.items():  # buffers (statistics, constants) follow the trained model's
        expected = first[name] + (second[name] - first[name]) * (1 - 2 / 11) if name in parameters else second[name]
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7, msg=name)
        moved += int(name in parameters and not torch.equal(first[name], second[name]))
    assert moved > 10  # the step changed the weights, so the test tells an average from either end
    assert two.steps == 2 and one.steps == 1
    for name in averaged:  # the last validation saved the average as best
        assert torch.equal(averaged[name], best[name])


def test_a_run_without_an_average_resumes_into_one(dataset, tmp_path):
    out = tmp_path / "run"
    train(_config(dataset, out, max_steps=2, ema_decay=0.0))
    before = _weights(out / "checkpoint")
    resumed = train(_config(dataset, out, max_steps=4), resume=True)
    assert resumed.steps == 4
    trained, averaged = _training_weights(out / "checkpoint"), _weights(out / "checkpoint")
    changed = [name for name in averaged if not torch.equal(averaged[name], before[name])]
    assert changed and any(not torch.equal(averaged[name], trained[name]) for name in changed)


@pytest.mark.parametrize("decay", [1.0, -0.1, math.nan])
def test_the_average_decay_must_be_in_0_to_1(tmp_path, decay):
    with pytest.raises(FadEdgeError, match=r"--ema-decay must be in \[0, 1\)"):
        train(_config(tmp_path / "no-data", tmp_path / "run", ema_decay=decay))


def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(dataset, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "fad_edge", "train", "--data", str(dataset), "--out", str(out),
               "--preset", "tiny", "--epochs", "50", "--batch-size", "8", "--checkpoint-every", "1", "--threads", "1",
               "--device", "cpu"]
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
    resumed = train(_config(dataset, out, epochs=50, max_steps=step + 2, warmup_steps=50), resume=True)  # the CLI's
    assert resumed.steps == step + 2


def test_ddp_with_two_processes_keeps_identical_weights_and_resumes_exactly(dataset, tmp_path):
    """Each rank draws its own noise: a resumed run gives every rank its own stream back (all 3 steps lie in
    the warm-up, so the learning rate does not depend on the step budget)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(out: Path, steps: int, *flags: str) -> None:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                   "-m", "fad_edge", "train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
                   "--epochs", "1", "--batch-size", "4", "--max-steps", str(steps), "--threads", "1", "--device",
                   "cpu", *flags]
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert "Grad strides" not in completed.stderr  # DDP's warning about equivalent strides is not shown

    torchrun(tmp_path / "unbroken", 3)
    info = json.loads((tmp_path / "unbroken" / "checkpoint" / "model.json").read_text())
    hashes = info["rank_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1] and info["world_size"] == 2
    torchrun(tmp_path / "resumed", 1)
    torchrun(tmp_path / "resumed", 3, "--resume")
    unbroken, resumed = _weights(tmp_path / "unbroken" / "checkpoint"), _weights(tmp_path / "resumed" / "checkpoint")
    assert all(torch.equal(unbroken[name], resumed[name]) for name in unbroken)
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "model.json").read_text())["rank_weight_hashes"] == hashes
    with pytest.raises(FadEdgeError, match="trained by 2 process"):  # one process would draw other data and noise
        train(_config(dataset, tmp_path / "resumed", epochs=1, max_steps=4, batch_size=4, warmup_steps=50),
              resume=True)


def test_autocast_modes(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype("off") is None
    assert autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("auto") in (None, torch.bfloat16)
    with pytest.raises(FadEdgeError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    assert autocast_dtype("fp16", cuda) is torch.float16 and autocast_dtype("off", cuda) is None
    monkeypatch.setattr(train_precision, "cuda_has_native_bf16", lambda device: True)
    assert autocast_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(train_precision, "cuda_has_native_bf16", lambda device: False)
    assert autocast_dtype("auto", cuda) is torch.float16
    with pytest.raises(FadEdgeError, match="autocast"):
        autocast_dtype("fp32")
    # The demo names what its training ran in.
    assert (arithmetic_name("off"), arithmetic_name("bf16"), arithmetic_name("auto", cuda)) == ("fp32", "bf16", "fp16")
    monkeypatch.setattr(train_precision, "cpu_has_native_bf16", lambda: False)
    assert arithmetic_name("auto", cpu) == "fp32"


def test_the_fp16_loss_scale_skips_overflowing_steps_and_is_restored():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(layer.parameters())
    precision = MixedPrecision(torch.device("cpu"), torch.float16)  # the GradScaler logic, run on the CPU
    inputs = torch.ones(2, 4)
    precision.backward_and_step(layer(inputs).pow(2).mean(), optimizer, 1.0)
    before = [p.detach().clone() for p in layer.parameters()]
    precision.backward_and_step((layer(inputs) * math.inf).mean(), optimizer, 1.0)  # inf gradients: skipped
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    state = precision.state_dict()
    assert state["scale"] == 2.0**15  # backed off from 2**16
    fresh = MixedPrecision(torch.device("cpu"), torch.float16)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert MixedPrecision(torch.device("cpu"), torch.bfloat16).state_dict() == {}


class _FakeWindows:
    """Stands in for a ClipDataset: window i is a tensor holding i."""

    def __len__(self) -> int:
        return 50

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": torch.full((2, 3), float(index)), "motion": torch.tensor([index])}


def test_each_step_takes_its_slice_of_the_epoch_permutation_on_every_rank():
    ranks = [StepBatches(_FakeWindows(), batch_size=4, seed=7, rank=rank, world=2) for rank in (0, 1)]
    assert ranks[0].steps_per_epoch == 6  # 50 // (4 * 2)
    for epoch in (0, 1):
        expected = np.random.default_rng([7, epoch]).permutation(50)[:48]
        seen = [ranks[r].indices(epoch * 6 + k) for k in range(6) for r in (0, 1)]
        assert sorted(np.concatenate(seen).tolist()) == sorted(expected.tolist())
        np.testing.assert_array_equal(ranks[1].indices(epoch * 6 + 2), expected[1::2][8:12])
    batch = ranks[0][3]
    np.testing.assert_array_equal(batch["motion"][:, 0].numpy(), ranks[0].indices(3))


def test_a_loader_with_workers_yields_the_same_batches_from_any_start():
    batches = StepBatches(_FakeWindows(), batch_size=4, seed=1)
    in_process = list(step_loader(batches, 5, 15, workers=0, pin_memory=False))
    with_workers = list(step_loader(batches, 5, 15, workers=2, pin_memory=False))
    assert len(in_process) == len(with_workers) == 10
    for step, (a, b) in enumerate(zip(in_process, with_workers), start=5):
        assert torch.equal(a["motion"], b["motion"])
        assert torch.equal(a["motion"][:, 0], torch.from_numpy(batches.indices(step)))


def test_workers_do_not_change_the_trained_weights(dataset, tmp_path):
    in_process = train(_config(dataset, tmp_path / "w0", max_steps=4, workers=0))
    with_worker = train(_config(dataset, tmp_path / "w1", max_steps=4, workers=1))
    assert in_process.weights_sha256_per_rank == with_worker.weights_sha256_per_rank
    assert in_process.history == with_worker.history


@pytest.mark.parametrize("lr", [math.inf, math.nan, 0.0, -1e-3])
def test_the_learning_rate_must_be_finite_and_positive(tmp_path, lr):
    with pytest.raises(FadEdgeError, match="--lr must be a finite number above 0"):
        train(_config(tmp_path / "no-data", tmp_path / "run", lr=lr))
    assert not (tmp_path / "run").exists()


def test_the_cli_refuses_lr_inf_and_a_used_folder_in_one_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    for args, fragment in ((["--lr", "inf"], "--lr': inf is not a finite number"),
                           (["--ema-decay", "1"], "--ema-decay': 1 is not a finite number in [0, 1)"),
                           ([], f"{tmp_path / 'run'}: the output folder is not empty")):
        code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run",
                               "--device", "cpu", *args)
        lines = [line for line in output.strip().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in output and fragment in output, output


def _finite(folder: Path) -> bool:
    return all(torch.isfinite(t).all() for t in _weights(folder).values() if t.is_floating_point())


def test_a_diverging_run_stops_with_a_clear_error(dataset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FadEdgeError, match=r"training diverged: .* lower --lr \(now 1e\+30\)"):
        train(_config(dataset, out, lr=1e30, warmup_steps=1, max_steps=6, checkpoint_every=1))
    for folder in (out / "best", out / "checkpoint"):
        assert not folder.exists() or _finite(folder)


def test_non_finite_weights_are_never_saved_as_best(dataset, tmp_path, monkeypatch):
    # The last step's update makes the weights NaN (its loss, computed before the update, is finite),
    # and validation is faked to call every epoch the best so far.
    schedule = training._learning_rate
    monkeypatch.setattr(training, "_learning_rate",
                        lambda config, step, total: math.nan if step == total - 1 else schedule(config, step, total))
    monkeypatch.setattr(training, "validate", lambda *args: {"val_loss": 0.1, "val_l2": 0.1})
    out = tmp_path / "run"
    with pytest.raises(FadEdgeError, match="the weights are not finite after step 3"):
        train(_config(dataset, out, max_steps=3, checkpoint_every=100))
    for folder in (out / "best", out / "checkpoint"):
        assert not folder.exists() or _finite(folder)
    assert not (out / "best").exists() or json.loads((out / "best" / "model.json").read_text())["step"] < 3


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("autocast", ["off", "auto", "fp16"])
def test_on_cuda_resume_gives_the_same_weights_as_an_uninterrupted_run(dataset, tmp_path, autocast):
    # A GPU's default loader workers for one case (the path a GPU run takes), none for the others (quicker).
    workers = None if autocast == "auto" else 0
    straight = train(_config(dataset, tmp_path / "straight", device="cuda", autocast=autocast, workers=workers))
    partial = train(_config(dataset, tmp_path / "resumed", device="cuda", autocast=autocast, max_steps=3,
                            workers=workers))
    assert partial.steps == 3
    resumed = train(_config(dataset, tmp_path / "resumed", device="cuda", autocast=autocast, workers=workers),
                    resume=True)
    # The stopped run validated where it stopped (step 3); after that, the same records as the straight run.
    assert resumed.steps == straight.steps and partial.history[-1]["step"] == 3
    assert resumed.history == partial.history + [record for record in straight.history if record["step"] > 3]
    a, b = _weights(tmp_path / "straight" / "checkpoint"), _weights(tmp_path / "resumed" / "checkpoint")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    scaler = load_train_state(tmp_path / "resumed" / "checkpoint")[1]["grad_scaler"]
    assert bool(scaler) == (autocast == "fp16")


@pytest.mark.cuda
@needs_cuda
def test_a_cuda_run_draws_the_cpu_noise_and_its_checkpoint_resumes_on_the_cpu(dataset, tmp_path):
    on_gpu = train(_config(dataset, tmp_path / "gpu", device="cuda", max_steps=2))
    train(_config(dataset, tmp_path / "cpu", device="cpu", max_steps=2))
    gpu_state, cpu_state = (load_train_state(tmp_path / name / "checkpoint")[0] for name in ("gpu", "cpu"))
    assert torch.equal(gpu_state["noise_generator"], cpu_state["noise_generator"])
    assert on_gpu.steps == 2 and _finite(tmp_path / "gpu" / "checkpoint")
    assert all(t.device.type == "cpu" for t in _weights(tmp_path / "gpu" / "checkpoint").values())
    resumed = train(_config(dataset, tmp_path / "gpu", device="cpu", max_steps=3), resume=True)
    assert resumed.steps == 3 and _finite(tmp_path / "gpu" / "checkpoint")


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_on_two_gpus_with_nccl_keeps_identical_weights(dataset, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
               "-m", "fad_edge", "train", "--data", str(dataset), "--out", str(out), "--preset", "tiny",
               "--epochs", "1", "--batch-size", "4", "--max-steps", "3", "--device", "cuda"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    hashes = json.loads((out / "checkpoint" / "model.json").read_text())["rank_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]


@pytest.mark.parametrize("deterministic", [True, False])
def test_gpu_kernels_are_deterministic_or_benchmarked_as_asked_and_restored_after(deterministic):
    from fad_edge.train_setup import reproducible_kernels

    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    with reproducible_kernels(torch.device("cuda"), deterministic):  # sets flags only: no GPU needed
        assert (cudnn.deterministic, cudnn.benchmark) == (deterministic, not deterministic)
    assert (cudnn.deterministic, cudnn.benchmark) == before
    with reproducible_kernels(torch.device("cpu"), deterministic):
        assert (cudnn.deterministic, cudnn.benchmark) == before  # the CPU has no cuDNN to set


def test_a_video_encoder_left_to_the_speaker_loss_gets_the_diffusion_gradient_where_that_loss_cannot_train_it():
    from fad_edge.models.presets import preset

    small = preset("small")
    assert small.video_diffusion_gradient == 0.0 and small.speaker_aux_weight > 0
    assert training._video_encoder_trainable(small, speaker_known=True) is small
    assert training._video_encoder_trainable(small, speaker_known=False).video_diffusion_gradient == 1.0
    no_speaker_loss = preset("small", speaker_aux_weight=0.0)
    assert training._video_encoder_trainable(no_speaker_loss, speaker_known=True).video_diffusion_gradient == 1.0
    partial = preset("small", video_diffusion_gradient=0.5, speaker_aux_weight=0.0)  # a share still trains it
    assert training._video_encoder_trainable(partial, speaker_known=False) is partial


@pytest.mark.parametrize("shift", [-1, 17])
def test_the_augment_shift_must_be_in_range(tmp_path, shift):
    with pytest.raises(FadEdgeError, match=r"--augment-shift must be in 0\.\.16 pixels"):
        train(_config(tmp_path / "no-data", tmp_path / "run", augment_shift=shift))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("rank, says", [("0", True), ("1", False)])
def test_under_torchrun_only_rank_0_prints_the_runs_summary(monkeypatch, capsys, tmp_path, rank, says):
    result = training.TrainResult(tmp_path / "checkpoint", tmp_path / "best", 3, 1, [], 2.0, ["hash"])
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: result)
    monkeypatch.setenv("RANK", rank)
    code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run")
    assert code == 0, output
    assert ("trained 3 steps" in output) == says
