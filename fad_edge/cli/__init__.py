"""The `fad-edge` command line: a thin shell over the Python API, one module per group of commands."""

from __future__ import annotations

import sys

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
except ModuleNotFoundError as missing:  # the edge runtime install (`pip install fad-edge`) has no command line
    sys.stderr.write(f"fad-edge: the command line needs {missing.name}: pip install 'fad-edge[cli]'\n")
    raise SystemExit(2) from None

from fad_edge.backends import TRAIN_INSTALL
from fad_edge.errors import FadEdgeError

# What `pip install fad-edge` (the edge runtime) leaves out and `fad-edge[train]` brings.
FULL_INSTALL_MODULES = {"torch", "scipy", "sklearn", "librosa", "soundfile", "av", "onnx", "onnxscript", "onnxslim",
                        "onnxsim", "onnxconverter_common", "matplotlib", "safetensors"}

app = typer.Typer(
    help="fad-edge: listener facial motion by Facial Action Diffusion, from training to edge engines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def _register() -> None:
    # Each module imports its heavy dependencies inside its commands, so `--help` stays fast.
    from fad_edge.cli import (
        bench_commands, data_commands, demo_command, evaluate_commands, export_commands, model_commands,
    )

    for module in (data_commands, model_commands, evaluate_commands, export_commands, bench_commands, demo_command):
        module.register(app)


_register()


def main() -> None:
    """Entry point: user-facing errors become one red line and exit code 2, never a traceback."""
    try:
        app()
    except FadEdgeError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] not in FULL_INSTALL_MODULES:
            raise
        console.print(f"[bold red]error:[/] this command needs {error.name.split('.')[0]}, which the edge runtime "
                      f"install leaves out: {escape(TRAIN_INSTALL)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
