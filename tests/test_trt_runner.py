"""The TensorRT runner's logic on the CPU: a fake CUDA driver (bytes for device memory) and fake engines that
compute with the FP32 ONNX graphs, so buffers, shapes, chunking, copies, threads and close() are all checked."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import onnxruntime as ort
import pytest

import fad_edge.runtime.trt_runner as trt_runner
from fad_edge.artifact import ENGINE_VARIANT, ExportManifest, GpuTarget
from fad_edge.errors import BackendUnavailableError, FadEdgeError
from fad_edge.runtime.ort_runner import OrtRunner
from fad_edge.runtime.trt_runner import EngineIO, TrtRunner

pytestmark = pytest.mark.slow

TARGET = GpuTarget("10.13.0", "Fake GPU", "9.0")
MAX_BATCH = {"frames": 16, "clips": 2}  # small profiles, so that runs are chunked


class FakeDriver:
    """Device memory as byte arrays; records what is allocated, freed and activated."""

    name = "fake"

    def __init__(self, thread_bound: bool = False) -> None:
        self.thread_bound = thread_bound
        self.memory: dict[int, np.ndarray] = {}
        self.freed: list[int] = []
        self.next_pointer = 4096
        self.activations: list[int] = []
        self.released = 0
        self.pending = 0  # copies queued since the last synchronize

    def activate(self, device: int) -> None:
        self.activations.append(threading.get_ident())

    def release(self) -> None:
        self.released += 1

    def stream(self) -> int:
        return 7

    fail_after: int | None = None  # allocations before an out-of-memory error

    def alloc(self, nbytes: int) -> int:
        if self.fail_after is not None and len(self.memory) >= self.fail_after:
            raise MemoryError("out of device memory")
        pointer, self.next_pointer = self.next_pointer, self.next_pointer + nbytes + 256
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        return pointer

    def free(self, pointer: int) -> None:
        del self.memory[pointer]
        self.freed.append(pointer)

    def copy_to_device(self, pointer: int, host: np.ndarray) -> None:
        assert host.flags.c_contiguous and host.nbytes <= self.memory[pointer].nbytes
        self.memory[pointer][: host.nbytes] = host.view(np.uint8).reshape(-1)
        self.pending += 1

    def copy_to_host(self, host: np.ndarray, pointer: int) -> None:
        host.view(np.uint8).reshape(-1)[:] = self.memory[pointer][: host.nbytes]
        self.pending += 1

    def synchronize(self) -> None:
        self.pending = 0

    def device_name(self, device: int) -> str:
        return TARGET.gpu

    def compute_capability(self, device: int) -> tuple[int, int]:
        return 9, 0


class FakeContext:
    """An execution context that runs the FP32 ONNX graph on the bytes at its tensor addresses."""

    def __init__(self, session: ort.InferenceSession, io: EngineIO, driver: FakeDriver) -> None:
        self.session, self.io, self.driver = session, io, driver
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.runs = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if not self.io.min_batch <= shape[0] <= self.io.max_shapes[name][0]:  # outside the profile, as TensorRT
            return False
        if tuple(shape[1:]) != self.io.max_shapes[name][1:]:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        rows = self.shapes[self.io.inputs[0]][0]
        return (rows, *self.session.get_outputs()[0].shape[1:])

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream: int) -> bool:
        feeds = {}
        for name in self.io.inputs:
            dtype, shape = self.io.dtypes[name], self.shapes[name]
            raw = self.driver.memory[self.addresses[name]][: int(np.prod(shape)) * dtype.itemsize]
            feeds[name] = raw.view(dtype).reshape(shape)
        output = self.session.run(None, feeds)[0].astype(self.io.dtypes[self.io.output])
        target = self.driver.memory[self.addresses[self.io.output]]
        assert output.nbytes <= target.nbytes, "the output buffer is too small for this batch"
        target[: output.nbytes] = output.view(np.uint8).reshape(-1)
        self.runs += 1
        return True


class FakeEngine:
    def __init__(self, session: ort.InferenceSession, io: EngineIO, driver: FakeDriver) -> None:
        self.session, self.io, self.driver = session, io, driver
        self.contexts: list[FakeContext] = []

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext(self.session, self.io, self.driver))
        return self.contexts[-1]


@pytest.fixture
def engine_folder(tiny_export, tmp_path, monkeypatch):
    """The tiny export with an engine record per graph (the engines are the FP32 graphs, run by the fakes)."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_export, folder)
    manifest = ExportManifest.load(folder)
    for graph, files in manifest.graphs.items():
        engine = folder / f"{graph}.engine"
        engine.write_bytes(b"fake engine")
        record = {"tensorrt": TARGET.tensorrt, "gpu": TARGET.gpu, "compute_capability": TARGET.compute_capability,
                  "checkpoint_sha256": manifest.checkpoint_sha256, "onnx": files["fp32"]}
        engine.with_suffix(".json").write_text(json.dumps(record))
        files[ENGINE_VARIANT] = engine.name
    manifest.save(folder)
    monkeypatch.setattr(trt_runner, "require_tensorrt", lambda: None)
    monkeypatch.setattr(trt_runner, "current_gpu_target", lambda driver, device=0: TARGET)
    return folder


def fake_loader(folder, driver: FakeDriver, engines: dict, min_frames: int = 1):
    """Engines of the FP32 graphs; `min_frames` is the encoders' smallest batch (8 in engines built before
    their profiles started at one frame)."""
    def load(path):
        record = json.loads(path.with_suffix(".json").read_text())
        session = ort.InferenceSession(str(folder / record["onnx"]), providers=["CPUExecutionProvider"])
        axis = "frames" if "encoder" in path.stem else "clips"
        inputs = tuple(i.name for i in session.get_inputs())
        dtypes = {i.name: np.dtype(np.int64 if "int64" in i.type else np.float32) for i in session.get_inputs()}
        dtypes[session.get_outputs()[0].name] = np.dtype(np.float32)
        max_shapes = {i.name: (MAX_BATCH[axis], *i.shape[1:]) for i in session.get_inputs()}
        io = EngineIO(inputs, session.get_outputs()[0].name, dtypes, max_shapes,
                      min_frames if axis == "frames" else 1)
        engines[path.stem] = FakeEngine(session, io, driver)
        return engines[path.stem], io

    return load


@pytest.mark.parametrize("steps", [1, 3])
def test_the_runner_gives_the_graphs_motion_in_chunks_and_frees_everything(engine_folder, steps):
    from fad_edge.bench.run import speaker_inputs

    driver, engines = FakeDriver(), {}
    loader = fake_loader(engine_folder, driver, engines)
    runner = TrtRunner(engine_folder, steps=steps, seed=2, driver=driver, loader=loader)
    inputs = speaker_inputs(runner.config, 40)  # 40 frames, 5 clips: chunks of 16 frames and 2 clips
    reference = OrtRunner(engine_folder, "fp32", threads=1, steps=steps, seed=2).run_inputs(inputs)
    motion = runner.run_inputs(inputs)
    np.testing.assert_allclose(motion, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    video = engines["video_encoder"].contexts[0]
    assert video.runs == 3  # 16 + 16 + 8 frames
    allocated = set(driver.memory)
    # every input and output of the three engines, allocated once, at the profile's largest batch
    assert len(allocated) == sum(len(engine.io.inputs) + 1 for engine in engines.values())
    images = engines["video_encoder"].io.max_shapes["images"]
    assert max(buffer.nbytes for buffer in driver.memory.values()) == int(np.prod(images)) * 4
    runner.run_inputs(inputs)
    assert set(driver.memory) == allocated and driver.pending == 0
    runner.close()
    assert not driver.memory and sorted(driver.freed) == sorted(allocated) and driver.released == 1
    runner.close()  # idempotent
    assert driver.released == 1
    with pytest.raises(FadEdgeError, match="closed"):  # unusable, and nothing allocated again
        runner.run_inputs(inputs)
    assert not driver.memory and driver.released == 1


def test_a_thread_bound_driver_refuses_other_threads_and_a_free_one_does_not(engine_folder):
    from fad_edge.bench.run import speaker_inputs

    for bound in (True, False):
        driver = FakeDriver(thread_bound=bound)
        runner = TrtRunner(engine_folder, driver=driver, loader=fake_loader(engine_folder, driver, {}))
        inputs = speaker_inputs(runner.config, 8)
        runner.run_inputs(inputs)
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                runner.run_inputs(inputs)
            except BackendUnavailableError as error:
                errors.append(error)

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert bool(errors) == bound
        if bound:
            assert "thread" in str(errors[0]) and "\n" not in str(errors[0])
        else:  # the device is made current in each calling thread
            assert worker.ident in driver.activations
        runner.close()


def test_an_engine_for_another_gpu_is_refused_before_any_work(engine_folder, monkeypatch):
    from fad_edge.errors import EngineMismatchError

    other = GpuTarget("10.13.0", "Other", "8.7")
    monkeypatch.setattr(trt_runner, "current_gpu_target", lambda driver, device=0: other)
    driver = FakeDriver()
    with pytest.raises(EngineMismatchError, match="rebuild"):
        TrtRunner(engine_folder, driver=driver, loader=fake_loader(engine_folder, driver, {}))
    assert not driver.memory


def test_the_diverse_sampler_gives_the_ort_motion_and_replaced_settings_load_their_engine(engine_folder):
    from fad_edge.artifact import ELNET_EPS, ELNET_X0
    from fad_edge.bench.run import speaker_inputs
    from fad_edge.sampling import SamplerSettings

    manifest = ExportManifest.load(engine_folder)
    manifest.config = {**manifest.config, "diverse_start_step": 50, "diverse_steps": 3, "diverse_temperature": 0.5}
    manifest.save(engine_folder)
    driver, engines = FakeDriver(), {}
    runner = TrtRunner(engine_folder, seed=6, driver=driver, loader=fake_loader(engine_folder, driver, engines),
                       sampler="diverse")
    assert runner.graphs[-1] == ELNET_EPS
    inputs = speaker_inputs(runner.config, 24)
    reference = OrtRunner(engine_folder, "fp32", threads=1, seed=6, sampler="diverse").run_inputs(inputs)
    np.testing.assert_allclose(runner.run_inputs(inputs), reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    assert ELNET_X0 not in engines
    runner.settings = SamplerSettings.named("mean", runner.config)  # one step from the folded start: elnet_x0
    mean = OrtRunner(engine_folder, "fp32", threads=1, seed=6).run_inputs(inputs)
    np.testing.assert_allclose(runner.run_inputs(inputs), mean, rtol=0, atol=1e-5 * np.abs(mean).max())
    assert ELNET_X0 in engines and ELNET_X0 in runner.graphs
    runner.close()
    assert not driver.memory


@pytest.mark.parametrize("min_frames", [1, 8])
def test_a_stream_encodes_single_frames_on_the_engines_whatever_their_profile_starts_at(engine_folder, min_frames):
    """A stream warms and encodes 1, 2 and 4 frames; engines whose profile starts at 8 frames get them padded."""
    driver = FakeDriver()
    runner = TrtRunner(engine_folder, seed=0, driver=driver, loader=fake_loader(engine_folder, driver, {}, min_frames))
    reference = OrtRunner(engine_folder, "fp32", threads=1)
    rng = np.random.default_rng(0)
    config = runner.config
    for frames in (1, 2, 4, 8, 19):
        images = rng.random((frames, 3, config.image_size, config.image_size), dtype=np.float32)
        mel = rng.standard_normal((frames, 1, config.audio_window, config.n_mels), dtype=np.float32)
        ours, theirs = runner.encode(images, mel), reference.encode(images, mel)
        assert ours.shape == theirs.shape == (frames, theirs.shape[1])
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
    runner.close()
    reference.close()


def test_an_engine_that_cannot_get_its_buffers_frees_what_it_had(engine_folder):
    from fad_edge.runtime.trt_runner import _Engine

    driver = FakeDriver()
    engine, io = fake_loader(engine_folder, driver, {})(engine_folder / "video_encoder.engine")
    driver.fail_after = 1  # the input's buffer, then out of memory at the output's
    with pytest.raises(MemoryError):
        _Engine(engine, io, driver)
    assert not driver.memory and len(driver.freed) == 1


def test_the_encoders_profile_starts_at_one_frame():
    from fad_edge.export.tensorrt_build import EngineProfile

    profile = EngineProfile(max_clips=16)
    assert profile.batch_range("video_encoder", 8) == (1, 64, 128)
    assert profile.batch_range("audio_encoder", 8) == (1, 64, 128)
    assert profile.batch_range("elnet_x0", 8) == (1, 8, 16)
