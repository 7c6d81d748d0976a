"""`fad-edge export`: a checkpoint to checked ONNX graphs (FP32, INT8, FP16) and TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fad_edge.bench.tables import figure_table, number_column, print_table, text_column
from fad_edge.cli.validate import check_choice, check_finite, check_output_dir, check_threads

console = Console()


def export(
    checkpoint: Path = typer.Option(..., help="Checkpoint folder (e.g. RUN/best)."),
    out: Path = typer.Option(Path("engines/model"), help="Export folder (graphs, manifest.json, engines)."),
    int8: bool = typer.Option(False, "--int8",
                              help="Also write static INT8 (QDQ) graphs for ONNX Runtime on the CPU."),
    fp16: bool = typer.Option(False, "--fp16",
                              help="Also write the mixed-precision FP16 graphs (checked on the CPU)."),
    trt: bool = typer.Option(False, "--trt",
                             help="Build TensorRT FP16 engines from the FP16 graphs "
                                  "(needs the 'fad-edge[trt]' extra and a GPU)."),
    opset: int = typer.Option(18, min=13, max=23, help="ONNX opset (18 suits TensorRT 10 on Jetson)."),
    exporter: str = typer.Option("torchscript", help="torchscript (fast; deprecated in torch) or dynamo."),
    data: Optional[Path] = typer.Option(None, help="Dataset for the accuracy checks "
                                        "(default: fresh synthetic sessions)."),
    split: str = typer.Option("test", help="Split of --data to check on (val or test)."),
    tolerance: float = typer.Option(1e-4, min=0.0, help="Largest relative error of ORT FP32 against PyTorch."),
    threads: int = typer.Option(2, min=1, help="ONNX Runtime threads."),
    trt_max_clips: int = typer.Option(128, min=1, help="Largest clip batch the TensorRT profile covers."),
) -> None:
    """Export a checkpoint for the edge; prints the parity table and fails if any graph exceeds the tolerance."""
    from fad_edge.export.onnx_export import EXPORTERS
    from fad_edge.export.pipeline import ExportOptions, export_model

    check_output_dir(out)  # export_model then checks that OUT holds nothing but an export, before any work
    check_finite(tolerance, "--tolerance", 0.0)
    check_threads(threads)
    check_choice(exporter, "--exporter", EXPORTERS)
    if split == "train":
        raise typer.BadParameter("the checks would run on the sessions INT8 is calibrated on; use val or test",
                                 param_hint="'--split'")
    options = ExportOptions(checkpoint=checkpoint, out=out, opset=opset, exporter=exporter, int8=int8, fp16=fp16,
                            trt=trt, data=data, split=split, tolerance=tolerance, threads=threads,
                            trt_max_clips=trt_max_clips)
    with console.status("exporting") as status:
        manifest = export_model(options, say=lambda message: status.update(message))
    print_reports(manifest.reports)
    console.print(f"wrote {out} ({', '.join(manifest.variants())})", markup=False)


def print_reports(reports: dict) -> None:
    table = figure_table("parity against PyTorch (max rel = max |error| / max |reference|)")
    for column in ("graph", "inputs"):
        text_column(table, column)
    for column in ("max abs", "max rel"):
        number_column(table, column)
    for row in reports.get("parity", []):
        table.add_row(row["graph"], row["inputs"], f"{row['max_abs']:.2e}", f"{row['max_rel']:.2e}")
    print_table(console, table)
    if "int8" in reports:
        r = reports["int8"]
        console.print(f"INT8: L2 {r['l2_int8']:.4f} vs FP32 {r['l2_fp32']:.4f} ({100 * (r['ratio'] - 1):+.2f}%), "
                      f"ELNet in {r['elnet']}, encoder norms {r.get('encoder_norms', 'as trained')}")
        for sampler, row in r.get("samplers", {}).items():
            if sampler != "mean":
                console.print(f"INT8, {sampler} sampler: L2 {row['l2_int8']:.4f} vs FP32 {row['l2_fp32']:.4f} "
                              f"({100 * (row['ratio'] - 1):+.2f}%)")
        if not r.get("within_budget", True):
            console.print(f"[yellow]INT8 stays {100 * r['deviation']:.2f}% off FP32's L2 after its fallbacks, over "
                          "the 1% budget: use --precision fp32 where that matters[/]")
    if "fp16" in reports:
        r = reports["fp16"]
        console.print(f"FP16 graph vs FP32 on the motion: max rel {r['max_rel']:.2e}, normalization/softmax in FP32: "
                      f"{r['normalization_and_softmax_fp32']}")
    if "trt" in reports:
        r = reports["trt"]
        console.print(f"TensorRT {r['tensorrt']} engines for {r['gpu']} (sm {r['compute_capability']})")


def register(app: typer.Typer) -> None:
    app.command(short_help="ONNX graphs (FP32, INT8, FP16) and TensorRT engines, checked")(export)
