"""`fad-edge synth`: write a synthetic dyadic dataset."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def synth(
    out: Path = typer.Option(..., help="Folder to write the dataset into."),
    sessions: int = typer.Option(20, min=3, help="Number of sessions (split about 70/15/15)."),
    seconds: float = typer.Option(40.0, min=2.0, help="Length of each session in seconds."),
    seed: int = typer.Option(0, help="Seed: the same seed writes the same coefficient files."),
    image_size: int = typer.Option(128, min=32, help="Side of the written speaker video."),
) -> None:
    """Write a synthetic dyadic dataset (speaker video + audio, listener motion) in our layout."""
    from fad_edge.data.synthetic import write_synthetic_dataset

    with console.status(f"writing {sessions} synthetic sessions of {seconds:g} s"):
        splits = write_synthetic_dataset(out, sessions=sessions, seconds=seconds, seed=seed, image_size=image_size)
    counts = ", ".join(f"{name} {len(names)}" for name, names in splits.items())
    console.print(f"wrote {out} ({counts})")


def register(app: typer.Typer) -> None:
    app.command()(synth)
