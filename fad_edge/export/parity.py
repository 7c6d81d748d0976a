"""Parity of exported graphs against PyTorch: max absolute and max relative error per graph and input kind.

Relative error is max |ours - reference| / max |reference| over the whole output: element-wise
ratios are meaningless where the reference crosses zero, and this is the figure that says how
much of the output's range the backend got wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
import torch

from fad_edge.export.graphs import GraphSpec
from fad_edge.listener_model import ListenerModel
from fad_edge.samples import LabelledInputs


@dataclass
class ParityRow:
    graph: str
    inputs: str
    max_abs: float
    max_rel: float

    def to_dict(self) -> dict:
        return asdict(self)


def errors(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max abs, max abs / max |reference|); NaN anywhere counts as an infinite error."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        raise ValueError(f"output shapes differ: {ours.shape} vs {reference.shape}")
    if not (np.all(np.isfinite(ours)) and np.all(np.isfinite(reference))):
        return float("inf"), float("inf")
    max_abs = float(np.abs(ours - reference).max()) if ours.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    return max_abs, max_abs / max(scale, 1e-12)


def real_inputs(
    spec: GraphSpec, model: ListenerModel, sample: LabelledInputs, clips: int = 8
) -> tuple[torch.Tensor, ...]:
    """Inputs for `spec` taken from a real (synthetic) session rather than random numbers."""
    config = model.config
    frames = min(len(sample.inputs.images), clips * config.clip_len)
    images = torch.from_numpy(sample.inputs.images[:frames])
    mel = torch.from_numpy(sample.inputs.mel[:frames])
    if spec.input_names == ("images",):
        return (images,)
    if spec.input_names == ("mel",):
        return (mel,)
    with torch.no_grad():
        condition = model.clip_conditions(model.encode(images, mel).unsqueeze(0))
    generator = torch.Generator().manual_seed(1)
    x_t = torch.randn(len(condition), config.clip_len, config.n_coeffs, generator=generator)
    if "step" in spec.input_names:
        step = torch.randint(0, config.train_steps, (len(condition),), generator=generator)
        return (x_t, step, condition)
    return (x_t, condition)


def random_inputs(spec: GraphSpec, batch: int = 5) -> tuple[torch.Tensor, ...]:
    """Random inputs of another batch size than the trace used, to exercise the dynamic axis."""
    generator = torch.Generator().manual_seed(2)
    made = []
    for name, example in zip(spec.input_names, spec.inputs):
        shape = (batch, *example.shape[1:])
        if example.dtype == torch.long:
            made.append(torch.randint(0, 100, shape, generator=generator))
        elif name == "images":
            made.append(torch.rand(shape, generator=generator))
        else:
            made.append(torch.randn(shape, generator=generator))
    return tuple(made)


def graph_parity(
    spec: GraphSpec, session: ort.InferenceSession, inputs: tuple[torch.Tensor, ...], kind: str
) -> ParityRow:
    with torch.no_grad():
        reference = spec.module(*inputs).numpy()
    feeds = {name: tensor.numpy() for name, tensor in zip(spec.input_names, inputs)}
    ours = session.run(None, feeds)[0]
    max_abs, max_rel = errors(ours, reference)
    return ParityRow(spec.name, kind, max_abs, max_rel)
