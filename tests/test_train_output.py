"""What a training run may write into and continue from: a used folder, --overwrite and --resume refusals."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import tiny_dataset, tiny_run_config

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
    result = train(_config(data, out, max_steps=1), overwrite=True)
    assert result.steps == 1 and (out / "best" / "model.json").exists() and not (out / "best" / "stale.txt").exists()
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
