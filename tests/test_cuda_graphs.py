"""Graph buckets on the CPU, with a fake capture: bucket choice, padding, chunking, one capture per bucket."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from fad_edge.runtime.cuda_graphs import EagerCapture, GraphBuckets, Operand, bucket_sizes


class CountingCapture(EagerCapture):
    """The eager fake, also recording the static inputs each capture was given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[tuple[torch.Tensor, ...]] = []
        self.lock = threading.Lock()

    def __call__(self, fn, inputs):
        with self.lock:
            self.inputs.append(inputs)
        return super().__call__(fn, inputs)


def across_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Not row-independent on purpose: padding rows that were not zero would show in every row."""
    return x.sum(dim=1, keepdim=True) + y + x.sum()


def expected(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x.sum(axis=1, keepdims=True) + y + x.sum()


def test_bucket_sizes_are_powers_of_two_up_to_the_largest():
    assert bucket_sizes(8) == (1, 2, 4, 8)
    assert bucket_sizes(5) == (1, 2, 4, 5)
    assert bucket_sizes(1) == (1,)
    with pytest.raises(ValueError):
        bucket_sizes(0)


def test_inputs_are_padded_with_zeros_into_the_bucket_and_the_output_cut():
    capture = CountingCapture()
    graphs = GraphBuckets(across_rows, [Operand((3,)), Operand((1,))], 8, capture, torch.device("cpu"))
    rng = np.random.default_rng(0)
    big = rng.standard_normal((7, 3), dtype=np.float32), rng.standard_normal((7, 1), dtype=np.float32)
    np.testing.assert_allclose(graphs(*big), expected(*big), rtol=1e-6)
    small = big[0][:5] * 3, big[1][:5]
    out = graphs(*small)  # bucket 8 again: rows 5..7 must be zeros now, not the previous call's
    assert out.shape == (5, 1) and graphs.captured == [8] and capture.captured == 1
    np.testing.assert_allclose(out, expected(*small), rtol=1e-6)
    graphs(big[0][:1], big[1][:1])
    assert graphs.captured == [1, 8]


def test_every_call_reuses_the_captured_static_buffers():
    capture = CountingCapture()
    graphs = GraphBuckets(lambda x: x * 2, [Operand((2,))], 4, capture, torch.device("cpu"))
    for rows in (3, 4, 3):
        x = np.full((rows, 2), rows, np.float32)
        np.testing.assert_array_equal(graphs(x), x * 2)
    (static,) = capture.inputs
    assert graphs._buckets[4].device_inputs[0] is static[0]
    assert static[0][3].tolist() == [0.0, 0.0]  # the last call had three rows: the fourth is padding


def test_inputs_beyond_the_largest_bucket_run_in_chunks_with_rows_per_unit():
    frames = Operand((2,), rows=4)  # e.g. 4 frames per clip
    state = Operand((3,))  # one row per clip

    def per_clip(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 8).sum(dim=1, keepdim=True) + s

    graphs = GraphBuckets(per_clip, [frames, state], 4, CountingCapture(), torch.device("cpu"))
    x = np.arange(11 * 4 * 2, dtype=np.float32).reshape(44, 2)
    s = np.ones((11, 3), np.float32)
    out = graphs(x, s)  # 11 clips: 4 + 4 + 3
    np.testing.assert_allclose(out, x.reshape(11, 8).sum(axis=1, keepdims=True) + s)
    assert graphs.captured == [4]
    with pytest.raises(ValueError, match="disagree"):
        graphs(x[:8], s[:3])
    with pytest.raises(ValueError, match="does not fit"):
        graphs(x[:6], s[:1])


def test_a_bucket_is_captured_once_when_many_threads_ask_for_it_at_once():
    capture = CountingCapture()
    graphs = GraphBuckets(lambda x: x + 1, [Operand((4,))], 16, capture, torch.device("cpu"))
    start = threading.Barrier(8)
    results: dict[int, np.ndarray] = {}

    def worker(index: int) -> None:
        start.wait()
        x = np.full((3 + index % 2, 4), index, np.float32)  # buckets 4 only
        results[index] = graphs(x)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert capture.captured == 1 and graphs.captured == [4]
    for index, out in results.items():
        np.testing.assert_array_equal(out, np.full((3 + index % 2, 4), index + 1, np.float32))


def test_release_drops_every_bucket():
    graphs = GraphBuckets(lambda x: x, [Operand((1,))], 2, EagerCapture(), torch.device("cpu"))
    graphs(np.zeros((2, 1), np.float32))
    graphs.release()
    assert graphs.captured == []


class LoggedEvents:
    """Fake events that log their record and wait, numbered in the order they were made (one per chunk)."""

    def __init__(self, log: list[str]) -> None:
        self.log, self.made = log, 0

    def __call__(self):
        number, log = self.made, self.log
        self.made += 1

        class Event:
            def record(self) -> None:
                log.append(f"record {number}")

            def synchronize(self) -> None:
                log.append(f"wait {number}")

        return Event()


def test_chunks_are_staged_while_the_chunk_before_runs_and_each_host_buffer_waits_for_its_copy_back():
    """Chunk k+1 is staged and replayed before chunk k is waited for; a host buffer set is staged again only
    after the wait on its last chunk (two sets per bucket); the parts come back in order."""
    log: list[str] = []

    def logged(x: torch.Tensor) -> torch.Tensor:
        log.append(f"replay {int(x[0, 0])}")  # the capture's call on the zeroed buffers logs "replay 0"
        return x * 2

    graphs = GraphBuckets(logged, [Operand((2,))], 4, EagerCapture(), torch.device("cpu"), event=LoggedEvents(log))
    x = np.repeat(1 + np.arange(19, dtype=np.float32)[:, None] // 4, 2, axis=1)  # chunk k's rows hold k + 1
    np.testing.assert_array_equal(graphs(x), x * 2)
    assert log == ["replay 0", "replay 1", "record 0", "replay 2", "record 1", "wait 0", "replay 3", "record 2",
                   "wait 1", "replay 4", "record 3", "wait 2", "replay 5", "record 4", "wait 3", "wait 4"]
    assert len(graphs._buckets[4].slots) == 2
    log.clear()
    np.testing.assert_array_equal(graphs(x[:3]), x[:3] * 2)  # one chunk: staged, replayed, waited for
    assert log == ["replay 1", "record 5", "wait 5"]


def test_a_chunk_that_fails_leaves_no_copy_in_flight_and_the_next_call_is_right():
    log: list[str] = []
    failing = {"at": 3.0}

    def fragile(x: torch.Tensor) -> torch.Tensor:
        if float(x[0, 0]) == failing["at"]:
            raise RuntimeError("replay failed")
        return x + 1

    graphs = GraphBuckets(fragile, [Operand((1,))], 2, EagerCapture(), torch.device("cpu"), event=LoggedEvents(log))
    x = np.arange(1, 9, dtype=np.float32)[:, None]  # chunks [1, 2], [3, 4], ...: the second one fails
    with pytest.raises(RuntimeError, match="replay failed"):
        graphs(x)
    assert log == ["record 0", "wait 0"]  # the first chunk's copy back was waited for before the error left
    failing["at"] = -1.0
    np.testing.assert_array_equal(graphs(x), x + 1)
