"""A checkpoint run by PyTorch on a CUDA GPU: CUDA graphs per input-size bucket, FP32 or FP16.

At batch 1 (a clip of 8 frames, what a robot's stream asks for) the GPU finishes each kernel
faster than Python launches the next one, so eager PyTorch measures the launch overhead. A CUDA
graph launches the whole computation at once: each graphed function (the encoders, ELNet with the
1-step sampler and de-normalization folded in, ELNet's x0 estimate for each step of longer samplers, and
for one step the whole pipeline from frames to motion) is captured once per bucket of input sizes
(`cuda_graphs.GraphBuckets`) and replayed with the inputs padded into the bucket.

- `precision="fp16"`: the model in half precision with FP32 norms, softmax and step embedding
  (`half_precision`). Use it where it measures faster than FP32 (`fad-edge bench --device cuda`).
- FP32 is IEEE FP32: TF32 convolutions (PyTorch's cuDNN default) are turned off around each call,
  so the motion stays within 1e-3 of the CPU reference.
- `graphs=False` runs eagerly on the GPU (the fallback); `channels_last=True` runs the encoders'
  convolutions in NHWC.
- `compiled=True` compiles the three networks (the video and audio encoders and ELNet) with
  `torch.compile` (Inductor: GroupNorm, Mish and the casts around them fuse into a few Triton
  kernels, where eager PyTorch launches one kernel per op) before any graph is captured. The graphed
  functions call the compiled networks, so every function and bucket shares their code; the glue
  between them (clip windows, the sampler's arithmetic) runs eagerly inside the same CUDA graph.
  Compiling takes tens of seconds on first use, twice per network as a rule: once with a symbolic
  batch for every size above one, and once for a batch of one (torch specializes size one); torch
  may split the symbolic batch where its convolution would pick another kernel.
- `cudnn_benchmark=True` (the default) lets cuDNN time its algorithms for each input shape when a
  bucket is first used, outside the capture, and keep the fastest: the shapes of a bucket never
  change, so the search is paid once.
- The host staging buffers hold the model's dtype, so FP16 copies half the bytes to the GPU.
- Threads: any thread may call (the stream's worker does); one lock serializes the runner's
  static buffers, and each bucket is captured once, after a warm-up.

The device may also be the CPU (eager, or with an injected capture): that is how its logic is
tested, and how `fad-edge bench --device cpu` checks the GPU bench's plumbing.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fad_edge.backends import get_backend
from fad_edge.checkpoint import load_checkpoint
from fad_edge.data.inputs import SpeakerInputs
from fad_edge.devices import resolve_device
from fad_edge.errors import FadEdgeError
from fad_edge.listener_model import ListenerModel
from fad_edge.runtime.base import ClipRunner, check_inputs
from fad_edge.runtime.cuda_graphs import Capture, CudaGraphCapture, GraphBuckets, Operand
from fad_edge.runtime.half_precision import to_reduced_precision
from fad_edge.sampling import DEFAULT_SAMPLER, SamplerSettings

MAX_FRAMES = 1024  # the largest frame bucket (128 clips); longer inputs run in chunks of it


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """cuDNN convolutions and matmuls in IEEE FP32 (no TF32) for the duration, then the caller's setting.

    Uses the `fp32_precision` switches where torch has them (2.9+); setting the older `allow_tf32`
    flags there would mix the two APIs, which torch refuses.
    """
    found = [getattr(torch.backends.cudnn, "conv", None), getattr(torch.backends.cuda, "matmul", None)]
    switches: list[Any] = [s for s in found if s is not None and hasattr(s, "fp32_precision")]
    if switches:
        previous = [s.fp32_precision for s in switches]
        for switch in switches:
            switch.fp32_precision = "ieee"
        try:
            yield
        finally:
            for switch, value in zip(switches, previous):
                switch.fp32_precision = value
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cuDNN's benchmark mode for the duration (the fastest algorithm per input shape), then the caller's setting."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def compile_networks(model: ListenerModel, backend: str | Callable[..., Any]) -> None:
    """Replace the forward of `model`'s encoders, and ELNet's two (noise and one-step x0), by their
    `torch.compile`d versions, in place.

    Every input's first dim (the batch) is marked dynamic where it is above one, so one compiled graph
    serves all bucket sizes; a batch of one gets its own, since torch specializes size one.
    """
    methods = ((model.video_encoder, "forward"), (model.audio_encoder, "forward"), (model.elnet, "forward"),
               (model.elnet, "forward_x0"))
    for network, method in methods:
        compiled = torch.compile(getattr(network, method), backend=backend)

        def call(*inputs: torch.Tensor, compiled: Callable[..., torch.Tensor] = compiled) -> torch.Tensor:
            for x in inputs:
                if x.dim() and x.shape[0] > 1:
                    torch._dynamo.maybe_mark_dynamic(x, 0)
            return compiled(*inputs)

        setattr(network, method, call)  # an instance attribute: nn.Module calls self.forward


def device_model(model: ListenerModel, device: torch.device, precision: str, channels_last: bool) -> ListenerModel:
    """A copy of `model` on `device` at `precision` (the caller's model stays where it is)."""
    prepared = copy.deepcopy(model).eval()
    if precision == "fp16":
        to_reduced_precision(prepared, torch.float16)
    prepared.to(device)
    if channels_last:
        for encoder in (prepared.video_encoder, prepared.audio_encoder):
            encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented, untyped
    return prepared


class CudaRunner(ClipRunner):
    """Runs a checkpoint's model on a GPU, through CUDA graphs unless `graphs=False`."""

    def __init__(self, model: ListenerModel, precision: str = "fp32", steps: int | None = None, seed: int = 0,
                 device: str | torch.device = "cuda", graphs: bool | None = None, channels_last: bool = False,
                 max_frames: int = MAX_FRAMES, capture: Capture | None = None,
                 settings: SamplerSettings | None = None, sampler: str = DEFAULT_SAMPLER,
                 compiled: bool = False, compile_backend: str | Callable[..., Any] = "inductor",
                 cudnn_benchmark: bool = True) -> None:
        precision = get_backend("cuda").check_precision(precision)
        super().__init__(model.config, settings or SamplerSettings.named(sampler, model.config, steps), seed)
        self.device = resolve_device(str(device))
        on_gpu = self.device.type == "cuda"
        self.graphs = on_gpu if graphs is None else graphs
        if self.graphs and capture is None and not on_gpu:
            raise FadEdgeError("CUDA graphs need a CUDA device; use graphs=False on the CPU")
        config = model.config
        if max_frames < config.clip_len or max_frames % config.clip_len:
            raise FadEdgeError(f"max_frames must be a positive multiple of {config.clip_len}, got {max_frames}")
        self.precision, self.channels_last, self.cudnn_benchmark = precision, channels_last, cudnn_benchmark
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        buffers = dict(model.named_buffers())
        self.mean = buffers["motion_mean"].detach().cpu().numpy().copy()
        self.std = buffers["motion_std"].detach().cpu().numpy().copy()
        self.model: ListenerModel | None = device_model(model, self.device, precision, channels_last)
        if compiled:
            compile_networks(self.model, compile_backend)
        self.frame_batch = max_frames
        self.name = "cuda" + ("-fp16" if precision == "fp16" else "") + ("" if self.graphs else "-eager") + (
            "-cl" if channels_last else "") + ("-compiled" if compiled else "")
        self._functions: dict[str, Callable[..., torch.Tensor]] = {
            "encode": self._encode, "video": self._encode_video, "audio": self._encode_audio,
            "x0": self._x0, "whole": self._whole, "step_x0": self._step_x0}
        self._lock = threading.RLock()  # held around each call, and by the graph sets inside it
        self._sets: dict[str, GraphBuckets] = {}
        self._one_step_key = self._baked()  # what the one-step graphs are captured with
        if self.graphs:
            self._sets = self._graph_sets(capture or CudaGraphCapture(self.device), max_frames)

    @classmethod
    def from_checkpoint(cls, path: Path, precision: str = "fp32", steps: int | None = None, seed: int = 0,
                        device: str = "cuda", graphs: bool | None = None, channels_last: bool = False,
                        sampler: str = DEFAULT_SAMPLER, compiled: bool = False) -> CudaRunner:
        return cls(load_checkpoint(path).model, precision, steps, seed, device, graphs, channels_last,
                   sampler=sampler, compiled=compiled)

    @classmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int,
             sampler: str = DEFAULT_SAMPLER) -> CudaRunner:
        return cls.from_checkpoint(path, precision, steps, seed, sampler=sampler)

    # -- the graphed functions: device tensors in, float32 device tensors out ------------------------
    def _graph_sets(self, capture: Capture, max_frames: int) -> dict[str, GraphBuckets]:
        config = self.config
        clip_len, clips = config.clip_len, max_frames // config.clip_len
        # Images and mel are staged in the model's dtype (cast in the host copy): FP16 moves half the bytes.
        image = Operand((3, config.image_size, config.image_size), dtype=self.dtype)
        mel = Operand((1, config.audio_window, config.n_mels), dtype=self.dtype)
        condition = Operand((config.condition_frames, config.condition_dim))
        state = Operand((clip_len, config.n_coeffs))

        def graphed(name: str, operands: list[Operand], largest: int) -> GraphBuckets:
            return GraphBuckets(self._functions[name], operands, largest, capture, self.device, self._lock)

        # Every set, whatever the settings: a bucket is captured only when first used, and settings may be replaced.
        framed = [Operand(image.shape, clip_len, image.dtype), Operand(mel.shape, clip_len, mel.dtype), state]
        return {"encode": graphed("encode", [image, mel], max_frames),
                "video": graphed("video", [image], max_frames),
                "audio": graphed("audio", [mel], max_frames),
                "x0": graphed("x0", [condition, state], clips),
                "whole": graphed("whole", framed, clips),
                "step_x0": graphed("step_x0", [state, Operand((), dtype=torch.long), condition], clips)}

    def _baked(self) -> tuple[int, float]:
        """What the one-step graphs bake in when captured: the start step and the x0 clamp."""
        return self.sampler.timesteps[0], self.settings.clip_sample

    def _model(self) -> ListenerModel:
        if self.model is None:
            raise FadEdgeError("this runner is closed")
        return self.model

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def _encode(self, images: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self._model().encode(self._input(images), self._input(mel)).float()

    def _encode_video(self, images: torch.Tensor) -> torch.Tensor:
        return self._model().encode_video(self._input(images)).float()

    def _encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        return self._model().encode_audio(self._input(mel)).float()

    def _step_x0(self, x: torch.Tensor, steps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """ELNet's x0 estimate at `steps` for a step of several, unclamped. Not its noise: in FP16, x0 from the
        noise near t = 99 multiplies the noise's rounding by 1 / sqrt(a_t), up to 2000 (`DiffusionSampler.step`)."""
        return self._model().elnet.forward_x0(x.to(self.dtype), steps, condition.to(self.dtype)).float()

    def _x0(self, condition: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The 1-step sampler: ELNet's x0 estimate, clamped and de-normalized (the runners' `elnet_x0`)."""
        t = self.sampler.timesteps[0]
        steps = torch.full((state.shape[0],), t, dtype=torch.long, device=state.device)
        x0 = self._model().elnet.forward_x0(state.to(self.dtype), steps, condition.to(self.dtype)).float()
        return self._model().denormalize(self.sampler.clip_x0(x0))

    def _whole(self, images: torch.Tensor, mel: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Frames of one sequence to motion: encoders, clip windows and the 1-step sampler in one graph."""
        conditions = self._model().clip_conditions(self._encode(images, mel).unsqueeze(0))
        return self._x0(conditions, state)

    # -- calls ------------------------------------------------------------------------------------
    def _scope(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if self.device.type == "cuda":
            stack.enter_context(torch.cuda.device(self.device))
            if self.precision == "fp32":
                stack.enter_context(ieee_fp32())
            if self.cudnn_benchmark:
                stack.enter_context(cudnn_benchmark())
        return stack

    def _call(self, name: str, *arrays: np.ndarray) -> np.ndarray:
        """The named function's graphed set when graphs are on, else the function itself on device copies."""
        with self._lock, self._scope():  # the scope switches process-wide flags: under the lock too
            if self.graphs:
                if not self._sets:
                    raise FadEdgeError("this runner is closed")
                if name in ("x0", "whole") and self._baked() != self._one_step_key:  # settings replaced since
                    self._sets["x0"].release()
                    self._sets["whole"].release()
                    self._one_step_key = self._baked()
                return self._sets[name](*arrays)
            with torch.no_grad():
                tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
                return self._functions[name](*tensors).cpu().numpy()

    def encode_batch(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """Both encoders in one replay (one launch instead of two)."""
        images, mel = images.astype(np.float32, copy=False), mel.astype(np.float32, copy=False)
        return self._call("encode", images, mel)

    def encode_video_batch(self, images: np.ndarray) -> np.ndarray:
        return self._call("video", images.astype(np.float32, copy=False))

    def encode_audio_batch(self, mel: np.ndarray) -> np.ndarray:
        return self._call("audio", mel.astype(np.float32, copy=False))

    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        conditions = conditions.astype(np.float32, copy=False)
        state = state.astype(np.float32, copy=False)
        if self.settings.steps == 1:
            return self._call("x0", conditions, state)
        x = state
        for t, t_prev in self.sampler.pairs():
            steps = np.full(len(x), t, dtype=np.int64)
            x0 = self._call("step_x0", x, steps, conditions)
            x = self.sampler.step_x0(x0, t, x, t_prev, self.sampler.noise(x.shape, generator, t_prev))
        return (x * self.std + self.mean).astype(np.float32)

    def run_inputs(self, inputs: SpeakerInputs) -> np.ndarray:
        """With one step and graphs, frames to motion in one replay; otherwise the encoders, then ELNet."""
        check_inputs(inputs, self.config)  # the replay would read any array its buffers take
        frames, clip_len = len(inputs.images), self.config.clip_len
        if not self.graphs or self.settings.steps != 1 or frames > self.frame_batch or frames % clip_len:
            return super().run_inputs(inputs)
        generator = np.random.default_rng(self.seed)  # the same noise stream as ClipRunner.run_inputs
        state = self.initial_state(frames // clip_len, generator)
        motion = self._call("whole", inputs.images.astype(np.float32, copy=False),
                            inputs.mel.astype(np.float32, copy=False), state)
        return motion.reshape(-1, self.config.n_coeffs)[: inputs.n_frames].astype(np.float32)

    @property
    def captured(self) -> dict[str, list[int]]:
        """Buckets captured so far, per graphed function."""
        return {name: graphs.captured for name, graphs in self._sets.items()}

    def close(self) -> None:
        """Drop the graphs, buffers and the model's copy; their GPU memory returns to torch's cache."""
        with self._lock:
            for graphs in self._sets.values():
                graphs.release()
            self._sets = {}
            self.model = None
