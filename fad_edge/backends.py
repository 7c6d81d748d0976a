"""One table of inference backends: what each reads, which precisions it runs, and what it needs installed.

The CLI's choices, the export manifest's variants, `open_runner` and the bench all read this table,
so a backend or a precision exists in one place. Asking a backend for a precision it does not have
is an error, never silently ignored. Runners are named by import path so that this module imports
none of them (the torch runner needs torch; the ONNX Runtime runner must not).
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
        return "trt" if self.name == "trt" else precision

    def missing(self) -> list[str]:
        """Required modules that are not installed."""
        return [module for module in self.requires if importlib.util.find_spec(module.split(".")[0]) is None]

    def check_installed(self) -> None:
        missing = self.missing()
        if missing:
            raise BackendUnavailableError(f"backend {self.name} needs {', '.join(missing)}: {self.install}")

    def runner_class(self) -> type:
        """The ClipRunner subclass, imported only now."""
        self.check_installed()
        module, _, name = self.runner.partition(":")
        return getattr(importlib.import_module(module), name)


TRAIN_INSTALL = "pip install 'fad-edge[train]' (with torch==2.13.0 for the CPU build)"
TRT_INSTALL = ("install the [trt] extra (pip install 'fad-edge[trt]'; TensorRT comes from NVIDIA's package index) "
               "on a machine with an NVIDIA GPU")

BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend("torch", CHECKPOINT, ".safetensors", "fad_edge.runtime.torch_runner:TorchRunner", ("fp32",),
                ("torch",), TRAIN_INSTALL),
        Backend("ort", EXPORT, ".onnx", "fad_edge.runtime.ort_runner:OrtRunner", ("fp32", "int8", "fp16"),
                ("onnxruntime",), "pip install fad-edge"),
        Backend("trt", EXPORT, ".engine", "fad_edge.runtime.trt_runner:TrtRunner", ("fp16",),
                ("tensorrt",), TRT_INSTALL, device="cuda"),
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
