"""The named samplers on every backend that runs here: ONNX Runtime gives the PyTorch motion for the same
seed with the "diverse" sampler (folded one-step graph or the noise predictor's loop), and "mean" is the
default, bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fad_edge.artifact import ELNET_EPS, ELNET_X0, ExportManifest
from fad_edge.checkpoint import load_checkpoint
from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.errors import FadEdgeError
from fad_edge.runtime.ort_runner import OrtRunner
from fad_edge.runtime.select import open_runner
from fad_edge.runtime.stream import ListenerStream
from fad_edge.runtime.torch_runner import TorchRunner
from fad_edge.sampling import SamplerSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session():
    return generate_session(6, SyntheticConfig(seconds=24 / 30 + 0.5, image_size=48))


def _args(session, frames: int = 24):
    return session.frames[:frames], session.audio[: frames * 16000 // 30 + 533], 16000


def calibrated_export(tiny_export: Path, folder: Path, **fields) -> Path:
    """A copy of the tiny export whose model config holds other sampler values (as tune-sampler writes them)."""
    shutil.copytree(tiny_export, folder)
    manifest = ExportManifest.load(folder)
    manifest.config = {**manifest.config, **fields}
    manifest.save(folder)
    return folder


def _close(ours: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def test_one_noisy_step_from_the_models_start_step_runs_the_folded_graph(tiny_export, tmp_path, session):
    """elnet_x0 takes the start state as an input: a noisy one serves the diverse sampler in one step."""
    folder = calibrated_export(tiny_export, tmp_path / "model", sample_start_noise=0.0)  # mean start for "mean"
    config = ExportManifest.load(folder).model_config
    model = load_checkpoint(tiny_export.parent / "checkpoint").model
    runner = OrtRunner(folder, "fp32", threads=1, seed=3, sampler="diverse")
    assert runner.settings == SamplerSettings.named("diverse", config) and runner.settings.start_noise == 1.0
    assert runner.elnet_graph == ELNET_X0 and set(runner._elnet) == {ELNET_X0}
    ours = runner.run(*_args(session))
    _close(ours, TorchRunner(model, settings=SamplerSettings.named("diverse", config), seed=3).run(*_args(session)))
    mean = OrtRunner(folder, "fp32", threads=1, seed=3).run(*_args(session))
    np.testing.assert_array_equal(mean, OrtRunner(folder, "fp32", threads=1, seed=4).run(*_args(session)))
    assert np.abs(ours - mean).max() > 1e-3  # the noisy start is really used
    assert np.abs(OrtRunner(folder, "fp32", threads=1, seed=4, sampler="diverse").run(*_args(session)) - ours).max() \
        > 1e-3  # and drawn from the seed


@pytest.mark.parametrize("fields", [
    dict(diverse_start_step=50),  # one step, but not the step elnet_x0 folds: the noise predictor
    dict(diverse_steps=3),
    dict(diverse_start_step=60, diverse_steps=4, diverse_start_noise=0.7, diverse_temperature=0.5),
    dict(diverse_steps=3, diverse_rotation_noise=0.5),  # read from the export's manifest by every runner
])
def test_ort_gives_the_torch_motion_for_the_diverse_sampler(tiny_export, tmp_path, session, fields):
    folder = calibrated_export(tiny_export, tmp_path / "model", **fields)
    config = ExportManifest.load(folder).model_config
    model = load_checkpoint(tiny_export.parent / "checkpoint").model
    with open_runner(folder, "ort", "fp32", seed=1, threads=1, sampler="diverse") as runner:
        assert isinstance(runner, OrtRunner) and runner.elnet_graph == ELNET_EPS
        ours = runner.run(*_args(session))
    reference = TorchRunner(model, settings=SamplerSettings.named("diverse", config), seed=1).run(*_args(session))
    _close(ours, reference)
    again = OrtRunner(folder, "fp32", threads=1, seed=2, sampler="diverse").run(*_args(session))
    assert np.abs(again - ours).max() > 1e-3  # another seed, other noise: the match above is not trivial


def test_mean_is_the_default_bit_for_bit(tiny_export, session):
    model = load_checkpoint(tiny_export.parent / "checkpoint").model
    for steps in (None, 3):
        default = OrtRunner(tiny_export, "fp32", threads=1, seed=2, steps=steps).run(*_args(session))
        named = OrtRunner(tiny_export, "fp32", threads=1, seed=2, steps=steps, sampler="mean").run(*_args(session))
        np.testing.assert_array_equal(default, named)
        np.testing.assert_array_equal(TorchRunner(model, steps, seed=2).run(*_args(session)),
                                      TorchRunner(model, steps, seed=2, sampler="mean").run(*_args(session)))


def test_elnet_in_batches_of_clips_gives_the_same_motion(tiny_export, session):
    """A GPU provider's profile stops at a number of clips per call; the noise is drawn for all clips at once."""
    for sampler in ("mean", "diverse"):
        whole = OrtRunner(tiny_export, "fp32", threads=1, seed=4, sampler=sampler).run(*_args(session))
        batched = OrtRunner(tiny_export, "fp32", threads=1, seed=4, sampler=sampler)
        batched.clip_batch = 2  # 3 clips: calls of 2 and 1
        sizes: list[int] = []
        opened = batched.elnet

        class Counted:
            def __init__(self, session):
                self.session = session

            def run(self, outputs, feeds):
                sizes.append(len(feeds["condition"]))
                return self.session.run(outputs, feeds)

        batched.elnet = lambda graph: Counted(opened(graph))  # type: ignore[method-assign]
        np.testing.assert_allclose(batched.run(*_args(session)), whole, rtol=0, atol=1e-6)
        assert sizes and set(sizes) == {2, 1}


def test_settings_replaced_after_opening_open_the_graph_they_need(tiny_export, tmp_path, session):
    folder = calibrated_export(tiny_export, tmp_path / "model", diverse_start_step=40, diverse_steps=2)
    config = ExportManifest.load(folder).model_config
    model = load_checkpoint(tiny_export.parent / "checkpoint").model
    runner = OrtRunner(folder, "fp32", threads=1, seed=5)
    assert set(runner._elnet) == {ELNET_X0}
    runner.settings = SamplerSettings.named("diverse", config)
    ours = runner.run(*_args(session))
    assert set(runner._elnet) == {ELNET_X0, ELNET_EPS}
    _close(ours, TorchRunner(model, settings=SamplerSettings.named("diverse", config), seed=5).run(*_args(session)))


def test_the_stream_and_open_runner_take_a_sampler_by_name(tiny_export, tmp_path):
    with pytest.raises(FadEdgeError, match="unknown sampler 'random'"):
        open_runner(tmp_path / "nowhere", sampler="random")  # refused before anything is read
    folder = calibrated_export(tiny_export, tmp_path / "model", diverse_steps=2)
    with ListenerStream.from_export(folder, threads=1, sampler="diverse") as stream:
        assert stream.runner.settings == SamplerSettings.named("diverse", stream.config)
        assert stream.runner.settings.steps == 2


def test_inputs_not_shaped_as_prepare_inputs_makes_them_are_refused_and_a_closed_runner_says_so(tiny_export):
    """A session sees only what it is fed: 12 frames would be cut to 8, 0..255 images read as very bright."""
    from fad_edge.data.inputs import SpeakerInputs, prepare_inputs

    runner = OrtRunner(tiny_export, threads=1)
    config = runner.config
    size, window = config.image_size, config.audio_window

    def inputs(frames: int, n_frames: int, scale: float = 1.0, dtype=np.float32) -> SpeakerInputs:
        images = np.full((frames, 3, size, size), 0.5 * scale).astype(dtype)
        return SpeakerInputs(images, np.zeros((frames, 1, window, config.n_mels), np.float32), n_frames)

    assert runner.run_inputs(inputs(16, 12)).shape == (12, 56)
    # Inputs made from uint8 pixels are within [0, 1] by construction: they skip the scan, hand-built ones do not.
    made = prepare_inputs(np.zeros((12, 20, 20, 3), np.uint8), np.zeros(6400, np.float32), 16000, size,
                          config.audio_window_frames, config.n_mels)
    assert made.pixels_in_range and not inputs(16, 12).pixels_in_range
    assert runner.run_inputs(made).shape == (12, 56)
    for bad, message in ((inputs(12, 12), "whole clips"), (inputs(16, 3), "whole clips"),
                         (inputs(16, 16, 400.0), r"\[0, 1\]"), (inputs(16, 16, dtype=np.uint8), "float")):
        with pytest.raises(FadEdgeError, match=message):
            runner.run_inputs(bad)
    runner.close()
    with pytest.raises(FadEdgeError, match="closed"):
        runner.run_inputs(inputs(16, 12))
    with pytest.raises(FadEdgeError, match="closed"):
        runner.elnet(runner.elnet_graph)
