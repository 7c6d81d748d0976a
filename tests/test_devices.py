"""`--device`: parsing, resolving with and without CUDA (faked where there is none), and the commands that take it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_checkpoint

from fad_edge.checkpoint import load_checkpoint
from fad_edge.device_copies import to_device
from fad_edge.devices import DeviceRequest, parse_device, resolve_device
from fad_edge.errors import BackendUnavailableError, FadEdgeError
from fad_edge.explain import saliency_map
from fad_edge.runtime.torch_runner import TorchRunner

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("text, expected", [
    ("cpu", DeviceRequest("cpu")), ("auto", DeviceRequest("auto")), ("cuda", DeviceRequest("cuda")),
    ("cuda:1", DeviceRequest("cuda", 1)), (" CUDA:0 ", DeviceRequest("cuda", 0)),
])
def test_parse_accepts_the_four_forms(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "auto:1", "cuda:0:1", "mps"])
def test_parse_refuses_anything_else_in_one_line(text):
    with pytest.raises(FadEdgeError, match="--device must be cpu, cuda, cuda:N or auto") as error:
        parse_device(text)
    assert "\n" not in str(error.value)


def test_without_cuda_auto_is_the_cpu_and_cuda_is_a_clear_error(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    for text in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(BackendUnavailableError, match=rf"--device {text}: .*use --device cpu") as error:
            resolve_device(text)
        assert "\n" not in str(error.value)


def test_with_gpus_auto_and_cuda_take_the_first_and_an_index_is_checked(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    expected = r"no cuda:2, this machine has 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"
    with pytest.raises(BackendUnavailableError, match=expected):
        resolve_device("cuda:2")


def test_under_torchrun_each_process_takes_its_local_rank(two_gpus):
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(FadEdgeError, match="each process takes cuda:LOCAL_RANK"):
        resolve_device("cuda:0", local_rank=1)
    with pytest.raises(BackendUnavailableError, match="process 2 needs cuda:2"):
        resolve_device("cuda", local_rank=2)


def _one_line_error(code: int, output: str, fragment: str) -> None:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in output, output


def test_commands_refuse_a_malformed_device(monkeypatch, capsys, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    for args in (["train", "--data", tmp_path, "--out", tmp_path / "run"],
                 ["evaluate", "--checkpoint", checkpoint, "--data", tmp_path],
                 ["explain", "--checkpoint", checkpoint, "--video", tmp_path / "v.mp4"],
                 ["generate", "--model", checkpoint, "--video", tmp_path / "v.mp4", "--out", tmp_path / "o"]):
        code, output = run_cli(monkeypatch, capsys, *args, "--device", "gpu:0")
        _one_line_error(code, output, "--device must be")


def test_commands_asking_for_absent_cuda_fail_before_any_work(no_cuda, monkeypatch, capsys, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    for args in (["train", "--data", tmp_path / "none", "--out", tmp_path / "run"],
                 ["evaluate", "--checkpoint", checkpoint, "--data", tmp_path / "none"],
                 ["explain", "--checkpoint", checkpoint, "--video", tmp_path / "none.mp4"],
                 ["generate", "--model", checkpoint, "--video", tmp_path / "none.mp4", "--out", tmp_path / "o"]):
        code, output = run_cli(monkeypatch, capsys, *args, "--device", "cuda")
        _one_line_error(code, output, "--device cuda:")
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_generate_device_moves_only_the_torch_backend(monkeypatch, capsys, tmp_path):
    # The device is checked against the backend before the (missing) export folder is opened.
    for backend, device, fragment in (("ort", "cuda", "backend ort runs on the CPU"),
                                      ("ort", "cuda:0", "for a GPU use --backend trt"),
                                      ("trt", "cpu", "backend trt runs on a CUDA GPU")):
        code, output = run_cli(monkeypatch, capsys, "generate", "--model", tmp_path / "engines", "--backend", backend,
                               "--device", device, "--video", tmp_path / "v.mp4", "--out", tmp_path / "o")
        _one_line_error(code, output, fragment)


def _clip_inputs(config, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = rng.random((config.clip_len, 3, config.image_size, config.image_size), dtype=np.float32)
    mel = rng.standard_normal((config.clip_len, 1, config.audio_window_frames, config.n_mels)).astype(np.float32)
    return torch.from_numpy(images), torch.from_numpy(mel)


def test_saliency_on_the_cpu(tmp_path):
    loaded = load_checkpoint(tiny_checkpoint(tmp_path / "ck"))
    images, mel = _clip_inputs(loaded.config)
    heat = saliency_map(loaded.model, images, mel, 3, device="cpu")
    assert heat.shape == (loaded.config.image_size,) * 2 and np.all(np.isfinite(heat)) and heat.max() > 0


@pytest.mark.cuda
@needs_cuda
def test_a_real_gpu_resolves_and_runs_the_torch_backend_and_saliency_like_the_cpu(tmp_path):
    assert resolve_device("auto") == torch.device("cuda", 0) == resolve_device("cuda")
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    frames = np.random.default_rng(1).integers(0, 255, (24, 64, 64, 3), dtype=np.uint8)
    audio = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    on_cpu = TorchRunner.from_checkpoint(checkpoint).run(frames, audio, 16000)
    on_gpu = TorchRunner.from_checkpoint(checkpoint, device="cuda").run(frames, audio, 16000)
    # cuDNN may run the convolutions in TF32: close, not equal.
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-2, atol=1e-3)
    loaded = load_checkpoint(checkpoint)
    images, mel = _clip_inputs(loaded.config)
    heat_cpu = saliency_map(loaded.model, images, mel, 3, device="cpu")
    heat_gpu = saliency_map(loaded.model, images, mel, 3, device="cuda")
    assert np.corrcoef(heat_cpu.ravel(), heat_gpu.ravel())[0, 1] > 0.99


def test_to_device_on_the_cpu_is_a_plain_move():
    draws = torch.rand(4, 3, generator=torch.Generator().manual_seed(0))
    assert to_device(draws, torch.device("cpu")) is draws


@pytest.mark.cuda
@needs_cuda
def test_to_device_copies_a_cpu_draw_to_the_gpu_that_later_host_writes_leave_alone():
    """The copy goes through a pinned staging block of its own: the caller's tensor can change (or be freed)
    right after the call while the copy is still queued behind the GPU's work."""
    busy = torch.randn(4096, 4096, device="cuda")
    for _ in range(8):
        busy = busy @ busy / 64  # queued work, so the copy below waits its turn on the stream
    draws = torch.randn(64, 56, generator=torch.Generator().manual_seed(1))
    expected = draws.clone()
    on_gpu = to_device(draws, torch.device("cuda"))
    draws.zero_()
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), expected)
