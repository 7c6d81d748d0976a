"""Rich progress bars for long work."""

from __future__ import annotations

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


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class RichTrainReporter:
    """Shows a progress bar with the running loss and prints one line per epoch."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = make_progress(console)
        self.task: TaskID | None = None
        self.smoothed: float | None = None

    def start(self, total_steps: int, done: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("training", total=total_steps, completed=done, status="")

    def step(self, step: int, loss: float) -> None:
        self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        assert self.task is not None, "start() comes before step()"
        self.progress.update(self.task, completed=step, status=f"loss {self.smoothed:.4f}")

    def epoch(self, epoch: int, record: dict) -> None:
        self.progress.console.print(
            f"epoch {epoch}: step {record['step']}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  val L2 (1 step) {record['val_l2']:.4f}"
        )

    def finish(self) -> None:
        self.progress.stop()
