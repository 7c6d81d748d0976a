"""TensorRT FP16 engines (the `[trt]` extra), behind the same runner contract as ONNX Runtime.

Threading: a pycuda context belongs to the thread that made it current, so the runner creates its
CUDA context, stream and buffers lazily in the first thread that runs inference and refuses calls
from any other thread (the streaming listener runs all inference in one worker thread for this).
Engines are checked against the TensorRT version and GPU recorded when they were built.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from fad_edge.artifact import (
    AUDIO_ENCODER, ELNET_EPS, ELNET_X0, ENGINE_VARIANT, VIDEO_ENCODER, ExportManifest, check_engine_checkpoint,
    check_engine_target,
)
from fad_edge.errors import BackendUnavailableError, FadEdgeError
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.tensorrt_support import current_gpu_target, require_cuda, require_tensorrt
from fad_edge.sampling import SamplerSettings


class _Engine:
    """One deserialized engine, its execution context and device buffers that grow as needed."""

    def __init__(self, path: Path, runtime: Any, cuda: Any) -> None:
        import tensorrt as trt

        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise FadEdgeError(f"{path}: TensorRT could not deserialize the engine; rebuild with fad-edge export --trt")
        self.engine: trt.ICudaEngine = engine
        self.context: trt.IExecutionContext = engine.create_execution_context()
        self.cuda = cuda
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.buffers: dict[str, tuple[Any, int]] = {}  # name -> (device allocation, bytes)

    def free(self) -> None:
        """Free the device buffers and the execution context, before the CUDA context goes."""
        for allocation, _ in self.buffers.values():
            allocation.free()
        self.buffers.clear()
        del self.context, self.engine

    def _buffer(self, name: str, nbytes: int) -> int:
        allocation, size = self.buffers.get(name, (None, 0))
        if allocation is None or size < nbytes:
            if allocation is not None:
                allocation.free()
            allocation = self.cuda.mem_alloc(max(nbytes, 1))
            self.buffers[name] = (allocation, nbytes)
        address = int(allocation)
        self.context.set_tensor_address(name, address)
        return address

    def __call__(self, feeds: dict[str, np.ndarray], stream: Any) -> np.ndarray:
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            if not self.context.set_input_shape(name, array.shape):
                raise FadEdgeError(f"input {name} of shape {array.shape} is outside the engine's profile; rebuild with a larger --trt-max-clips")
            self.cuda.memcpy_htod_async(self._buffer(name, array.nbytes), array, stream)
        output = self.outputs[0]
        dims = self.context.get_tensor_shape(output)
        result = np.empty([dims[axis] for axis in range(len(dims))], dtype=self.dtypes[output])
        address = self._buffer(output, result.nbytes)
        if not self.context.execute_async_v3(stream.handle):
            raise FadEdgeError("TensorRT execution failed")
        self.cuda.memcpy_dtoh_async(result, address, stream)
        stream.synchronize()
        return result


class TrtRunner(ClipRunner):
    """Runs the TensorRT engines of an export folder (built by `fad-edge export --trt`)."""

    name = "trt-fp16"

    def __init__(self, folder: Path, steps: int | None = None, seed: int = 0, device: int = 0) -> None:
        require_tensorrt()
        self.cuda = require_cuda()
        self.folder = Path(folder)
        self.manifest = ExportManifest.load(self.folder)
        config = self.manifest.model_config
        super().__init__(config, SamplerSettings.from_config(config, steps), seed)
        self.device = device
        self.graphs = [VIDEO_ENCODER, AUDIO_ENCODER, ELNET_X0 if self.settings.steps == 1 else ELNET_EPS]
        current = current_gpu_target(self.cuda, device)
        for graph in self.graphs:  # fail now, not at the first clip, if an engine is for another GPU or model
            engine = self.manifest.file(self.folder, graph, ENGINE_VARIANT)
            check_engine_checkpoint(engine, check_engine_target(engine, current), self.manifest)
        normalization = self.manifest.motion_normalization
        self.mean, self.std = normalization.mean, normalization.std
        self._thread: int | None = None
        self._engines: dict[str, _Engine] = {}

    @classmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int) -> TrtRunner:
        return cls(path, steps=steps, seed=seed)

    def _ensure_started(self) -> None:
        """Create the CUDA context, stream and engines in the calling thread, the first time."""
        caller = threading.get_ident()
        if self._thread is None:
            import tensorrt as trt

            self._cuda_context = self.cuda.Device(self.device).make_context()
            self._stream = self.cuda.Stream()
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engines = {g: _Engine(self.manifest.file(self.folder, g, ENGINE_VARIANT), runtime, self.cuda)
                             for g in self.graphs}
            self._thread = caller
        elif self._thread != caller:
            raise BackendUnavailableError("a TrtRunner's CUDA context belongs to the thread that first ran it; "
                                          "run all inference from that thread")

    def close(self) -> None:
        """Free buffers and contexts, then release the CUDA context (from the inference thread)."""
        if self._thread is not None:
            for engine in self._engines.values():
                engine.free()
            self._engines.clear()
            del self._stream
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._thread = None

    def encode_batch(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        self._ensure_started()
        video = self._engines[VIDEO_ENCODER]({"images": images}, self._stream)
        audio = self._engines[AUDIO_ENCODER]({"mel": mel}, self._stream)
        return np.concatenate([video, audio], axis=1).astype(np.float32)

    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        self._ensure_started()
        if self.settings.steps == 1:
            return self._engines[ELNET_X0]({"x_start": state, "condition": conditions}, self._stream)
        engine, x = self._engines[ELNET_EPS], state
        for t, t_prev in self.sampler.pairs():
            feeds = {"x_t": x, "step": np.full(len(x), t, dtype=np.int64), "condition": conditions}
            epsilon = engine(feeds, self._stream).astype(np.float32)
            x = self.sampler.step(epsilon, t, x, t_prev, self.sampler.noise(x.shape, generator, t_prev))
        return x * self.std + self.mean
