"""Does the DiT look up the right memory token? Attention of target tokens over the memory.

    python benchmarks/attention_lookup.py LABEL=MODEL_DIR [LABEL=MODEL_DIR ...] [--out results/attention-lookup]

For each model: the unseen videos of `framemem bench retrieval` (4 procedural + bikes), 6
target frames each, one DiT forward at t = 1 (pure noise: whatever the model knows of the
frame comes through its memory). Per layer it reports the share of the target tokens'
self-attention that goes to memory tokens and, for the head that looks best, how much of
that memory attention lands on the memory frame holding the target frame, and on the one
memory token whose footprint holds the target token. Chance: 1 / memory frames and
1 / memory tokens. Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from diffusers.models.transformers import transformer_wan

from framemem.data.histories import to_model
from framemem.bench.evaluation import unseen_videos
from framemem.files import write_json, write_text
from framemem.models.framemem import FrameMem
from framemem.training.stage1_retrieval import gather_frames

TARGETS_PER_VIDEO = 6


class AttentionRecorder:
    """Stands in for diffusers' `dispatch_attention_fn` inside the Wan blocks: records the
    softmax weights (H, N, N) of each self-attention call, then runs the real attention."""

    def __init__(self):
        self.weights: list[torch.Tensor] = []
        self.real = transformer_wan.dispatch_attention_fn

    def __call__(self, query, key, value, **kwargs):
        if query.shape[1] == key.shape[1]:  # self-attention; cross-attention keys are the text
            q, k = query[0].float().transpose(0, 1), key[0].float().transpose(0, 1)  # (H, N, d)
            self.weights.append(torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1))
        return self.real(query, key, value, **kwargs)


@torch.no_grad()
def lookup(model, video: torch.Tensor, frames: list[int]) -> tuple[list[np.ndarray], dict]:
    """Per layer, means over the target `frames` of each head's memory share, right-frame share
    and right-token share, as an array (3, heads); and the chance levels."""
    encoder = model.encoder
    if not hasattr(encoder, "rate_thw"):
        raise SystemExit("error: attention lookup needs φ on a regular grid (not the FramePack schedule)")
    latents, memory = model.encode_history(video)
    (tm, hm, wm), m = memory.grid, memory.tokens.shape[1]
    rt, rh, rw = encoder.rate_thw
    _, ph, pw = encoder.patch
    gh, gw = latents.shape[3] // ph, latents.shape[4] // pw
    hh, ww = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    per_layer: list[list[np.ndarray]] = []
    generator = torch.Generator().manual_seed(0)
    for j in frames:
        x0 = gather_frames(latents, torch.tensor([[j]]))
        noise = torch.randn(x0.shape, generator=generator)
        recorder = AttentionRecorder()
        with mock.patch.object(transformer_wan, "dispatch_attention_fn", recorder):
            model.dit(noise, torch.tensor([[float(j)]]), torch.ones(1, 1), memory)
        right_token = ((j // rt) * hm * wm + (hh.flatten() // rh) * wm + ww.flatten() // rw)  # (targets,)
        for layer, weights in enumerate(recorder.weights):
            to_memory = weights[:, m:, :m]  # (H, targets, memory)
            share = to_memory.sum(-1)
            by_frame = to_memory.unflatten(2, (tm, -1)).sum(-1)
            frame = (by_frame[:, :, j // rt] / share).mean(1)
            token = (to_memory.gather(2, right_token[None, :, None].expand(len(weights), -1, 1))[..., 0] / share).mean(1)
            if len(per_layer) <= layer:
                per_layer.append([])
            per_layer[layer].append(np.stack([share.mean(1).numpy(), frame.numpy(), token.numpy()]))  # (3, H)
    return [np.mean(items, axis=0) for items in per_layer], {"frame": 1 / tm, "token": 1 / m}


def summarise(per_video: list[list[np.ndarray]]) -> list[dict]:
    """Means over videos of each layer's (3, heads) shares, with the best head picked after averaging."""
    rows = []
    for layer in range(len(per_video[0])):
        share, frame, token = np.mean([video[layer] for video in per_video], axis=0)
        best = int(np.argmax(token))
        rows.append({"layer": layer, "memory_share": float(share.mean()), "best_head": best,
                     "right_frame": float(frame[best]), "right_token": float(token[best])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="LABEL=MODEL_DIR")
    parser.add_argument("--out", default="results/attention-lookup")
    args = parser.parse_args()
    results = {}
    for item in args.models:
        label, _, folder = item.rpartition("=")
        if not label or not Path(folder, "framemem.json").is_file():
            raise SystemExit(f"error: {item}: expected LABEL=MODEL_DIR with a framemem model folder")
        model = FrameMem.from_pretrained(folder).eval()
        mc = model.config.model
        kinds: dict[str, list] = {}
        for kind, frames in unseen_videos(mc).values():
            video = to_model(frames)
            targets = np.linspace(0, model.codec.latent_frames(video.shape[2]) - 1, TARGETS_PER_VIDEO).round()
            kinds.setdefault(kind, []).append(lookup(model, video, targets.astype(int).tolist()))
        results[label] = {"model": folder, "kinds": {
            kind: {"chance": {k: float(np.mean([c[k] for _, c in runs])) for k in ("frame", "token")},
                   "layers": summarise([layers for layers, _ in runs])} for kind, runs in kinds.items()}}
        print(f"{label}: done", file=sys.stderr)
    out = Path(args.out)
    write_json(out.with_name(out.name + ".json"), results)
    write_text(out.with_name(out.name + ".md"), report(results, shlex.join(["python", "benchmarks/attention_lookup.py", *sys.argv[1:]])))
    print(out.with_name(out.name + ".md").read_text())


def report(results: dict, command: str) -> str:
    lines = ["# Does the DiT look up the right memory token?", "", f"Command: `{command}`", "",
             "One forward at t = 1 per target frame (6 per video; 4 unseen procedural videos and bikes). "
             "memory share: the part of the target tokens' self-attention that goes to memory tokens (mean over "
             "heads). For the head with the highest right-token share: of its memory attention, the share on "
             "the memory frame that holds the target frame, and on the one memory token whose footprint holds "
             "the target token. Chance: the mean over the videos of 1 / memory frames and 1 / memory tokens "
             "(bikes is shorter than 20 s).", "",
             "| model | videos | layer | memory share | best head | right frame | right token | chance (frame / token) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, result in results.items():
        for kind, found in result["kinds"].items():
            chance = found["chance"]
            for row in found["layers"]:
                lines.append(f"| {label} | {kind} | {row['layer']} | {row['memory_share']:.2f} | {int(row['best_head'])} | "
                             f"{row['right_frame']:.2f} | {row['right_token']:.2f} | "
                             f"{chance['frame']:.3f} / {chance['token']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
