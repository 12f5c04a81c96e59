"""Reports of `framemem bench retrieval`: Markdown table, PSNR-vs-tokens plot, frame grid."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from PIL import Image, ImageDraw

from .budgets import QUICK, TITLES, Budget
from ..files import save_image, write_text
from ..outputs import time_label
from ..plots import plt

# The paper's orderings (Table 1): (better, worse) pairs of (variant, rate).
ORDERINGS = [
    (("proposed", "4x4x2"), ("only_lr", "4x4x2")),
    (("only_lr", "4x4x2"), ("large_patchifier", "4x4x2")),
    (("without_lr", "4x4x2"), ("large_patchifier", "4x4x2")),
    (("proposed", "2x2x1"), ("proposed", "2x2x2")),
    (("proposed", "2x2x2"), ("proposed", "4x4x2")),
]


def keep_earlier_rows(path: Path, result: dict, key) -> bool:
    """Grow a table row by row: the records of an earlier OUT.json made with the same budget
    (and cases), for rows this run did not measure, join `result` (earlier references too).
    One made with another budget is replaced, as before, never mixed in. Returns whether any
    earlier row was kept."""
    if not path.is_file():
        return False
    earlier = json.loads(path.read_text())
    ignore = ("specs", "variants", "checkpoints")
    same = lambda b: {k: v for k, v in json.loads(json.dumps(b)).items() if k not in ignore}  # noqa: E731
    if same(earlier.get("budget", {})) != same(result["budget"]) or earlier.get("cases") != result.get("cases"):
        return False
    ours = {key(r) for r in result["records"]}
    kept = [r for r in earlier.get("records", []) if key(r) not in ours]
    result["records"] = kept + result["records"]
    if kept:  # which rows were measured later, by a run of some rows (`--only`); a row run again is named once
        later = earlier.get("rows_run_later", []) + [list(key(r)) if isinstance(key(r), tuple) else key(r)
                                                     for r in result["records"][len(kept):]]
        result["rows_run_later"] = list({json.dumps(row): row for row in later}.values())
    for name, value in earlier.get("references", {}).items():
        result["references"].setdefault(name, value)
    return bool(kept)


def label(record: dict) -> str:
    rate = record["rate"].replace("x", "×")
    return TITLES[record["variant"]] + ("" if record["rate"] == "schedule" else f" ({rate})")


def orderings(records: list[dict]) -> list[str]:
    """One plain sentence per paper ordering: does it hold here, by how many dB."""
    by_key = {(r["variant"], r["rate"]): r for r in records}
    lines = []
    for better, worse in ORDERINGS:
        if better not in by_key or worse not in by_key:
            continue
        a, b = by_key[better], by_key[worse]
        diff = a["psnr_mean"] - b["psnr_mean"]
        spread = math.hypot(a["psnr_std"], b["psnr_std"])
        verdict = "holds" if diff > spread else "does not hold" if diff < -spread else "unresolved (within the seed spread)"
        if min(len(a["seeds"]), len(b["seeds"])) < 2:
            verdict = "unresolved (one seed: no spread to compare with)"
        lines.append(f"- {label(a)} > {label(b)}: **{verdict}** here, {diff:+.2f} dB "
                     f"(seed std {a['psnr_std']:.2f} and {b['psnr_std']:.2f}; combined ±{spread:.2f} dB).")
    return lines


def retrieval_command(budget: dict) -> str:
    """The `framemem bench retrieval` command line that reproduces `budget`'s figures."""
    default = asdict(QUICK if budget["quick"] else Budget())
    words = ["framemem bench retrieval"] + (["--quick"] if budget["quick"] else [])
    if budget["steps"] != default["steps"]:
        words.append(f"--steps {budget['steps']}")
    if list(budget["seeds"]) != list(default["seeds"]):
        words.append("--seeds " + " ".join(map(str, budget["seeds"])))
    if budget.get("lpips_backbone"):
        words.append(f"--lpips-backbone {Path(budget['lpips_backbone']).name} --lpips-linear {Path(budget['lpips_linear']).name}")
    return " ".join(words)


def write_markdown(result: dict, path: Path) -> None:
    budget = result["budget"]
    lines = [
        "# Table 1 at small scale: memory architectures and rates", "",
        f"Command: `{retrieval_command(budget)}` — every row trained with the tiny recipe for "
        f"{budget['steps']} steps, seeds {', '.join(map(str, budget['seeds']))}, then {budget['times_per_video']} "
        f"random frames of each of {budget['eval_videos']} unseen procedural videos"
        f"{' and bikes' if budget['real'] else ''}, Euler sampling with {budget['sample_steps']} steps. "
        "Figures are means over seeds ± their sample std; one-step PSNR is the x0 estimate from pure noise "
        "(the conditional mean given the memory, no sampler). The paper's figures (Zhang et al., 2025, Table 1) "
        "come from Wan/HunyuanVideo-scale models on their own test videos: compare orderings, not values.", "",
        "| Method | memory tokens | PSNR ↑ | SSIM ↑ | LPIPS ↓ | one-step PSNR ↑ | paper PSNR | paper SSIM | paper LPIPS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["records"]:
        paper = r["paper"] or {}
        paper_cells = " | ".join(f"{paper[k]:g}" if k in paper else "—" for k in ("psnr", "ssim", "lpips"))
        lpips = f"{r['lpips']['mean']:.3f} ± {r['lpips']['std']:.3f}" if r.get("lpips") else "unavailable"
        one_step = r["one_step_psnr"]
        lines.append(f"| {label(r)} | {r['tokens']:,} | {r['psnr_mean']:.2f} ± {r['psnr_std']:.2f} | "
                     f"{r['ssim_mean']:.3f} ± {r['ssim_std']:.3f} | {lpips} | {one_step['mean']:.2f} ± {one_step['std']:.2f} | "
                     f"{paper_cells} |")
    for name, ref in sorted((result.get("references") or {}).items()):
        title = (f"reference: each frame down {name.split()[1]} and back up (bicubic)" if name.startswith("bicubic ")
                 else "reference: the history's mean frame")
        lpips = f"{ref['lpips']:.3f}" if "lpips" in ref else "—"
        lines.append(f"| *{title}* | — | {ref['psnr']:.2f} | {ref['ssim']:.3f} | {lpips} | — | — | — | — |")
    lpips_note = ("LPIPS: AlexNet version (Zhang et al., 2018) from the local weight files given, on frames at "
                  "the model's resolution." if budget.get("lpips_backbone") else
                  "LPIPS: unavailable — it needs local weight files (`--lpips-backbone`, `--lpips-linear`), and no "
                  "estimate stands in for it.")
    lines += [*later_rows_note(result, lambda row: label({"variant": row[0], "rate": row[1]})),
              "", lpips_note, "", training_time(result["records"]),
              "", "The paper's orderings:", "", *orderings(result["records"]), "",
              f"![PSNR against memory tokens]({path.stem}-tokens.png)", "",
              f"![the same frames retrieved by every variant]({path.stem}-grid.png)", ""]
    write_text(path, "\n".join(lines))


def later_rows_note(result: dict, title) -> list[str]:
    """A line naming the rows added to the table by later runs of some rows (same budget)."""
    later = result.get("rows_run_later")
    if not later:
        return []
    return ["", "Rows run later with `--only`, at the same budget and on the same evaluation as the others (with the "
            "code of that later run): " + ", ".join(title(r) for r in later) + "."]


def training_time(records: list[dict]) -> str:
    """One line: the training wall time the runs took (evaluation excluded), as their logs measured it."""
    runs = [(label(r), s["train_seconds"]) for r in records for s in r.get("per_seed", []) if "train_seconds" in s]
    if not runs:
        return "Training time: not recorded for these runs."
    slowest = max(runs, key=lambda run: run[1])
    count = f"{len(runs)} run{'s' if len(runs) > 1 else ''}"
    return (f"Training time: {sum(t for _, t in runs) / 60:.1f} min for the {count} on the machine that trained them "
            f"(evaluation excluded; slowest run {slowest[0]}, {slowest[1] / 60:.1f} min).")


def pareto(records: list[dict]) -> list[dict]:
    """Records no other beats on both fewer-or-equal tokens and higher-or-equal PSNR."""
    def dominated(r):
        return any(o is not r and o["tokens"] <= r["tokens"] and o["psnr_mean"] >= r["psnr_mean"]
                   and (o["tokens"], o["psnr_mean"]) != (r["tokens"], r["psnr_mean"]) for o in records)
    return sorted((r for r in records if not dominated(r)), key=lambda r: r["tokens"])


def plot_tokens(records: list[dict], path: Path, seconds: float) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    placed = []  # (tokens, PSNR) of labels above their point; a close neighbour's goes below
    for r in sorted(records, key=lambda r: -r["psnr_mean"]):
        ax.errorbar(r["tokens"], r["psnr_mean"], yerr=r["psnr_std"], fmt="o", capsize=3)
        crowded = any(t == r["tokens"] and abs(p - r["psnr_mean"]) < 0.3 for t, p in placed)
        ax.annotate(label(r), (r["tokens"], r["psnr_mean"]), textcoords="offset points",
                    xytext=(5, -10 if crowded else 4), fontsize=7)
        if not crowded:
            placed.append((r["tokens"], r["psnr_mean"]))
    front = pareto(records)
    ax.plot([r["tokens"] for r in front], [r["psnr_mean"] for r in front], "k--", lw=1, label="Pareto front")
    ax.set(xscale="log", xlabel=f"memory tokens ({seconds:g} s history)", ylabel="retrieval PSNR (dB)",
           title="retrieval quality against context length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_image(fig, path, dpi=120)
    plt.close(fig)


def label_column(names: list[str], minimum: int) -> int:
    """Width in pixels of a grid's label column: the longest label fits."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return max(minimum, 12 + max(int(draw.textlength(name)) for name in names))


def retrieval_grid(evals: dict, seed: int, path: Path, scale: int = 2) -> None:
    """Rows: the ground truth, then each variant (one seed); columns: the first video's frames."""
    rows = [(k, folder) for k, folder in evals.items() if k[2] == seed]
    first_video = sorted(p for p in rows[0][1].iterdir() if p.is_dir())[0].name
    # the frames of this evaluation (metrics.json), not every PNG an earlier one left in the folder
    metrics = json.loads((rows[0][1] / first_video / "metrics.json").read_text())
    truths = [rows[0][1] / first_video / f"gt_{time_label(r['time'])}.png" for r in metrics["per_frame"]]
    cells = [("truth", truths)] + [
        (f"{TITLES[v]} {r}".replace("schedule", "").strip(), [folder / first_video / p.name.replace("gt_", "retrieved_") for p in truths])
        for (v, r, _), folder in rows
    ]
    w, h = Image.open(truths[0]).size
    cw, ch, left = w * scale, h * scale, label_column([name for name, _ in cells], 150)
    canvas = Image.new("RGB", (left + len(truths) * (cw + 4), len(cells) * (ch + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, files) in enumerate(cells):
        y = row * (ch + 4)
        draw.text((4, y + ch // 2 - 6), name, fill="black")
        for col, file in enumerate(files):
            canvas.paste(Image.open(file).convert("RGB").resize((cw, ch), Image.NEAREST), (left + col * (cw + 4), y))
    save_image(canvas, path)


CONSISTENCY_TITLES = {"proposed": "Proposed (pretrained memory)", "only_lr": "Only LR", "without_pretrain": "Without Pretrain",
                      "sliding_window": "Sliding window (same token budget)",
                      "sliding_window_memory": "Proposed + sliding window (0.5 s at full resolution)",
                      "memory_once": "Proposed, memory read once per section",
                      "cross_attention": "Proposed + cross-attention enhancement"}


def consistency_title(name: str) -> str:
    """A variant's title, or a given checkpoint's folder name."""
    return CONSISTENCY_TITLES.get(name) or f"checkpoint `{Path(name).name}` (its own budget)"


def consistency_grid(case: dict, generated: dict, path: Path, scale: int = 2) -> None:
    """One row per variant: its generated return; first rows: the first appearance and the true return."""
    rows = [("first appearance", case["video"][case["first"].start : case["first"].end]),
            ("true return", case["video"][case["back"].start : case["back"].end])]
    rows += [(consistency_title(name), frames) for name, frames in generated.items()]
    columns = max(1, min(6, *(len(frames) for _, frames in rows)))
    h, w = rows[0][1].shape[1:3]
    left, pad = label_column([name for name, _ in rows], 210), 4
    canvas = Image.new("RGB", (left + columns * (w * scale + pad), len(rows) * (h * scale + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, frames) in enumerate(rows):
        y = r * (h * scale + pad)
        draw.text((4, y + h * scale // 2 - 6), name, fill="black")
        picks = np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int) if len(frames) else []
        for c, i in enumerate(picks):
            tile = Image.fromarray(np.asarray(frames[i])).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (left + c * (w * scale + pad), y))
    save_image(canvas, path)


def write_consistency_markdown(result: dict, path: Path) -> None:
    b = result["budget"]
    checkpoints = [r["variant"] for r in result["records"] if r["variant"] not in CONSISTENCY_TITLES]  # kept rows too
    command = "framemem bench consistency" + (" --quick" if b["quick"] else "") + "".join(
        f" --checkpoint {c}" for c in checkpoints)
    lines = ["# Scene-return consistency (our stand-in for the paper's Table 2)", "",
             f"Command: `{command}`. Budget: stage 1 {b['stage1_steps']} steps, stage 2 {b['stage2_steps']} steps "
             f"(Without Pretrain: {b['stage1_steps'] + b['stage2_steps']} in stage 2), seeds {b['seeds']}, "
             f"{len(result['cases'])} cases, {b['generate_seconds']:g} s generated per case, {b['sample_steps']} sampling steps.",
             "", "Each case: a scene returns after at least "
             f"{b['min_gap_seconds']:g} s of other scenes; the model continues the video from just before the return, "
             "and each generated frame of the return is scored against the best-matching frame of the first appearance.",
             "", "| memory | PSNR (dB) | SSIM | feature similarity | continuity |", "|---|---|---|---|---|"]
    for r in result["records"]:
        continuity = (f"{r['continuity_mean']:.3f} ± {r['continuity_std']:.3f}" if r.get("continuity_mean") is not None
                      else "not recorded" if "continuity_mean" not in r else "no unplanned boundary")
        lines.append(f"| {consistency_title(r['variant'])} | {r['psnr_mean']:.2f} ± {r['psnr_std']:.2f} | "
                     f"{r['ssim_mean']:.3f} ± {r['ssim_std']:.3f} | {r['feature_mean']:.3f} ± {r['feature_std']:.3f} | "
                     f"{continuity} |")
    for name, label in (("truth", "reference: the true return"), ("other_scene", "reference: a different scene")):
        ref = result["references"][name]
        lines.append(f"| *{label}* | {ref['psnr']:.2f} | {ref['ssim']:.3f} | {ref['feature']:.3f} | — |")
    lines += later_rows_note(result, consistency_title)
    lines += ["", "Continuity: the mean PSNR between consecutive generated frames across section boundaries "
              "divided by the same within sections (1.0 = no visible cut); boundaries where the storyboard changes "
              "the prompt, and the one from the history (the scene's return), are planned cuts and not scored.", "", "± is the standard deviation over seeds (for a given checkpoint: over generation seeds only). "
              "The first appearance, the true return, then each row's generated return for the first case:", "",
              f"![generated returns]({path.stem}-grid.png)", ""]
    write_text(path, "\n".join(lines))
