"""Training's mixed precision (torch autocast), per device; not to be confused with an export's graph precision.

Under autocast the convolutions and linear layers run in a 16-bit type while the weights, the
optimizer and the loss stay float32. bfloat16 keeps float32's range, so it needs nothing else;
float16 has 3 more bits of mantissa but a narrow range, so small gradients underflow to zero
unless the loss is scaled up before backward (torch's GradScaler, whose state is saved with the
optimizer's so a resumed run scales exactly as an unbroken one).
"""

from __future__ import annotations

import contextlib

import torch

from fad_edge.errors import FadEdgeError

AUTOCAST_MODES = ("auto", "off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where a CPU runs bf16 autocast natively (elsewhere it is emulated and slower)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Compute capability 8.0+ (Ampere and later); older GPUs only emulate bf16."""
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def autocast_dtype(mode: str, device: torch.device | None = None) -> torch.dtype | None:
    """The autocast dtype for a training autocast mode on `device` (the CPU by default), or None for float32.

    "auto" is bf16 on a GPU that computes it natively and fp16 on an older one; on a CPU it is bf16
    where the CPU has it natively and off elsewhere. fp16 is refused on a CPU, which only emulates it.
    """
    if mode not in AUTOCAST_MODES:
        raise FadEdgeError(f"--autocast must be one of {', '.join(AUTOCAST_MODES)}, got {mode!r}")
    device = device if device is not None else torch.device("cpu")
    if device.type == "cuda":
        if mode == "auto":
            mode = "bf16" if cuda_has_native_bf16(device) else "fp16"
    elif mode == "fp16":
        raise FadEdgeError("--autocast fp16 needs a CUDA device (a CPU only emulates float16); use bf16 or off")
    elif mode == "auto":
        mode = "bf16" if cpu_has_native_bf16() else "off"
    return _DTYPES.get(mode)


def arithmetic_name(mode: str, device: torch.device | None = None) -> str:
    """What a training autocast mode comes to on `device`: "bf16", "fp16" or "fp32"."""
    dtype = autocast_dtype(mode, device)
    return "fp32" if dtype is None else next(name for name, value in _DTYPES.items() if value == dtype)


class MixedPrecision:
    """The forward pass's autocast and, for float16 only, loss scaling around backward and the step.

    With float32 or bfloat16 the scaler is disabled and `backward_and_step` is exactly
    backward, gradient clipping and the optimizer step.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype | None) -> None:
        self.device, self.dtype = device, dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, max_grad_norm: float) -> None:
        """Backward, clip the (unscaled) gradients' norm, step; a float16 step with inf/NaN gradients is skipped."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        """The loss scale and its growth counter (empty without float16): JSON-able."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved scaler state; one saved without float16 (empty) leaves the fresh scaler as it is."""
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
