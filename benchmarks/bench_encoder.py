"""φ at real width on this CPU: a 20 s 480p latent history, whole or in temporal chunks.

    python benchmarks/bench_encoder.py [--repeats 2] [--threads N]

For each Wan preset (the paper's encoder widths 64→512, projection to the DiT width: 3072
for TI2V-5B, 5120 for 14B) and each chunk size, one fresh process encodes random
latents of the preset's 20 s history at 832x480 (no grad, float32) and reports the memory
tokens, seconds per history and peak RSS. Chunks give the same tokens (tests/test_cache.py)
with bounded activations. Writes results/encoder-chunks.md and results/encoder-chunks.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from framemem.files import write_json, write_text

sys.path.insert(0, str(Path(__file__).parent))
from bench_speed import ROOT, peak_rss_mb, run_part  # noqa: E402

PRESETS = ("wan2.2-ti2v-5b", "wan-14b")
CHUNKS = (None, 8, 2)


def real_width_encoder(preset: str):
    """φ of a Wan preset at its real widths (random weights), the DiT's patch embedding at real
    size, and random latents + LR-branch input of the preset's 20 s history.
    Returns (encoder, patch_embedding, latents (1, C, T', H', W'), low_res, facts)."""
    import torch

    from framemem.models.codecs import codec_geometry
    from framemem.config import get_preset
    from framemem.models.framemem import build_memory_encoder

    mc = get_preset(preset).model
    codec = codec_geometry(mc)
    patch = tuple(mc.transformer["patch_size"])
    width = mc.transformer["num_attention_heads"] * mc.transformer["attention_head_dim"]
    torch.manual_seed(0)
    encoder = build_memory_encoder(mc, codec.channels, width, patch).eval()
    patch_embedding = torch.nn.Conv3d(codec.channels, width, patch, stride=patch)
    frames = codec.pixel_frames(codec.latent_frames(int(mc.seconds * mc.fps) + 1))
    latent_shape = codec.latent_shape(frames, mc.height, mc.width)
    grid = encoder.memory_grid(latent_shape)
    latents = torch.randn(1, codec.channels, *latent_shape)
    low_res = torch.randn(1, codec.channels, *(g * p for g, p in zip(grid, patch)))
    facts = {"mc": mc, "codec": codec, "patch": patch, "width": width, "frames": frames, "latent_shape": latent_shape}
    return encoder, patch_embedding, latents, low_res, facts


def part(preset: str, chunk: int | None, repeats: int) -> dict:
    import torch

    encoder, patch_embedding, latents, low_res, facts = real_width_encoder(preset)
    mc, patch, width, frames, latent_shape = (facts[k] for k in ("mc", "patch", "width", "frames", "latent_shape"))
    base = peak_rss_mb()
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            memory = encoder.encode_latents(latents, low_res, patch_embedding, chunk)
            times.append(time.perf_counter() - start)
    return {
        "preset": preset, "chunk_blocks": chunk, "dit_width": width, "history": f"{mc.seconds:g}s at {mc.fps:g} fps, "
        f"{mc.width}x{mc.height}, {frames} frames", "latent_shape": list(latent_shape),
        "memory_tokens": memory.tokens.shape[1], "full_context_tokens": latent_shape[0] * (latent_shape[1] // patch[1]) * (latent_shape[2] // patch[2]),
        "seconds": min(times), "peak_rss_mb": peak_rss_mb(), "peak_extra_rss_mb": peak_rss_mb() - base,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--part", nargs=2, metavar=("PRESET", "CHUNK"))
    args = parser.parse_args()
    if args.part:
        preset, chunk = args.part
        print(json.dumps(part(preset, None if chunk == "none" else int(chunk), args.repeats)))
        return
    import torch

    rows = [run_part(["--part", p, str(c).lower(), "--repeats", str(args.repeats)], args.threads, __file__)
            for p in PRESETS for c in CHUNKS]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    lines = ["# φ at real width: 20 s of 480p history on CPU", "",
             f"Command: `python benchmarks/bench_encoder.py --repeats {args.repeats}` on {machine}, "
             f"{args.threads or torch.get_num_threads()} threads; random latents and weights at the presets' real "
             "sizes (encoder widths 64→512, projection to the DiT width), float32, no grad, best of the repeats.", "",
             "| preset | DiT width | latents (T', H', W') | full-context tokens | memory tokens | chunk (memory frames) | seconds | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['dit_width']} | {tuple(r['latent_shape'])} | {r['full_context_tokens']:,} | "
                     f"{r['memory_tokens']:,} | {r['chunk_blocks'] or 'whole'} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
    text = "\n".join(lines + [""])
    print(text)
    write_text(ROOT / "results" / "encoder-chunks.md", text)
    write_json(ROOT / "results" / "encoder-chunks.json", {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
