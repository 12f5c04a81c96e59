"""PNG plots of training curves (matplotlib, no display needed)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(loss records, eval records) of a run's log.jsonl."""
    losses, evals = [], []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        (evals if "eval" in record else losses).append(record)
    return losses, evals


def plot_curves(log_path: str | Path, out_path: str | Path, label: str = "") -> None:
    """Loss, one-step PSNR and memory gap against wall-clock minutes."""
    losses, evals = read_log(log_path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r["seconds"] / 60 for r in losses], [r["loss"] for r in losses], label=label or None)
    axes[0].set(title="training loss", xlabel="minutes", yscale="log")
    minutes = [r["seconds"] / 60 for r in evals]
    axes[1].plot(minutes, [r["eval"].get("one_step_psnr") for r in evals], marker=".")
    axes[1].set(title="held-out one-step PSNR (dB)", xlabel="minutes")
    axes[2].plot(minutes, [r["eval"].get("memory_gap", float("nan")) for r in evals], marker=".")
    axes[2].axhline(0, color="grey", lw=0.5)
    axes[2].set(title="memory gap: loss(t=1) other − own memory", xlabel="minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
