"""Where a report named by a path stem goes: STEM.json, STEM.md, STEM.png.

Why not `Path.with_suffix`: it takes any dot in the name for a suffix, so `--out runs/lr1.5e-3` would write
`runs/lr1.json` and the next run's `--out runs/lr1.0e-3` would overwrite it.
"""

from __future__ import annotations

from pathlib import Path

REPORT_SUFFIXES = (".json", ".md", ".png")


def report_path(stem: Path, suffix: str) -> Path:
    """STEM with `suffix` added; a stem that already ends in a report's suffix (`eval.json`) has it replaced."""
    stem = Path(stem)
    if stem.suffix.lower() in REPORT_SUFFIXES:
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + suffix)
