"""CPU tensors onto a GPU without making the host wait for the GPU's queued work.

The trainer draws its noise and augmentation on a CPU generator whatever the device, so a GPU run
draws what a CPU run does. A plain `.to("cuda")` of such a tensor (pageable host memory) makes
PyTorch synchronize the stream around the copy: the host waits until every kernel queued before it
has run, and cannot queue the step's next kernels meanwhile. Several such copies a step turn the
host's launching and the GPU's computing into turns instead of an overlap. Staged in pinned memory,
the copy is queued like a kernel; PyTorch's caching host allocator keeps the pinned block until the
copy has run. The eager sampler's noise takes the same path.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; from the CPU to a GPU, an asynchronous copy through pinned memory."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
