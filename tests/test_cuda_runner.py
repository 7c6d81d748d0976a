"""The CUDA runner: its logic on the CPU (eager, and graph buckets with a fake capture), and on a GPU
(tests marked `cuda`, skipped here): parity with the CPU torch runner, FP16, threads, the stream."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_checkpoint

from fad_edge.bench.run import speaker_inputs
from fad_edge.devices import resolve_device
from fad_edge.errors import BackendUnavailableError, FadEdgeError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.presets import preset
from fad_edge.runtime.cuda_graphs import EagerCapture
from fad_edge.runtime.cuda_runner import CudaRunner
from fad_edge.runtime.half_precision import Float32Island, islands, to_reduced_precision
from fad_edge.runtime.torch_runner import TorchRunner
from fad_edge.sampling import SamplerSettings

CUDA = torch.cuda.is_available()
on_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (torch sees none here)")


def model_with_normalization(name: str = "tiny", seed: int = 0, **overrides) -> ListenerModel:
    """Random weights and a non-trivial motion normalization, so de-normalization is exercised."""
    torch.manual_seed(seed)
    model = ListenerModel(preset(name, **overrides)).eval()
    rng = np.random.default_rng(seed)
    model.set_normalization(torch.from_numpy((0.1 * rng.standard_normal(56)).astype(np.float32)),
                            torch.from_numpy((0.05 + 0.1 * rng.random(56)).astype(np.float32)))
    return model


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest error relative to the motion's range."""
    return float(np.abs(ours - reference).max() / (reference.max() - reference.min()))


@pytest.fixture(scope="module")
def model():
    return model_with_normalization(context_clips=2)


# --- on the CPU -------------------------------------------------------------------------------------

UNUSED: dict[str, list[int]] = {name: [] for name in ("encode", "video", "audio", "x0", "whole", "step_x0")}


@pytest.mark.parametrize("frames, steps, max_frames", [(40, 1, 64), (40, 1, 16), (24, 3, 64)])
def test_graph_buckets_give_the_torch_motion_on_the_cpu(model, frames, steps, max_frames):
    """One step in one 'whole' graph, beyond max_frames through the encoder and ELNet graphs; more steps
    through the noise-prediction graph. The same noise as the reference runner for the same seed."""
    inputs = speaker_inputs(model.config, frames)
    reference = TorchRunner(model, steps=steps, seed=5).run_inputs(inputs)
    capture = EagerCapture()
    runner = CudaRunner(model, steps=steps, seed=5, device="cpu", capture=capture, graphs=True,
                        max_frames=max_frames)
    np.testing.assert_allclose(runner.run_inputs(inputs), reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    if steps > 1:
        assert runner.captured == {**UNUSED, "encode": [32], "step_x0": [4]}  # 24 frames, 3 clips
    elif frames <= max_frames:
        assert runner.captured == {**UNUSED, "whole": [8]}  # 5 clips in the bucket of 8
    else:  # chunks of 16 frames, 2 clips
        assert runner.captured == {**UNUSED, "encode": [8, 16], "x0": [1, 2]}
    assert next(runner.model.parameters()).device.type == "cpu"
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


@pytest.mark.parametrize("graphs", [True, False])
def test_inputs_not_shaped_as_prepare_inputs_makes_them_are_refused_with_or_without_graphs(model, graphs):
    """The one-replay path reads whatever fits its buffers: 0..255 or NaN pixels, or frames it would cut."""
    from fad_edge.data.inputs import SpeakerInputs

    config = model.config
    good = speaker_inputs(config, 16)

    def changed(images=None, n_frames=None) -> SpeakerInputs:
        images = good.images if images is None else images
        return SpeakerInputs(images, good.mel[: len(images)], good.n_frames if n_frames is None else n_frames)

    runner = CudaRunner(model, seed=1, device="cpu", capture=EagerCapture(), graphs=graphs)
    assert runner.run_inputs(changed()).shape == (16, 56)
    nan = good.images.copy()
    nan[0, 0, 0, 0] = np.nan
    for bad, message in ((changed(good.images * 255), r"\[0, 1\]"), (changed(nan), r"\[0, 1\]"),
                         (changed(n_frames=40), "whole clips"), (changed(good.images[:0], 0), "whole clips")):
        with pytest.raises(FadEdgeError, match=message):
            runner.run_inputs(bad)
    assert runner.captured.get("whole", []) == ([2] if graphs else [])  # the good call's bucket, nothing more


def test_eager_and_channels_last_runs_match_and_close_frees_the_runner(model):
    inputs = speaker_inputs(model.config, 16)
    reference = TorchRunner(model, seed=1).run_inputs(inputs)
    with CudaRunner(model, seed=1, device="cpu", graphs=False, channels_last=True) as runner:
        assert runner.name == "cuda-eager-cl"
        np.testing.assert_allclose(runner.run_inputs(inputs), reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    with pytest.raises(FadEdgeError, match="closed"):
        runner.run_inputs(inputs)


def test_fp16_keeps_standardizers_softmax_and_the_schedule_in_fp32(model):
    original = model_with_normalization(context_clips=2)
    exact = {name: tensor.clone() for name, tensor in (*original.named_parameters(), *original.named_buffers())}
    converted = to_reduced_precision(original, torch.float16)
    names = islands(converted)
    # The islands and buffers hold the FP32 model's own values, not FP16-rounded ones.
    for name, tensor in (*converted.named_parameters(), *converted.named_buffers()):
        if tensor.dtype == torch.float32:
            assert torch.equal(tensor, exact[name.replace(".module.", ".")]), name
    frequencies = converted.elnet.step_embedding[0].module.frequencies
    assert torch.equal(frequencies, exact["elnet.step_embedding.0.frequencies"])
    assert torch.equal(converted.motion_std, exact["motion_std"])
    assert "video_encoder.pool" in names and "elnet.step_embedding.0" in names
    assert "video_encoder.standardize" in names and "audio_encoder.standardize" in names
    # GroupNorms run in FP16 (their kernels accumulate in FP32): no island, no casts around them
    norms = [m for m in converted.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.weight.dtype == torch.float16 for m in norms)
    assert not any(isinstance(m.module, torch.nn.GroupNorm) for m in converted.modules()
                   if isinstance(m, Float32Island))
    assert converted.video_encoder.trunk.stem[0].weight.dtype == torch.float16
    for module in converted.modules():
        if isinstance(module, Float32Island):
            assert all(p.dtype == torch.float32 for p in module.parameters())
    assert converted.motion_std.dtype == converted.elnet.signal_scale.dtype == torch.float32
    inputs = speaker_inputs(model.config, 24)
    reference = TorchRunner(model, seed=2).run_inputs(inputs)
    half = CudaRunner(model, "fp16", seed=2, device="cpu", graphs=False).run_inputs(inputs)
    assert half.dtype == np.float32
    assert 0 < relative_error(half, reference) < 5e-3


def test_fp16_steps_from_the_last_timestep_keep_the_fp32_motion(model):
    """Several FP16 steps from t = 99 (the small preset's diverse sampler): each step's x0 comes from ELNet
    itself. Through its FP16 noise estimate, x0 would carry that rounding times 1 / sqrt(a_99) = 2000."""
    settings = SamplerSettings(steps=3, start_step=99, start_noise=1.0, temperature=1.4, rotation_noise=0.55)
    inputs = speaker_inputs(model.config, 24)
    reference = TorchRunner(model, seed=3, settings=settings).run_inputs(inputs)
    half = CudaRunner(model, "fp16", seed=3, device="cpu", graphs=False, settings=settings).run_inputs(inputs)
    assert relative_error(half, reference) < 5e-3


def test_cudnn_benchmark_mode_holds_for_the_call_only():
    """The runner turns cuDNN's benchmark mode on around its calls on a GPU and gives the caller's setting back,
    also when the call fails."""
    from fad_edge.runtime.cuda_runner import cudnn_benchmark

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_benchmark():
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is False
        with pytest.raises(RuntimeError), cudnn_benchmark():
            raise RuntimeError("a failing call")
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def test_compiled_networks_run_through_dynamo_and_give_the_same_motion(model):
    """The compiled runner traces each network with torch.compile (here with a counting backend: dynamo's
    tracing without Inductor's code generation, which needs minutes on 2 cores), shared by every graphed
    function and bucket, and stages FP16 inputs in FP16."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    inputs = speaker_inputs(model.config, 24)
    reference = CudaRunner(model, seed=3, device="cpu", capture=EagerCapture(), graphs=True).run_inputs(inputs)
    torch._dynamo.reset()
    counter = CompileCounter()
    runner = CudaRunner(model, seed=3, device="cpu", capture=EagerCapture(), graphs=True, compiled=True,
                        compile_backend=counter)
    assert runner.name == "cuda-compiled"
    np.testing.assert_allclose(runner.run_inputs(inputs), reference, rtol=0, atol=1e-6 * np.abs(reference).max())
    assert counter.frame_count == 3  # each network in one graph: no graph break (a CPU sync on a GPU)
    for frames in (8, 64, 16):  # 1, 8 and 2 clips: ELNet's batch of one clip is its own graph (size 1 specializes)
        runner.run_inputs(speaker_inputs(model.config, frames))
    assert runner.captured["whole"] == [1, 2, 4, 8]
    compiled = counter.frame_count
    assert 4 <= compiled <= 9  # the symbolic batches may split where torch's convolution picks another kernel
    # the per-network functions a stream calls, at sizes the networks have seen, reuse the compiled networks
    runner.encode_video_batch(inputs.images[:4])
    runner.clips_motion(np.zeros((2, model.config.condition_frames, model.config.condition_dim), np.float32),
                        np.zeros((2, model.config.clip_len, model.config.n_coeffs), np.float32),
                        np.random.default_rng(0))
    for frames in (24, 8, 64):
        runner.run_inputs(speaker_inputs(model.config, frames))
    assert counter.frame_count == compiled
    half = CudaRunner(model, "fp16", seed=3, device="cpu", capture=EagerCapture(), graphs=True)
    half.run_inputs(inputs)
    bucket = half._sets["whole"]._buckets[4]
    assert [buffer.dtype for buffer in bucket.slots[0].host_inputs] == [torch.float16, torch.float16, torch.float32]


def test_the_runner_serves_listener_stream_from_its_worker_thread(model):
    from fad_edge.data.synthetic import SyntheticConfig, generate_session

    session = generate_session(3, SyntheticConfig(seconds=1.5, image_size=2 * model.config.image_size))
    runner = CudaRunner(model, seed=4, device="cpu", capture=EagerCapture(), graphs=True)
    offline = runner.run(session.frames, session.audio, 16000)
    motion, _ = _streamed(runner, session)
    assert motion.shape == offline.shape
    assert relative_error(motion, offline) < 1e-4
    # the stream's buckets: frames encoded ahead or at once (warmed up at 1, 2, 4 and 8), ELNet clip by clip
    assert runner.captured["video"] == runner.captured["audio"] == [1, 2, 4, 8] and runner.captured["x0"] == [1]


def test_asking_for_cuda_without_a_gpu_is_one_line(tmp_path, monkeypatch, capsys):
    if CUDA:
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailableError, match="use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(FadEdgeError, match="cpu, cuda, cuda:N or auto"):
        resolve_device("tpu")
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", checkpoint, "--backend", "cuda",
                           "--video", tmp_path / "none.mp4", "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in output and "CUDA device" in output
    assert len([line for line in output.splitlines() if line.strip()]) == 1


def test_graphs_on_the_cpu_need_an_injected_capture(model):
    with pytest.raises(FadEdgeError, match="CUDA graphs need a CUDA device"):
        CudaRunner(model, device="cpu", graphs=True)


# --- on a GPU ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paper_model():
    return model_with_normalization("paper", seed=1)


@pytest.mark.cuda
@on_gpu
@pytest.mark.parametrize("frames", [64, 61, 1100])
def test_cuda_graphs_match_the_cpu_torch_runner(paper_model, frames):
    """1100 frames are more than the largest bucket: they run through the encoder and ELNet graphs."""
    inputs = speaker_inputs(paper_model.config, -(-frames // 8) * 8)
    inputs = type(inputs)(inputs.images, inputs.mel, frames)
    reference = TorchRunner(paper_model, seed=3).run_inputs(inputs)
    with CudaRunner(paper_model, seed=3) as runner:
        assert runner.graphs and runner.device.type == "cuda"
        ours = runner.run_inputs(inputs)
        again = runner.run_inputs(inputs)  # a replay of the captured graph
    assert ours.shape == reference.shape == (frames, 56)
    assert relative_error(ours, reference) < 1e-3
    np.testing.assert_array_equal(ours, again)



@pytest.mark.cuda
@on_gpu
@pytest.mark.parametrize("options", [dict(graphs=False), dict(precision="fp16"),
                                     dict(precision="fp16", channels_last=True), dict(steps=4)])
def test_cuda_variants_match_the_cpu_torch_runner(paper_model, options):
    inputs = speaker_inputs(paper_model.config, 64)
    reference = TorchRunner(paper_model, steps=options.get("steps"), seed=3).run_inputs(inputs)
    with CudaRunner(paper_model, seed=3, **options) as runner:
        ours = runner.run_inputs(inputs)
    limit = 1e-2 if options.get("precision") == "fp16" else 1e-3
    assert relative_error(ours, reference) < limit


@pytest.mark.cuda
@on_gpu
def test_fp16_graphs_of_several_steps_from_the_last_timestep_match_the_cpu(paper_model):
    """The diverse sampler's kind of steps in FP16 on the GPU, graphs replayed, against the CPU in FP32."""
    settings = SamplerSettings(steps=3, start_step=99, start_noise=1.0, temperature=1.4, rotation_noise=0.55)
    inputs = speaker_inputs(paper_model.config, 64)
    reference = TorchRunner(paper_model, seed=3, settings=settings).run_inputs(inputs)
    with CudaRunner(paper_model, "fp16", seed=3, settings=settings) as runner:
        assert runner.graphs
        assert relative_error(runner.run_inputs(inputs), reference) < 1e-2


@pytest.mark.cuda
@pytest.mark.compile
@on_gpu
def test_compiled_fp16_matches_the_cpu_torch_runner(paper_model):
    """Inductor's kernels inside the CUDA graphs (tens of seconds of compiling), channels-last as the GPU check's
    bench runs them: Inductor's on-disk cache then serves the bench's compiles."""
    inputs = speaker_inputs(paper_model.config, 64)
    reference = TorchRunner(paper_model, seed=3).run_inputs(inputs)
    with CudaRunner(paper_model, "fp16", seed=3, channels_last=True, compiled=True) as runner:
        assert runner.name == "cuda-fp16-cl-compiled"
        ours = runner.run_inputs(inputs)
        np.testing.assert_array_equal(runner.run_inputs(inputs), ours)  # a replay
    assert relative_error(ours, reference) < 1e-2


@pytest.mark.cuda
@on_gpu
def test_threads_share_one_runner_and_each_bucket_is_captured_once(paper_model):
    inputs = [speaker_inputs(paper_model.config, 8, seed=k) for k in range(6)]
    with CudaRunner(paper_model, seed=0) as runner:
        serial = [runner.encode(i.images, i.mel) for i in inputs]
        results: dict[int, np.ndarray] = {}
        start = threading.Barrier(len(inputs))

        def work(k: int) -> None:
            start.wait()
            results[k] = runner.encode(inputs[k].images, inputs[k].mel)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert runner.captured["encode"] == [8]
    for k, features in results.items():
        np.testing.assert_array_equal(features, serial[k])


@pytest.mark.cuda
@on_gpu
def test_listener_stream_runs_on_the_gpu(paper_model):
    from fad_edge.data.synthetic import SyntheticConfig, generate_session

    session = generate_session(3, SyntheticConfig(seconds=2.0, image_size=192))
    with CudaRunner(paper_model, seed=4) as runner:
        offline = runner.run(session.frames, session.audio, 16000)
        motion, stream = _streamed(runner, session)
    assert relative_error(motion, offline) < 1e-3
    assert stream.stats().clips == len(offline) // 8 + (len(offline) % 8 > 0)


def _ort_gpu(backend: str, precision: str, limit: float):
    """A parameter skipped at collection where the provider is missing, so the export fixture is not built."""
    from fad_edge.backends import get_backend

    reason = get_backend(backend).unavailable() if CUDA else "needs a CUDA device (torch sees none here)"
    return pytest.param(backend, precision, limit, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))


@pytest.mark.cuda
@pytest.mark.parametrize("backend, precision, limit", [_ort_gpu("ort-cuda", "fp32", 1e-3),
                                                       _ort_gpu("ort-trt", "fp16", 1e-2)])
def test_onnx_runtime_gpu_providers_match_the_cpu(tiny_export, backend, precision, limit):
    from fad_edge.runtime.ort_runner import OrtRunner
    from fad_edge.runtime.select import open_runner

    inputs = speaker_inputs(OrtRunner(tiny_export, threads=1).config, 64)
    reference = OrtRunner(tiny_export, "fp32", threads=1, seed=1).run_inputs(inputs)
    with open_runner(tiny_export, backend, precision, seed=1) as runner:
        assert relative_error(runner.run_inputs(inputs), reference) < limit


def _streamed(runner, session):
    """The session pushed through a ListenerStream frame by frame: its motion and the closed stream."""
    from fad_edge.runtime.stream import ListenerStream

    with ListenerStream(runner) as stream:
        for k, frame in enumerate(session.frames):
            stream.push_audio(session.audio[k * 533 : (k + 1) * 533], 16000)
            stream.push_video(frame, k / 30)
        stream.push_audio(session.audio[len(session.frames) * 533 :], 16000)
    return np.concatenate([clip.motion for clip in stream.clips(timeout=0)]), stream


def test_graph_buckets_serve_the_diverse_sampler_and_recapture_for_replaced_settings(model):
    """The one-step graphs bake in the start step when captured: new settings capture them again."""
    from fad_edge.sampling import SamplerSettings

    config = model.config
    inputs = speaker_inputs(config, 24)
    capture = EagerCapture()
    runner = CudaRunner(model, seed=3, device="cpu", capture=capture, graphs=True, sampler="diverse")
    assert runner.settings == SamplerSettings.named("diverse", config)
    reference = TorchRunner(model, seed=3, sampler="diverse").run_inputs(inputs)
    np.testing.assert_allclose(runner.run_inputs(inputs), reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    runner.run_inputs(inputs)
    assert capture.captured == 1  # the 'whole' bucket of 4 clips, replayed
    for settings in (SamplerSettings(steps=1, start_step=40, clip_sample=config.clip_sample),
                     SamplerSettings(steps=3, start_step=60, clip_sample=config.clip_sample, temperature=0.5)):
        runner.settings = settings
        reference = TorchRunner(model, seed=3, settings=settings).run_inputs(inputs)
        np.testing.assert_allclose(runner.run_inputs(inputs), reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    # start step 40 captured 'whole' again; three steps captured the encoder and the noise predictor
    assert capture.captured == 4 and runner.captured["step_x0"] == [4]
