"""The few CUDA calls the TensorRT runner needs, behind one interface: cuda-python where installed, else pycuda.

TensorRT's Python API takes device pointers and a stream handle as integers and leaves memory and
copies to a CUDA binding. NVIDIA's own samples use cuda-python (`cuda.bindings`, runtime API), which
has wheels for x86-64 and aarch64 and is thread-agnostic: the device's primary context is made
current in whichever thread calls. pycuda (compiled on install, common on Jetsons) creates its own
context, which belongs to the thread that made it: `thread_bound` says so, and the runner then
refuses calls from other threads.

Both are optional (the `[trt]` extra) and imported only when a driver is made.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from fad_edge.backends import TRT_INSTALL
from fad_edge.errors import BackendUnavailableError


class CudaDriver(Protocol):
    """Context, stream, device memory and asynchronous copies on one stream."""

    name: str
    thread_bound: bool  # the context belongs to the thread that activated it first

    def activate(self, device: int) -> None:
        """Make the device's context current in the calling thread (created, with the stream, the first time)."""

    def release(self) -> None:
        """Destroy the stream and release the context (after every allocation is freed)."""

    def stream(self) -> int:
        """The stream's handle, for `execute_async_v3`."""

    def alloc(self, nbytes: int) -> int:
        """A device allocation of `nbytes`; its address."""

    def free(self, pointer: int) -> None: ...

    def copy_to_device(self, pointer: int, host: np.ndarray) -> None:
        """Host array (C-contiguous) to device memory, queued on the stream."""

    def copy_to_host(self, host: np.ndarray, pointer: int) -> None:
        """Device memory to a host array (C-contiguous, sized to the copy), queued on the stream."""

    def synchronize(self) -> None:
        """Wait until the stream's work is done."""

    def device_name(self, device: int) -> str: ...

    def compute_capability(self, device: int) -> tuple[int, int]: ...


class CudaPythonDriver:
    """NVIDIA's cuda-python runtime API (`cuda.bindings.runtime`; `cuda.cudart` before 12.6)."""

    name = "cuda-python"
    thread_bound = False

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime
        except ImportError:
            from cuda import cudart as runtime  # type: ignore[no-redef, unused-ignore]  # used only where cuda-python is
        self.cudart: Any = runtime
        try:
            count = self._call(runtime.cudaGetDeviceCount())
        except RuntimeError as error:
            raise BackendUnavailableError(f"no usable CUDA driver ({error}); TensorRT needs an NVIDIA GPU") from None
        if not count:
            raise BackendUnavailableError("no CUDA device found; TensorRT needs an NVIDIA GPU")
        self._stream: Any = None

    def _call(self, result: tuple) -> Any:
        """cuda-python returns (error, *values): raise on an error, else the value(s)."""
        error, *values = result
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {getattr(error, 'name', error)}")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def activate(self, device: int) -> None:
        self._call(self.cudart.cudaSetDevice(device))
        if self._stream is None:
            self._stream = self._call(self.cudart.cudaStreamCreate())

    def release(self) -> None:
        if self._stream is not None:
            self._call(self.cudart.cudaStreamDestroy(self._stream))
            self._stream = None  # the primary context stays: torch or others may share it

    def stream(self) -> int:
        return int(self._stream)

    def alloc(self, nbytes: int) -> int:
        return int(self._call(self.cudart.cudaMalloc(max(nbytes, 1))))

    def free(self, pointer: int) -> None:
        self._call(self.cudart.cudaFree(pointer))

    def copy_to_device(self, pointer: int, host: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, self._stream))

    def copy_to_host(self, host: np.ndarray, pointer: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, self._stream))

    def synchronize(self) -> None:
        self._call(self.cudart.cudaStreamSynchronize(self._stream))

    def _properties(self, device: int) -> Any:
        return self._call(self.cudart.cudaGetDeviceProperties(device))

    def device_name(self, device: int) -> str:
        name = self._properties(device).name
        text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        return text.split("\x00", 1)[0].strip()

    def compute_capability(self, device: int) -> tuple[int, int]:
        properties = self._properties(device)
        return int(properties.major), int(properties.minor)


class PyCudaDriver:
    """pycuda's driver API: its own context, current only in the thread that created it."""

    name = "pycuda"
    thread_bound = True

    def __init__(self) -> None:
        import pycuda.driver as cuda

        self.cuda: Any = cuda
        try:
            cuda.init()
            count = cuda.Device.count()
        except Exception as error:  # pycuda raises its own LogicError/RuntimeError without a driver
            raise BackendUnavailableError(f"no usable CUDA driver ({error}); TensorRT needs an NVIDIA GPU") from None
        if count == 0:
            raise BackendUnavailableError("no CUDA device found; TensorRT needs an NVIDIA GPU")
        self._context: Any = None
        self._stream: Any = None
        self._allocations: dict[int, Any] = {}

    def activate(self, device: int) -> None:
        if self._context is None:
            self._context = self.cuda.Device(device).make_context()
            self._stream = self.cuda.Stream()

    def release(self) -> None:
        if self._context is not None:
            self._stream = None
            self._context.pop()
            self._context.detach()
            self._context = None

    def stream(self) -> int:
        return int(self._stream.handle)

    def alloc(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(max(nbytes, 1))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, pointer: int) -> None:
        self._allocations.pop(pointer).free()

    def copy_to_device(self, pointer: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(pointer, host, self._stream)

    def copy_to_host(self, host: np.ndarray, pointer: int) -> None:
        self.cuda.memcpy_dtoh_async(host, pointer, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def device_name(self, device: int) -> str:
        return str(self.cuda.Device(device).name())

    def compute_capability(self, device: int) -> tuple[int, int]:
        major, minor = self.cuda.Device(device).compute_capability()
        return int(major), int(minor)


def cuda_driver() -> CudaDriver:
    """cuda-python if it is installed, else pycuda; a one-line error when neither is (or no GPU is present)."""
    import importlib.util

    if importlib.util.find_spec("cuda") is not None:
        try:
            return CudaPythonDriver()
        except ImportError:  # a `cuda` package that is not cuda-python
            pass
    if importlib.util.find_spec("pycuda") is not None:
        return PyCudaDriver()
    raise BackendUnavailableError(f"neither cuda-python nor pycuda is installed; {TRT_INSTALL}")
