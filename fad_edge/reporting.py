"""How long-running work reports what it is doing: one status line at a time, shown by the caller."""

from __future__ import annotations

from collections.abc import Callable

Say = Callable[[str], None]  # receives a short status message ("tracing video_encoder", "timing FAD ...")


def silent(_: str) -> None:
    """A Say that shows nothing (the default for library calls)."""
