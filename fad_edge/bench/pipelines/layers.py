"""Measuring the replicas: FLOPs and parameters, counted the same way for both.

`torch.utils.flop_counter.FlopCounterMode` counts 2 FLOPs per multiply-add for matmuls and
convolutions but has no formula for the CPU attention kernel
(`aten._scaled_dot_product_flash_attention_for_cpu`), so a transformer's attention would count 0.
`count_flops` adds that formula for its own counter only (no global registration). Elementwise
work (norms, activations, softmax, resizing) is not counted, as is usual for FLOP budgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def attention_flops(
    query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int], *args: object, **kwargs: object
) -> int:
    """FLOPs of softmax(q k^T) v for (..., S_q, E) queries: the two batched matmuls, 2 per multiply-add."""
    *batch, s_q, e_q = query_shape
    s_k, e_v = key_shape[-2], value_shape[-1]
    b = math.prod(batch)
    return 2 * b * s_q * s_k * e_q + 2 * b * s_q * s_k * e_v


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also counts the CPU attention kernel."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (run without autograd)."""
    with torch.no_grad(), flop_counter() as counter:
        fn()
    return counter.get_total_flops()


def count_params(module: nn.Module) -> int:
    """Number of parameters (weights and biases; buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())
