"""Fixtures shared across test modules (built once per session: exports take tens of seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """A tiny model (one context clip, the frame-local audio encoder) exported to FP32, INT8 and FP16 ONNX."""
    from helpers import tiny_checkpoint  # here: torch is slow to import and most tests need no model

    from fad_edge.export.pipeline import ExportOptions, export_model

    root = tmp_path_factory.mktemp("export")
    checkpoint = tiny_checkpoint(root / "checkpoint", context_clips=1, audio_window_frames=1,
                                 audio_context_frames=8)
    export_model(ExportOptions(checkpoint=checkpoint, out=root / "model", int8=True, fp16=True,
                               check_sessions=1, check_seconds=3.0, calibration_sessions=1, calibration_seconds=3.0,
                               threads=1))
    return root / "model"
