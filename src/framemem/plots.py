"""PNG plots of training curves (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .files import read_jsonl, save_image  # noqa: E402


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(loss records, eval records) of a run's log.jsonl."""
    records = read_jsonl(path)
    return [r for r in records if "eval" not in r], [r for r in records if "eval" in r]


def plot_curves(logs: dict[str, str | Path] | str | Path, out_path: str | Path) -> None:
    """Loss, held-out one-step PSNR (with the mean-frame and bicubic references) and memory
    gap against wall-clock minutes; `logs` is one log.jsonl or {label: log.jsonl} to compare runs."""
    if not isinstance(logs, dict):
        logs = {"": logs}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    references = {}
    for label, path in logs.items():
        losses, evals = read_log(path)
        line = axes[0].plot([r["seconds"] / 60 for r in losses], [r["loss"] for r in losses], label=label or None)[0]
        minutes = [r["seconds"] / 60 for r in evals]
        colour = line.get_color()
        axes[1].plot(minutes, [r["eval"].get("one_step_psnr") for r in evals], marker=".", color=colour, label=label or None)
        axes[2].plot(minutes, [r["eval"].get("memory_gap", float("nan")) for r in evals], marker=".", color=colour)
        for key in ("mean_frame_psnr", "bicubic_psnr"):
            if evals and key in evals[-1]["eval"]:
                references[key] = evals[-1]["eval"][key]
    for key, style in (("mean_frame_psnr", ":"), ("bicubic_psnr", "--")):
        if key in references:
            name = key.replace("_psnr", "").replace("_", " ")
            axes[1].axhline(references[key], color="grey", ls=style, lw=1, label=f"{name} ({references[key]:.1f} dB)")
    axes[0].set(title="training loss", xlabel="minutes", yscale="log")
    axes[1].set(title="held-out one-step PSNR (dB)", xlabel="minutes")
    axes[2].axhline(0, color="grey", lw=0.5)
    axes[2].set(title="memory gap: loss(t=1) without its memory − with it", xlabel="minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_image(fig, out_path, dpi=110)
    plt.close(fig)
