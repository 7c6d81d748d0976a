"""The bench's rich tables: one style for every command that prints figures.

They fit an 80-column terminal (and a file, which rich renders 80 wide) without cutting a number
short: no vertical rules, one space between columns, no decimals from 1,000 up, numbers never
wrapped, and the text columns the ones that fold when a terminal is narrower still. This module
imports neither torch nor matplotlib, so the edge install's commands can use it.
"""

from __future__ import annotations

import math

from rich import box
from rich.table import Table


def number(value: float | None, decimals: int = 1) -> str:
    """Thousands separated; no decimals from 1000 up (they carry nothing there and cost width); "-" for none."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.{decimals}f}"


def figure_table(title: str | None = None) -> Table:
    # The box's blank vertical rule is the only space between columns: one character.
    return Table(title=title, box=box.SIMPLE_HEAD, padding=0, show_edge=False, title_justify="left")


def text_column(table: Table, header: str, min_width: int = 9) -> None:
    table.add_column(header, justify="left", overflow="fold", min_width=min_width)


def number_column(table: Table, header: str) -> None:
    table.add_column(header, justify="right", no_wrap=True)
