"""The bench's rich tables: one style for every command that prints figures.

They fit an 80-column terminal (and a file, which rich renders 80 wide) without cutting a number
short: no vertical rules, one space between columns, no decimals from 1,000 up, numbers never
wrapped, and the text columns the ones that fold when a terminal is narrower still. Narrower than
the numbers need (rich would crop them silently), `print_table` prints each row as stacked
`header: value` lines instead; it serves any table whose number columns are `no_wrap` (the
evaluation's boxed tables too). This module imports neither torch nor matplotlib, so the edge
install's commands can use it.
"""

from __future__ import annotations

import math

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

TEXT_MIN_WIDTH = 9  # a text column folds no narrower than this unless it asks for more


def number(value: float | None, decimals: int = 1) -> str:
    """Thousands separated; no decimals from 1000 up (they carry nothing there and cost width); "-" for none."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.{decimals}f}"


def figure_table(title: str | None = None) -> Table:
    # The box's blank vertical rule is the only space between columns: one character.
    return Table(title=title, box=box.SIMPLE_HEAD, padding=0, show_edge=False, title_justify="left")


def text_column(table: Table, header: str, min_width: int = TEXT_MIN_WIDTH) -> None:
    table.add_column(header, justify="left", overflow="fold", min_width=min_width)


def number_column(table: Table, header: str) -> None:
    table.add_column(header, justify="right", no_wrap=True)


def _plain(cell: object) -> str:
    """A cell's text without its markup ("[dim]torch[/dim]" -> "torch")."""
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)


def _width_needed(column: Column) -> int:
    """A number column's widest line (rich crops, never folds, them); a text column's fold width."""
    if not column.no_wrap:
        return column.min_width or 1
    lines = [line for cell in (column.header, *column.cells) for line in _plain(cell).splitlines()]
    return max(map(cell_len, lines), default=0)


def _frame_width(table: Table) -> int:
    """What rich adds to the cells' own widths: rules, edges and padding. Computed from the table's public
    settings the way rich lays them out, since rich exposes no measure of it."""
    count = len(table.columns)
    width = (count - 1 + (2 if table.show_edge else 0)) if table.box else 0
    _, right, _, left = table.padding
    for index in range(count):
        pad_left, pad_right = (0, abs(left - right)) if table.collapse_padding else (left, right)
        if not table.pad_edge:
            pad_left = 0 if index == 0 else pad_left
            pad_right = 0 if index == count - 1 else pad_right
        width += pad_left + pad_right
    return width


def min_width(table: Table) -> int:
    """The narrowest console this table prints in without cutting a number: every number column at its widest
    cell, every text column folded to its minimum, plus the table's rules and padding."""
    return sum(_width_needed(column) for column in table.columns) + _frame_width(table)


def stacked_lines(table: Table) -> list[str]:
    """The table as lines: its title, then per row its first cell (lines joined by ", ") and an indented
    `header: value` line per other non-empty cell. Nothing is cut at any width."""
    lines = [] if table.title is None else [_plain(table.title)]
    headers = [" ".join(_plain(column.header).split()).replace(" /", "/") for column in table.columns]  # nodes/run
    for row in zip(*(column.cells for column in table.columns)):
        label, *values = (_plain(cell) for cell in row)
        indent = label[: len(label) - len(label.lstrip())]
        lines.append(indent + ", ".join(part.strip() for part in label.splitlines() if part.strip()))
        lines.extend(f"{indent}  {header}: {value.strip()}" for header, value in zip(headers[1:], values)
                     if value.strip())
    return lines


def print_table(console: Console, table: Table) -> None:
    """Print the table where the console is wide enough for its numbers, else its stacked lines."""
    if console.width >= min_width(table):
        console.print(table)
        return
    for line in stacked_lines(table):
        console.print(line, highlight=False, markup=False)
