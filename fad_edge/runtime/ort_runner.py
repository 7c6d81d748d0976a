"""ONNX Runtime: on the CPU, the embedded default backend (FP32, INT8 or the FP16 graph TensorRT builds);
with onnxruntime-gpu, on its CUDA or TensorRT execution provider.

Session options suit small CPUs: `threads` intra-op threads (default 2, one per core of the
target boards), one inter-op thread and sequential execution, since the graphs are chains of
convolutions with nothing to run side by side; a thread pool per session that does not spin; all
graph optimizations on. `session_options` says what each choice was measured against.

GPU providers (`ort-cuda`, `ort-trt`) are the same runner with other providers. ONNX Runtime falls
back to the CPU, with only a warning, when a provider's libraries do not load (CUDA 12, cuDNN 9,
TensorRT 10 for onnxruntime-gpu 1.2x), so each session is checked to run on the provider asked for.
The TensorRT provider builds its engines from the FP32 graph (FP16 by its builder flag) for an
explicit batch range, and caches them (and its timing cache) in the export folder.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from fad_edge.artifact import (
    AUDIO_ENCODER,
    ELNET_EPS,
    ELNET_X0,
    META_PREFIX,
    SIGNATURES,
    VIDEO_ENCODER,
    ExportManifest,
)
from fad_edge.backends import get_backend
from fad_edge.errors import BackendUnavailableError, EngineMismatchError, ExportError, FadEdgeError
from fad_edge.runtime.base import ClipRunner, run_in_batches
from fad_edge.sampling import DEFAULT_SAMPLER, SamplerSettings


@dataclass(frozen=True)
class SessionTuning:
    """How ONNX Runtime schedules threads and memory on the CPU. The defaults are the measured choice (see
    `session_options`); `python -m fad_edge.bench.ort_options EXPORT` times the alternatives on a machine.
    """

    spinning: bool = False  # idle threads of a session's pool busy-wait for work instead of sleeping
    stop_spinning: bool = False  # with spinning: the pool stops spinning when its run returns
    shared_pool: bool = False  # one process-wide pool for every session (see `share_thread_pool`)
    memory_arena: bool = True  # ORT's CPU arena keeps freed blocks for the next run
    memory_pattern: bool = True  # ORT plans each shape's activation buffers once and reuses the plan
    # At most this many intra-op threads for ELNet's sessions (None: `threads`, as the encoders). ELNet is
    # ~800 small ops (INT8, paper preset) whose time goes to dispatch more than to arithmetic: its 64-frame
    # call took 8.3 ms on one thread and 10.4 ms on two (ONNX Runtime's profiler, a 2-core EPYC with
    # VNNI), while the encoders' large convolutions use both cores (1.6x faster on two).
    elnet_threads: int | None = 1


DEFAULT_TUNING = SessionTuning()
_shared_pool_threads: int | None = None  # the size of this process's shared pool, once made


def share_thread_pool(threads: int) -> None:
    """Make ONNX Runtime's process-wide thread pool (`threads` intra-op, 1 inter-op), once per process.

    ONNX Runtime sizes it once, and from then on refuses to open any session of the process with
    a pool of its own: the choice binds every other user of onnxruntime in the process.
    """
    global _shared_pool_threads
    if _shared_pool_threads is None:
        # Not re-exported by onnxruntime's top-level module: the Python API's one way to size the global pools.
        from onnxruntime.capi._pybind_state import set_global_thread_pool_sizes

        set_global_thread_pool_sizes(threads, 1)
        _shared_pool_threads = threads
    elif _shared_pool_threads != threads:
        raise BackendUnavailableError(f"this process's shared ONNX Runtime thread pool has {_shared_pool_threads} "
                                      f"threads; {threads} needs another process")


def session_options(threads: int = 2, tuning: SessionTuning = DEFAULT_TUNING,
                    profile_prefix: str | None = None) -> ort.SessionOptions:
    """Options for one session; `profile_prefix` turns ONNX Runtime's profiler on (trace: PREFIX_<time>.json).

    The defaults were chosen by `python -m fad_edge.bench.ort_options` on the small and paper
    presets, FP32 and INT8, for a 64-frame window (one call per graph, 8 clips) and for one 8-frame
    clip (a stream's call), on a 2-core AMD EPYC that other jobs kept busy (load 1.4-7): the robot's
    case too, whose cores also run the camera, the face detector and the robot. Ratios below are to
    the defaults, the range over three runs of every combination; each comment gives its reason.
    """
    options = ort.SessionOptions()
    # One thread per core. A single thread was no consistent win on the busy machine (0.8-1.3x for
    # a window, 0.8-1.6x for a clip); in the least loaded run the paper INT8 clip took 1.6x as long.
    options.intra_op_num_threads = threads
    # The graphs are chains of convolutions: nothing to run side by side, so no inter-op threads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are about its own fusions
    # No spinning. A runner alternates three sessions, each with its own pool; spinning threads of
    # the idle pools take the cores from the busy one: 1.2-2.5x slower for a window, 1.4-3.8x for a
    # clip, and 84-142 ms of CPU burnt in the 300 ms after each call. Spinning only while a run lasts
    # (session.force_spinning_stop) was still slower: 1.1-2.0x for a window, 1.0-2.7x for a clip.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if tuning.spinning else "0")
    if tuning.stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    # A pool per session, not ONNX Runtime's shared one (use_per_session_threads = False): that pool
    # always spins (Python cannot turn it off; session.intra_op.allow_spinning does not reach it, the
    # idle CPU was the same with 0 and 1), was never faster (1.0-1.8x for a window, 1.0-2.5x for a
    # clip) and burnt 37-62 ms of CPU after each call; and once made, it makes ONNX Runtime refuse
    # every later session of the process with a pool of its own, which would bind the application
    # that embeds the runner.
    if tuning.shared_pool:
        share_thread_pool(threads)
        options.use_per_session_threads = False
        options.intra_op_num_threads = options.inter_op_num_threads = 0  # the shared pool's sizes rule
    elif _shared_pool_threads is not None:
        raise BackendUnavailableError("this process uses ONNX Runtime's shared thread pool, after which ONNX Runtime "
                                      "opens no session with a pool of its own; open this runner shared too")
    # ORT's memory arena and memory patterns stay on (its defaults): every call of a runner repeats
    # the same shapes, which is what both are for. Off, neither was consistently faster (no arena
    # 0.76-1.27x, no patterns 0.85-1.25x: within the machine's noise, both ways).
    options.enable_cpu_mem_arena = tuning.memory_arena
    options.enable_mem_pattern = tuning.memory_pattern
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


CPU_PROVIDERS: list[Any] = ["CPUExecutionProvider"]
TRT_CACHE = "ort_trt_cache"  # the TensorRT provider's engine and timing caches, inside the export folder
GPU_FRAME_BATCH = 1024  # frames per encoder call on a GPU (the CPU's 64 leaves a GPU idle)
GPU_MAX_CLIPS = 1024  # the TensorRT provider's profile: up to this many clips (8192 frames) per ELNet call
GPU_OPT = {"frames": 64, "clips": 8}  # the batch TensorRT tunes for: a 64-frame window, 8 clips


def batch_profile(path: Path, batch_axis: str, largest: int) -> dict[str, str]:
    """The TensorRT provider's min/opt/max shapes of a graph's inputs ("name:1x3x96x96,..."), from the ONNX file.

    All axes but the batch axis are static in our graphs; an explicit range keeps the provider from
    rebuilding its engine for every new batch size.
    """
    # The shapes are read by a CPU session: the edge runtime has onnxruntime but not the onnx package.
    inputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    ranges = {"min": 1, "opt": GPU_OPT[batch_axis], "max": largest}
    shapes: dict[str, list[str]] = {key: [] for key in ranges}
    for tensor in inputs:
        rest = [str(dim) for dim in tensor.shape[1:]]
        for key, size in ranges.items():
            shapes[key].append(f"{tensor.name}:{'x'.join([str(size), *rest])}")
    return {f"trt_profile_{key}_shapes": ",".join(values) for key, values in shapes.items()}


def execution_providers(backend: str, precision: str, path: Path, graph: str, device_id: int = 0) -> list[Any]:
    """ONNX Runtime's providers (with options) for one graph of a backend in the table."""
    if backend == "ort-cuda":
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    if backend == "ort-trt":
        # One cache per ONNX Runtime version (its wheels pin their TensorRT): an engine cached by another
        # is not rebuilt by the provider, which names its files by the graph and the GPU's architecture.
        cache = path.parent / TRT_CACHE / f"onnxruntime-{ort.__version__}"
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BackendUnavailableError(f"{cache}: cannot create the TensorRT provider's cache ({error}); "
                                          "copy the export folder somewhere writable") from None
        axis = SIGNATURES[graph].batch_axis
        # FP16 for the encoders only: the provider's flag lets TensorRT pick FP16 for any layer, ELNet's last
        # ones included, and x0 taken from its noise estimate at t = 99 carries that rounding times
        # 1 / sqrt(alpha_bar) ~ 2000 (the native engines keep that path FP32). ELNet is 0.3% of the FLOPs.
        half = precision == "fp16" and graph in (VIDEO_ENCODER, AUDIO_ENCODER)
        options = {"device_id": device_id, "trt_fp16_enable": half, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                   "trt_timing_cache_path": str(cache),
                   **batch_profile(path, axis, GPU_FRAME_BATCH if axis == "frames" else GPU_MAX_CLIPS)}
        # Nodes TensorRT does not take run on CUDA, not on the CPU.
        return [("TensorrtExecutionProvider", options), ("CUDAExecutionProvider", {"device_id": device_id})]
    return list(CPU_PROVIDERS)


def graph_threads(graph: str, threads: int, tuning: SessionTuning = DEFAULT_TUNING) -> int:
    """Intra-op threads for one graph's session: `threads`, capped for ELNet's graphs by `tuning.elnet_threads`
    (not in the shared pool, whose one size serves every session)."""
    if graph in (ELNET_X0, ELNET_EPS) and tuning.elnet_threads is not None and not tuning.shared_pool:
        return max(1, min(threads, tuning.elnet_threads))
    return threads


def _provider_name(provider: Any) -> str:
    return provider[0] if isinstance(provider, tuple) else str(provider)


def open_session(path: Path, manifest: ExportManifest, graph: str, threads: int = 2,
                 providers: list[Any] | None = None, tuning: SessionTuning = DEFAULT_TUNING,
                 profile_prefix: str | None = None) -> ort.InferenceSession:
    """An ORT session for one graph file, checked to belong to the manifest's checkpoint and to run on `providers`."""
    if not path.is_file():
        raise ExportError(f"{path}: file not found; re-run fad-edge export")
    manifest.check_contents(path)
    providers = providers or list(CPU_PROVIDERS)
    options = session_options(threads, tuning, profile_prefix)
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # ORT raises its own Fail/InvalidProtobuf/... types
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({first[:160]}); "
                          "the file is corrupt or truncated, re-export") from error
    wanted = _provider_name(providers[0])
    if session.get_providers()[0] != wanted:
        raise BackendUnavailableError(
            f"{path.name}: ONNX Runtime could not start {wanted} and fell back to {session.get_providers()[0]}; "
            "its CUDA 12 / cuDNN 9 (and, for TensorRT, TensorRT 10) libraries did not load")
    metadata = session.get_modelmeta().custom_metadata_map
    found_graph = metadata.get(META_PREFIX + "graph")
    found_hash = metadata.get(META_PREFIX + "checkpoint_sha256")
    if found_graph != graph or found_hash != manifest.checkpoint_sha256:
        raise EngineMismatchError(
            f"{path}: belongs to another model (graph {found_graph!r}, checkpoint {str(found_hash)[:12]}; "
            f"the manifest expects {graph!r}, {manifest.checkpoint_sha256[:12]}); re-export this folder"
        )
    # The runner feeds inputs of the manifest config's shapes and de-normalizes by the manifest's statistics: both
    # must be the ones the graph was exported with (but the sampler's settings, read at run time).
    manifest.check_graph_config(path, metadata.get(META_PREFIX + "config"))
    found = metadata.get(META_PREFIX + "normalization")
    if found is not None and found != json.dumps(manifest.normalization, sort_keys=True):
        raise EngineMismatchError(f"{path}: the manifest's normalization is not the one this graph was exported "
                                  "with (manifest.json was edited); re-export this folder")
    return session


class OrtRunner(ClipRunner):
    """Runs an export folder with ONNX Runtime: on the CPU, or on the providers of `backend` (see the table).

    `tuning` sets how ONNX Runtime schedules and allocates (the defaults are measured: see
    `SessionTuning`). With `profile_dir`, ONNX Runtime's profiler records every session's runs into a trace file in
    that folder, one per graph; `end_profiling` closes them (`fad-edge profile` reads them).
    """

    backend = "ort"
    clip_batch: int | None = None  # clips per ELNet call (None: all); a GPU provider's profile sets it

    def __init__(self, folder: Path, precision: str = "fp32", threads: int = 2, steps: int | None = None,
                 seed: int = 0, manifest: ExportManifest | None = None, device_id: int = 0,
                 sampler: str = DEFAULT_SAMPLER, tuning: SessionTuning = DEFAULT_TUNING,
                 profile_dir: Path | None = None) -> None:
        table = get_backend(self.backend)
        precision = table.check_precision(precision)
        if table.provider:
            table.check_installed()
            if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels (torch's), if present
                with contextlib.suppress(Exception):  # best effort: a provider that still cannot start is caught below
                    ort.preload_dlls()
            self.frame_batch = GPU_FRAME_BATCH
            self.clip_batch = GPU_MAX_CLIPS
        self.folder = Path(folder)
        self.manifest = manifest or ExportManifest.load(self.folder)
        config = self.manifest.model_config
        super().__init__(config, SamplerSettings.named(sampler, config, steps), seed)
        self.name = f"{self.backend}-{precision}"
        self.precision = precision

        def session(graph: str) -> ort.InferenceSession:
            path = self.manifest.file(self.folder, graph, table.variant(precision))
            providers = execution_providers(self.backend, precision, path, graph, device_id)
            prefix = None if profile_dir is None else str(Path(profile_dir) / graph)
            return open_session(path, self.manifest, graph, graph_threads(graph, threads, tuning), providers, tuning,
                                prefix)

        self._session = session
        self.video, self.audio = session(VIDEO_ENCODER), session(AUDIO_ENCODER)
        self._elnet: dict[str, ort.InferenceSession] = {}
        self.elnet(self.elnet_graph)  # opened now: a missing or foreign graph is an error before the first clip
        normalization = self.manifest.motion_normalization
        self.mean, self.std = normalization.mean, normalization.std

    @classmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int,
             sampler: str = DEFAULT_SAMPLER) -> OrtRunner:
        return cls(path, precision=precision, threads=threads, steps=steps, seed=seed, sampler=sampler)

    @property
    def elnet_graph(self) -> str:
        """The folded graph where it computes the settings (one step from the model's start step), else the
        noise predictor inside the sampler's loop."""
        return ELNET_X0 if self.folded_one_step else ELNET_EPS

    def elnet(self, graph: str) -> ort.InferenceSession:
        """The session of an ELNet graph, opened the first time it is needed (settings may be replaced)."""
        if getattr(self, "_closed", False):
            raise FadEdgeError("this runner is closed")
        if graph not in self._elnet:
            self._elnet[graph] = self._session(graph)
        return self._elnet[graph]

    # session.run, not IO binding into pre-allocated outputs: an output is at most 64 KB, whose copy
    # (under 25 us) is lost in a call of 3-450 ms; measured, IO binding was no faster (within the
    # noise both ways, -15% to +5%: `python -m fad_edge.bench.ort_options EXPORT --io-binding`).
    def encode_video_batch(self, images: np.ndarray) -> np.ndarray:
        return self.video.run(None, {"images": images.astype(np.float32, copy=False)})[0]

    def encode_audio_batch(self, mel: np.ndarray) -> np.ndarray:
        return self.audio.run(None, {"mel": mel.astype(np.float32, copy=False)})[0]

    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        conditions = conditions.astype(np.float32, copy=False)
        graph = self.elnet_graph
        if graph == ELNET_X0:
            return self._elnet_in_batches(graph, {"x_start": state, "condition": conditions})
        x = state
        for t, t_prev in self.sampler.pairs():
            step = np.full(len(x), t, dtype=np.int64)
            epsilon = self._elnet_in_batches(graph, {"x_t": x, "step": step, "condition": conditions})
            x = self.sampler.step(epsilon, t, x, t_prev, self.sampler.noise(x.shape, generator, t_prev))
        return x * self.std + self.mean

    def _elnet_in_batches(self, graph: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """ELNet over every clip, `clip_batch` clips a call where a GPU provider's profile stops there (the
        noise is drawn for all clips at once, so the motion does not depend on the batching)."""
        session = self.elnet(graph)
        return run_in_batches(lambda part: session.run(None, part)[0], feeds, self.clip_batch)

    def end_profiling(self) -> dict[str, Path]:
        """Stop the profiler of each session (opened with `profile_dir`); the trace file of each graph, by name."""
        sessions = {VIDEO_ENCODER: self.video, AUDIO_ENCODER: self.audio, **self._elnet}
        return {graph: Path(session.end_profiling()) for graph, session in sessions.items()}

    def close(self) -> None:
        """ONNX Runtime frees a session's memory when the last reference goes; drop ours."""
        for name in ("video", "audio"):
            self.__dict__.pop(name, None)
        self._elnet.clear()
        self._closed = True

    def __getattr__(self, name: str) -> Any:
        """Only for the encoder sessions `close` dropped: a clear error instead of an AttributeError."""
        if name in ("video", "audio"):
            raise FadEdgeError("this runner is closed")
        raise AttributeError(name)


class OrtCudaRunner(OrtRunner):
    """ONNX Runtime's CUDA execution provider (onnxruntime-gpu): the FP32 or FP16 graphs."""

    backend = "ort-cuda"


class OrtTrtRunner(OrtRunner):
    """ONNX Runtime's TensorRT execution provider: engines built from the FP32 graphs, FP16 by flag, cached."""

    backend = "ort-trt"
