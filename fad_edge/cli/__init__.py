"""The `fad-edge` command line: a thin shell over the Python API, one module per group of commands."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from fad_edge.errors import FadEdgeError

app = typer.Typer(
    help="fad-edge: listener facial motion by Facial Action Diffusion, from training to edge engines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def _register() -> None:
    # Imported here so that `fad_edge.cli` can be imported without pulling every command's deps twice.
    from fad_edge.cli import data_commands, demo_command, model_commands

    for module in (data_commands, model_commands, demo_command):
        module.register(app)
    for optional in ("evaluate_commands", "export_commands", "bench_commands", "stream_commands"):
        try:
            module = __import__(f"fad_edge.cli.{optional}", fromlist=["register"])
        except ModuleNotFoundError as error:
            if error.name != f"fad_edge.cli.{optional}":
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    """Entry point: user-facing errors become one red line and exit code 2, never a traceback."""
    try:
        app()
    except FadEdgeError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
