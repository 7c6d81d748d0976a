"""Finding TensorRT and a CUDA driver binding, for the TensorRT runner and the engine builder.

Both are optional (the `[trt]` extra) and imported only when used; a missing one is a one-line
BackendUnavailableError that says what to install. The binding is cuda-python where installed,
else pycuda, behind `cuda_driver.CudaDriver`.
"""

from __future__ import annotations

from types import ModuleType

from fad_edge.artifact import GpuTarget
from fad_edge.backends import TRT_INSTALL
from fad_edge.errors import BackendUnavailableError
from fad_edge.runtime.cuda_driver import CudaDriver, cuda_driver

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


def require_cuda() -> CudaDriver:
    """A CUDA driver binding (cuda-python, else pycuda) with a device present, or a one-line error."""
    return cuda_driver()


def current_gpu_target(driver: CudaDriver, device: int = 0) -> GpuTarget:
    """The TensorRT version and GPU this process would build or run engines for."""
    import tensorrt as trt

    major, minor = driver.compute_capability(device)
    return GpuTarget(str(trt.__version__), driver.device_name(device), f"{major}.{minor}")
