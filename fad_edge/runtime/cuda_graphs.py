"""CUDA graphs over input-size buckets: static buffers, inputs padded into a bucket, outputs cut.

A CUDA graph replays its kernels on fixed addresses and shapes, so a variable batch is served by
one graph per bucket (1, 2, 4, ... units, up to a maximum): the rows are copied into the bucket's
pinned host buffer, the rest of the bucket zeroed, the whole bucket copied to the static device
input, the graph replayed, and the real rows of its static output copied back. Every row of
these models is computed on its own (GroupNorm and the encoders' fixed affine maps are per
sample), so the padding changes no real row. Inputs larger than the largest bucket run in chunks.

Capturing is injected (a `Capture`): `CudaGraphCapture` warms the function up on a side stream and
captures it with `torch.cuda.graph`; tests pass a fake that runs the function eagerly on the same
static buffers, so the bucketing and buffer logic is checked on the CPU.

Chunks are pipelined: a chunk's rows are staged on the host while the GPU computes the chunk before
(the host's copy and cast of 1024 frames takes milliseconds, a good part of their replay's time).
A bucket that runs a chunk while its previous one is still on the GPU gets a second set of pinned host
buffers, and each set waits on the event recorded after its last copy back before it is staged again.
The device inputs are shared between chunks safely: the stream orders each chunk's copy in after the
replay before it.

Threading: the static buffers are shared, so a lock (one per runner, shared by its graph sets)
serializes capture and replay. Any thread may call; a bucket is captured once, by the first call
that needs it. Capture uses the thread-local capture mode, so work that other threads put on the
GPU meanwhile does not invalidate it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

Graphed = Callable[..., torch.Tensor]
Replay = Callable[[], object]
# (function, static inputs) -> (replay, static output): replay() recomputes the output in place.
Capture = Callable[[Graphed, tuple[torch.Tensor, ...]], tuple[Replay, torch.Tensor]]


@dataclass(frozen=True)
class Operand:
    """One input of a graphed function: its shape per row, rows per unit along axis 0, and dtype."""

    shape: tuple[int, ...]
    rows: int = 1  # e.g. 8 frames per clip when the unit is a clip
    dtype: torch.dtype = torch.float32


def bucket_sizes(largest: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `largest`, then `largest`: every size pads to at most twice itself."""
    if largest < 1:
        raise ValueError(f"the largest bucket must hold at least one unit, got {largest}")
    sizes = [1 << k for k in range(largest.bit_length()) if 1 << k < largest]
    return (*sizes, largest)


class CudaGraphCapture:
    """Warm-up on a side stream, then `torch.cuda.graph` capture, for one device (the PyTorch recipe)."""

    def __init__(self, device: torch.device, warmup: int = 2) -> None:
        self.device = device
        self.warmup = warmup  # lazy initializations (cuDNN plans, workspaces) must happen before capture

    def __call__(self, fn: Graphed, inputs: tuple[torch.Tensor, ...]) -> tuple[Replay, torch.Tensor]:
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn(*inputs)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = fn(*inputs)
        return graph.replay, output


class EagerCapture:
    """No graph: replay runs the function again on the static buffers (for tests and dry runs on the CPU)."""

    def __init__(self) -> None:
        self.captured = 0

    def __call__(self, fn: Graphed, inputs: tuple[torch.Tensor, ...]) -> tuple[Replay, torch.Tensor]:
        self.captured += 1
        with torch.no_grad():
            output = fn(*inputs)

        def replay() -> None:
            with torch.no_grad():
                output.copy_(fn(*inputs))

        return replay, output


class Event(Protocol):
    """What a chunk waits on before its host buffers are staged again: `torch.cuda.Event`'s two methods."""

    def record(self) -> None: ...

    def synchronize(self) -> None: ...


class HostEvent:
    """On the CPU every copy has finished when it returns: nothing to record or wait for."""

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


@dataclass
class _Pending:
    index: int  # the chunk's place in the call
    rows: int  # its output rows
    event: Event  # recorded after its copy back


@dataclass
class _Slot:
    """Pinned host buffers a chunk is staged in and its output copied back to, busy until its event."""

    host_inputs: list[torch.Tensor]
    host_output: torch.Tensor
    pending: _Pending | None = None


@dataclass
class _Bucket:
    units: int
    device_inputs: list[torch.Tensor]
    replay: Replay
    output: torch.Tensor
    slots: list[_Slot]  # one; two once a chunk ran while the one before was still on the GPU


class GraphBuckets:
    """One graphed function over buckets of units; call it with NumPy arrays of any number of units."""

    SLOTS = 2  # host buffer sets per bucket: one staged while the other's chunk runs

    def __init__(self, fn: Graphed, operands: list[Operand], largest: int, capture: Capture,
                 device: torch.device, lock: threading.RLock | None = None,
                 event: Callable[[], Event] | None = None) -> None:
        self.fn, self.operands, self.capture, self.device = fn, operands, capture, torch.device(device)
        self.sizes = bucket_sizes(largest)
        self.lock = lock or threading.RLock()
        self.pinned = self.device.type == "cuda"
        self.event = event or (torch.cuda.Event if self.pinned else HostEvent)
        self._buckets: dict[int, _Bucket] = {}

    @property
    def captured(self) -> list[int]:
        """Bucket sizes captured so far."""
        return sorted(self._buckets)

    def bucket(self, units: int) -> int:
        """The smallest bucket that holds `units` (at most the largest)."""
        return next((size for size in self.sizes if size >= units), self.sizes[-1])

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        units = self._units(arrays)
        largest = self.sizes[-1]
        chunks = []
        for start in range(0, units, largest):
            stop = min(start + largest, units)
            chunks.append((stop - start, [a[start * o.rows : stop * o.rows] for a, o in zip(arrays, self.operands)]))
        return self._run(chunks)

    def release(self) -> None:
        """Drop every graph and buffer (the memory returns to torch's caching allocator)."""
        with self.lock:
            self._buckets.clear()

    def _units(self, arrays: tuple[np.ndarray, ...]) -> int:
        if len(arrays) != len(self.operands):
            raise ValueError(f"expected {len(self.operands)} inputs, got {len(arrays)}")
        counts = set()
        for array, operand in zip(arrays, self.operands):
            if tuple(array.shape[1:]) != operand.shape or len(array) % operand.rows:
                raise ValueError(f"input of shape {array.shape} does not fit rows of {operand.shape}, "
                                 f"{operand.rows} per unit")
            counts.add(len(array) // operand.rows)
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"inputs disagree on the number of units or are empty: {sorted(counts)}")
        return counts.pop()

    def _run(self, chunks: list[tuple[int, list[np.ndarray]]]) -> np.ndarray:
        """Stage, replay and copy back each chunk without waiting for the one before; collect them in order."""
        parts: list[np.ndarray | None] = [None] * len(chunks)
        with self.lock:  # every call collects all it staged: a slot in flight is always this call's
            try:
                for index, (units, arrays) in enumerate(chunks):
                    bucket = self._buckets.get(self.bucket(units)) or self._capture(self.bucket(units))
                    slot = self._free_slot(bucket, parts)
                    for host, device, array in zip(slot.host_inputs, bucket.device_inputs, arrays):
                        rows = len(array)
                        host[:rows].copy_(torch.from_numpy(np.ascontiguousarray(array)))  # torch casts (in threads)
                        host[rows:].zero_()
                        device.copy_(host, non_blocking=True)
                    bucket.replay()
                    slot.host_output.copy_(bucket.output, non_blocking=True)
                    event = self.event()
                    event.record()
                    slot.pending = _Pending(index, units * (len(bucket.output) // bucket.units), event)
            finally:  # also after a failure: no copy may still be writing into a buffer the next call stages
                in_flight = [slot for b in self._buckets.values() for slot in b.slots if slot.pending is not None]
                for slot in sorted(in_flight, key=lambda slot: slot.pending.index):  # type: ignore[union-attr]
                    self._collect(slot, parts)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)  # type: ignore[return-value,arg-type]

    def _free_slot(self, bucket: _Bucket, parts: list[np.ndarray | None]) -> _Slot:
        """A slot with no chunk on the GPU: a free one, a new one (up to SLOTS), or the oldest, once collected."""
        free = next((slot for slot in bucket.slots if slot.pending is None), None)
        if free is not None:
            return free
        if len(bucket.slots) < self.SLOTS:
            bucket.slots.append(self._slot(bucket.units, bucket.output))
            return bucket.slots[-1]
        oldest = min(bucket.slots, key=lambda slot: slot.pending.index)  # type: ignore[union-attr]
        self._collect(oldest, parts)
        return oldest

    @staticmethod
    def _collect(slot: _Slot, parts: list[np.ndarray | None]) -> None:
        """Wait for the slot's chunk to be copied back, and keep its rows."""
        pending = slot.pending
        assert pending is not None
        pending.event.synchronize()
        parts[pending.index] = slot.host_output[: pending.rows].numpy().copy()
        slot.pending = None

    def _slot(self, units: int, output: torch.Tensor) -> _Slot:
        host_inputs = [torch.zeros((units * o.rows, *o.shape), dtype=o.dtype, pin_memory=self.pinned)
                       for o in self.operands]
        return _Slot(host_inputs, torch.empty(output.shape, dtype=output.dtype, pin_memory=self.pinned))

    def _capture(self, units: int) -> _Bucket:
        """Allocate the bucket's buffers (before capture: no allocation of pinned memory during it) and capture."""
        device_inputs = [torch.zeros((units * o.rows, *o.shape), dtype=o.dtype, device=self.device)
                         for o in self.operands]
        replay, output = self.capture(self.fn, tuple(device_inputs))
        if len(output) % units:
            raise ValueError(f"a graph over {units} units returned {len(output)} rows")
        bucket = _Bucket(units, device_inputs, replay, output, [self._slot(units, output)])
        self._buckets[units] = bucket
        return bucket
