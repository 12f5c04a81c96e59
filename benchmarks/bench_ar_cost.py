"""Cost of one generated section as the history grows: framemem's memory vs the full context.

    python benchmarks/bench_ar_cost.py [--steps 4] [--threads N]

Both methods use the tiny preset's DiT and generate the same 1 s section (classifier-free
guidance on, `--steps` sampling steps; time scales linearly with steps) after 5, 20 and 60 s
of history:
  * framemem: φ at the preset's rate 4×4×2 over a 20 s window (older sections leave it);
  * full context: every history latent frame patch-embedded by the DiT's own patchifier
    (φ = Large Patchifier at rate 1×1×1, initialised to the patch embedding), no window.
Each (method, history) runs in a fresh process, so peak RSS is its own. Also measured:
appending one section to the memory vs re-encoding a whole 20 s history from pixels.
Weights are random (costs do not depend on them). Writes results/ar_cost.md and results/ar_cost.json.
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

HISTORIES = (5, 20, 60)
METHODS = ("framemem", "full_context")


def build(method: str):
    import torch

    from framemem.config import get_preset
    from framemem.rates import parse_rate
    from framemem.models.framemem import FrameMem
    from framemem.models.text_encoders import build_text_encoder

    config = get_preset("tiny")
    if method == "full_context":
        config.model.rate = parse_rate("1x1x1")
    torch.manual_seed(0)
    model = FrameMem.build(config, "proposed" if method == "framemem" else "large_patchifier").eval()
    model.text_encoder = build_text_encoder(config.ar, model.dit.text_dim, None)
    return model


def part_section(method: str, seconds: int, steps: int, repeats: int) -> dict:
    import torch

    from framemem.training.stage2_autoregressive import MemoryState, sample_section, section_latent_frames, window_blocks

    model = build(method)
    mc, codec = model.config.model, model.codec
    section = section_latent_frames(model)
    state = MemoryState(model, window_blocks(model) if method == "framemem" else None)
    h, w = codec.latent_shape(1, mc.height, mc.width)[1:]
    with torch.no_grad():
        for _ in range(int(seconds * mc.fps) // codec.pixel_frames(section)):  # fill the history, 1 s at a time
            pixels = torch.rand(1, 3, codec.pixel_frames(section), mc.height, mc.width) * 2 - 1
            state.append(*model.history_latents(pixels))
        memory = state.memory()
        text = model.text_encoder(["a ginger cat", ""])
        base = peak_rss_mb()
        times = []
        while len(times) < 2 or (len(times) < repeats + 1 and sum(times[1:]) < 20):  # fewer repeats for slow rows
            noise = torch.randn(1, codec.channels, section, h, w, generator=torch.Generator().manual_seed(len(times)))
            start = time.perf_counter()
            sample_section(model, memory, state.latent_frames, text, noise, steps, model.config.ar.cfg)
            times.append(time.perf_counter() - start)
    return {"method": method, "history_seconds": seconds, "context_tokens": memory.tokens.shape[1],
            "section_tokens": section * (h // 2) * (w // 2), "seconds_per_section": min(times[1:]), "timed": len(times) - 1,
            "peak_rss_mb": peak_rss_mb(), "peak_extra_rss_mb": peak_rss_mb() - base}


def part_append(preset: str, repeats: int) -> dict:
    """One 1 s section appended to the memory vs a whole 20 s history encoded again. The tiny
    preset goes from pixels (codec included); a Wan preset from random latents at its real
    size and width (no VAE weights here, so the codec's share is left out)."""
    import torch

    from framemem.training.stage2_autoregressive import MemoryState

    if preset == "tiny":
        model = build("framemem")
        mc, codec = model.config.model, model.codec
        history = torch.rand(1, 3, mc.history_frames, mc.height, mc.width) * 2 - 1
        section = history[:, :, : int(mc.fps)]
        state = MemoryState(model)

        def append():
            state.append(*model.history_latents(section))

        def reencode():
            model.encode_history(history)
        sizes = (section.shape[2], history.shape[2])
    else:
        from bench_encoder import real_width_encoder

        encoder, embedding, latents, low_res, facts = real_width_encoder(preset)
        mc, codec, patch, shape = facts["mc"], facts["codec"], facts["patch"], facts["latent_shape"]
        block = encoder.block_frames
        section_frames = max(block, int(mc.fps) // codec.temporal_factor // block * block)  # 1 s

        def append():
            encoder.encode_latents(latents[:, :, :section_frames], low_res[:, :, : section_frames // block * patch[0]], embedding)

        def reencode():
            encoder.encode_latents(latents, low_res, embedding)
        sizes = (section_frames, shape[0])
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    with torch.no_grad():
        for name, fn in (("append", append), ("reencode", reencode)):
            with FlopCounterMode(display=False) as counter:
                fn()
            flops[name] = counter.get_total_flops()
    times = {"append": [], "reencode": []}
    with torch.no_grad():
        for _ in range(repeats + 1):
            for name, fn in (("append", append), ("reencode", reencode)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    a, r = min(times["append"][1:]), min(times["reencode"][1:])
    return {"preset": preset, "append_one_section_seconds": a, "reencode_20s_seconds": r, "ratio": r / a,
            "append_flops": flops["append"], "reencode_flops": flops["reencode"],
            "flops_ratio": flops["reencode"] / flops["append"],
            "section_frames": sizes[0], "history_frames": sizes[1],
            "frames_unit": "pixel frames" if preset == "tiny" else "latent frames"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per row (fewer once a row has taken 20 s)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--part", nargs="+")
    args = parser.parse_args()
    if args.part:
        if args.part[0] == "append":
            print(json.dumps(part_append(args.part[1], 10 if args.part[1] == "tiny" else 3)))
        else:
            print(json.dumps(part_section(args.part[0], int(args.part[1]), args.steps, args.repeats)))
        return
    import torch

    common = ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    rows = [run_part(["--part", m, str(s), *common], args.threads, __file__) for m in METHODS for s in HISTORIES]
    appends = [run_part(["--part", "append", p], args.threads, __file__) for p in ("tiny", "wan2.2-ti2v-5b")]
    append = appends[0]
    by = {(r["method"], r["history_seconds"]): r for r in rows}
    fm, full = (lambda s: by[("framemem", s)]), (lambda s: by[("full_context", s)])
    summary = {
        "context_growth_ratio_20s": full(20)["context_tokens"] / fm(20)["context_tokens"],
        "framemem_60s_over_20s": fm(60)["seconds_per_section"] / fm(20)["seconds_per_section"],
        "full_context_60s_over_20s": full(60)["seconds_per_section"] / full(20)["seconds_per_section"],
        "append_vs_reencode": append["ratio"],
    }
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    lines = ["# Cost per generated section: framemem vs full context", "",
             f"Command: `python benchmarks/bench_ar_cost.py --steps {args.steps} --repeats {args.repeats}` on {machine}, "
             f"{args.threads or torch.get_num_threads()} threads. Tiny preset (64x64, 4 fps), one 1 s section "
             f"({rows[0]['section_tokens']} tokens) with classifier-free guidance and {args.steps} sampling steps; "
             "best of the repeats; each row in its own process.", "",
             "| method | history (s) | context tokens | s / section | peak RSS (MB) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['history_seconds']} | {r['context_tokens']:,} | "
                     f"{r['seconds_per_section']:.3f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"- Context at 20 s: full context / framemem = {summary['context_growth_ratio_20s']:.1f}×.",
              f"- Per-section time, 60 s vs 20 s of history: framemem {summary['framemem_60s_over_20s']:.2f}×, "
              f"full context {summary['full_context_60s_over_20s']:.2f}×.",
              "", "| appending one 1 s section vs encoding the whole 20 s history again | section | history | "
              "append (ms) | re-encode (ms) | append is faster by | append does less work by (FLOPs) |",
              "|---|---|---|---|---|---|---|"]
    for a in appends:
        what = "tiny, from pixels (codec included)" if a["preset"] == "tiny" else f"{a['preset']} φ at width 3072, from latents"
        lines.append(f"| {what} | {a['section_frames']} {a['frames_unit']} | {a['history_frames']} | "
                     f"{a['append_one_section_seconds'] * 1000:.1f} | {a['reencode_20s_seconds'] * 1000:.1f} | {a['ratio']:.1f}× | "
                     f"{a['flops_ratio']:.1f}× |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    write_text(ROOT / "results" / "ar_cost.md", text)
    write_json(ROOT / "results" / "ar_cost.json", {"machine": machine, "steps": args.steps, "rows": rows,
                                                            "append": appends, "summary": summary})


if __name__ == "__main__":
    main()
