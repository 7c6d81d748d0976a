"""Print a graph's input shapes for a TensorRT profile point, in polygraphy's syntax (used by bench/gpu_check.sh).

    python -m fad_edge.export.shapes engines/NAME elnet_x0 opt  ->  x_start:[8,8,56] condition:[8,24,128]
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

from fad_edge.artifact import ExportManifest
from fad_edge.export.tensorrt_build import EngineProfile


def profile_shapes(folder: Path, graph: str, point: str, profile: EngineProfile = EngineProfile()) -> str:
    manifest = ExportManifest.load(folder)
    model = onnx.load(str(manifest.file(folder, graph, "fp32")), load_external_data=False)
    low, opt, high = profile.batch_range(graph, manifest.model_config.clip_len)
    batch = {"min": low, "opt": opt, "max": high}[point]
    parts = []
    for value in model.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim][1:]
        parts.append(f"{value.name}:[{','.join(str(d) for d in [batch, *dims])}]")
    return " ".join(parts)


if __name__ == "__main__":
    print(profile_shapes(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
