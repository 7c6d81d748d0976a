"""TensorRT engines from the FP16 ONNX graphs, one code path for TensorRT 10 (Jetson) and 11 (desktop/server).

The network is strongly typed: precision comes from the graph (see fp16.py), never from builder
flags, which TensorRT 11 removed. TensorRT 10 needs the STRONGLY_TYPED creation flag; in 11 it is
the only mode. Each engine gets a JSON beside it naming the TensorRT version, GPU and compute
capability it was built for, since an engine runs only there.

`tensorrt` and a CUDA binding (cuda-python or pycuda) come with the `[trt]` extra and are imported only when used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fad_edge.artifact import (
    AUDIO_ENCODER,
    ELNET_EPS,
    ELNET_X0,
    ENGINE_VARIANT,
    VIDEO_ENCODER,
    ExportManifest,
    engine_record_path,
)
from fad_edge.atomic import atomic_write_bytes
from fad_edge.errors import ExportError
from fad_edge.runtime.tensorrt_support import current_gpu_target, require_cuda, require_tensorrt


@dataclass(frozen=True)
class EngineProfile:
    """Optimization profile over the batch axis: clips for ELNet, frames (8 per clip) for the encoders."""

    min_clips: int = 1
    opt_clips: int = 8
    max_clips: int = 128
    workspace_mb: int = 1024

    def batch_range(self, graph: str, clip_len: int) -> tuple[int, int, int]:
        """The encoders' range starts at one frame: a stream encodes each frame as it arrives."""
        if graph in (VIDEO_ENCODER, AUDIO_ENCODER):
            return 1, self.opt_clips * clip_len, self.max_clips * clip_len
        return self.min_clips, self.opt_clips, self.max_clips


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
    driver = require_cuda()
    driver.activate(0)
    try:
        target = current_gpu_target(driver)
        clip_len = manifest.model_config.clip_len
        for graph in (VIDEO_ENCODER, AUDIO_ENCODER, ELNET_X0, ELNET_EPS):
            source = manifest.file(folder, graph, "fp16")
            engine = Path(folder) / f"{graph}.engine"
            atomic_write_bytes(engine, build_engine_bytes(source, graph, profile, clip_len))
            record = {**asdict(target), "graph": graph, "onnx": source.name, "profile": asdict(profile),
                      "checkpoint_sha256": manifest.checkpoint_sha256}
            atomic_write_bytes(engine_record_path(engine), json.dumps(record, indent=2).encode())
            manifest.graphs[graph][ENGINE_VARIANT] = engine.name
    finally:
        driver.release()
    return {**asdict(target), "profile": asdict(profile)}
