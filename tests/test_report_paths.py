"""Report files named from a path stem: a dot in the name is kept, a report's own suffix is replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from fad_edge.cli.validate import check_output_stem
from fad_edge.report_paths import report_path


@pytest.mark.parametrize(("stem", "suffix", "expected"), [
    ("runs/eval", ".json", "runs/eval.json"),
    ("runs/lr1.5e-3", ".json", "runs/lr1.5e-3.json"),  # with_suffix would write runs/lr1.json
    ("runs/v0.2", ".md", "runs/v0.2.md"),
    ("runs/eval.json", ".md", "runs/eval.md"),  # the report's own suffix given: replaced
    ("runs/eval.PNG", ".json", "runs/eval.json"),
    ("runs/eval.json", "_steps", "runs/eval_steps"),
])
def test_report_path(stem, suffix, expected):
    assert report_path(Path(stem), suffix) == Path(expected)


def test_two_stems_that_differ_after_a_dot_never_share_a_file(tmp_path):
    first = check_output_stem(tmp_path / "lr1.5e-3", (".json", ".md"))
    second = check_output_stem(tmp_path / "lr1.0e-3", (".json", ".md"))
    assert not set(first) & set(second)


def test_a_folder_given_as_the_stem_is_refused_not_written_beside(tmp_path):
    (tmp_path / "reports").mkdir()
    with pytest.raises(typer.BadParameter, match="is a folder; give a path stem inside it"):
        check_output_stem(tmp_path / "reports", (".json", ".md"))
    assert not (tmp_path / "reports.json").exists()
