"""TensorRT FP16 engines (the `[trt]` extra), behind the same runner contract as ONNX Runtime.

Memory: each engine's device buffers are allocated once, at its optimization profile's largest
batch, and bound to its execution context; a larger input runs in chunks of that batch. `close()`
frees them, then the execution contexts, then the stream and context.

Threading: the CUDA binding is `cuda_driver.CudaDriver` (cuda-python where installed, else pycuda).
With cuda-python any thread may call (one lock serializes the shared buffers, and the device is
made current in the calling thread); a pycuda context belongs to the thread that made it, so with
pycuda the runner starts in the first thread that runs inference and refuses calls from any other
(the streaming listener runs all inference in one worker thread). Engines are checked against the
TensorRT version and GPU recorded when they were built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fad_edge.artifact import (
    AUDIO_ENCODER,
    ELNET_EPS,
    ELNET_X0,
    ENGINE_VARIANT,
    VIDEO_ENCODER,
    ExportManifest,
    check_engine_checkpoint,
    check_engine_target,
)
from fad_edge.errors import BackendUnavailableError, FadEdgeError
from fad_edge.runtime.base import ClipRunner, run_in_batches
from fad_edge.runtime.cuda_driver import CudaDriver
from fad_edge.runtime.tensorrt_support import current_gpu_target, require_cuda, require_tensorrt
from fad_edge.sampling import DEFAULT_SAMPLER, SamplerSettings


@dataclass(frozen=True)
class EngineIO:
    """An engine's tensors: input names (in order), its output, dtypes, each input's largest shape, and the
    smallest batch its profile takes."""

    inputs: tuple[str, ...]
    output: str
    dtypes: dict[str, np.dtype]
    max_shapes: dict[str, tuple[int, ...]]
    min_batch: int = 1


def describe_engine(engine: Any) -> EngineIO:
    """The IO of a deserialized `trt.ICudaEngine`, largest shapes from optimization profile 0."""
    import tensorrt as trt

    typed: trt.ICudaEngine = engine
    names = [typed.get_tensor_name(i) for i in range(typed.num_io_tensors)]
    inputs = tuple(n for n in names if typed.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    outputs = [n for n in names if typed.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    dtypes = {n: np.dtype(trt.nptype(typed.get_tensor_dtype(n))) for n in names}
    max_shapes = {n: _shape(typed.get_tensor_profile_shape(n, 0)[2]) for n in inputs}
    min_batch = max(_shape(typed.get_tensor_profile_shape(n, 0)[0])[0] for n in inputs)
    return EngineIO(inputs, outputs[0], dtypes, max_shapes, min_batch)


def _shape(dims: Any) -> tuple[int, ...]:
    """A TensorRT Dims (or any sequence) as a tuple of ints."""
    return tuple(int(dims[axis]) for axis in range(len(dims)))


def load_engine(path: Path) -> tuple[Any, EngineIO]:
    """Deserialize an engine file; a clear error when TensorRT cannot."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise FadEdgeError(f"{path}: TensorRT could not deserialize the engine; rebuild with fad-edge export --trt")
    return engine, describe_engine(engine)


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


class _Engine:
    """One engine, its execution context and device buffers sized for its profile's largest batch."""

    def __init__(self, engine: Any, io: EngineIO, driver: CudaDriver) -> None:
        import tensorrt as trt

        self.engine: trt.ICudaEngine = engine
        self.context: trt.IExecutionContext = engine.create_execution_context()
        self.io, self.driver = io, driver
        self.buffers: dict[str, int] = {}
        try:  # a failure part way (out of memory) frees what was allocated before the caller drops the context
            for name in io.inputs:  # the largest shapes, to size the output
                self._set_shape(name, io.max_shapes[name])
            output_shape = _shape(self.context.get_tensor_shape(io.output))
            self.max_batch = min(shape[0] for shape in io.max_shapes.values())
            sizes = {name: _nbytes(io.max_shapes[name], io.dtypes[name]) for name in io.inputs}
            sizes[io.output] = _nbytes(output_shape, io.dtypes[io.output])
            for name, size in sizes.items():
                self.buffers[name] = driver.alloc(size)
                self.context.set_tensor_address(name, self.buffers[name])
        except BaseException:
            self.free()
            raise

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, shape):
            raise FadEdgeError(f"input {name} of shape {shape} is outside the engine's profile; "
                               "rebuild with fad-edge export --trt")

    def free(self) -> None:
        """Free the device buffers and the execution context, before the CUDA context goes."""
        for pointer in self.buffers.values():
            self.driver.free(pointer)
        self.buffers.clear()
        del self.context, self.engine

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return run_in_batches(self._run_padded, feeds, self.max_batch)

    def _run_padded(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """A batch below the profile's smallest (an engine built before its encoders' range started at one
        frame) is padded with its last row, and the padding's output cut off."""
        batch = len(feeds[self.io.inputs[0]])
        if batch >= self.io.min_batch:
            return self._run(feeds)
        padded = {name: np.concatenate([array, np.repeat(array[-1:], self.io.min_batch - batch, axis=0)])
                  for name, array in feeds.items()}
        return self._run(padded)[:batch]

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        for name in self.io.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self.io.dtypes[name])
            self._set_shape(name, array.shape)
            self.driver.copy_to_device(self.buffers[name], array)
        output = self.io.output
        result = np.empty(_shape(self.context.get_tensor_shape(output)), dtype=self.io.dtypes[output])
        if not self.context.execute_async_v3(self.driver.stream()):
            raise FadEdgeError("TensorRT execution failed")
        self.driver.copy_to_host(result, self.buffers[output])
        self.driver.synchronize()
        return result


class TrtRunner(ClipRunner):
    """Runs the TensorRT engines of an export folder (built by `fad-edge export --trt`).

    `driver` and `loader` default to the installed CUDA binding and TensorRT's deserializer; tests
    pass fakes of both.
    """

    name = "trt-fp16"

    def __init__(self, folder: Path, steps: int | None = None, seed: int = 0, device: int = 0,
                 driver: CudaDriver | None = None,
                 loader: Callable[[Path], tuple[Any, EngineIO]] | None = None,
                 sampler: str = DEFAULT_SAMPLER) -> None:
        require_tensorrt()
        self.driver = driver or require_cuda()
        self.loader = loader or load_engine
        self.folder = Path(folder)
        self.manifest = ExportManifest.load(self.folder)
        config = self.manifest.model_config
        super().__init__(config, SamplerSettings.named(sampler, config, steps), seed)
        self.device = device
        self.graphs = [VIDEO_ENCODER, AUDIO_ENCODER, self.elnet_graph]
        self._target = current_gpu_target(self.driver, device)
        for graph in self.graphs:  # fail now, not at the first clip, if an engine is for another GPU or model
            self._check_engine(graph)
        normalization = self.manifest.motion_normalization
        self.mean, self.std = normalization.mean, normalization.std
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread that started the runner
        self._engines: dict[str, _Engine] = {}
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int,
             sampler: str = DEFAULT_SAMPLER) -> TrtRunner:
        return cls(path, steps=steps, seed=seed, sampler=sampler)

    @property
    def elnet_graph(self) -> str:
        """The folded engine where it computes the settings (one step from the model's start step), else the
        noise predictor inside the sampler's loop."""
        return ELNET_X0 if self.folded_one_step else ELNET_EPS

    def _check_engine(self, graph: str) -> None:
        engine = self.manifest.file(self.folder, graph, ENGINE_VARIANT)
        self.manifest.check_contents(engine)
        check_engine_checkpoint(engine, check_engine_target(engine, self._target), self.manifest)

    def _start(self) -> None:
        """Under the lock: the context, stream, engines and buffers the first time; the device made current."""
        caller = threading.get_ident()
        if self._owner is not None and self.driver.thread_bound and caller != self._owner:
            raise BackendUnavailableError(f"a TrtRunner on {self.driver.name} belongs to the thread that first ran "
                                          "it; run all inference (and close) from that thread, or install cuda-python")
        self.driver.activate(self.device)
        if self._owner is None:
            try:
                for graph in self.graphs:
                    engine, io = self.loader(self.manifest.file(self.folder, graph, ENGINE_VARIANT))
                    self._engines[graph] = _Engine(engine, io, self.driver)
            except BaseException:
                self._free()
                raise
            self._owner = caller

    def _free(self) -> None:
        for engine in self._engines.values():
            engine.free()
        self._engines.clear()
        self.driver.release()

    def close(self) -> None:
        """Free buffers and execution contexts, then the stream and context (pycuda: from the inference thread)."""
        with self._lock:
            if self._owner is None:
                self._closed = True
                return
            if self.driver.thread_bound and threading.get_ident() != self._owner:
                raise BackendUnavailableError(f"close this TrtRunner from the thread that ran it ({self.driver.name} "
                                              "contexts belong to one thread)")
            self.driver.activate(self.device)
            self._free()
            self._owner, self._closed = None, True

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            if self._closed:  # not started again: its engines and buffers would outlive the caller's close()
                raise FadEdgeError("this runner is closed")
            self._start()
            if graph not in self._engines:  # settings replaced since: the other ELNet engine, loaded once
                self._check_engine(graph)
                self.graphs.append(graph)
                engine, io = self.loader(self.manifest.file(self.folder, graph, ENGINE_VARIANT))
                self._engines[graph] = _Engine(engine, io, self.driver)
            return self._engines[graph](feeds)

    def encode_video_batch(self, images: np.ndarray) -> np.ndarray:
        return self._run(VIDEO_ENCODER, {"images": images}).astype(np.float32)

    def encode_audio_batch(self, mel: np.ndarray) -> np.ndarray:
        return self._run(AUDIO_ENCODER, {"mel": mel}).astype(np.float32)

    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        graph = self.elnet_graph
        if graph == ELNET_X0:
            return self._run(graph, {"x_start": state, "condition": conditions}).astype(np.float32)
        x = state
        for t, t_prev in self.sampler.pairs():
            feeds = {"x_t": x, "step": np.full(len(x), t, dtype=np.int64), "condition": conditions}
            epsilon = self._run(graph, feeds).astype(np.float32)
            x = self.sampler.step(epsilon, t, x, t_prev, self.sampler.noise(x.shape, generator, t_prev))
        return (x * self.std + self.mean).astype(np.float32)
