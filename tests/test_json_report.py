"""Reports are strict JSON: NaN and infinities become null, so any parser reads them."""

from __future__ import annotations

import json
import math

import pytest

from fad_edge.json_report import json_report_bytes


def refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_nan_and_infinities_become_null_at_any_depth_and_the_rest_is_kept():
    report = {"flops": math.nan, "rows": [{"p99": math.inf, "median": 0.0176}, (1, -math.inf)], "name": "fad"}
    text = json_report_bytes(report).decode()
    assert text.endswith("\n")
    assert json.loads(text, parse_constant=refuse) == {
        "flops": None, "rows": [{"p99": None, "median": 0.0176}, [1, None]], "name": "fad"}


def test_a_report_that_is_not_json_at_all_is_still_refused():
    with pytest.raises(TypeError):
        json_report_bytes({"path": object()})
