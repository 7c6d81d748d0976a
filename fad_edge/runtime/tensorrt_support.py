"""Finding TensorRT and a CUDA driver binding, for the TensorRT runner and the engine builder.

Both are optional (the `[trt]` extra) and imported only when used; a missing one is a one-line
BackendUnavailableError that says what to install.
"""

from __future__ import annotations

from types import ModuleType

from fad_edge.artifact import GpuTarget
from fad_edge.backends import TRT_INSTALL
from fad_edge.errors import BackendUnavailableError

INSTALL_HINT = TRT_INSTALL


def require_tensorrt() -> ModuleType:
    """The tensorrt module, or a one-line BackendUnavailableError saying what is missing.

    Callers then `import tensorrt as trt` themselves, so that mypy checks every call against the
    TensorRT stubs (a module passed around as a value would be typed Any and checked by nothing).
    """
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(f"TensorRT is not installed; {INSTALL_HINT}") from None
    if not hasattr(tensorrt, "Builder"):  # e.g. only the type stubs are installed
        raise BackendUnavailableError(f"the installed 'tensorrt' has no runtime (type stubs only?); {INSTALL_HINT}")
    return tensorrt


def require_cuda() -> ModuleType:
    """pycuda's driver module, initialized, or a clear error when pycuda or a CUDA device is missing."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise BackendUnavailableError(f"pycuda is not installed; {INSTALL_HINT}") from None
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as error:  # pycuda raises its own LogicError/RuntimeError without a driver
        raise BackendUnavailableError(f"no usable CUDA driver ({error}); TensorRT needs an NVIDIA GPU") from None
    if count == 0:
        raise BackendUnavailableError("no CUDA device found; TensorRT needs an NVIDIA GPU")
    return cuda


def current_gpu_target(cuda: ModuleType, device: int = 0) -> GpuTarget:
    """The TensorRT version and GPU this process would build or run engines for."""
    import tensorrt as trt

    gpu = cuda.Device(device)
    major, minor = gpu.compute_capability()
    return GpuTarget(str(trt.__version__), str(gpu.name()), f"{major}.{minor}")
