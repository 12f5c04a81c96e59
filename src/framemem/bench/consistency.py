"""`framemem bench consistency`: does a scene look the same when the story comes back to it?

Our offline stand-in for the paper's cloth / identity / object consistency (Table 2).
Cases are never-trained procedural videos in which a scene returns after ≥ 10 s of other
scenes. Each model continues the video from just before the return (the init video holds
everything before it, the first appearance included) with the video's own storyboard,
and the generated return is compared with the first appearance: PSNR and SSIM against
the best-matching frame of the first appearance, and a feature similarity (cosine of
HOG + colour-histogram descriptors). References: the true return (a ceiling: the same
scene under a new camera path) and a different scene of the same video (a floor).

Variants (every one gets the same stage-2 steps; stage 1 is shared where it exists):
  proposed          stage-1 proposed φ (pretrained), frozen in stage 2
  only_lr           stage-1 only-LR φ, frozen in stage 2
  without_pretrain  a fresh proposed φ trained in stage 2 for stage-1 + stage-2 steps
  sliding_window    no long memory: the DiT's patchifier over the last 0.5 s (2 latent
                    frames, 128 tokens: about the memory's 160)
  sliding_window_memory  proposed, plus the last 0.5 s (WINDOW_FRAMES latent frames) at full
                    resolution beside the memory (paper §4.5; ar.window_frames)
  memory_once       proposed with model.memory_attention = memory_only in both stages (its own
                    stage 1): memory reads only memory, its keys and values once per section
  cross_attention   proposed with model.cross_attention in both stages (its own stage 1): φ's
                    features also feed every DiT block by cross-attention (paper §4.5)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import FrameMemConfig, get_preset
from ..rates import parse_rate
from ..files import write_json
from ..metrics import Continuity, mean_std, psnr, ssim
from ..models.framemem import section_latent_frames

CASE_SEED_BASE = 1_600_000_000  # never trained on, never held out, not the demo's
VARIANTS = ("proposed", "only_lr", "without_pretrain", "sliding_window", "sliding_window_memory", "memory_once",
            "cross_attention")
WINDOW_FRAMES = 2  # sliding_window_memory: the same 0.5 s as the sliding_window row, beside the memory


@dataclass
class ConsistencyBudget:
    stage1_steps: int = 1000
    stage2_steps: int = 500
    seeds: tuple[int, ...] = (0, 1)
    cases: int = 6
    generate_seconds: float = 2.0
    sample_steps: int = 16
    min_gap_seconds: float = 10.0
    batch_size: int | None = None  # None: the preset's
    quick: bool = False
    checkpoints: tuple[str, ...] = ()  # stage-2 models scored too, as they are (seeds: generation only)
    variants: tuple[str, ...] = VARIANTS  # fewer: rows added to an earlier table of the same budget


QUICK = ConsistencyBudget(stage1_steps=2, stage2_steps=2, seeds=(0,), cases=1, generate_seconds=1.0, sample_steps=2,
                          batch_size=1, quick=True)


def find_cases(config: FrameMemConfig, count: int, min_gap: float, in_window: bool = True,
               seconds: float = 40.0) -> list[dict]:
    """Procedural videos with a scene that returns ≥ `min_gap` s after its last appearance
    (`in_window`: with that appearance inside the memory window when the return starts):
    {seed, video (T, H, W, 3), shots, first, back, other}."""
    from ..data.procedural import procedural_video

    mc = config.model
    cases, seed = [], CASE_SEED_BASE
    while len(cases) < count:
        video, shots = procedural_video(seed, int(seconds * mc.fps), mc.height, mc.width, mc.fps)
        for i, back in enumerate(shots):
            earlier = [s for s in shots[:i] if s.scene == back.scene]
            if not back.returning or not earlier or back.end - back.start < mc.fps:
                continue
            first = earlier[-1]
            gap = (back.start - first.end) / mc.fps
            others = [s for s in shots[:i] if s.scene != back.scene]
            if gap >= min_gap and (not in_window or back.start - first.start <= mc.history_frames) and others:
                cases.append({"seed": seed, "video": video, "shots": shots, "first": first, "back": back,
                              "other": max(others, key=lambda s: s.end - s.start)})
                break
        seed += 1
    return cases


def descriptor(frame: np.ndarray) -> np.ndarray:
    """HOG of the grey image + an 8-bin-per-channel colour histogram, unit length."""
    from skimage.feature import hog

    grey = frame.astype(np.float32).mean(axis=2) / 255
    shape = hog(grey, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
    colour = np.concatenate([np.histogram(frame[..., c], bins=8, range=(0, 256))[0] for c in range(3)]).astype(np.float32)
    vector = np.concatenate([shape / (np.linalg.norm(shape) + 1e-8), colour / (np.linalg.norm(colour) + 1e-8)])
    return vector / np.linalg.norm(vector)


def match_scores(frames: np.ndarray, reference: np.ndarray) -> dict:
    """Mean over `frames` (N, H, W, 3) of PSNR / SSIM / feature cosine against the best
    (highest-PSNR) frame of `reference` (M, H, W, 3)."""
    def tensor(x):
        return torch.from_numpy(x).permute(2, 0, 1).float() / 127.5 - 1

    refs = [tensor(r) for r in reference]
    ref_features = [descriptor(r) for r in reference]
    scores = {"psnr": [], "ssim": [], "feature": []}
    for frame in frames:
        f = tensor(frame)
        best = int(np.argmax([psnr(f, r) for r in refs]))
        scores["psnr"].append(psnr(f, refs[best]))
        scores["ssim"].append(ssim(f, refs[best]))
        scores["feature"].append(float(descriptor(frame) @ ref_features[best]))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def train_variant(variant: str, seed: int, budget: ConsistencyBudget, runs: Path) -> Path:
    """Stage 1 (where the variant has one) and stage 2; resumable; returns the stage-2 model."""
    from ..training.stage2_autoregressive import finetune
    from .retrieval_table import release_run, run_config, train_run
    from ..training.checkpoints import latest_checkpoint
    from .budgets import EXTENSIONS, apply_extension

    stage1_variant = variant if variant in ("only_lr", *EXTENSIONS) else "proposed"
    stage1 = runs / f"stage1-{stage1_variant}-seed{seed}"
    seconds = 4.0 if budget.quick else None
    config1 = run_config("4x4x2", seed, budget.stage1_steps, seconds)
    stage1_variant = apply_extension(config1, stage1_variant)  # stage 2 keeps the checkpoint's model numbers
    config1.train.batch_size = budget.batch_size or config1.train.batch_size
    model1 = train_run(config1, stage1_variant, stage1, real=not budget.quick)
    stage2 = runs / f"stage2-{variant}-seed{seed}"
    if (stage2 / "model" / "framemem.json").exists():
        return stage2 / "model"
    config = get_preset("tiny")
    config.train.seed, config.train.lr = seed, config.ar.lr
    config.train.batch_size = budget.batch_size or config.train.batch_size
    config.train.steps = budget.stage2_steps + (budget.stage1_steps if variant == "without_pretrain" else 0)
    config.train.eval_every = config.train.checkpoint_every = max(1, min(250, config.train.steps))
    fresh, window = None, None
    if variant == "without_pretrain":
        fresh = "proposed"
    elif variant == "sliding_window":
        fresh, window, config.model.rate = "large_patchifier", 0.5, parse_rate("1x1x1")
    elif variant == "sliding_window_memory":
        config.ar.window_frames = WINDOW_FRAMES
    finetune(config, model1, stage2, resume=latest_checkpoint(stage2) is not None, fresh_memory=fresh,
             window_seconds=window)
    release_run()
    return stage2 / "model"


@torch.no_grad()
def evaluate_case(pipe, case: dict, budget: ConsistencyBudget, seed: int) -> tuple[dict, np.ndarray]:
    """Generate the return of one case; scores and the generated frames inside the return shot."""
    from ..outputs import as_uint8
    from ..data.storyboard import Storyboard

    mc = pipe.framemem_config.model
    block = pipe.codec.pixel_frames(pipe.memory_encoder.block_frames)
    back, video = case["back"], case["video"]
    start = back.start // block * block
    board = Storyboard(tuple(s.start / mc.fps for s in case["shots"]), tuple(s.caption for s in case["shots"]))
    out = pipe(board, seconds=budget.generate_seconds, video=torch.from_numpy(video[:start]),
               num_inference_steps=budget.sample_steps, generator=torch.Generator().manual_seed(seed), output_type="pt")
    new = as_uint8(out.frames[0])
    whole = torch.cat([torch.from_numpy(video[:start]), new])  # the history, then the new frames
    generated = whole[back.start : min(back.end, len(whole))].numpy()
    scores = match_scores(generated, video[case["first"].start : case["first"].end])
    continuity = Continuity()  # the history ends at a planned cut (the scene returns): it is not scored
    per_section = section_latent_frames(pipe.model) * pipe.codec.temporal_factor  # continuing: whole sections
    for index, first in enumerate(range(0, len(new), per_section)):
        planned = index > 0 and out.sections[index]["prompt"] != out.sections[index - 1]["prompt"]
        continuity.add(new[first : first + per_section].numpy(), planned_cut=planned)
    summary = continuity.summary()
    scores["continuity"] = summary["ratio"] if summary else None  # one section, or only planned cuts
    return scores, generated


def consistency_table(budget: ConsistencyBudget, runs: Path, out: Path) -> dict:
    """Train every variant × seed, evaluate every case; write OUT.md/.json/-grid.png."""
    from ..outputs import load_generation

    config = get_preset("tiny")
    if budget.quick:
        config.model.seconds = 4.0
    cases = find_cases(config, budget.cases, 0.0 if budget.quick else budget.min_gap_seconds, not budget.quick)
    references = {"truth": [], "other_scene": []}
    for case in cases:
        first = case["video"][case["first"].start : case["first"].end]
        references["truth"].append(match_scores(case["video"][case["back"].start : case["back"].end], first))
        references["other_scene"].append(match_scores(case["video"][case["other"].start : case["other"].end], first))
    records, pictures = [], {}
    bar = tqdm(total=(len(budget.variants) + len(budget.checkpoints)) * len(budget.seeds), desc="bench consistency",
               unit="run")
    for variant in (*budget.variants, *budget.checkpoints):
        per_seed = []
        for seed in budget.seeds:
            tqdm.write(f"run {bar.n + 1}/{bar.total}: {variant}, seed {seed}")
            trained = variant not in budget.checkpoints
            pipe = load_generation(train_variant(variant, seed, budget, runs) if trained else variant)
            pipe.set_progress_bar_config(disable=True)
            scores = []
            for i, case in enumerate(cases):
                score, frames = evaluate_case(pipe, case, budget, seed)
                scores.append(score)
                if seed == budget.seeds[0] and i == 0:
                    pictures[variant] = frames
            seed_scores = {k: float(np.mean([s[k] for s in scores])) for k in ("psnr", "ssim", "feature")}
            ratios = [s["continuity"] for s in scores if s["continuity"] is not None]
            seed_scores["continuity"] = float(np.mean(ratios)) if ratios else None
            per_seed.append(seed_scores)
            bar.update()
        record = {"variant": variant, "seeds": list(budget.seeds), "per_seed": per_seed}
        for key in ("psnr", "ssim", "feature", "continuity"):
            values = [s[key] for s in per_seed]
            if None in values:
                record[f"{key}_mean"] = record[f"{key}_std"] = None
                continue
            record[f"{key}_mean"], record[f"{key}_std"] = mean_std(values)
        records.append(record)
    bar.close()
    refs = {name: {k: float(np.mean([s[k] for s in scores])) for k in ("psnr", "ssim", "feature")}
            for name, scores in references.items()}
    result = {"budget": asdict(budget), "cases": [{"seed": c["seed"], "first": [c["first"].start, c["first"].end],
                                                   "return": [c["back"].start, c["back"].end], "scene": c["back"].scene}
                                                  for c in cases], "references": refs, "records": records}
    out.parent.mkdir(parents=True, exist_ok=True)
    from .report import consistency_grid, keep_earlier_rows, write_consistency_markdown

    order = {v: i for i, v in enumerate(VARIANTS)}
    added = keep_earlier_rows(out.with_suffix(".json"), result, lambda r: r["variant"])
    result["records"].sort(key=lambda r: order.get(r["variant"], len(order)))
    write_json(out.with_suffix(".json"), result)
    # the grid shows the rows run now: rows added to a table do not replace the whole table's grid
    consistency_grid(cases[0], pictures, out.with_name(out.name + ("-grid-added.png" if added else "-grid.png")))
    write_consistency_markdown(result, out.with_suffix(".md"))
    return result
