"""One table of inference backends: what each reads, which precisions it runs, and what it needs installed.

The CLI's choices, the export manifest's variants, `open_runner` and the bench all read this table,
so a backend or a precision exists in one place. Asking a backend for a precision it does not have
is an error, never silently ignored. Runners are named by import path so that this module imports
none of them (the torch runner needs torch; the ONNX Runtime runner must not).

A backend that computes on a GPU also needs the GPU: `unavailable()` checks, beside the modules,
ONNX Runtime's execution provider (onnxruntime-gpu lists CUDA and TensorRT; the CPU package
does not) and, for the CUDA runner, a CUDA device torch can see, so that asking for one where it
cannot run is one line saying what is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from fad_edge.errors import BackendUnavailableError, FadEdgeError

CHECKPOINT, EXPORT = "checkpoint", "export"  # what a backend reads: a checkpoint folder or an export folder


@dataclass(frozen=True)
class Backend:
    """One inference backend."""

    name: str
    reads: str  # CHECKPOINT or EXPORT
    suffix: str  # the file suffix of the graphs it runs ("" for a checkpoint's weights)
    runner: str  # "module:Class" of its ClipRunner
    precisions: tuple[str, ...]  # what --precision may say; the first is the default
    requires: tuple[str, ...]  # modules that must import
    install: str  # what to install when one is missing
    device: str = "cpu"  # "cpu" or "cuda": where it computes
    provider: str = ""  # the ONNX Runtime execution provider it needs, if any
    graph_variant: str = ""  # the export variant it reads whatever the precision ("" : the precision's own)

    @property
    def default_precision(self) -> str:
        return self.precisions[0]

    def check_precision(self, precision: str | None) -> str:
        """The precision to run (the default for None); an error naming the allowed ones otherwise."""
        if precision is None:
            return self.default_precision
        if precision not in self.precisions:
            raise FadEdgeError(f"backend {self.name} runs {', '.join(self.precisions)}, not {precision!r}")
        return precision

    def variant(self, precision: str) -> str:
        """The export manifest's key for this backend's files at `precision`."""
        return self.graph_variant or precision

    def missing(self) -> list[str]:
        """Required modules that are not installed."""
        return [module for module in self.requires if importlib.util.find_spec(module.split(".")[0]) is None]

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (a module, an ONNX Runtime provider or a CUDA device missing), or None."""
        missing = self.missing()
        if missing:
            return f"backend {self.name} needs {', '.join(missing)}: {self.install}"
        if "tensorrt" in self.requires and not tensorrt_has_runtime():
            return f"backend {self.name} needs TensorRT, and the installed tensorrt is type stubs only: {self.install}"
        if self.provider:
            found = onnxruntime_providers()
            if self.provider not in found:
                return (f"backend {self.name} needs ONNX Runtime's {self.provider} (this onnxruntime has "
                        f"{', '.join(found) or 'none'}): {self.install}")
        if self.device == "cuda" and self.reads == CHECKPOINT and not torch_sees_cuda():
            return f"backend {self.name} needs a CUDA device, and torch sees none: {self.install}"
        return None

    def check_installed(self) -> None:
        reason = self.unavailable()
        if reason:
            raise BackendUnavailableError(reason)

    def runner_class(self) -> type:
        """The ClipRunner subclass, imported only now."""
        self.check_installed()
        module, _, name = self.runner.partition(":")
        return getattr(importlib.import_module(module), name)


def onnxruntime_providers() -> list[str]:
    """ONNX Runtime's execution providers in this install (imported only when asked)."""
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def tensorrt_has_runtime() -> bool:
    """Whether `tensorrt` is TensorRT itself, not only its type stubs (imported only when asked)."""
    import tensorrt

    return hasattr(tensorrt, "Builder")


def torch_sees_cuda() -> bool:
    """Whether torch is a CUDA build and sees a device (imported only when asked)."""
    import torch

    return bool(torch.cuda.is_available())


TRAIN_INSTALL = "pip install 'fad-edge[train]' (with torch==2.13.0 for the CPU build)"
TRT_INSTALL = ("install the [trt] extra (pip install 'fad-edge[trt]'; TensorRT comes from NVIDIA's package index) "
               "on a machine with an NVIDIA GPU")
CUDA_INSTALL = ("a CUDA build of torch on a machine with an NVIDIA GPU "
                "(pip install torch --index-url https://download.pytorch.org/whl/cu130)")
ORT_GPU_INSTALL = ("replace onnxruntime by onnxruntime-gpu (pip uninstall -y onnxruntime; "
                   "pip install 'fad-edge[ort-gpu]') on a machine with an NVIDIA GPU")
ORT_TRT_INSTALL = f"{ORT_GPU_INSTALL}, plus TensorRT 10 (pip install tensorrt-cu12)"

BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend("torch", CHECKPOINT, ".safetensors", "fad_edge.runtime.torch_runner:TorchRunner", ("fp32",),
                ("torch",), TRAIN_INSTALL),
        Backend("ort", EXPORT, ".onnx", "fad_edge.runtime.ort_runner:OrtRunner", ("fp32", "int8", "fp16"),
                ("onnxruntime",), "pip install fad-edge"),
        Backend("trt", EXPORT, ".engine", "fad_edge.runtime.trt_runner:TrtRunner", ("fp16",),
                ("tensorrt",), TRT_INSTALL, device="cuda", graph_variant="trt"),
        # The checkpoint in PyTorch on a GPU: CUDA graphs per input-size bucket, FP16 with FP32 norms.
        Backend("cuda", CHECKPOINT, ".safetensors", "fad_edge.runtime.cuda_runner:CudaRunner", ("fp32", "fp16"),
                ("torch",), CUDA_INSTALL, device="cuda"),
        Backend("ort-cuda", EXPORT, ".onnx", "fad_edge.runtime.ort_runner:OrtCudaRunner", ("fp32", "fp16"),
                ("onnxruntime",), ORT_GPU_INSTALL, device="cuda", provider="CUDAExecutionProvider"),
        # TensorRT through ONNX Runtime: it builds its own engines from the FP32 graph (FP16 by its
        # builder flag) and caches them in the export folder.
        Backend("ort-trt", EXPORT, ".onnx", "fad_edge.runtime.ort_runner:OrtTrtRunner", ("fp16", "fp32"),
                ("onnxruntime",), ORT_TRT_INSTALL, device="cuda", provider="TensorrtExecutionProvider",
                graph_variant="fp32"),
    )
}
AUTO = "auto"  # torch for a checkpoint folder, ort for an export folder


def backend_names() -> tuple[str, ...]:
    return (AUTO, *BACKENDS)


def get_backend(name: str) -> Backend:
    """The named backend, or a one-line error listing the known ones."""
    backend = BACKENDS.get(name)
    if backend is None:
        raise FadEdgeError(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}")
    return backend


def all_precisions() -> tuple[str, ...]:
    """Every precision some backend runs, in table order."""
    seen: dict[str, None] = {}
    for backend in BACKENDS.values():
        seen.update(dict.fromkeys(backend.precisions))
    return tuple(seen)
