"""Trace a checkpoint's graphs to ONNX, check and simplify them, and stamp them with the model's identity.

Two exporters, both at opset 18 (torch 2.13's default opset, 20, is newer than many TensorRT/Jetson
ONNX parsers accept, and nothing in these graphs needs a newer one):
- "torchscript" (the default): torch's tracing exporter, `torch.onnx.export(..., dynamo=False)`.
  On the demo's model it traces a graph in 0.2-0.6 s against the dynamo exporter's 3-9 s (a full
  INT8 export traces six), and its graphs pass the same parity checks. torch has deprecated it, so
  a torch without it is told to use the other.
- "dynamo": `torch.onnx.export(..., dynamo=True)`, torch's supported path.
Simplification uses onnxsim and falls back to onnxslim where onnxsim has no wheel (Python 3.10 on
JetPack 6, for one) or fails on a graph.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from fad_edge import __version__
from fad_edge.artifact import META_PREFIX
from fad_edge.atomic import atomic_output
from fad_edge.errors import ExportError
from fad_edge.export.graphs import GraphSpec

DEFAULT_OPSET = 18
MAX_BATCH = 4096
EXPORTERS = ("torchscript", "dynamo")


@dataclass(frozen=True)
class ModelIdentity:
    """What ties an exported graph to the checkpoint it came from (stored in metadata_props)."""

    checkpoint_sha256: str
    config: dict
    normalization: dict
    version: str = __version__

    def metadata(self, graph: str, precision: str) -> dict[str, str]:
        return {
            META_PREFIX + "graph": graph,
            META_PREFIX + "precision": precision,
            META_PREFIX + "version": self.version,
            META_PREFIX + "checkpoint_sha256": self.checkpoint_sha256,
            META_PREFIX + "config": json.dumps(self.config, sort_keys=True),
            META_PREFIX + "normalization": json.dumps(self.normalization, sort_keys=True),
        }


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Replace our metadata_props entries, keeping anyone else's."""
    kept = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in sorted(values.items()):
        model.metadata_props.add(key=key, value=value)


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def trace_to_onnx(spec: GraphSpec, opset: int = DEFAULT_OPSET, exporter: str = EXPORTERS[0]) -> onnx.ModelProto:
    """One graph with its batch axis dynamic, by either exporter (module docstring), checked by onnx.checker."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice and the tracer's advice to torch developers
            model = _torchscript_export(spec, opset) if exporter == "torchscript" else _dynamo_export(spec, opset)
    except ExportError:
        raise
    except Exception as error:  # the exporters raise many types; any of them means no graph
        first_line = (str(error).splitlines() or [""])[0]
        other = EXPORTERS[1] if exporter == EXPORTERS[0] else EXPORTERS[0]
        raise ExportError(f"could not trace {spec.name} to ONNX with the {exporter} exporter: "
                          f"{type(error).__name__}: {first_line} (try --exporter {other})") from error
    check_model(model, spec.name)
    return model


def _torchscript_export(spec: GraphSpec, opset: int) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="fad-trace-") as scratch:  # the exporter writes to a path
        path = Path(scratch) / f"{spec.name}.onnx"
        torch.onnx.export(
            spec.module, spec.inputs, str(path), dynamo=False, opset_version=opset,
            input_names=list(spec.input_names), output_names=[spec.output_name],
            dynamic_axes={name: {0: spec.batch_axis_name} for name in (*spec.input_names, spec.output_name)},
        )
        return onnx.load(str(path))


def _dynamo_export(spec: GraphSpec, opset: int) -> onnx.ModelProto:
    batch = torch.export.Dim(spec.batch_axis_name, min=1, max=MAX_BATCH)
    program = torch.onnx.export(
        spec.module, spec.inputs, dynamo=True, opset_version=opset,
        input_names=list(spec.input_names), output_names=[spec.output_name],
        dynamic_shapes=tuple({0: batch} for _ in spec.inputs), verbose=False,
    )
    if program is None:
        raise ExportError(f"the ONNX exporter returned nothing for {spec.name}")
    return program.model_proto


def check_model(model: onnx.ModelProto, name: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"{name}: onnx.checker rejects the graph: {str(error).splitlines()[0]}") from error


def simplify(model: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, str]:
    """onnxsim, else onnxslim; returns the graph and which tool simplified it ("none" if neither could)."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if ok:
            return simplified, f"onnxsim {onnxsim.__version__}"
    except Exception:  # onnxsim missing or failing on this graph: try the next tool
        pass
    try:
        import onnxslim

        return onnxslim.slim(model), f"onnxslim {onnxslim.__version__}"
    except Exception:
        warnings.warn(f"{name}: neither onnxsim nor onnxslim could simplify the graph; keeping it as traced",
                      stacklevel=1)
        return model, "none"


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write atomically (a kill leaves the old file or the new one, never half a graph)."""
    with atomic_output(path) as tmp:
        onnx.save_model(model, str(tmp))


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check a graph; a missing, truncated or foreign file is an ExportError naming it."""
    if not path.is_file():
        raise ExportError(f"{path}: file not found (export the model first: fad-edge export)")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # protobuf's DecodeError, checker errors, ...
        raise ExportError(f"{path}: not a readable ONNX model ({type(error).__name__}); re-export it") from error
    return model
