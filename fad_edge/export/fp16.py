"""The mixed-precision FP16 graph TensorRT builds as a strongly typed network, made and checked on the CPU.

TensorRT 11 has no weak typing (its FP16 builder flag is gone), so the precision must be in the ONNX graph.
onnxconverter-common's float16 pass converts it with FP32 inputs and outputs; nvidia-modelopt's
AutoCast would do the same, but it does not install without NVIDIA's index, so it is not used.

ONNX Runtime and torch upcast inside normalization on the CPU, so running the FP16 graph here does
not show FP16 overflow. Hence the activation-range audit: every float tensor of the FP32 graph is
made an output, calibration inputs run through it, and any node whose output comes within
`margin` of the FP16 limit (65504) stays in FP32. Normalization and softmax go to FP32 as well
when the error check on the final motion asks for it (`escalate`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnxconverter_common import float16

from fad_edge.errors import ExportError

FP16_MAX = 65504.0
NORMALIZATION_AND_SOFTMAX = ["InstanceNormalization", "GroupNormalization", "LayerNormalization",
                             "BatchNormalization", "Softmax"]


@dataclass
class ActivationAudit:
    """Largest |activation| per tensor over the calibration inputs, and the nodes kept in FP32 for it."""

    largest: dict[str, float] = field(default_factory=dict)  # tensor name -> max |value|
    limit: float = FP16_MAX / 16
    blocked_nodes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max(self.largest.values(), default=0.0)

    def summary(self) -> dict:
        worst = sorted(self.largest.items(), key=lambda item: -item[1])[:5]
        return {"limit": self.limit, "peak": self.peak, "blocked_nodes": self.blocked_nodes,
                "largest": [{"tensor": name, "max_abs": value} for name, value in worst]}


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph_outputs = {o.name for o in model.graph.output}
    return [v.name for v in inferred.graph.value_info
            if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name not in graph_outputs]


def audit_activations(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], margin: float = 16.0
) -> ActivationAudit:
    """Run the FP32 graph with every float tensor exposed and find the nodes that come near FP16's range."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    names = _float_tensors(model)
    exposed.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    audit = ActivationAudit(limit=FP16_MAX / margin)
    for feed in feeds:
        for name, value in zip(outputs, session.run(None, feed)):
            if value.size:
                audit.largest[name] = max(audit.largest.get(name, 0.0), float(np.abs(value).max()))
    hot = {name for name, value in audit.largest.items() if value >= audit.limit}
    audit.blocked_nodes = sorted(node.name for node in model.graph.node if hot.intersection(node.output))
    return audit


def convert_to_fp16(model: onnx.ModelProto, audit: ActivationAudit, escalate: bool) -> onnx.ModelProto:
    """FP16 graph with FP32 I/O; the audit's nodes (and normalization/softmax if `escalate`) stay FP32."""
    op_block_list = list(float16.DEFAULT_OP_BLOCK_LIST) + (NORMALIZATION_AND_SOFTMAX if escalate else [])
    # Casts *to* float32 (the exporter's int -> float of the step) keep their type: the converter
    # would relabel their outputs as float16 without changing the Cast, an invalid graph.
    casts_to_float = [n.name for n in model.graph.node if n.op_type == "Cast"
                      and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    try:
        with warnings.catch_warnings():  # it warns for every tiny weight it rounds to FP16's range
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=op_block_list,
                node_block_list=sorted(set(audit.blocked_nodes) | set(casts_to_float)),
            )
    except Exception as error:
        raise ExportError(f"FP16 conversion failed ({type(error).__name__}: {error})") from error
    return converted


def fp16_node_share(model: onnx.ModelProto) -> float:
    """Share of compute nodes (Conv/Gemm/MatMul) whose weights are FP16: how much of the graph really is FP16."""
    fp16_inits = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    if not compute:
        return 0.0
    in_fp16 = sum(1 for n in compute
                  if len(n.input) > 1 and (n.input[1] in fp16_inits or casts.get(n.input[1]) in fp16_inits))
    return in_fp16 / len(compute)

