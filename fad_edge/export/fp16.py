"""The mixed-precision FP16 graph TensorRT builds as a strongly typed network, made and checked on the CPU.

TensorRT 11 has no weak typing (its FP16 builder flag is gone), so the precision must be in the ONNX graph.
onnxconverter-common's float16 pass converts it with FP32 inputs and outputs; nvidia-modelopt's
AutoCast would do the same, but it does not install without NVIDIA's index, so it is not used.

ONNX Runtime and torch upcast inside normalization on the CPU, so running the FP16 graph here does
not show FP16 overflow. Hence the activation-range audit: every float tensor of the FP32 graph is
made an output, calibration inputs run through it, and any node whose output comes within
`margin` of the FP16 limit (65504) stays in FP32. Normalization and softmax go to FP32 as well
when the error check on the final motion asks for it (`escalate`). The step's path
(`step_path_nodes`: the step embedding and the noise graph's preconditioning) always stays FP32, and
the graph's outputs keep their FP32 type.
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


# Ops that end a path kept in FP32 from the step input: the network's own arithmetic, which FP16 is for.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", *NORMALIZATION_AND_SOFTMAX})


def step_path_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes computed from an integer input (the diffusion step) before any compute op.

    In `elnet_eps` these are the step embedding's sines of up to ~100 radians and the preconditioning
    eps = sqrt(1 - a_t) x_t + sqrt(a_t) F, whose scales are gathered by the step. In FP16 that sum rounds
    eps by ~5e-4, and a sampler's x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) multiplies it by up to 2000
    at t = 99: the steps of the diverse sampler. In FP32 they cost a few casts around ~13 small nodes.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    integer_types = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
    front = [i.name for i in model.graph.input if i.type.tensor_type.elem_type in integer_types]
    kept: set[str] = set()
    while front:
        for node in consumers.get(front.pop(), []):
            if node.op_type not in COMPUTE_OPS and node.name not in kept:
                kept.add(node.name)
                front.extend(node.output)
    return sorted(kept)


def convert_to_fp16(model: onnx.ModelProto, audit: ActivationAudit, escalate: bool) -> onnx.ModelProto:
    """FP16 graph with FP32 I/O; the audit's nodes, the step's path (`step_path_nodes`) and, if `escalate`,
    normalization and softmax stay FP32."""
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
                node_block_list=sorted(set(audit.blocked_nodes) | set(casts_to_float) | set(step_path_nodes(model))),
            )
    except Exception as error:
        raise ExportError(f"FP16 conversion failed ({type(error).__name__}: {error})") from error
    _keep_output_types(converted, model)
    return converted


def _keep_output_types(converted: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give each graph output its original type where the converter cast it to FP16 after all.

    With `keep_io_types` the converter still ends a graph with a Cast to FP16 when the output's own node
    is on the block list (the step path's last sum): that Cast is made a Cast to the original type.
    """
    types = {output.name: output.type.tensor_type.elem_type for output in original.graph.output}
    producers = {name: node for node in converted.graph.node for name in node.output}
    for output in converted.graph.output:
        wanted = types[output.name]
        node = producers.get(output.name)
        if output.type.tensor_type.elem_type == wanted or node is None or node.op_type != "Cast":
            continue
        for attribute in node.attribute:
            if attribute.name == "to":
                attribute.i = wanted
        output.type.tensor_type.elem_type = wanted


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

