"""How well can the nod be learned from the speaker's log-mel alone, outside FAD?

A causal dilated convolution net reads each frame's log-mel (its 4 mel frames, all bands) over the
frames before it and is trained, supervised, on the listener's head pitch of the train split; the
test split is scored as `fad-edge rules` scores the nod (Pearson r of the session-centred pitch and
the true nod component). It bounds what FAD's audio path could learn from the same data in a short
run, without diffusion and with the whole loss on the one dim; the README's design notes compare it
with FAD.

    PYTHONPATH=. python bench/nod_probe.py --data DATA [--dilations 1,2,4,8] [--steps 801] [--windows 8]
        [--out probe.json]

`--windows 1` feeds it 256 frames a step, about what the demo's training step reads (4 windows of 8
clips: 256 target frames).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fad_edge.constants import HEAD, MELS_PER_FRAME
from fad_edge.data.dataset import load_split
from fad_edge.data.layout import list_sessions
from fad_edge.data.synthetic import listener_rules
from fad_edge.data.synthetic_dataset import read_session_record
from fad_edge.models.presets import preset

WINDOW = 256  # frames per training window
WARMUP = 64  # frames at a window's start whose loss is skipped: their past is cut off


class CausalConv(nn.Module):
    def __init__(self, inputs: int, outputs: int, dilation: int) -> None:
        super().__init__()
        self.pad = 2 * dilation
        self.conv = nn.Conv1d(inputs, outputs, 3, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))


def probe_net(inputs: int, dilations: list[int], channels: int = 64) -> nn.Sequential:
    layers: list[nn.Module] = [CausalConv(inputs, channels, 1), nn.GELU()]
    for dilation in dilations:
        layers += [CausalConv(channels, channels, dilation), nn.GroupNorm(8, channels), nn.GELU()]
    return nn.Sequential(*layers, nn.Conv1d(channels, 1, 1))


def sessions(data: Path, split: str) -> list[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """(log-mel (4 * n_mels, T), head pitch (T,), true nod (T,)) per session of the split."""
    config = preset("small")
    out = []
    for features, folder in zip(load_split(data, split, config.image_size, config.n_mels), list_sessions(data, split)):
        seed, synthetic = read_session_record(folder)
        frames = features.n_frames
        mel = torch.tensor(features.mel[: frames * MELS_PER_FRAME]).reshape(frames, -1).T.contiguous()
        pitch = torch.tensor(features.listener[:, HEAD.start], dtype=torch.float32)
        out.append((mel, pitch, listener_rules(seed, synthetic).components["nod"][:frames]))
    return out


def nod_r(net: nn.Module, test: list, mean: torch.Tensor, std: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = [(net(mel[None])[0, 0] * std + mean).numpy() for mel, _, _ in test]
    centred = np.concatenate([p - p.mean() for p in predicted])
    true = np.concatenate([nod - nod.mean() for _, _, nod in test])
    return float(np.corrcoef(centred, true)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dilations", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=801)
    parser.add_argument("--windows", type=int, default=8, help="training windows of 256 frames per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    dilations = [int(d) for d in args.dilations.split(",")]
    train, test = sessions(args.data, "train"), sessions(args.data, "test")
    pitch = torch.cat([p for _, p, _ in train])
    mean, std = pitch.mean(), pitch.std()
    net = probe_net(train[0][0].shape[0], dilations)
    optimizer = torch.optim.AdamW(net.parameters(), 2e-3)
    curve = {}
    for step in range(args.steps):
        picks = [train[i] for i in rng.integers(len(train), size=args.windows)]
        starts = [int(rng.integers(0, mel.shape[1] - WINDOW)) for mel, _, _ in picks]
        x = torch.stack([mel[:, a : a + WINDOW] for (mel, _, _), a in zip(picks, starts)])
        y = torch.stack([(p[a : a + WINDOW] - mean) / std for (_, p, _), a in zip(picks, starts)])
        loss = ((net(x)[:, 0, WARMUP:] - y[:, WARMUP:]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 200 == 0 or step == args.steps - 1:
            curve[step] = nod_r(net, test, mean, std)
            print(f"step {step}: test nod r {curve[step]:.3f}", flush=True)
    reach = 2 + 2 * sum(dilations)
    result = {"data": args.data.name, "train_sessions": len(train), "test_sessions": len(test),
              "windows": args.windows, "reach_frames": reach, "dilations": dilations, "nod_r_by_step": curve,
              # The best is chosen on the test split it is scored on: an upper bound; the last is not chosen.
              "best_nod_r": max(curve.values()), "last_nod_r": curve[args.steps - 1]}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
