"""TensorRT engines from the FP16 ONNX graphs, one code path for TensorRT 10 (Jetson) and 11 (desktop/server).

The network is strongly typed: precision comes from the graph (see fp16.py), never from builder
flags, which TensorRT 11 removed. TensorRT 10 needs the STRONGLY_TYPED creation flag; in 11 it is
the only mode. Each engine gets a JSON beside it naming the TensorRT version, GPU and compute
capability it was built for, since an engine runs only there.

`tensorrt` and `pycuda` come with the `[trt]` extra and are imported only when used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fad_edge.atomic import atomic_write_bytes
from fad_edge.errors import BackendUnavailableError, EngineMismatchError, ExportError
from fad_edge.export.graphs import AUDIO_ENCODER, ELNET_EPS, ELNET_X0, VIDEO_ENCODER
from fad_edge.export.manifest import ExportManifest

INSTALL_HINT = "install the [trt] extra (pip install '.[trt]', TensorRT from NVIDIA's package index) on a machine with an NVIDIA GPU"


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


@dataclass(frozen=True)
class GpuTarget:
    """What an engine is tied to."""

    tensorrt: str
    gpu: str
    compute_capability: str

    @classmethod
    def current(cls, cuda: ModuleType, device: int = 0) -> "GpuTarget":
        import tensorrt as trt

        gpu = cuda.Device(device)
        major, minor = gpu.compute_capability()
        return cls(str(trt.__version__), str(gpu.name()), f"{major}.{minor}")


@dataclass(frozen=True)
class EngineProfile:
    """Optimization profile over the batch axis: clips for ELNet, frames (8 per clip) for the encoders."""

    min_clips: int = 1
    opt_clips: int = 8
    max_clips: int = 128
    workspace_mb: int = 1024

    def batch_range(self, graph: str, clip_len: int) -> tuple[int, int, int]:
        scale = clip_len if graph in (VIDEO_ENCODER, AUDIO_ENCODER) else 1
        return self.min_clips * scale, self.opt_clips * scale, self.max_clips * scale


def engine_info_path(engine: Path) -> Path:
    return engine.with_suffix(".json")


def check_engine_target(engine: Path, current: GpuTarget) -> dict:
    """The engine's JSON, after checking it was built for this TensorRT and GPU (else: rebuild)."""
    info_path = engine_info_path(engine)
    try:
        info = json.loads(info_path.read_text())
        built = GpuTarget(info["tensorrt"], info["gpu"], info["compute_capability"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EngineMismatchError(f"{info_path}: missing or unreadable engine record ({error}); rebuild with fad-edge export --trt") from None
    if built != current:
        raise EngineMismatchError(
            f"{engine.name} was built for TensorRT {built.tensorrt} on {built.gpu} (sm {built.compute_capability}); "
            f"this is TensorRT {current.tensorrt} on {current.gpu} (sm {current.compute_capability}): rebuild with fad-edge export --trt"
        )
    return info


def _network_flags() -> int:
    """STRONGLY_TYPED where the flag exists (TensorRT 10); TensorRT 11 networks are strongly typed anyway."""
    import tensorrt as trt

    flag: Any = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine_bytes(onnx_path: Path, graph: str, profile: EngineProfile, clip_len: int) -> bytes:
    """Parse one FP16 ONNX graph and build a serialized strongly typed engine."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path.name}: TensorRT's ONNX parser failed: {problems}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mb << 20)
    optimization = builder.create_optimization_profile()
    low, opt, high = profile.batch_range(graph, clip_len)
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        rest = [tensor.shape[axis] for axis in range(1, len(tensor.shape))]  # all static but the batch axis
        optimization.set_shape(tensor.name, trt.Dims([low, *rest]), trt.Dims([opt, *rest]), trt.Dims([high, *rest]))
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path.name}: TensorRT could not build an engine (see its log above)")
    return bytes(serialized)


def build_engines(folder: Path, manifest: ExportManifest, profile: EngineProfile) -> dict:
    """Build every graph's engine from its FP16 ONNX; records the files in the manifest."""
    require_tensorrt()
    cuda = require_cuda()
    context = cuda.Device(0).make_context()
    try:
        target = GpuTarget.current(cuda)
        clip_len = manifest.model_config.clip_len
        for graph in (VIDEO_ENCODER, AUDIO_ENCODER, ELNET_X0, ELNET_EPS):
            source = manifest.file(folder, graph, "fp16")
            engine = Path(folder) / f"{graph}.engine"
            atomic_write_bytes(engine, build_engine_bytes(source, graph, profile, clip_len))
            record = {**asdict(target), "graph": graph, "onnx": source.name, "profile": asdict(profile),
                      "checkpoint_sha256": manifest.checkpoint_sha256}
            atomic_write_bytes(engine_info_path(engine), json.dumps(record, indent=2).encode())
            manifest.graphs[graph]["trt"] = engine.name
    finally:
        context.pop()
    return {**asdict(target), "profile": asdict(profile)}
