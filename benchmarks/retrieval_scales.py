"""At which scale does retrieval lose the frame? PSNR of retrieved frames after area-averaging.

    python benchmarks/retrieval_scales.py LABEL=DIR [LABEL=DIR ...] [--scales 1 4 8 16 32] [--out results/retrieval-scales]

Each DIR holds the output of `framemem retrieve` (or of `benchmarks/eval_retrieval.py` /
`benchmarks/learning_curves.py`, one sub-folder per video): gt_<time>.png, retrieved_<time>.png
and bicubic_<time>.png. Both the retrieved frame and the ground truth are averaged over
s×s pixel squares before the PSNR is taken, for every scale s: a frame that is right in its
coarse layout but wrong in detail scores high at large s and low at s = 1. Videos are grouped
as "procedural" (folder name starting so) or "real". Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from framemem.files import write_json, write_text
from framemem.metrics import psnr


def load_png(path: Path) -> torch.Tensor:
    """(1, 3, H, W) float in [-1, 1], as framemem's metrics take frames."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 127.5 - 1


def scale_psnr(a: torch.Tensor, b: torch.Tensor, scale: int) -> float:
    return psnr(F.avg_pool2d(a, scale), F.avg_pool2d(b, scale))


def measure(folder: Path, scales: list[int]) -> dict:
    """kind -> {"retrieved": [PSNR per scale], "bicubic": [...], "frames": n}, means over frames."""
    per_kind: dict[str, dict[str, list]] = {}
    truths = sorted(folder.rglob("gt_*.png"))
    if not truths:
        raise SystemExit(f"error: no gt_*.png under {folder} (expected the output of framemem retrieve)")
    for truth_path in truths:
        kind = "procedural" if truth_path.parent.name.startswith("procedural") else "real"
        truth = load_png(truth_path)
        scores = per_kind.setdefault(kind, {"retrieved": [], "bicubic": []})
        for name in ("retrieved", "bicubic"):
            other = truth_path.with_name(truth_path.name.replace("gt_", f"{name}_", 1))
            if other.exists():
                scores[name].append([scale_psnr(load_png(other), truth, s) for s in scales])
    return {kind: {name: np.mean(rows, 0).tolist() for name, rows in s.items() if rows} | {"frames": len(s["retrieved"])}
            for kind, s in per_kind.items()}


def write_report(results: dict, scales: list[int], command: str) -> str:
    header = " | ".join(f"÷{s}" for s in scales)
    lines = ["# Retrieval PSNR by scale", "", f"Command: `{command}`", "",
             "PSNR (dB) after averaging both the frame and the ground truth over s×s pixel squares "
             "(÷1 is the usual PSNR). Mean over the frames of each folder.", "",
             f"| run | videos | frames | frame | {header} |", "|---|---|---|---|" + "---|" * len(scales)]
    for label, kinds in results.items():
        for kind, s in kinds.items():
            for name in ("retrieved", "bicubic"):
                if name in s:
                    cells = " | ".join(f"{v:.2f}" for v in s[name])
                    lines.append(f"| {label} | {kind} | {s['frames']} | {name} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=DIR: a label and a folder of retrieve outputs")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--out", type=Path, default=Path("results/retrieval-scales"))
    args = parser.parse_args()
    results = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"error: '{item}' is not LABEL=DIR with an existing folder")
        results[label] = measure(Path(folder), args.scales)
    command = "python benchmarks/retrieval_scales.py " + " ".join(map(shlex.quote, args.runs))
    text = write_report(results, args.scales, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out.with_suffix(".md"), text)
    write_json(args.out.with_suffix(".json"), {"scales": args.scales, "runs": results})
    print(text)


if __name__ == "__main__":
    main()
