"""`fad-edge export`: checkpoint -> checked ONNX graphs (FP32, optionally INT8 and FP16) -> TensorRT engines.

The folder it writes holds one .onnx per graph and precision, manifest.json (files, identity and
every check's figures) and, with TensorRT, one .engine + .json per graph. Everything is built in a
sibling folder (OUT.new) and swapped in by renames only after every check passed: a failed or
interrupted export removes its half-built folder and leaves the previous export untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fad_edge.artifact import AUDIO_ENCODER, ELNET_EPS, ELNET_X0, META_PREFIX, VIDEO_ENCODER, ExportManifest
from fad_edge.atomic import staged_folder
from fad_edge.checkpoint import LoadedCheckpoint, load_checkpoint
from fad_edge.errors import ExportError
from fad_edge.export import fp16 as fp16_tools
from fad_edge.export.frozen_norms import with_frozen_encoders
from fad_edge.export.graphs import GraphSpec, graph_specs
from fad_edge.export.int8_budget import FrozenGraphs, ScoredChecks, quantize_within_budget, sampler_l2s
from fad_edge.export.onnx_export import (
    EXPORTERS,
    ModelIdentity,
    load_onnx,
    read_metadata,
    save_onnx,
    set_metadata,
    simplify,
    trace_to_onnx,
)
from fad_edge.export.parity import ParityRow, errors, graph_parity, random_inputs, real_inputs
from fad_edge.export.quantize import batched_feeds
from fad_edge.listener_model import ListenerModel
from fad_edge.model_draws import encode_inputs, sample_encoded
from fad_edge.reporting import Say, silent
from fad_edge.runtime.base import ClipRunner, clip_condition_windows
from fad_edge.runtime.ort_runner import TRT_CACHE, OrtRunner
from fad_edge.runtime.torch_runner import TorchRunner
from fad_edge.samples import LabelledInputs, mean_l2, split_samples, synthetic_samples
from fad_edge.sampling import DEFAULT_SAMPLER, SAMPLERS, DiffusionSampler, SamplerSettings

CALIBRATION_SEED = 7_000_001
EXPORT_SUFFIXES = (".onnx", ".engine", ".json")  # every file an export folder holds
CHOICE_SEED = 8_000_001  # synthetic sessions INT8's fallbacks are chosen on, where no dataset has a val split


@dataclass
class ExportOptions:
    checkpoint: Path
    out: Path
    opset: int = 18
    exporter: str = EXPORTERS[0]  # see onnx_export: "torchscript" traces in a tenth of dynamo's time
    int8: bool = False
    fp16: bool = False
    trt: bool = False
    data: Path | None = None  # dataset for the accuracy checks (else fresh synthetic sessions)
    split: str = "test"
    tolerance: float = 1e-4  # FP32 ORT vs PyTorch, max relative error per graph
    fp16_tolerance: float = 1e-2  # FP16 graph vs FP32, max relative error on the final motion
    check_sessions: int = 2
    parity_sessions: int = 4  # sessions on which ORT FP32's motion is compared with PyTorch's (L2 uses all)
    check_seconds: float = 8.0
    calibration_sessions: int = 4
    calibration_seconds: float = 4.0
    threads: int = 2
    trt_max_clips: int = 128
    trt_workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.trt:  # TensorRT builds its strongly typed engines from the FP16 graphs
            self.fp16 = True


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """The exporter and the quantizer log advice meant for their own developers; keep our output readable."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_export_target(out: Path) -> None:
    """Refuse an --out that an export may not replace: a file, or a folder holding more than an export's files."""
    out = Path(out)
    if out.name in ("", ".", ".."):  # the swap renames OUT itself: it needs a name of its own
        raise ExportError(f"--out {out}: give the export folder a name, e.g. engines/model")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; give --out a new or export folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir()
                         if not (p.is_file() and p.suffix in EXPORT_SUFFIXES) and p.name != TRT_CACHE)
        if foreign:
            raise ExportError(f"{out}: holds {foreign[0]!r}, which no export writes; an export replaces its folder "
                              "whole, so give --out a new or export folder")


def export_model(options: ExportOptions, say: Say = silent) -> ExportManifest:
    """Run the whole export; raises ExportError (or BackendUnavailableError) with one clear line.

    The export is built in OUT.new and replaces OUT only when every check passed.
    """
    check_export_target(options.out)
    if options.trt:
        from fad_edge.export.tensorrt_build import require_tensorrt

        require_tensorrt()  # before minutes of work, not after
    loaded = load_checkpoint(options.checkpoint)
    final = Path(options.out)
    final = final.resolve() if final.is_symlink() else final  # replace the folder it points to, not the link
    with staged_folder(final) as staging, _quiet_libraries():
        return _export(options, loaded, staging, say)


def _export(options: ExportOptions, loaded: LoadedCheckpoint, out: Path, say: Say) -> ExportManifest:
    """Write and check every graph in the folder `out`; the manifest is written last."""
    model = loaded.model
    identity = ModelIdentity(loaded.info["weights_sha256"], loaded.config.to_dict(), loaded.normalization.to_dict())
    manifest = ExportManifest(identity.version, identity.checkpoint_sha256, identity.config, identity.normalization,
                              options.opset)

    specs = graph_specs(model)
    for spec in specs:
        say(f"tracing {spec.name}")
        traced = trace_to_onnx(spec, options.opset, options.exporter)
        simplified, tool = simplify(traced, spec.name)
        set_metadata(simplified, identity.metadata(spec.name, "fp32"))
        save_onnx(simplified, out / f"{spec.name}.onnx")
        manifest.graphs[spec.name] = {"fp32": f"{spec.name}.onnx"}
        manifest.reports.setdefault("simplifier", {})[spec.name] = tool  # type: ignore[index]
    manifest.reports["exporter"] = options.exporter

    checks = (split_samples(loaded.config, options.data, options.split) if options.data
              else synthetic_samples(loaded.config, options.check_sessions, options.check_seconds))
    say("checking parity against PyTorch")
    with OrtRunner(out, "fp32", options.threads, manifest=manifest) as fp32:
        return _check_and_convert(options, loaded, out, say, specs, manifest, identity, checks, fp32)


def _check_and_convert(options: ExportOptions, loaded: LoadedCheckpoint, out: Path, say: Say,
                       specs: list[GraphSpec], manifest: ExportManifest, identity: ModelIdentity,
                       checks: list[LabelledInputs], fp32: ClipRunner) -> ExportManifest:
    """Check the FP32 graphs against PyTorch, then write and check the INT8, FP16 and TensorRT conversions."""
    model = loaded.model
    rows = _parity(specs, model, out, checks, options.threads)
    fp32_encoded = [encode_inputs(fp32, s.inputs) for s in checks]  # once for every sampler's motion
    fp32_motions = [sample_encoded(fp32, encoded, fp32.seed) for encoded in fp32_encoded]
    torch_runner = TorchRunner(model)
    compared = checks[: options.parity_sessions]
    rows.append(_motion_row(fp32_motions[: len(compared)], [torch_runner.run_inputs(s.inputs) for s in compared],
                            "motion (ort-fp32 vs torch)"))
    manifest.reports["parity"] = [row.to_dict() for row in rows]
    worst = max(rows, key=lambda row: row.max_rel)
    if worst.max_rel > options.tolerance:
        raise ExportError(f"parity check failed: {worst.graph} on {worst.inputs} inputs has max relative error "
                          f"{worst.max_rel:.2e} > {options.tolerance:.0e} (max abs {worst.max_abs:.2e})")
    reference_l2 = float(np.mean([mean_l2(motion, s.listener) for motion, s in zip(fp32_motions, checks)]))
    manifest.reports["accuracy"] = {"l2_fp32": reference_l2, "sessions": [s.name for s in checks]}

    if options.int8 or options.fp16:
        calibration = _calibration(loaded.config, options)
        feeds = _calibration_feeds(model, specs, calibration)
        if options.int8:
            say("quantizing to INT8")
            with tempfile.TemporaryDirectory(prefix="fad-frozen-norms-") as scratch:
                frozen = _frozen_encoder_graphs(model, identity, feeds, Path(scratch), options.opset,
                                                options.exporter)
                others = tuple(sampler for sampler in SAMPLERS if sampler != DEFAULT_SAMPLER)
                reported = ScoredChecks(options.split if options.data else "synthetic", checks,
                                        {DEFAULT_SAMPLER: reference_l2,
                                         **sampler_l2s(fp32, fp32_encoded, checks, others)})
                chooser = _choice_checks(options, loaded, fp32, reported)
                manifest.reports["int8"] = quantize_within_budget(out, manifest, feeds, reported, options.threads,
                                                                  frozen, chooser)
        if options.fp16:
            say("converting to mixed-precision FP16")
            manifest.reports["fp16"] = _export_fp16(out, manifest, feeds, checks, fp32_motions, options)
    if options.trt:
        from fad_edge.export.tensorrt_build import EngineProfile, build_engines

        say("building TensorRT engines from the FP16 graphs")
        profile = EngineProfile(max_clips=options.trt_max_clips, workspace_mb=options.trt_workspace_mb)
        manifest.reports["trt"] = build_engines(out, manifest, profile)
    manifest.save(out)
    return manifest


def _parity(specs: list[GraphSpec], model: ListenerModel, out: Path, checks: list[LabelledInputs],
            threads: int) -> list[ParityRow]:
    from fad_edge.runtime.ort_runner import session_options

    rows = []
    for spec in specs:
        session = ort.InferenceSession(str(out / f"{spec.name}.onnx"), session_options(threads),
                                       providers=["CPUExecutionProvider"])
        rows.append(graph_parity(spec, session, random_inputs(spec), "random"))
        rows.append(graph_parity(spec, session, real_inputs(spec, model, checks[0]), "synthetic"))
    return rows


def _motion_row(motions: list[np.ndarray], references: list[np.ndarray], label: str) -> ParityRow:
    """The worst (max abs, max rel) error of each session's motion against its reference."""
    worst = (0.0, 0.0)
    for motion, reference in zip(motions, references, strict=True):
        worst = max(worst, errors(motion, reference), key=lambda pair: pair[1])
    return ParityRow(label, f"{len(motions)} synthetic session{'' if len(motions) == 1 else 's'}", *worst)


def _calibration(config, options: ExportOptions) -> list[LabelledInputs]:
    if options.data:
        return split_samples(config, options.data, "train")[: options.calibration_sessions]
    return synthetic_samples(config, options.calibration_sessions, options.calibration_seconds, CALIBRATION_SEED)


@torch.no_grad()
def _calibration_feeds(model: ListenerModel, specs: list[GraphSpec],
                       samples: list[LabelledInputs]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Inputs of every graph as the runner would feed them, from calibration sessions."""
    config = model.config
    images = np.concatenate([s.inputs.images for s in samples])
    mel = np.concatenate([s.inputs.mel for s in samples])
    conditions = np.concatenate([
        clip_condition_windows(model.encode(torch.from_numpy(s.inputs.images), torch.from_numpy(s.inputs.mel)).numpy(),
                               config.clip_len, config.context_clips)
        for s in samples
    ])
    rng = np.random.default_rng(CALIBRATION_SEED)
    shape = (len(conditions), config.clip_len, config.n_coeffs)
    sampler = DiffusionSampler(SamplerSettings.from_config(config, steps=1), config.train_steps)
    start = sampler.initial_state(len(conditions), rng, config.clip_len, config.n_coeffs)
    # The folded graph also starts from noise (a sampler of one step with start noise, as tune-sampler may pick):
    # calibrated on the mean start alone, a small preset's all-zero x_start would quantize noise to whole numbers.
    noisy = DiffusionSampler(dataclasses.replace(sampler.settings, start_noise=1.0), config.train_steps)
    noisy_start = noisy.initial_state(len(conditions), rng, config.clip_len, config.n_coeffs)
    x_t = rng.standard_normal(shape, dtype=np.float32)
    step = rng.integers(0, config.train_steps, len(conditions)).astype(np.int64)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {
        VIDEO_ENCODER: batched_feeds("images", images, 64),
        AUDIO_ENCODER: batched_feeds("mel", mel, 64),
    }
    start[1::2] = noisy_start[1::2]  # the two starts in turn, clip by clip
    feeds[ELNET_X0] = [{"x_start": start[i : i + 32], "condition": conditions[i : i + 32]}
                       for i in range(0, len(conditions), 32)]
    feeds[ELNET_EPS] = [{"x_t": x_t[i : i + 32], "step": step[i : i + 32], "condition": conditions[i : i + 32]}
                        for i in range(0, len(conditions), 32)]
    return feeds


def _frozen_encoder_graphs(model: ListenerModel, identity: ModelIdentity, feeds: dict, folder: Path,
                           opset: int, exporter: str) -> FrozenGraphs:
    """Trace the frozen encoders into the scratch `folder`; none when no GroupNorm is left to freeze."""
    def batches(graph: str, name: str) -> list[torch.Tensor]:
        return [torch.from_numpy(feed[name]) for feed in feeds[graph]]

    frozen, norms = with_frozen_encoders(model, batches(VIDEO_ENCODER, "images"), batches(AUDIO_ENCODER, "mel"))
    if norms == 0:
        return FrozenGraphs({}, 0)
    files = {}
    for spec in graph_specs(frozen):
        if spec.name in (VIDEO_ENCODER, AUDIO_ENCODER):
            simplified, _ = simplify(trace_to_onnx(spec, opset, exporter), spec.name)
            set_metadata(simplified, identity.metadata(spec.name, "fp32"))  # quantize_graph copies it
            files[spec.name] = folder / f"{spec.name}.onnx"
            save_onnx(simplified, files[spec.name])
    return FrozenGraphs(files, norms)


def _choice_checks(options: ExportOptions, loaded: LoadedCheckpoint, fp32: ClipRunner,
                   reported: ScoredChecks) -> ScoredChecks:
    """The sessions INT8's fallbacks are chosen on: never the reported ones, whose figure would then be
    the best of several tries. A dataset's val split (the reported one itself where that is val, since
    choosing is what val is for), else fresh synthetic sessions of another seed."""
    if options.data:
        if options.split == "val":
            return reported
        checks = split_samples(loaded.config, options.data, "val")
    else:
        checks = synthetic_samples(loaded.config, options.check_sessions, options.check_seconds,
                                   CHOICE_SEED)
    return ScoredChecks("val" if options.data else "synthetic (another seed)", checks,
                        sampler_l2s(fp32, [encode_inputs(fp32, s.inputs) for s in checks], checks))


def _export_fp16(out: Path, manifest: ExportManifest, feeds: dict, checks: list[LabelledInputs],
                 fp32_motions: list[np.ndarray], options: ExportOptions) -> dict:
    fp32_models = {graph: load_onnx(out / files["fp32"]) for graph, files in manifest.graphs.items()}
    audits = {graph: fp16_tools.audit_activations(model, feeds[graph]) for graph, model in fp32_models.items()}
    report: dict = {"tool": "onnxconverter-common float16, FP32 I/O",
                    "audit": {graph: audit.summary() for graph, audit in audits.items()}}
    for escalate in (False, True):
        for graph, model in fp32_models.items():
            converted = fp16_tools.convert_to_fp16(model, audits[graph], escalate)
            set_metadata(converted, {**read_metadata(model), META_PREFIX + "precision": "fp16"})
            save_onnx(converted, out / f"{graph}.fp16.onnx")
            manifest.graphs[graph]["fp16"] = f"{graph}.fp16.onnx"
            report.setdefault("fp16_compute_share", {})[graph] = fp16_tools.fp16_node_share(converted)
        runner = OrtRunner(out, "fp16", options.threads, manifest=manifest)
        row = _motion_row([runner.run_inputs(s.inputs) for s in checks], fp32_motions, "motion (ort-fp16 vs ort-fp32)")
        report.update(normalization_and_softmax_fp32=escalate, max_abs=row.max_abs, max_rel=row.max_rel)
        if row.max_rel <= options.fp16_tolerance:
            return report
    raise ExportError(f"the FP16 graph's motion differs from FP32 by {report['max_rel']:.2e} relative "
                      f"(> {options.fp16_tolerance:.0e}) even with normalization and softmax in FP32")
