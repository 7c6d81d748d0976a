"""Reports as strict JSON: what any parser reads, not only Python's."""

from __future__ import annotations

import json
import math


def without_nan(value: object) -> object:
    """`value` with every NaN or infinite float as None: JSON has neither, and strict parsers (a browser's,
    jq's) refuse the `NaN` and `Infinity` tokens Python's json module writes by default."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def json_report_bytes(value: object) -> bytes:
    """`value` as indented strict JSON, UTF-8, ending with a newline."""
    return (json.dumps(without_nan(value), indent=2, allow_nan=False) + "\n").encode()
