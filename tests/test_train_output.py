"""What a training run may write into and continue from: a used folder, --overwrite and --resume refusals."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_dataset, tiny_run_config

from fad_edge.atomic import STAGING_MARK, OutputInUseError
from fad_edge.checkpoint import load_checkpoint
from fad_edge.data.synthetic_dataset import write_synthetic_dataset
from fad_edge.digests import file_sha256
from fad_edge.errors import FadEdgeError
from fad_edge.train import TrainConfig, train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("runs"))


def _config(data: Path, out: Path, **changes) -> TrainConfig:
    return tiny_run_config(data, out, {}, **{"epochs": 2, **changes})


def test_a_used_output_folder_needs_resume_or_overwrite(data, tmp_path):
    out = tmp_path / "run"
    (out / "best").mkdir(parents=True)
    (out / "best" / "stale.txt").write_text("from an earlier run")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FadEdgeError, match=re.escape(f"{out}: the output folder is not empty")):
        train(_config(data, out, max_steps=1))
    with pytest.raises(FadEdgeError, match="give one of them"):
        train(_config(data, out), resume=True, overwrite=True)
    with pytest.raises(FadEdgeError, match="--out is a file"):
        train(_config(data, out / "notes.txt"))
    with pytest.raises(FadEdgeError, match=re.escape(f"{out / 'best'}: not a checkpoint of fad-edge")):
        train(_config(data, out, max_steps=1), overwrite=True)  # best/ holds no model.json: not ours to delete
    assert (out / "best" / "stale.txt").exists()
    (out / "best" / "stale.txt").unlink()
    train(_config(data, out / "earlier", max_steps=1))
    shutil.copytree(out / "earlier" / "best", out / "best", dirs_exist_ok=True)  # an earlier run's best model
    result = train(_config(data, out, max_steps=1), overwrite=True)
    assert result.steps == 1 and (out / "best" / "model.json").exists() and not (out / ".previous-run").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only what a run writes is replaced


def test_overwrite_keeps_the_earlier_run_when_the_new_one_is_refused_for_its_input(data, tmp_path):
    out = tmp_path / "run"
    train(_config(data, out, max_steps=1))
    before = load_checkpoint(out / "best").model.state_dict()
    with pytest.raises(FadEdgeError, match="splits.json"):
        train(_config(tmp_path / "no-such-data", out, max_steps=1), overwrite=True)
    with pytest.raises(FadEdgeError, match="fewer than one batch of 10000; lower --batch-size"):
        train(_config(data, out, max_steps=1, batch_size=10000), overwrite=True)
    after = load_checkpoint(out / "best").model.state_dict()
    assert (out / "checkpoint").exists() and all(torch.equal(before[k], after[k]) for k in before)


class _StopAtStep:
    """A reporter whose run is interrupted (Ctrl-C) at a step, before that step's checkpoint is saved."""

    def __init__(self, stop: int) -> None:
        self.stop = stop

    def __getattr__(self, name):
        return lambda *args: None

    def step(self, step: int, loss: float) -> None:
        if step == self.stop:
            raise KeyboardInterrupt


def _weights(folder: Path) -> dict:
    return load_checkpoint(folder).model.state_dict()


def test_an_overwrite_run_stopped_before_its_first_save_puts_the_earlier_run_back(data, tmp_path):
    out = tmp_path / "run"
    train(_config(data, out, max_steps=2))
    before = {name: _weights(out / name) for name in ("best", "checkpoint")}
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, out, max_steps=2, checkpoint_every=2), _StopAtStep(1), overwrite=True)
    after = {name: _weights(out / name) for name in ("best", "checkpoint")}
    assert not (out / ".previous-run").exists()
    assert all(torch.equal(before[name][key], after[name][key]) for name in before for key in before[name])
    # stopped after its first save, the new run has replaced the earlier one: --resume continues the new run
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, out, max_steps=3, checkpoint_every=1), _StopAtStep(2), overwrite=True)
    assert not (out / ".previous-run").exists()
    assert train(_config(data, out, max_steps=3, checkpoint_every=1), resume=True).steps == 3


def test_an_overwrite_run_killed_before_its_first_save_is_undone_at_the_next_start(data, tmp_path):
    from fad_edge.train_setup import set_aside_previous_run

    out = tmp_path / "run"
    train(_config(data, out, max_steps=2))
    before = _weights(out / "checkpoint")
    set_aside_previous_run(out)  # where a killed --overwrite run leaves the folder
    (out / "checkpoint.new").mkdir()  # with its first save half-written
    (out / "checkpoint.new" / STAGING_MARK).touch()
    with pytest.raises(FadEdgeError, match="not empty"):
        train(_config(data, out, max_steps=3))  # the earlier run is back, so the folder is in use
    assert not (out / ".previous-run").exists() and not (out / "checkpoint.new").exists()
    assert all(torch.equal(before[key], value) for key, value in _weights(out / "checkpoint").items())
    assert train(_config(data, out, max_steps=3), resume=True).steps == 3


def test_resume_refuses_a_folder_that_holds_other_files_but_no_run(data, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("mine")
    with pytest.raises(FadEdgeError, match="holds no run to resume"):
        train(_config(data, out, max_steps=1), resume=True)
    assert train(_config(data, tmp_path / "new", max_steps=1), resume=True).steps == 1  # a new folder: a new run


def test_resume_refuses_another_run_and_a_run_it_cannot_continue(data, tmp_path):
    out = tmp_path / "run"
    train(_config(data, out, max_steps=2))
    for change, message in (({"batch_size": 4}, "--batch-size 8, not 4"), ({"seed": 5}, "--seed 0, not 5"),
                            ({"lr": 1e-3}, "--lr 0.002, not 0.001")):
        with pytest.raises(FadEdgeError, match=re.escape(message)):
            train(_config(data, out, max_steps=3, **change), resume=True)
    other = tmp_path / "other"
    write_synthetic_dataset(other, sessions=4, seconds=6.0, seed=4, image_size=32)
    with pytest.raises(FadEdgeError, match="trained on other data"):
        train(_config(other, out, max_steps=3), resume=True)
    state, record = out / "checkpoint" / "train_state.json", out / "checkpoint" / "model.json"
    saved, recorded = state.read_text(), record.read_text()
    state.write_text(saved.replace('"step": 2', '"step": 1'))  # an edit the hash catches
    with pytest.raises(FadEdgeError, match="train_state.json: SHA-256 .* does not match"):
        train(_config(data, out, max_steps=3), resume=True)
    state.write_text(saved.replace('"history"', '"was history"'))  # and with its hash recorded anew
    record.write_text(json.dumps({**json.loads(recorded), "train_state_json_sha256": file_sha256(state)}))
    with pytest.raises(FadEdgeError, match="training state is malformed"):
        train(_config(data, out, max_steps=3), resume=True)
    state.write_text(saved)
    record.write_text(recorded)
    shutil.rmtree(out / "checkpoint")
    with pytest.raises(FadEdgeError, match="holds a best model but no checkpoint/ to resume from"):
        train(_config(data, out, max_steps=3), resume=True)
    assert train(_config(data, out, max_steps=3, seed=4294967295), overwrite=True).steps == 3  # the largest seed


def test_the_progress_display_ends_however_the_run_ends(data, tmp_path):
    class Recording(_StopAtStep):
        finished = False

        def finish(self) -> None:
            self.finished = True

    reporter = Recording(1)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data, tmp_path / "run", max_steps=2), reporter)
    assert reporter.finished  # the terminal's cursor is shown again after an error or Ctrl-C


def test_the_summary_keeps_long_paths_whole_and_counts_the_steps_this_call_ran(data, tmp_path, monkeypatch, capsys):
    from helpers import run_cli

    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "a_rather_long_experiment_folder_name" / "sweep_lr_0.002_batch_8_seed_0_tiny_run"
    args = ("train", "--data", data, "--out", out, "--preset", "tiny", "--epochs", "1", "--max-steps", "2",
            "--batch-size", "8", "--threads", "1", "--device", "cpu")
    code, output = run_cli(monkeypatch, capsys, *args)
    assert code == 0, output
    assert f"latest: {out / 'checkpoint'}; best: {out / 'best'}" in output  # one line, however long
    code, output = run_cli(monkeypatch, capsys, *args, "--resume")
    assert code == 0 and "trained 0 steps, to step 2," in output, output


def test_a_full_disk_while_saving_is_the_machines_error_and_keeps_the_earlier_checkpoint(data, tmp_path, monkeypatch,
                                                                                        capsys):
    from helpers import run_cli
    from safetensors import SafetensorError

    from fad_edge import checkpoint

    out = tmp_path / "run"
    args = ("train", "--data", data, "--out", out, "--preset", "tiny", "--epochs", "1", "--batch-size", "8",
            "--threads", "1", "--device", "cpu")
    assert run_cli(monkeypatch, capsys, *args, "--max-steps", "1")[0] == 0
    before = (out / "checkpoint" / "model.safetensors").read_bytes()

    def full_disk(*_args, **_kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    code, output = run_cli(monkeypatch, capsys, *args, "--max-steps", "2", "--resume")
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "could not be written" in lines[0] and "Traceback" not in output
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == before


def test_resuming_with_another_model_config_names_what_differs(data, tmp_path):
    out = tmp_path / "run"
    train(_config(data, out, max_steps=1))
    with pytest.raises(FadEdgeError, match=re.escape("another model config (unet_dim 16, not 24)")):
        train(tiny_run_config(data, out, {"unet_dim": 24}, epochs=2, max_steps=2), resume=True)


def test_overwrite_refuses_a_checkpoint_new_folder_that_another_run_is_writing_or_fad_edge_did_not_make(data,
                                                                                                       tmp_path):
    from fad_edge.atomic import staged_folder

    out = tmp_path / "run"
    train(_config(data, out, max_steps=1))
    # A live save of another run, stopped afterwards so that nothing it wrote lands.
    with pytest.raises(KeyboardInterrupt), staged_folder(out / "checkpoint"):
        with pytest.raises(OutputInUseError, match="another run is writing"):
            train(_config(data, out, max_steps=1), overwrite=True)
        raise KeyboardInterrupt
    (out / "checkpoint.new").mkdir()
    (out / "checkpoint.new" / "notes.txt").write_text("mine")
    with pytest.raises(OutputInUseError, match="not one fad-edge left"):
        train(_config(data, out, max_steps=1), overwrite=True)
    assert (out / "checkpoint.new" / "notes.txt").read_text() == "mine"
    assert (out / "checkpoint" / "model.json").exists() and not (out / ".previous-run").exists()
