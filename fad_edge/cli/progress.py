"""Rich progress bars for long work."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:  # the report's module needs torch; a reporter only reads it
    from fad_edge.prosody_pretraining import PretrainReport


def make_progress(console: Console, transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def status_reporter(console: Console, progress: Progress, task: TaskID) -> Callable[[str], None]:
    """A `say` that shows each message as the task's status, and where the console is no terminal (a log, a
    pipe) also prints it as a line with the seconds since the first message, so a log says where time went."""
    started: list[float] = []

    def say(message: str) -> None:
        progress.update(task, status=message)
        if not console.is_terminal:
            now = time.perf_counter()
            started[:] = started or [now]
            console.print(f"[{now - started[0]:6.1f} s] {message}", markup=False, highlight=False)

    return say


class RichTrainReporter:
    """Shows a progress bar with the running loss and prints one line per epoch."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = make_progress(console)
        self.task: TaskID | None = None
        self.smoothed: float | None = None
        self.mark: tuple[float, int] = (0.0, 0)  # (time, step) at the last epoch line: its rate covers the epoch

    def pretrained(self, report: PretrainReport) -> None:
        self.console.print(
            f"pretrained the {report.part}: {report.steps} steps, loss {report.first_loss:.3f} -> "
            f"{report.last_loss:.3f} ({report.seconds:.0f} s)"
        )

    def encoded_video(self, frames: int, seconds: float) -> None:
        self.console.print(f"encoded the frozen video encoder's features of {frames} frames once ({seconds:.0f} s)")

    def start(self, total_steps: int, done: int) -> None:
        self.mark = (time.perf_counter(), done)
        self.progress.start()
        self.task = self.progress.add_task("training", total=total_steps, completed=done, status="")

    def step(self, step: int, loss: float) -> None:
        self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        assert self.task is not None, "start() comes before step()"
        self.progress.update(self.task, completed=step, status=f"loss {self.smoothed:.4f}")

    def epoch(self, epoch: int, record: dict) -> None:
        """One line, or its fields wrapped whole below it past the console's width (at most 80 in a log).

        val L2 is the 1-step sampler's, as evaluation's default.
        """
        now, (then, done) = time.perf_counter(), self.mark
        rate = (record["step"] - done) / (now - then) if now > then else 0.0
        self.mark = (now, record["step"])
        part = "" if record.get("whole_epoch", True) else " (part)"
        fields = [f"loss {record['train_loss']:.4f}", f"val loss {record['val_loss']:.4f}",
                  f"val L2 {record['val_l2']:.4f}", f"{rate:.3g} steps/s"]
        lines = [f"epoch {epoch}{part}: step {record['step']}"]
        for text in fields:
            if len(lines[-1]) + 2 + len(text) > self.progress.console.width:
                lines.append("  " + text)
            else:
                lines[-1] += "  " + text
        for line in lines:
            self.progress.console.print(line, markup=False, highlight=False)

    def note(self, message: str) -> None:
        self.progress.console.print(f"note: {message}", style="yellow", markup=False, highlight=False)

    def finish(self) -> None:
        self.progress.stop()
