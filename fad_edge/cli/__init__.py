"""The `fad-edge` command line: a thin shell over the Python API, one module per group of commands."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import NoReturn, Protocol, cast

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
except ModuleNotFoundError as missing:  # the edge runtime install (`pip install fad-edge`) has no command line
    sys.stderr.write(f"fad-edge: the command line needs {missing.name}: pip install 'fad-edge[cli]'\n")
    raise SystemExit(2) from None

from fad_edge.backends import TRAIN_INSTALL
from fad_edge.errors import FadEdgeError

# What `pip install fad-edge` (the edge runtime) leaves out and `fad-edge[train]` brings; what to install for
# the modules that the edge command line (`fad-edge[cli]`) may need without training.
FULL_INSTALL_MODULES = {"torch", "scipy", "sklearn", "librosa", "soundfile", "av", "onnx", "onnxscript", "onnxslim",
                        "onnxsim", "onnxconverter_common", "matplotlib", "safetensors"}
EDGE_INSTALL_HINTS = {
    "soundfile": "pip install 'fad-edge[cli]'",
    # PyAV (about 100 MB with FFmpeg) reads only a video's own audio track
    "av": "pip install av, or give the speaker's audio as a file with --audio",
}

app = typer.Typer(
    help="fad-edge: listener facial motion by Facial Action Diffusion, from training to edge engines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help (click's): Rich's option tables cut long option names and defaults short with an
    # ellipsis in an 80-column terminal; click's layout wraps them instead.
    rich_markup_mode=None,
)
console = Console(stderr=True)

# typer exports BadParameter but not its bases, click's UsageError and ClickException (from typer's
# own copy of click in recent versions, the click package before): take them from its MRO.
_CLICK_CLASSES: dict[str, type[Exception]] = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
UsageError, ClickException = _CLICK_CLASSES["UsageError"], _CLICK_CLASSES["ClickException"]


class _ClickError(Protocol):
    """What the handler reads of a click exception."""

    exit_code: int
    ctx: typer.Context | None  # of usage errors: the command whose --help to point at

    def format_message(self) -> str: ...


def _register() -> None:
    # Each module imports its heavy dependencies inside its commands, so `--help` stays fast.
    from fad_edge.cli import (
        bench_commands,
        data_commands,
        demo_command,
        evaluate_commands,
        export_commands,
        model_commands,
        rules_command,
        sampler_commands,
    )

    for module in (data_commands, model_commands, evaluate_commands, rules_command, sampler_commands, export_commands,
                   bench_commands,
                   demo_command):
        module.register(app)


_register()


# FFmpeg's own log lines ("moov atom not found") would come before our one-line error naming the file;
# a user's own setting wins. Read when OpenCV first opens a video, so setting it here, before any, is enough.
FFMPEG_LOG_QUIET = ("OPENCV_FFMPEG_LOGLEVEL", "-8")


_TERMINATED = threading.Event()  # set by SIGTERM, which then unwinds the command as Ctrl-C does


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler, `kill`, torchrun stopping its workers) raised as Ctrl-C is: every clean-up that an
    interruption runs (staged folders removed, an earlier run put back) runs for it too."""
    _TERMINATED.set()
    raise KeyboardInterrupt


def _stopped() -> NoReturn:
    """How an interrupted command ends: 'terminated' and 143 after SIGTERM, 'interrupted' and 130 after Ctrl-C."""
    terminated = _TERMINATED.is_set()
    console.print(f"[yellow]{'terminated' if terminated else 'interrupted'}[/]")
    sys.exit(143 if terminated else 130)


def main() -> None:
    """Entry point: user-facing errors, bad options included, are one red line and exit code 2, never a traceback;
    the system's (a full disk, say) one red line and exit code 1; Ctrl-C exits with 130, SIGTERM with 143."""
    os.environ.setdefault(*FFMPEG_LOG_QUIET)
    _TERMINATED.clear()
    in_main_thread = threading.current_thread() is threading.main_thread()  # (where signal handlers can be set)
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        _run()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run() -> NoReturn:
    try:
        # Usage errors come back to us instead of typer's boxed panel; the name is the installed command's.
        result = app(prog_name="fad-edge", standalone_mode=False)
    except UsageError as error:
        usage = cast(_ClickError, error)
        if type(error).__name__ == "NoArgsIsHelpError":  # `fad-edge` alone: the help, as --help prints it
            app(prog_name="fad-edge", args=[*sys.argv[1:], "--help"], standalone_mode=False)
            sys.exit(usage.exit_code)
        hint = f" (see {usage.ctx.command_path} --help)" if usage.ctx is not None else ""
        _error_line(escape(usage.format_message() + hint))
        sys.exit(usage.exit_code)
    except ClickException as error:
        _error_line(escape(cast(_ClickError, error).format_message()))
        sys.exit(cast(_ClickError, error).exit_code)
    except typer.Abort:
        console.print("[yellow]aborted[/]")
        sys.exit(1)
    except FadEdgeError as error:
        _error_line(escape(str(error)))
        sys.exit(2)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in FULL_INSTALL_MODULES:
            raise
        install = EDGE_INSTALL_HINTS.get(missing, TRAIN_INSTALL)
        _error_line(f"this command needs {missing}, which the edge runtime install leaves out: {escape(install)}")
        sys.exit(2)
    except KeyboardInterrupt:
        _stopped()
    except OSError as error:  # the machine's, not the input's: a full disk, a folder where a file goes, ...
        _error_line(escape(os_error_text(error)))
        sys.exit(1)
    if result == 130:  # typer turns Ctrl-C in a command into exit code 130
        _stopped()
    sys.exit(result if isinstance(result, int) else 0)


def os_error_text(error: OSError) -> str:
    """'<what the system said>: <path>' (and the second path of a rename), else the error as Python words it."""
    if not error.strerror:
        return str(error)
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{error.strerror}: {' -> '.join(paths)}" if paths else error.strerror


def _error_line(markup: str) -> None:
    """One red line; `markup` must have every user-supplied part escaped."""
    console.print(f"[bold red]error:[/] {markup}", highlight=False, soft_wrap=True)
