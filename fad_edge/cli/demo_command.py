"""`fad-edge demo`: the main job end to end on synthetic data, on the CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _held_out_session(data: Path) -> Path:
    from fad_edge.data.layout import list_sessions

    return list_sessions(data, "test")[0]


def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for everything the demo writes."),
    sessions: int = typer.Option(24, min=3, help="Synthetic sessions to generate."),
    seconds: float = typer.Option(40.0, min=4.0, help="Length of each synthetic session."),
    epochs: int = typer.Option(8, min=1, help="Training epochs of the small preset."),
    preset: str = typer.Option("small", help="Model preset."),
    seed: int = typer.Option(0),
) -> None:
    """Synthesize data, train a small model, generate on a held-out session, export, run and bench."""
    from fad_edge.cli.progress import RichTrainReporter
    from fad_edge.data.layout import load_session
    from fad_edge.data.synthetic import write_synthetic_dataset
    from fad_edge.generate import generate_files
    from fad_edge.runtime.torch_runner import TorchRunner
    from fad_edge.train import TrainConfig, train

    started = time.time()
    outputs: list[tuple[str, str]] = []
    data = out / "data"
    if not (data / "splits.json").exists():
        with console.status(f"[1/4] writing {sessions} synthetic sessions of {seconds:g} s"):
            write_synthetic_dataset(data, sessions=sessions, seconds=seconds, seed=seed)
    console.print(f"[1/4] synthetic dataset: {data}")
    outputs.append(("synthetic dataset", str(data)))

    console.print(f"[2/4] training the {preset} preset for {epochs} epochs")
    config = TrainConfig(data=str(data), out=str(out / "run"), preset=preset, epochs=epochs, seed=seed)
    result = train(config, RichTrainReporter(console), resume=True)
    outputs += [("checkpoint (latest)", str(result.checkpoint)), ("checkpoint (best val)", str(result.best))]

    session = _held_out_session(data)
    runner = TorchRunner.from_checkpoint(result.best)
    generated = generate_files(runner, session / "speaker.mp4", session / "speaker.wav", out / "generate",
                               settings={"checkpoint": str(result.best), "steps": runner.settings.steps})
    console.print(f"[3/4] generated listener motion for held-out {session.name}")
    outputs += [("listener motion (.npy)", str(generated.motion_path)), ("settings + timestamps", str(generated.json_path)),
                ("plot", str(generated.plot_path))]

    truth = load_session(session, None).listener
    motion = np.load(generated.motion_path)
    train_motion = np.concatenate([load_session(p, None).listener for p in _train_sessions(data)])
    median = np.median(train_motion, axis=0)
    l2_model = float(np.linalg.norm(motion - truth, axis=1).mean())
    l2_median = float(np.linalg.norm(median[None] - truth, axis=1).mean())
    summary = {"session": session.name, "l2_fad": l2_model, "l2_median_baseline": l2_median,
               "ratio": l2_model / l2_median, "train_seconds": result.seconds}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    outputs.append(("summary", str(out / "demo_summary.json")))

    table = Table(title=f"fad-edge demo ({time.time() - started:.0f} s)")
    table.add_column("output")
    table.add_column("where")
    for name, where in outputs:
        table.add_row(name, where)
    console.print(table)
    console.print(f"L2 on held-out {session.name}: FAD {l2_model:.3f} vs Median baseline {l2_median:.3f} "
                  f"({l2_model / l2_median:.2f}x)")


def _train_sessions(data: Path) -> list[Path]:
    from fad_edge.data.layout import list_sessions

    return list_sessions(data, "train")


def register(app: typer.Typer) -> None:
    app.command()(demo)
