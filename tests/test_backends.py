"""The backend x precision table and the runner selection that reads it."""

from __future__ import annotations

import pytest
from helpers import tiny_checkpoint

from fad_edge.backends import BACKENDS, all_precisions, backend_names, get_backend
from fad_edge.bench.labels import Variant, bench_labels, parse_label
from fad_edge.errors import BackendUnavailableError, FadEdgeError
from fad_edge.runtime.select import open_runner, resolve_backend


def test_a_precision_the_backend_does_not_run_is_an_error_not_ignored():
    assert get_backend("ort").check_precision("int8") == "int8"
    assert get_backend("ort").check_precision(None) == "fp32"
    with pytest.raises(FadEdgeError, match="backend trt runs fp16, not 'int8'"):
        get_backend("trt").check_precision("int8")
    with pytest.raises(FadEdgeError, match="backend torch runs fp32"):
        get_backend("torch").check_precision("fp16")


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(FadEdgeError, match="choose one of auto, torch, ort"):
        get_backend("onnx")


def test_every_runner_path_in_the_table_names_a_class_with_the_runner_contract():
    import importlib

    from fad_edge.runtime.base import ClipRunner

    for backend in BACKENDS.values():
        if backend.missing():  # the module of a runner whose library is absent may not even import
            continue
        module, _, name = backend.runner.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, ClipRunner) and callable(cls.open)


def test_a_missing_module_is_a_clear_error():
    from dataclasses import replace

    fake = replace(get_backend("ort"), requires=("surely_not_installed_module",), install="pip install it")
    with pytest.raises(BackendUnavailableError, match="needs surely_not_installed_module: pip install it"):
        fake.runner_class()


def test_bench_labels_come_from_the_table_and_parse_back():
    labels = bench_labels()
    assert {"torch", "ort", "ort-int8", "ort-fp16", "trt"} <= set(labels)
    for label in labels:
        variant = parse_label(label)
        assert get_backend(variant.backend).check_precision(variant.precision)
    assert parse_label("ort-int8") == Variant("ort", "int8")
    assert parse_label("cuda-fp16-cl") == Variant("cuda", "fp16", channels_last=True)
    with pytest.raises(FadEdgeError):
        parse_label("tensorflow")


def test_cli_choices_list_the_table():
    assert backend_names()[0] == "auto" and set(BACKENDS) <= set(backend_names())
    assert {"fp32", "int8", "fp16"} <= set(all_precisions())


def test_auto_picks_torch_for_a_checkpoint_and_ort_for_an_export(tmp_path, tiny_export):
    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    assert resolve_backend(checkpoint) == "torch"
    assert resolve_backend(tiny_export) == "ort"
    with open_runner(tiny_export, precision="int8") as runner:
        assert runner.name == "ort-int8"
    with pytest.raises(FadEdgeError, match="runs a checkpoint folder"):
        open_runner(tiny_export, "torch")
    with pytest.raises(FadEdgeError, match="not 'int8'"):
        open_runner(checkpoint, "torch", "int8")
