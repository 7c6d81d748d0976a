"""`fad-edge train` and `fad-edge generate`."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

from fad_edge.backends import BACKENDS, all_precisions, backend_names, get_backend
from fad_edge.cli.validate import (
    MAX_SEED,
    SAMPLER_HELP,
    check_choice,
    check_finite,
    check_not_dataset,
    check_not_inputs,
    check_output_dir,
    check_output_file,
    check_preset,
    check_sampler_name,
    check_threads,
    check_training_step,
)
from fad_edge.constants import MAX_AUGMENT_SHIFT
from fad_edge.errors import FadEdgeError
from fad_edge.models.config import (
    DIM_WEIGHTINGS,
    ENCODER_NORMS,
    MAX_CONTEXT_CLIPS,
    MAX_PROSODY_CHANNELS,
    MAX_ROTATION_HEAD_CHANNELS,
)
from fad_edge.models.presets import PRESETS
from fad_edge.sampling import DEFAULT_SAMPLER

if TYPE_CHECKING:
    from fad_edge.runtime.base import ClipRunner
    from fad_edge.runtime.face import FaceCropper

console = Console()
notes = Console(stderr=True)  # what a person should read, kept off the JSON on stdout

# Options generate and explain share, so that explain reads a speaker as generate does.
AUDIO_HELP = "Speaker audio (.wav/.flac, 1 kHz to 384 kHz); default: the video's own audio track."
PAD_AUDIO_OPTION = "--pad-audio"
PAD_AUDIO_HELP = "Pad audio shorter than the video with silence."
FACE_HELP = ("Crop each frame to the speaker's face: detect (default), box (the default when --box is given) or "
             "none (the whole frame).")
BOX_HELP = "The face box for --face box: x,y,w,h in pixels of the video frame."


def train(
    data: Path = typer.Option(..., help="Dataset folder (our layout, with splits.json)."),
    out: Path = typer.Option(..., help="Run folder: checkpoint/ (latest, resumable) and best/ go here."),
    preset: str = typer.Option("small", help=f"Model preset: {', '.join(PRESETS)}."),
    epochs: int = typer.Option(2, min=1),
    batch_size: int = typer.Option(8, min=1, help="Windows per step (each of --clips-per-item clips)."),
    clips_per_item: int = typer.Option(4, min=1, help="Consecutive clips per window; their frames are encoded once."),
    noise_draws: int = typer.Option(4, min=1, max=64, help="Diffusion (step, noise) draws per clip and step."),
    lr: float = typer.Option(2e-3, help="Peak learning rate, above 0 (warm-up, then a cosine to a tenth of it)."),
    stride: int = typer.Option(8, min=1, help="Frames between training windows."),
    weight_decay: float = typer.Option(1e-4, min=0.0),
    ema_decay: Optional[float] = typer.Option(None, help="Infer with an exponential moving average of the trained "
                                              "weights, this decay per step; 0: the last step's weights "
                                              "(default: 0.98)."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED),
    context_clips: Optional[int] = typer.Option(None, min=0, max=MAX_CONTEXT_CLIPS,
                                                help="Preceding clips of speaker features each clip sees "
                                                "(default: the preset's)."),
    modalities: str = typer.Option("both", help="Speaker inputs the model may use: both, audio or video."),
    encoder_norm: Optional[str] = typer.Option(None, help="The encoders' norm after each convolution: group or "
                                               "batch (folded into the convolutions at export, so INT8 runs "
                                               "int8 throughout; default: the preset's)."),
    video_diffusion_gradient: Optional[float] = typer.Option(
        None, help="Share of the diffusion loss's gradient that reaches the video encoder, 0..1 (0: only the "
                   "speaker loss trains it; default: the preset's)."),
    condition_shortcut: Optional[bool] = typer.Option(
        None, "--condition-shortcut/--no-condition-shortcut",
        help="ELNet's linear readout from the condition to its output (default: the preset's)."),
    rotation_head: Optional[int] = typer.Option(
        None, min=0, max=MAX_ROTATION_HEAD_CHANNELS,
        help="Channels of ELNet's rotation head, causal convolutions of their own to the jaw and head dims; "
             "a multiple of the preset's groups, 0: none (default: the preset's)."),
    loss_dim_weighting: Optional[str] = typer.Option(
        None, help=f"Loss weight of each motion dim: {', '.join(DIM_WEIGHTINGS)} (default: the preset's)."),
    prosody_channels: Optional[int] = typer.Option(
        None, min=0, max=MAX_PROSODY_CHANNELS,
        help="Channels of the prosody branch, ELNet's convolutions over each frame's log-mel; a multiple of the "
             "preset's groups, 0: none, which also drops its pretraining (default: the preset's)."),
    prosody_pretrain_steps: Optional[int] = typer.Option(
        None, min=0, help="Steps of the prosody branch's pretraining on the log-mel alone before FAD's training "
                          "(0: none; default: the preset's). Needs a preset with the branch."),
    video_pretrain_steps: Optional[int] = typer.Option(
        None, min=0, help="Steps of the video encoder's pretraining on single frames, regressing the speaker's "
                          "coefficients, before FAD's training (0: none; default: the preset's). Needs a preset "
                          "with the speaker loss."),
    freeze_pretrained_video: Optional[bool] = typer.Option(
        None, "--freeze-pretrained-video/--no-freeze-pretrained-video",
        help="Leave the pretrained video encoder as it is through FAD's steps; --no-freeze-pretrained-video: "
             "the speaker loss goes on training it (default: the preset's)."),
    frozen_video_once: Optional[bool] = typer.Option(
        None, "--frozen-video-once/--frozen-video-each-step",
        help="With a frozen video encoder, encode every training frame once before FAD's steps; "
             "--frozen-video-each-step encodes each step's frames, with their photometric augmentation "
             "(default: once)."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after this many steps in all."),
    checkpoint_every: int = typer.Option(200, min=1, help="Steps between resumable checkpoints."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch CPU threads (default: torch's choice)."),
    augment: bool = typer.Option(True, help="Augment speaker images and audio per window "
                                 "(photometric, gain, mel mask)."),
    augment_shift: Optional[int] = typer.Option(None, min=0, max=MAX_AUGMENT_SHIFT,
                                                help="Also shift each window by up to this many pixels "
                                                     "(default: no shift)."),
    autocast: str = typer.Option("auto", help="Mixed-precision training: off, bf16, fp16 (CUDA only), or auto: "
                                 "bf16 where the GPU or CPU computes it natively, else fp16 on a GPU, off on a CPU."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when there is a GPU). Under torchrun "
                               "each process takes cuda:LOCAL_RANK."),
    workers: Optional[int] = typer.Option(None, min=0, help="Data loader worker processes (default: 0 on a CPU, "
                                          "where they would take cores from training; on a GPU up to 4, leaving a "
                                          "core per process)."),
    deterministic: bool = typer.Option(True, help="On a GPU: cuDNN's deterministic algorithms, so --resume repeats "
                                       "an unbroken run; --no-deterministic lets cuDNN pick the fastest ones."),
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoint if it exists."),
    overwrite: bool = typer.Option(False, help="Start afresh in a used OUT, replacing its checkpoint/ and best/ "
                                   "once the new run has saved."),
) -> None:
    """Train FAD/ELNet. Under `torchrun --nproc_per_node N -m fad_edge train ...` it trains with DDP (NCCL or gloo)."""
    from fad_edge.cli.progress import RichTrainReporter
    from fad_edge.train import TrainConfig
    from fad_edge.train import train as run_training
    from fad_edge.train_precision import AUTOCAST_MODES

    if modalities not in ("both", "audio", "video"):
        raise typer.BadParameter("must be both, audio or video", param_hint="--modalities")
    if encoder_norm is not None and encoder_norm not in ENCODER_NORMS:
        raise typer.BadParameter(f"must be one of {', '.join(ENCODER_NORMS)}", param_hint="--encoder-norm")
    check_choice(autocast, "--autocast", AUTOCAST_MODES)
    model_preset = check_preset(preset)
    check_training_step(model_preset, batch_size, clips_per_item, context_clips)
    for width, option in ((rotation_head, "--rotation-head"), (prosody_channels, "--prosody-channels")):
        if width is not None and width % model_preset.groups:
            raise typer.BadParameter(f"must be 0 or a multiple of the preset's groups ({model_preset.groups})",
                                     param_hint=option)
    branch = model_preset.prosody_channels if prosody_channels is None else prosody_channels
    if prosody_pretrain_steps and not branch:
        raise typer.BadParameter(f"the model has no prosody branch to pretrain ({preset} preset"
                                 f"{', --prosody-channels 0' if prosody_channels == 0 else ''})",
                                 param_hint="--prosody-pretrain-steps")
    if prosody_channels == 0 and prosody_pretrain_steps is None:
        prosody_pretrain_steps = 0  # no branch, nothing of the preset's to pretrain
    if video_pretrain_steps and not model_preset.speaker_aux_weight:
        raise typer.BadParameter(f"the {preset} preset has no speaker loss to pretrain the video encoder with",
                                 param_hint="--video-pretrain-steps")
    if loss_dim_weighting is not None:
        check_choice(loss_dim_weighting, "--loss-dim-weighting", DIM_WEIGHTINGS)
    check_finite(lr, "--lr", 0.0, low_open=True)
    check_finite(weight_decay, "--weight-decay", 0.0)
    if ema_decay is not None:
        check_finite(ema_decay, "--ema-decay", 0.0, 1.0, high_open=True)
    check_finite(video_diffusion_gradient, "--video-diffusion-gradient", 0.0, 1.0)
    check_threads(threads)
    check_output_dir(out)
    chosen = {"encoder_norm": encoder_norm, "video_diffusion_gradient": video_diffusion_gradient,
              "condition_shortcut": condition_shortcut, "rotation_head_channels": rotation_head,
              "loss_dim_weighting": loss_dim_weighting, "prosody_channels": prosody_channels,
              "prosody_pretrain_steps": prosody_pretrain_steps, "video_pretrain_steps": video_pretrain_steps,
              "freeze_pretrained_video": freeze_pretrained_video}
    config = TrainConfig(
        data=str(data), out=str(out), preset=preset, epochs=epochs, batch_size=batch_size, lr=lr,
        clips_per_item=clips_per_item, noise_draws=noise_draws, stride=stride,
        weight_decay=weight_decay, seed=seed, context_clips=context_clips, modalities=modalities,
        max_steps=max_steps, checkpoint_every=checkpoint_every, threads=threads,
        autocast=autocast, augment=augment, augment_shift=augment_shift, device=device, workers=workers,
        deterministic=deterministic,
        overrides={name: value for name, value in chosen.items() if value is not None},
    )
    if ema_decay is not None:  # unset: TrainConfig's default
        config = dataclasses.replace(config, ema_decay=ema_decay)
    if frozen_video_once is not None:
        config = dataclasses.replace(config, frozen_video_once=frozen_video_once)
    result = run_training(config, RichTrainReporter(console), resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 speaks for the run
        return
    ran = result.steps_this_call
    done = f"trained {ran} steps" if ran == result.steps else f"trained {ran} steps, to step {result.steps},"
    # soft_wrap: the paths stay whole on one line, to copy or grep, whatever the terminal's width
    console.print(f"{done} in {result.seconds:.0f} s ({result.data_wait_seconds:.0f} s of it waiting for data); "
                  f"latest: {result.checkpoint}; best: {result.best}", markup=False, soft_wrap=True)


def generate(
    model: Path = typer.Option(..., "--model", "--checkpoint",
                               help="Checkpoint folder (RUN/best) or export folder (engines/NAME)."),
    backend: str = typer.Option("auto", help=f"{', '.join(backend_names())} "
                                "(auto: torch for a checkpoint, ort for an export)."),
    precision: Optional[str] = typer.Option(None, help="Graph precision, one the backend runs: "
                                            f"{', '.join(all_precisions())} (default: the backend's first)."),
    threads: int = typer.Option(2, min=1, help="ONNX Runtime threads."),
    video: Path = typer.Option(..., help="Speaker video (any size and frame rate OpenCV reads; brought to 30 fps "
                               "by its frames' times)."),
    audio: Optional[Path] = typer.Option(None, help=AUDIO_HELP),
    out: Path = typer.Option(..., help="Output folder."),
    preview: bool = typer.Option(False, "--preview",
                                 help="Also write preview.mp4: the speaker beside a drawn listener."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help=SAMPLER_HELP),
    steps: Optional[int] = typer.Option(None, min=1, max=100, help="Denoising steps (default: the sampler's)."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED),
    pad_audio: bool = typer.Option(False, PAD_AUDIO_OPTION, help=PAD_AUDIO_HELP),
    device: str = typer.Option("auto", help="Where the torch backend runs a checkpoint: cpu, cuda, cuda:N, or "
                               "auto (CUDA when there is a GPU). Export backends keep theirs (ort: CPU, trt: GPU)."),
    face: Optional[str] = typer.Option(None, help=FACE_HELP),
    box: Optional[str] = typer.Option(None, help=BOX_HELP),
) -> None:
    """Listener motion for a speaker video + audio: listener_coeffs.npy, listener.json, listener.png."""
    from fad_edge.generate import OUTPUT_NAMES, face_summary, generate_files

    check_threads(threads)
    check_sampler_name(sampler)
    check_output_dir(out)
    check_not_inputs([out, *(out / name for name in OUTPUT_NAMES)], [model, video, audio])
    check_not_dataset(out)
    cropper = _face_cropper(face, box)
    with _open_runner_on(model, backend, precision, steps, seed, threads, device, sampler) as runner:
        settings = {"model": str(model), "backend": runner.name, "sampler": sampler, "steps": runner.settings.steps,
                    "seed": seed, "start_step": runner.settings.start_step,
                    "start_noise": runner.settings.start_noise, "temperature": runner.settings.temperature,
                    "rotation_noise": runner.settings.rotation_noise, "face": cropper.mode}
        result = generate_files(runner, video, audio, out, pad_audio=pad_audio, settings=settings,
                                preview=preview, face=cropper, pad_option=PAD_AUDIO_OPTION)
    assert result.face is not None
    notes.print(face_summary(result.face, result.n_frames), style=None if result.face.face_found else "bold yellow",
                highlight=False, markup=False)
    for line in result.notes:
        notes.print(f"note: {line}", style="yellow", highlight=False, markup=False)
    console.print(json.dumps({"motion": str(result.motion_path), "json": str(result.json_path),
                              "plot": str(result.plot_path) if result.plot_path else None, "frames": result.n_frames,
                              "frames_without_face": result.face.frames_without_face,
                              "preview": str(result.preview_path) if result.preview_path else None}),
                  markup=False, highlight=False, soft_wrap=True)  # one line of JSON, whatever the paths hold


def _face_cropper(face: Optional[str], box: Optional[str]) -> FaceCropper:
    """The face crop that --face and --box ask for: the detector unless a box is given."""
    from fad_edge.runtime.face import FACE_MODES, FaceCropper, parse_box

    mode = face or ("box" if box is not None else "detect")
    if mode not in FACE_MODES:
        raise FadEdgeError(f"--face {mode!r}: use detect, box or none")
    if (mode == "box") != (box is not None):
        raise FadEdgeError("--face box needs --box x,y,w,h" if mode == "box"
                           else f"--box is used only with --face box, not with --face {mode}")
    return FaceCropper.for_files(mode, parse_box(box) if box is not None else None)


def _open_runner_on(model: Path, backend: str, precision: Optional[str], steps: Optional[int], seed: int,
                    threads: int, device: str, sampler: str = DEFAULT_SAMPLER) -> ClipRunner:
    """`open_runner`, with the torch backend's model moved to --device; other backends only check it.

    Only the torch backend takes a device: an export backend has one of its own (the table's), and
    --device may name it or say auto, nothing else.
    """
    from fad_edge.devices import AUTO, parse_device
    from fad_edge.runtime.select import open_runner, resolve_backend

    chosen = get_backend(resolve_backend(model, backend))
    request = parse_device(device)
    if chosen.name != "torch":
        if request.kind != AUTO and (request.kind != chosen.device or request.index is not None):
            # Only the backends that read what this one reads (an export, or a checkpoint) can take its place.
            others = [b.name for b in BACKENDS.values() if b.reads == chosen.reads and b.device != chosen.device]
            hint = f"for {'a GPU' if chosen.device == 'cpu' else 'a CPU'} use --backend {' or '.join(others)}"
            place = "the CPU" if chosen.device == "cpu" else "a CUDA GPU"
            raise FadEdgeError(f"--device {request}: backend {chosen.name} runs on {place} "
                               f"(--device moves only the torch backend); {hint}")
        return open_runner(model, backend, precision, steps=steps, seed=seed, threads=threads, sampler=sampler)
    from fad_edge.devices import resolve_device
    from fad_edge.runtime.torch_runner import TorchRunner

    run_on = resolve_device(device)  # before loading anything: a missing GPU is one line, at once
    runner = open_runner(model, backend, precision, steps=steps, seed=seed, threads=threads, sampler=sampler)
    assert isinstance(runner, TorchRunner)
    if run_on.type == "cpu":
        return runner
    return TorchRunner(runner.model, seed=seed, settings=runner.settings, device=run_on)


def explain(
    checkpoint: Path = typer.Option(..., help="Checkpoint folder."),
    video: Path = typer.Option(..., help="Speaker video."),
    audio: Optional[Path] = typer.Option(None, help=AUDIO_HELP),
    frame: int = typer.Option(0, min=0, help="Frame to explain, counted at 30 fps as generate's output rows."),
    target: str = typer.Option("motion", help="motion: what drives the predicted reaction; "
                               "features: the video features."),
    out: Path = typer.Option(Path("saliency.png"), help="PNG to write."),
    device: str = typer.Option("auto", help="Where the gradients are computed: cpu, cuda, cuda:N, or auto "
                               "(CUDA when there is a GPU)."),
    pad_audio: bool = typer.Option(False, PAD_AUDIO_OPTION, help=PAD_AUDIO_HELP),
    face: Optional[str] = typer.Option(None, help=FACE_HELP),
    box: Optional[str] = typer.Option(None, help=BOX_HELP),
) -> None:
    """Gradient saliency of the video encoder over a speaker frame (the paper's Figure 5), for the motion
    `generate` predicts with the same video, audio and face options (its default sampler and seed)."""
    import numpy as np

    from fad_edge.checkpoint import load_checkpoint
    from fad_edge.devices import resolve_device
    from fad_edge.explain import TARGETS, check_explainable, frame_saliency, save_saliency_figure
    from fad_edge.generate import read_speaker, speaker_inputs

    check_choice(target, "--target", TARGETS)
    check_output_file(out)
    check_not_inputs([out], [checkpoint, video, audio])
    if out.suffix.lower() != ".png":  # the figure is written as PNG, whatever the name says
        raise typer.BadParameter(f"{out} does not end in .png; the saliency figure is a PNG", param_hint="--out")
    cropper = _face_cropper(face, box)
    run_on = resolve_device(device)
    loaded = load_checkpoint(checkpoint)
    check_explainable(loaded.config, target)
    media = read_speaker(video, audio, cropper, pad_audio, PAD_AUDIO_OPTION, sizes=(loaded.config.image_size,))
    if frame >= media.n_frames:
        raise typer.BadParameter(f"{frame} is past the video's last frame ({media.n_frames - 1})",
                                 param_hint="'--frame'")
    inputs = speaker_inputs(media, loaded.config)
    heat = frame_saliency(loaded.model, inputs, frame, target, run_on)
    picture = (inputs.images[frame].transpose(1, 2, 0) * 255).astype(np.uint8)
    path = save_saliency_figure(picture, heat, out, f"{video.name}, frame {frame} ({target})")
    console.print(f"wrote {path} (the map is scaled to its largest gradient magnitude, {heat.max():.3g})",
                  markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(short_help="train FAD/ELNet (resumable; DDP under torchrun)")(train)
    app.command(short_help="listener motion for a video (+ audio): .npy, JSON, plot, MP4")(generate)
    app.command(short_help="gradient saliency of the video encoder (paper's Figure 5)")(explain)
