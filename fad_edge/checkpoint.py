"""Checkpoints: safetensors weights + JSON config and normalization, written atomically.

A checkpoint is a folder holding `model.safetensors` (weights and the normalization buffers),
`model.json` (the model config, normalization, package version and weights hash) and, for resuming,
`train_state.safetensors` + `train_state.json` (optimizer moments, RNG states, step counters).
Saving writes a fresh sibling folder and swaps it in with renames, so a kill at any moment leaves
either the old or the new checkpoint whole, never a mix. Loading never unpickles anything, and
checks the weights (and the training state) against the SHA-256 hashes in model.json, so a
corrupted or swapped file is refused by name instead of loading silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fad_edge import __version__
from fad_edge.artifact import MANIFEST
from fad_edge.atomic import staged_folder
from fad_edge.data.normalization import Normalization
from fad_edge.digests import file_sha256
from fad_edge.errors import CheckpointError, DataError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig

MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
STATE_WEIGHTS = "train_state.safetensors"
STATE_JSON = "train_state.json"
CHECKPOINT_FILES = (MODEL_WEIGHTS, MODEL_JSON, STATE_WEIGHTS, STATE_JSON)  # all a checkpoint folder holds
FORMAT = "fad-edge-checkpoint/1"


@dataclass
class LoadedCheckpoint:
    """A model ready for inference plus what was saved beside it."""

    model: ListenerModel
    config: ModelConfig
    normalization: Normalization
    info: dict
    path: Path


def save_checkpoint(
    folder: Path,
    model: ListenerModel,
    normalization: Normalization,
    extra: dict | None = None,
    train_tensors: dict[str, torch.Tensor] | None = None,
    train_json: dict | None = None,
) -> Path:
    """Write a checkpoint folder atomically (build beside it, then swap by rename)."""
    folder = Path(folder)
    try:
        with staged_folder(folder) as staging:
            weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
            save_file(weights, str(staging / MODEL_WEIGHTS), metadata={"format": FORMAT})
            info = {
                "format": FORMAT,
                "fad_edge_version": __version__,
                "config": model.config.to_dict(),
                "normalization": normalization.to_dict(),
                "weights_sha256": file_sha256(staging / MODEL_WEIGHTS),
                **(extra or {}),
            }
            if train_tensors is not None:
                state = {k: v.detach().cpu().contiguous() for k, v in train_tensors.items()}
                save_file(state, str(staging / STATE_WEIGHTS))
                (staging / STATE_JSON).write_text(json.dumps(train_json or {}, indent=2))
                info["train_state_sha256"] = file_sha256(staging / STATE_WEIGHTS)
                info["train_state_json_sha256"] = file_sha256(staging / STATE_JSON)  # its step and history too
            (staging / MODEL_JSON).write_text(json.dumps(info, indent=2))
        return folder
    except SafetensorError as error:  # safetensors words a full disk its own way; the earlier checkpoint stays
        # an OSError: the machine's problem, not the input's (exit 1)
        raise OSError(f"{folder}: the checkpoint could not be written ({error}); the earlier one is kept") \
            from error


def resolve_checkpoint(folder: Path) -> Path:
    """The folder to read: the given one, or its `.old` twin when a save was cut between renames."""
    folder = Path(folder)
    if (folder / MODEL_JSON).exists():
        return folder
    old = folder.with_name(folder.name + ".old")
    if (old / MODEL_JSON).exists():
        return old
    if folder.is_file():
        raise CheckpointError(f"{folder}: a checkpoint is a folder holding {MODEL_JSON} and {MODEL_WEIGHTS}")
    if (folder / MANIFEST).is_file():
        raise CheckpointError(f"{folder}: is an export folder ({MANIFEST}), not a checkpoint; give the checkpoint "
                              "folder it was exported from (a run's best/ or checkpoint/)")
    raise CheckpointError(f"{folder}: no fad-edge checkpoint here (missing {MODEL_JSON})")


def read_checkpoint_info(folder: Path) -> dict:
    """The checkpoint's JSON, validated as ours."""
    path = resolve_checkpoint(folder) / MODEL_JSON
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise CheckpointError(f"{path}: not a fad-edge checkpoint (format {found!r})")
    return info


MAX_MISMATCH_CHARS = 240  # one terminal line or three: a mismatch can list hundreds of keys


def state_dict_mismatch(error: RuntimeError) -> str:
    """The first mismatch torch names, for a one-line error: its first line is only a header
    ("Error(s) in loading state_dict for ListenerModel:")."""
    details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    detail = details[0] if details else str(error).strip()
    if len(detail) > MAX_MISMATCH_CHARS:
        detail = detail[:MAX_MISMATCH_CHARS].rsplit(" ", 1)[0] + " [cut]"
    more = len(details) - 1
    return detail + (f"; and {more} more mismatch{'es' if more > 1 else ''}" if more > 0 else "")


def load_checkpoint(folder: Path) -> LoadedCheckpoint:
    """Load weights (safetensors, no pickle) into a fresh model in eval mode."""
    folder = resolve_checkpoint(folder)
    info = read_checkpoint_info(folder)
    try:
        config = ModelConfig.from_dict(info["config"])
        normalization = Normalization.from_dict(info["normalization"])
    except (KeyError, TypeError, ValueError, DataError) as error:
        raise CheckpointError(f"{folder / MODEL_JSON}: invalid config or normalization ({error})") from None
    weights_path = folder / MODEL_WEIGHTS
    _check_hash(weights_path, info.get("weights_sha256"), MODEL_JSON)
    try:
        weights = load_file(str(weights_path))
    except (OSError, SafetensorError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not readable safetensors ({error})") from None
    model = ListenerModel(config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path}: weights do not fit the saved config "
                              f"({state_dict_mismatch(error)})") from None
    model.eval()
    return LoadedCheckpoint(model, config, normalization, info, folder)


def load_train_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The resumable training state of a checkpoint, or None when it has none."""
    folder = resolve_checkpoint(folder)
    if not (folder / STATE_WEIGHTS).exists():
        return None
    info = read_checkpoint_info(folder)
    for name, key in ((STATE_WEIGHTS, "train_state_sha256"), (STATE_JSON, "train_state_json_sha256")):
        if info.get(key) is not None:  # checkpoints from before a hash was recorded have none
            _check_hash(folder / name, info[key], MODEL_JSON)
    try:
        tensors = load_file(str(folder / STATE_WEIGHTS))
        state = json.loads((folder / STATE_JSON).read_text())
    except (OSError, SafetensorError, ValueError) as error:
        raise CheckpointError(
            f"{folder}: training state is unreadable ({error}); resume from another checkpoint"
        ) from None
    return tensors, state


def _check_hash(path: Path, expected: object, record: str) -> None:
    """Refuse a file whose SHA-256 is not the one recorded beside it (bit rot, a partial copy, a swapped file)."""
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(f"{path.parent / record}: no valid SHA-256 recorded for {path.name}; "
                              "not a complete fad-edge checkpoint")
    try:
        found = file_sha256(path)
    except OSError as error:
        raise CheckpointError(f"{path}: not readable ({error.strerror or error})") from None
    if found != expected:
        raise CheckpointError(f"{path}: SHA-256 {found[:12]} does not match {expected[:12]} recorded in {record}; "
                              "the file is corrupt or was replaced: copy the checkpoint again or use another")
