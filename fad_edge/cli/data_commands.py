"""`fad-edge synth`, `convert-vico` and `baselines-l2l`: write a dataset, convert ViCo, score Learning to Listen."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from fad_edge.cli.validate import (
    MAX_SEED,
    check_disk,
    check_finite,
    check_output_dir,
    check_output_stem,
)

console = Console()
# The mp4 video's bytes per pixel and frame: 0.042 measured for the synthetic faces at 128 px, with a margin.
VIDEO_BYTES_PER_PIXEL = 0.06
NOTES_SHOWN = 5  # a conversion's notes printed one by one (a real dataset may give one per clip)


def session_bytes_per_second(image_size: int, alternatives: int) -> float:
    """Disk a synthetic session takes per second: 16-bit 16 kHz audio, the listener's and speaker's (30, 56) float32
    coefficients with the alternatives' (listener_alternatives.npy), and the video (100 KB/s at 128 px, 5
    alternatives)."""
    coefficients = 30 * 56 * 4
    return 2 * 16_000 + (2 + alternatives) * coefficients + VIDEO_BYTES_PER_PIXEL * image_size**2 * 30
OVERWRITE_HELP = ("Replace OUT when it holds a dataset already; the new one is built beside it and swapped in "
                  "only once complete.")


def synth(
    out: Path = typer.Option(..., help="Folder to write the dataset into."),
    sessions: int = typer.Option(20, min=3, help="Number of sessions (split about 70/15/15)."),
    seconds: float = typer.Option(40.0, min=2.0, help="Length of each session in seconds."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed: the same seed writes the same coefficient files."),
    image_size: int = typer.Option(128, min=32, help="Side of the written speaker video."),
    alternatives: Optional[int] = typer.Option(
        None, min=0, max=50, help="Other appropriate listeners per session, for the REACT metrics "
        "(listener_alternatives.npy; default: the generator's, 5; 0 writes none)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Write a synthetic dyadic dataset (speaker video + audio, listener motion) in our layout."""
    from fad_edge.data.layout import check_dataset_target
    from fad_edge.data.synthetic import DEFAULT_ALTERNATIVES
    from fad_edge.data.synthetic_dataset import check_synthetic_size, drawn_at_once, write_synthetic_dataset

    check_finite(seconds, "--seconds", 2.0)
    if image_size % 2:  # the mp4 video's sides are even: an odd size would be written one pixel smaller
        raise typer.BadParameter(f"{image_size} is odd; give an even size, such as {image_size + 1}",
                                 param_hint="'--image-size'")
    check_synthetic_size(seconds, image_size, drawn_at_once(sessions, seconds))
    check_output_dir(out)
    check_dataset_target(out, overwrite)  # refused now, not after the sessions are drawn
    per_second = session_bytes_per_second(image_size, DEFAULT_ALTERNATIVES if alternatives is None else alternatives)
    check_disk(out, sessions * seconds * per_second, f"{sessions} sessions of {seconds:g} s", "--sessions, --seconds")
    with console.status(f"writing {sessions} synthetic sessions of {seconds:g} s"):
        extra = {} if alternatives is None else {"alternatives": alternatives}
        splits = write_synthetic_dataset(out, sessions=sessions, seconds=seconds, seed=seed, image_size=image_size,
                                         overwrite=overwrite, **extra)
    counts = ", ".join(f"{name} {len(names)}" for name, names in splits.items())
    console.print(f"wrote {out} ({counts})", markup=False)


def convert_vico(
    src: Path = typer.Option(..., help="ViCo root: its release layout (<split>.csv, videos/<uuid>.speaker.mp4, "
                             "audios/<uuid>.wav, listener_flame/<uuid>.npy) or per-split folders "
                             "(<split>/speaker/<id>.mp4, audio/<id>.wav, listener_flame/<id>.npy)."),
    out: Path = typer.Option(..., help="Folder to write the dataset into (our layout)."),
    val_fraction: Optional[float] = typer.Option(
        None, help="Where the release has no val.csv: move about this fraction of train's clips, whole speakers "
        "(by the CSVs' speaker_id) not also in test, to val."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed of --val-fraction's choice of speakers."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Convert ViCo clips with FLAME re-extractions into our layout (BFM coefficient files are refused)."""
    from fad_edge.data.vico import ValSplit
    from fad_edge.data.vico import convert_vico as run

    check_finite(val_fraction, "--val-fraction", 0.0, 1.0, low_open=True, high_open=True)
    check_output_dir(out)
    val = None if val_fraction is None else ValSplit(val_fraction, seed)
    with console.status("converting ViCo clips"):
        conversion = run(src, out, overwrite=overwrite, val=val)
    counts = ", ".join(f"{k} {len(v)}" for k, v in conversion.splits.items())
    console.print(f"wrote {out} ({counts}) from {conversion.layout}", markup=False)
    for note in conversion.notes[:NOTES_SHOWN]:
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False)
    if len(conversion.notes) > NOTES_SHOWN:
        console.print(f"note: and {len(conversion.notes) - NOTES_SHOWN} more such notes", style="yellow",
                      markup=False, highlight=False)


def baselines_l2l(
    data: Path = typer.Option(..., help="Learning to Listen root (<channel>/<split>/p*_faces_clean_deca.npy)."),
    channel: str = typer.Option(..., help="Channel, e.g. conan, fallon, kimmel, stephen, trevor."),
    split: str = typer.Option("test", help="Split to evaluate on: val or test (the baselines fit on train, so "
                              "train is refused as in-sample)."),
    out: Path = typer.Option(Path("l2l_baselines"), help="Report path stem (.json and .md)."),
) -> None:
    """The paper's coefficient baselines on Learning to Listen data (it has no video, so no FAD row)."""
    from fad_edge.baselines import BaselineSequence
    from fad_edge.bench.tables import print_table
    from fad_edge.data.adapters import NO_VIDEO_NOTE, load_learning_to_listen_splits
    from fad_edge.evaluation import evaluate_baselines
    from fad_edge.evaluation_report import rich_tables, write_reports

    check_output_stem(out, (".json", ".md"))  # beside the data's .npy files, never one of them
    train, test = load_learning_to_listen_splits(data, channel, split)

    def sequences(segments: list) -> list[BaselineSequence]:
        return [BaselineSequence(s.speaker, s.mel, s.listener) for s in segments]

    table = evaluate_baselines(sequences(train), sequences(test), split, [s.name for s in test])
    console.print(f"[yellow]{escape(NO_VIDEO_NOTE)}[/]")  # only now: a refusal above stays one line
    title = f"Learning to Listen, {channel}/{split}"
    for rendered in rich_tables(table, escape(title)):
        print_table(console, rendered)
    json_path, md_path = write_reports(table, out, title)
    console.print(f"wrote {json_path} and {md_path}", markup=False)


def register(app: typer.Typer) -> None:
    app.command(short_help="write a synthetic dyadic dataset in our on-disk layout")(synth)
    app.command("convert-vico", short_help="ViCo clips with FLAME re-extractions -> our layout")(convert_vico)
    app.command("baselines-l2l", short_help="the coefficient baselines on Learning to Listen data")(
        baselines_l2l)
