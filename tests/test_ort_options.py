"""The ONNX Runtime runner's session options: what each SessionTuning field sets, and the shared pool's rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import onnxruntime as ort
import pytest

from fad_edge.artifact import AUDIO_ENCODER, ELNET_EPS, ELNET_X0, VIDEO_ENCODER
from fad_edge.runtime.ort_runner import SessionTuning, graph_threads, session_options

ROOT = Path(__file__).resolve().parents[1]


def test_the_defaults_are_a_pool_per_session_that_does_not_spin_with_arena_and_patterns():
    options = session_options(2)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.use_per_session_threads and options.enable_cpu_mem_arena and options.enable_mem_pattern
    assert not options.enable_profiling


def test_each_tuning_field_reaches_its_option(tmp_path):
    tuning = SessionTuning(spinning=True, stop_spinning=True, memory_arena=False, memory_pattern=False)
    options = session_options(1, tuning, profile_prefix=str(tmp_path / "video_encoder"))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert options.enable_profiling and options.profile_file_prefix == str(tmp_path / "video_encoder")


@pytest.mark.slow
def test_the_shared_pool_runs_and_then_refuses_a_runner_with_its_own_pool(tiny_export):
    """In a process of its own: the shared pool is process-wide and cannot be undone."""
    code = textwrap.dedent(f"""
        import numpy as np
        from fad_edge.errors import BackendUnavailableError
        from fad_edge.runtime.ort_runner import OrtRunner, SessionTuning

        own = OrtRunner({str(tiny_export)!r})  # opened before the shared pool: keeps working
        shared = OrtRunner({str(tiny_export)!r}, tuning=SessionTuning(shared_pool=True))
        frames = np.random.default_rng(0).integers(0, 255, (16, 40, 40, 3), dtype=np.uint8)
        audio = np.zeros(16 * 533 + 800, np.float32)
        np.testing.assert_allclose(shared.run(frames, audio, 16000), own.run(frames, audio, 16000), atol=1e-5)
        for kwargs in ({{}}, {{"threads": 1, "tuning": SessionTuning(shared_pool=True)}}):
            try:
                OrtRunner({str(tiny_export)!r}, **kwargs)
            except BackendUnavailableError as error:
                print("refused:", error)
    """)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    refusals = completed.stdout.splitlines()
    assert len(refusals) == 2
    assert "open this runner shared too" in refusals[0] and "needs another process" in refusals[1]


def test_elnet_threads_caps_only_the_elnet_sessions():
    tuning = SessionTuning(elnet_threads=1)
    assert graph_threads(ELNET_X0, 2, tuning) == 1 and graph_threads(ELNET_EPS, 2, tuning) == 1
    assert graph_threads(VIDEO_ENCODER, 2, tuning) == 2 and graph_threads(AUDIO_ENCODER, 2, tuning) == 2
    assert graph_threads(ELNET_X0, 1, SessionTuning(elnet_threads=2)) == 1  # a cap, never more than asked
    assert graph_threads(ELNET_X0, 2, SessionTuning(elnet_threads=None)) == 2
    assert graph_threads(ELNET_X0, 2, SessionTuning(elnet_threads=1, shared_pool=True)) == 2  # one pool, one size


def test_a_runner_opens_its_sessions_with_their_threads(tiny_export):
    from fad_edge.runtime.ort_runner import OrtRunner

    runner = OrtRunner(tiny_export, threads=2, tuning=SessionTuning(elnet_threads=1))
    try:
        assert runner.video.get_session_options().intra_op_num_threads == 2
        assert runner.elnet(runner.elnet_graph).get_session_options().intra_op_num_threads == 1
    finally:
        runner.close()


def test_the_tensorrt_provider_runs_only_the_encoders_in_fp16(tiny_export, tmp_path):
    """ELNet's x0 from its noise estimate multiplies FP16 rounding by up to 2000 at t = 99: it stays FP32."""
    from fad_edge.artifact import AUDIO_ENCODER, ELNET_EPS, ELNET_X0, VIDEO_ENCODER
    from fad_edge.runtime.ort_runner import execution_providers

    folder = tmp_path / "export"  # the provider's cache folder is made beside the graphs
    shutil.copytree(tiny_export, folder)

    def fp16_enabled(graph: str, precision: str) -> bool:
        providers = execution_providers("ort-trt", precision, folder / f"{graph}.onnx", graph)
        name, options = providers[0]
        assert name == "TensorrtExecutionProvider" and options["trt_engine_cache_enable"]
        return options["trt_fp16_enable"]

    expected = {VIDEO_ENCODER: True, AUDIO_ENCODER: True, ELNET_X0: False, ELNET_EPS: False}
    # The engine cache is kept per ONNX Runtime version (and so per TensorRT), inside the export folder.
    options = execution_providers("ort-trt", "fp16", folder / "elnet_x0.onnx", ELNET_X0)[0][1]
    assert options["trt_engine_cache_path"] == str(folder / "ort_trt_cache" / f"onnxruntime-{ort.__version__}")
    from fad_edge.export.pipeline import check_export_target
    check_export_target(folder)  # the cache is the export's: a new export replaces it with the folder
    assert {graph: fp16_enabled(graph, "fp16") for graph in expected} == expected
    assert not any(fp16_enabled(graph, "fp32") for graph in expected)
