"""TensorRT: API use checked by mypy against the stubs, no removed API, clear errors; GPU tests skip without one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, tiny_checkpoint

from fad_edge.artifact import GpuTarget, check_engine_target
from fad_edge.errors import BackendUnavailableError, EngineMismatchError

PACKAGE = Path(__file__).resolve().parents[1] / "fad_edge"
TRT_MODULES = [PACKAGE / "export" / "tensorrt_build.py", PACKAGE / "runtime" / "trt_runner.py"]
# APIs removed in TensorRT 10 or 11; none may appear in our TensorRT code.
REMOVED = ["build_engine(", "max_workspace_size", "get_binding_shape", "get_binding_index", "get_binding_dtype",
           "binding_is_input", "num_bindings", "execute_async_v2", "execute_v2", "EXPLICIT_BATCH",
           "platform_has_fast_fp16", "BuilderFlag.FP16", "BuilderFlag.INT8", "int8_calibrator",
           "IInt8EntropyCalibrator", "set_binding_shape", "max_batch_size"]


def _tensorrt_and_gpu() -> str | None:
    """Why the GPU tests cannot run here, or None when they can."""
    try:
        from fad_edge.runtime.tensorrt_support import require_cuda, require_tensorrt

        require_tensorrt()
        require_cuda()
    except BackendUnavailableError as error:
        return str(error)
    return None


def test_no_removed_tensorrt_api_in_our_code():
    for module in TRT_MODULES:
        text = module.read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for name in REMOVED:
            assert name not in code, f"{module.name} uses {name}, removed from TensorRT"


def _patched_stubs(target: Path) -> Path:
    """Copy the tensorrt-stubs package and fix its syntax errors so mypy can read it."""
    import importlib.util

    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None:
        pytest.fail("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs==10.13.0.35.1)")
    site = Path(spec.origin).parents[1]
    for name in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / name, target / name)
    stub = target / "tensorrt_bindings" / "tensorrt.pyi"
    stub.write_text("\n".join(_fix_signature(line) for line in stub.read_text().splitlines()) + "\n")
    return target


def _fix_signature(line: str) -> str:
    """A parameter named `in` becomes `in_`; parameters after a defaulted one get `= ...`."""
    if not line.lstrip().startswith("def "):
        return line
    line = re.sub(r"([(,]\s*)in:", r"\1in_:", line)
    head, sep, rest = line.partition("(")
    params, close, tail = rest.rpartition(")")
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "[(" and 1 or (char in "])" and -1 or 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    seen_default, fixed = False, []
    for part in parts:
        stripped = part.strip()
        if "=" in stripped:
            seen_default = True
        elif seen_default and stripped and not stripped.startswith("*") and ":" in stripped:
            part = part + " = ..."
        if stripped.startswith("*"):
            seen_default = False
        fixed.append(part)
    return head + sep + ",".join(fixed) + close + tail


def test_mypy_checks_our_tensorrt_code_against_the_stubs(tmp_path):
    stubs = _patched_stubs(tmp_path / "stubs")
    env_path = f"{stubs}"
    command = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
               "--no-error-summary", "--show-error-codes", "--cache-dir", str(tmp_path / "cache"),
               *map(str, TRT_MODULES)]
    result = subprocess.run(command, capture_output=True, text=True, env={"MYPYPATH": env_path, "PATH": ""})
    ours = [line for line in result.stdout.splitlines()
            if any(str(m) in line or m.name in line for m in TRT_MODULES)
            and re.search(r"\[(attr-defined|name-defined|call-arg|arg-type|union-attr|misc)\]", line)]
    assert "syntax" not in result.stdout, result.stdout[:2000]
    assert not ours, "\n".join(ours)


def test_mypy_would_catch_a_removed_api(tmp_path):
    """The check above can fail: the same mypy run flags TensorRT 8 code."""
    stubs = _patched_stubs(tmp_path / "stubs")
    old = tmp_path / "old_trt.py"
    old.write_text("import tensorrt as trt\n\n\ndef f(builder: trt.Builder, network: trt.INetworkDefinition,"
                   " engine: trt.ICudaEngine) -> None:\n    builder.build_engine(network, None)\n"
                   "    engine.get_binding_shape(0)\n")
    command = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--no-error-summary", "--show-error-codes",
               "--cache-dir", str(tmp_path / "cache"), str(old)]
    result = subprocess.run(command, capture_output=True, text=True, env={"MYPYPATH": str(stubs), "PATH": ""})
    assert result.stdout.count("[attr-defined]") >= 2, result.stdout


def test_an_engine_for_another_gpu_or_version_must_be_rebuilt(tmp_path):
    engine = tmp_path / "elnet_x0.engine"
    engine.write_bytes(b"engine")
    engine.with_suffix(".json").write_text(
        json.dumps({"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"})
    )
    here = GpuTarget("11.0.0", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(EngineMismatchError, match="rebuild"):
        check_engine_target(engine, here)
    assert check_engine_target(engine, GpuTarget("10.3.0", "Orin", "8.7"))["gpu"] == "Orin"
    engine.with_suffix(".json").unlink()
    with pytest.raises(EngineMismatchError, match="rebuild"):
        check_engine_target(engine, here)


@pytest.mark.skipif(_tensorrt_and_gpu() is None, reason="TensorRT and a GPU are present")
def test_trt_without_tensorrt_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "o", "--trt")
    assert code == 2 and "Traceback" not in output
    assert len([line for line in output.splitlines() if line.strip()]) == 1 and "error:" in output
    assert not (tmp_path / "o").exists()  # it failed before doing any work


@pytest.mark.gpu
@pytest.mark.skipif(_tensorrt_and_gpu() is not None, reason=f"needs TensorRT and a CUDA device: {_tensorrt_and_gpu()}")
def test_trt_engines_match_onnx_runtime(tiny_export, tmp_path):
    from fad_edge.artifact import ExportManifest
    from fad_edge.data.synthetic import SyntheticConfig, generate_session
    from fad_edge.export.tensorrt_build import EngineProfile, build_engines
    from fad_edge.runtime.ort_runner import OrtRunner
    from fad_edge.runtime.trt_runner import TrtRunner

    folder = tmp_path / "model"
    shutil.copytree(tiny_export, folder)
    manifest = ExportManifest.load(folder)
    build_engines(folder, manifest, EngineProfile(max_clips=16))
    manifest.save(folder)
    session = generate_session(2, SyntheticConfig(seconds=3.0, image_size=48))
    args = (session.frames[:61], session.audio, 16000)
    with OrtRunner(folder, "fp32") as ort_runner, TrtRunner(folder) as trt_runner:
        reference, ours = ort_runner.run(*args), trt_runner.run(*args)
    assert np.abs(ours - reference).max() <= 1e-2 * np.abs(reference).max()
