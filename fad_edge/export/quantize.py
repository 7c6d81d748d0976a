"""Static INT8 (QDQ) quantization of the FP32 graphs for ONNX Runtime on the CPU.

Settings, each for a measured reason: per-channel weights, uint8 activations with int8 weights
(the only combination that ran faster than FP32 on the x86 CPUs here: about 3x on the video
encoder), and only Conv, Gemm, MatMul and Relu quantized. `quantize_static` fails on the
exporters' GroupNorm pattern (InstanceNormalization between Reshapes), and normalization gains
nothing from INT8 anyway. Relu is listed so that the quantizer drops a Relu right after a Conv
(the Conv's uint8 output, calibrated after the Relu, clips at zero itself): with BatchNorm folded
into the convolutions, ONNX Runtime then runs an encoder in int8 from its input to its output,
where a kept Relu costs a dequantize-requantize pair after each such Conv. Other Relus stay as
they were. Calibration uses MinMax over speaker frames of synthetic training clips.

In the encoders only the ResNet trunk is quantized (`trunk_nodes`); their heads (spatial softmax
keypoints, projection) stay FP32. On the demo's model, quantizing the heads too cost 2.4% of held-out L2,
the trunks alone none (-0.4%), and the heads are a sliver of the compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from fad_edge.atomic import atomic_output
from fad_edge.errors import ExportError

QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Relu"]


class _FeedReader(CalibrationDataReader):
    """Hands quantize_static one feed dict at a time."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


TRUNK_PREFIX = "encoder.trunk."  # the encoders' ResNet trunk parameters, as the graphs name them


def trunk_nodes(source: Path) -> list[str]:
    """Names of an encoder graph's nodes to quantize: the convolutions of its trunk, and its Relus."""
    import onnx

    model = onnx.load(str(source))
    initializers = {tensor.name for tensor in model.graph.initializer}
    nodes = [node.name for node in model.graph.node
             if node.op_type == "Relu"
             or (node.op_type in QUANTIZED_OPS and any(name in initializers and name.startswith(TRUNK_PREFIX)
                                                         for name in node.input))]
    if not any(node.op_type == "Conv" and node.name in nodes for node in model.graph.node):
        raise ExportError(f"{source.name}: no convolution with a {TRUNK_PREFIX}* weight; is it an encoder graph?")
    return nodes


def quantize_graph(source: Path, target: Path, feeds: list[dict[str, np.ndarray]],
                   nodes: list[str] | None = None) -> Path:
    """Write an INT8 QDQ copy of `source` calibrated on `feeds` (only `nodes` if given), with its metadata_props."""
    if not feeds:
        raise ExportError(f"{source.name}: INT8 calibration needs at least one batch of inputs")
    with atomic_output(target) as temporary:
        try:
            quantize_static(
                str(source), str(temporary), _FeedReader(feeds),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=QUANTIZED_OPS, nodes_to_quantize=nodes,
            )
        except Exception as error:  # quantize_static raises plain Exceptions of many kinds
            raise ExportError(f"{source.name}: INT8 quantization failed ({type(error).__name__}: {error})") from error
    _copy_metadata(source, target, precision="int8")
    return target


def _copy_metadata(source: Path, target: Path, precision: str) -> None:
    import onnx

    from fad_edge.artifact import META_PREFIX
    from fad_edge.export.onnx_export import read_metadata, save_onnx, set_metadata

    metadata = read_metadata(onnx.load(str(source), load_external_data=False))
    metadata[META_PREFIX + "precision"] = precision
    model = onnx.load(str(target))
    set_metadata(model, metadata)
    save_onnx(model, target)


def batched_feeds(name: str, array: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    """Split one input array into calibration feeds of `batch` rows."""
    return [{name: np.ascontiguousarray(array[start : start + batch])} for start in range(0, len(array), batch)]


def check_runs(path: Path) -> None:
    """Fail early, with the file's name, if ONNX Runtime cannot load the quantized graph."""
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ExportError(f"{path.name}: the INT8 graph does not load in ONNX Runtime ({error})") from error
