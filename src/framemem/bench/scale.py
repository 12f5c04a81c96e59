"""`framemem bench scale`: a preset's real-width DiT and φ, timed, with peak memory.

Random weights (costs do not depend on them) at the preset's widths; `layers` of its DiT
blocks (all of them by default on a GPU, 1 on a CPU), the preset's LoRA rank, gradient
checkpointing as the preset sets it, bf16 on a GPU and fp32 on a CPU. Rows:

* train: one stage-1 step (φ over a 20 s history of latents, the preset's targets per
  history, flow loss, backward, AdamW) at batch 1;
* section: one guided DiT evaluation (2 branches) of a 1 s section beside the context of
  framemem (20 s window of memory), FramePack's schedule and the full context, at 20 s and
  60 s of history; seconds per section = that × the preset's sampling steps (labelled).
  A context whose planner estimate exceeds `max_tokens` is not run: the planner's figures
  stand in, marked so. Row `framemem_once` is framemem with `model.memory_attention =
  memory_only`: the memory's keys and values are computed once per section (timed apart),
  then each guided evaluation runs the section's tokens only; its seconds per section =
  that once + the evaluations. Row `framemem_cross` is framemem with `model.cross_attention`:
  every block's text cross-attention also reads φ's features of the memory.

Every part runs in its own process (its peak memory is its own) at `layers` and at 0 layers;
full depth is extrapolated linearly, t(L) = t(0) + (t(N) − t(0))·L/N, and labelled.
Latents stand in for the VAE (random, of the preset's latent shape): the VAE is not timed.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from ..errors import FrameMemError

HISTORIES = (20.0, 60.0)
METHODS = ("framemem", "framemem_once", "framemem_cross", "framepack", "full_context")
CPU_MAX_TOKENS = 12_000  # on a CPU, longer contexts take many minutes per evaluation: the planner stands in


def _device_memory_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0] / 1e9
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 1e6


def parameter_count(config, layers: int) -> int:
    """DiT parameters at `layers` blocks, counted on the meta device (nothing allocated)."""
    import torch
    from diffusers import WanTransformer3DModel

    kwargs = {**config.model.transformer, "num_layers": layers, "patch_size": tuple(config.model.transformer["patch_size"])}
    with torch.device("meta"):
        return sum(p.numel() for p in WanTransformer3DModel(**kwargs).parameters())


def check_fits(config, layers: int, device: str) -> float:
    """Estimated GB of the largest part (weights + the planner's training activations at
    20 s); a FrameMemError in one line if the device has less free memory."""
    from ..plan import plan

    mc = config.model
    bytes_per = 2 if device.startswith("cuda") else 4
    weights = parameter_count(config, layers) * bytes_per / 1e9
    rows = plan(config, mc.height, mc.width, mc.fps, 20.0, [mc.rate])["rows"]
    activations = rows[1]["activation_gb"] * max(layers, 1) / mc.transformer["num_layers"] * bytes_per / 2
    need, have = weights + activations, _device_memory_gb(device)
    if need > 0.9 * have:
        raise FrameMemError(f"preset {config.preset} at {layers} layers needs about {need:.0f} GB on {device} "
                            f"(planner: {weights:.0f} GB of weights, {activations:.0f} GB of activations); "
                            f"{have:.0f} GB are free: pass fewer --layers")
    return need


def _peak_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _build(config, layers: int, device: str, lora: bool, memory_attention: str = "joint"):
    import torch
    from diffusers import WanTransformer3DModel

    from ..models.codecs import codec_geometry
    from ..models.framemem import build_memory_encoder
    from ..models.memory_dit import MemoryDiT

    mc = config.model
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    kwargs = {**mc.transformer, "num_layers": layers, "patch_size": tuple(mc.transformer["patch_size"])}
    dit = MemoryDiT(WanTransformer3DModel(**kwargs), memory_attention=memory_attention)
    if lora and mc.lora_rank and layers:
        dit.add_lora(mc.lora_rank)
    if config.train.gradient_checkpointing:
        dit.transformer.enable_gradient_checkpointing()
    codec = codec_geometry(mc)
    encoder = build_memory_encoder(mc, codec.channels, dit.inner_dim, dit.patch_size, dit_layers=layers)
    return dit.to(device, dtype), encoder.to(device, dtype), codec, dtype


def _latents(config, codec, encoder, seconds: float, device, dtype):
    import torch

    mc = config.model
    frames = codec.pixel_frames(codec.latent_frames(int(seconds * mc.fps) + 1))
    shape = codec.latent_shape(frames, mc.height, mc.width)
    grid = encoder.memory_grid(shape)
    latents = torch.randn(1, codec.channels, *shape, device=device, dtype=dtype)
    low_res = torch.randn(1, codec.channels, *(g * p for g, p in zip(grid, encoder.patch)), device=device, dtype=dtype)
    return latents, low_res


def part_train(config, layers: int, device: str) -> dict:
    """One stage-1 step through the training loss itself (after one untimed step that pays
    one-off costs): φ over the history's latents, the preset's targets, backward, AdamW."""
    import torch

    from ..models.framemem import FrameMem
    from ..training.stage1_retrieval import retrieval_loss

    dit, encoder, codec, dtype = _build(config, layers, device, lora=True)
    model = FrameMem(config, codec, dit, encoder)  # the codec's geometry only: latents are given
    history = _latents(config, codec, encoder, config.model.seconds, device, dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    timings = []
    for step in range(2):
        _sync(device)
        start = time.perf_counter()
        retrieval_loss(model, history, config.train, torch.Generator().manual_seed(step)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        timings.append(time.perf_counter() - start)
    latent_frame = math.prod(history[0].shape[3:]) // math.prod(dit.patch_size[1:])
    tokens = encoder.token_count(tuple(history[0].shape[2:])) + config.train.targets_per_history * latent_frame
    return {"seconds": timings[-1], "peak_gb": _peak_gb(device), "tokens": tokens}


def context_tokens(config, method: str, seconds: float) -> int:
    """Context tokens of a method after `seconds` of history (framemem: its window)."""
    from ..models.codecs import codec_geometry
    from ..models.framepack import framepack_tokens
    from ..models.memory_encoder import memory_grid

    mc = config.model
    codec = codec_geometry(mc)
    _, ph, pw = mc.transformer["patch_size"]
    if method.startswith("framemem"):
        seconds = min(seconds, mc.seconds)
    t, h, w = codec.latent_shape(int(round(seconds * mc.fps)), mc.height, mc.width)
    grid = (t, h // ph, w // pw)
    if method.startswith("framemem"):
        return sum(math.prod(memory_grid(grid, (rt, rh, rw))) for rh, rw, rt in mc.rates)
    return framepack_tokens(grid) if method == "framepack" else math.prod(grid)


def part_section(config, layers: int, device: str, method: str, seconds: float) -> dict:
    """One guided DiT evaluation of a 1 s section beside `method`'s context (and, for
    framemem_once, the memory's keys and values computed once, timed apart)."""
    import torch

    from ..models.memory_encoder import stand_in_memory

    once = method == "framemem_once"
    config = copy.deepcopy(config)  # the caller's config stays as it was
    config.model.cross_attention = method == "framemem_cross" and layers > 0
    dit, encoder, codec, dtype = _build(config, layers, device, lora=False,
                                        memory_attention="memory_only" if once else "joint")
    mc = config.model
    section = max(1, round(config.ar.section_seconds * mc.fps) // codec.temporal_factor)  # latent frames
    h, w = codec.latent_shape(1, mc.height, mc.width)[1:]
    _, ph, pw = dit.patch_size
    n = context_tokens(config, method, seconds)
    memory = stand_in_memory(encoder, 2, n, device=device, dtype=dtype)  # with φ's features for framemem_cross
    x = torch.randn(2, codec.channels, section, h, w, device=device, dtype=dtype)
    frames = torch.arange(section, device=device).float()[None].expand(2, -1) + 100
    text = torch.zeros(2, config.ar.text_tokens, dit.text_dim, device=device, dtype=dtype)
    t = torch.full((2, section), 0.5, device=device)
    timings, once_timings, cache = [], [], None
    with torch.no_grad():
        # the first round pays one-off costs; then the fastest of the timed rounds (`more_rounds`)
        while len(timings) < 2 or more_rounds(timings[1:]):
            if once:
                _sync(device)
                start = time.perf_counter()
                cache = dit.memory_keys_values(dataclasses.replace(memory, tokens=memory.tokens[:1]))
                _sync(device)
                once_timings.append(time.perf_counter() - start)
            _sync(device)
            start = time.perf_counter()
            dit(x, frames, t, memory, text, memory_cache=cache)
            _sync(device)
            timings.append(time.perf_counter() - start)
    return {"seconds": min(timings[1:]), "once_seconds": min(once_timings[1:]) if once else 0.0, "peak_gb": _peak_gb(device),
            "tokens": n + section * (h // ph) * (w // pw)}


def more_rounds(timed: list[float]) -> bool:
    """Whether to time another round: 3 rounds or 30 s, whichever comes first, and short
    evaluations (the tiny preset's take 0.1 s, where noise is large) until 5 s (at most 100)."""
    total = sum(timed)
    return len(timed) < 100 and (total < 5 or (len(timed) < 3 and total < 30))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _run_part(args: list[str]) -> dict:
    """A part in a fresh process; its last stdout line is its JSON."""
    done = subprocess.run([sys.executable, "-m", "framemem.bench.scale", *args], capture_output=True, text=True,
                          env=dict(os.environ))
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FrameMemError(f"bench scale part {' '.join(args)} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scale_table(preset: str, layers: int | None, device: str, out: Path, max_tokens: int | None = None) -> dict:
    """Every row at `layers` and at 0 layers, extrapolated to the preset's depth; writes
    OUT.json and OUT.md. Refuses, in one line and before allocating, a device too small."""
    from tqdm.auto import tqdm

    from ..config import get_preset
    from ..files import write_json
    from ..plan import plan

    config = get_preset(preset)
    mc = config.model
    depth = mc.transformer["num_layers"]
    layers = layers if layers is not None else (depth if device.startswith("cuda") else 1)
    if not 1 <= layers <= depth:
        raise FrameMemError(f"--layers {layers}: the preset's DiT has 1 to {depth} layers")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FrameMemError(f"--device {device}: no CUDA device here")
    estimate = check_fits(config, layers, device)
    max_tokens = max_tokens or (CPU_MAX_TOKENS if device == "cpu" else 10**9)
    jobs = [("train", None, config.model.seconds)] + [("section", m, s) for s in HISTORIES for m in METHODS]
    rows = []
    for part, method, seconds in tqdm(jobs, desc=f"bench scale {preset}", unit="row"):
        row = {"part": part, "method": method or "stage-1 step", "history_seconds": seconds}
        if part == "section":
            tokens = context_tokens(config, method, seconds)
            row["context_tokens"] = tokens
            if tokens > max_tokens:
                result = plan(config, mc.height, mc.width, mc.fps, seconds, [mc.rate], config.ar.section_seconds)
                full = result["rows"][0]
                row.update(measured=False, tokens=tokens + result["section_tokens"],
                           planner_tflops_per_forward=full["attention_tflops"])
                rows.append(row)
                continue
        window = next((r for r in rows if r["method"] == method and r["history_seconds"] == mc.seconds), None)
        if part == "section" and method.startswith("framemem") and seconds > mc.seconds and window:
            # framemem's memory keeps the last `seconds` of history: the same context, the same computation
            row.update({k: v for k, v in window.items() if k not in row}, same_as_seconds=mc.seconds)
            rows.append(row)
            continue
        args = ["--part", part, "--preset", preset, "--device", device] + (["--method", method] if method else []) \
            + ["--seconds", str(seconds)]
        at_n, at_0 = _run_part(args + ["--layers", str(layers)]), _run_part(args + ["--layers", "0"])
        per_layer = (at_n["seconds"] - at_0["seconds"]) / layers
        row.update(measured=True, tokens=at_n["tokens"], layers=layers, seconds=at_n["seconds"],
                   peak_gb=at_n["peak_gb"], seconds_full_depth=at_0["seconds"] + per_layer * depth,
                   peak_gb_full_depth=at_0["peak_gb"] + (at_n["peak_gb"] - at_0["peak_gb"]) / layers * depth)
        if part == "section":
            steps = config.ar.sample_steps
            once = at_0["once_seconds"] + (at_n["once_seconds"] - at_0["once_seconds"]) / layers * depth
            row.update(sample_steps=steps, once_seconds=at_n["once_seconds"], once_seconds_full_depth=once,
                       section_seconds_full_depth=once + row["seconds_full_depth"] * steps)
        rows.append(row)
    result = {"preset": preset, "device": device, "layers": layers, "depth": depth, "dtype": "bf16" if device.startswith("cuda") else "fp32",
              "lora_rank": mc.lora_rank, "gradient_checkpointing": config.train.gradient_checkpointing,
              "resolution": f"{mc.width}x{mc.height}", "fps": mc.fps, "estimate_gb": estimate,
              "host": {"cpus": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS")}, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.parent / f"{out.name}.json", result)  # not with_suffix: "wan2.2-…" holds a dot
    write_scale_markdown(result, out.parent / f"{out.name}.md")
    return result


def _seconds(value: float) -> str:
    """One decimal, or three significant digits below 10 s (the tiny preset's figures)."""
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def reuse_lines(rows: list[dict], extrapolated: bool = True) -> list[str]:
    """framemem_once's seconds per section against framemem's, measured in the same run."""
    by = {(r["method"], r["history_seconds"]): r for r in rows
          if r.get("measured") and r["part"] == "section" and "same_as_seconds" not in r}
    lines = []
    for (method, seconds), r in by.items():
        base = by.get(("framemem", seconds))
        if method in ("framemem_once", "framemem_cross") and base:
            ratio = r["section_seconds_full_depth"] / base["section_seconds_full_depth"]
            what = "Memory computed once per section" if method == "framemem_once" else "Cross-attention enhancement"
            lines.append(f"- {what}, {seconds:g} s of history: {ratio:.2f}× framemem's "
                         f"seconds per section at full depth ({_seconds(r['section_seconds_full_depth'])} s against "
                         f"{_seconds(base['section_seconds_full_depth'])} s, "
                         + ("extrapolated from the same run)." if extrapolated else "measured in the same run)."))
    return lines


def write_scale_markdown(result: dict, path: Path) -> None:
    from ..files import write_text

    n, depth = result["layers"], result["depth"]
    extrapolated = n != depth
    lines = [f"# bench scale: {result['preset']} on {result['device']}", "",
             f"Command: `framemem bench scale --preset {result['preset']} --layers {n} --device {result['device']}`. "
             f"Random weights at the preset's widths, {result['resolution']} at {result['fps']:g} fps, {result['dtype']}, "
             f"LoRA rank {result['lora_rank']}, gradient checkpointing {'on' if result['gradient_checkpointing'] else 'off'}; "
             f"{n} of {depth} DiT layers measured. Latents stand in for the VAE (not timed).", "",
             "| row | history | tokens | measured s | measured peak GB | "
             + ("full depth s (extrapolated) | full depth peak GB (extrapolated) | s per section (extrapolated) |"
                if extrapolated else "full depth s | peak GB | s per section |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if not r["measured"]:
            lines.append(f"| {r['method']} | {r['history_seconds']:g} s | {r['tokens']:,} | not run: the planner's "
                         f"{r['planner_tflops_per_forward']:.3g} attention TFLOPs per forward | | | | |")
            continue
        section = ""
        if "section_seconds_full_depth" in r:
            once = f"{_seconds(r['once_seconds_full_depth'])} once + " if r.get("once_seconds") else ""
            section = f"{_seconds(r['section_seconds_full_depth'])} ({once}{r['sample_steps']} steps × 1 guided evaluation)"
        if "same_as_seconds" in r:
            lines.append(f"| {r['method']} | {r['history_seconds']:g} s | {r['tokens']:,} | the {r['same_as_seconds']:g} s "
                         f"row's figures: its memory keeps {r['same_as_seconds']:g} s, the same context | | | | |")
            continue
        lines.append(f"| {r['method']} | {r['history_seconds']:g} s | {r['tokens']:,} | {r['seconds']:.2f} | "
                     f"{r['peak_gb']:.1f} | {_seconds(r['seconds_full_depth'])} | {r['peak_gb_full_depth']:.1f} | {section} |")
    lines += ["", *reuse_lines(result["rows"], extrapolated)]
    lines += ["", ("Full depth is extrapolated from the measured depth and a 0-layer run of the same part: "
                   "t(L) = t(0) + (t(N) − t(0))·L/N (the same for peak memory). " if extrapolated else
                   "Every layer was built and measured (no extrapolation). ") + "Seconds per section multiply one "
              "guided evaluation (both branches, the fastest timed round after an untimed one: 3 rounds or 30 s, and "
              "short evaluations as many rounds as fit in 5 s) by the "
              "preset's sampling steps. The train row is one stage-1 step "
              "at batch 1, timed after one untimed step. Peak memory: `torch.cuda.max_memory_allocated` on a GPU, "
              "peak RSS of the part's own process on a CPU."
              + (" Extrapolated peak memory is an upper bound: it repeats the measured layer's activations at every "
                 "layer, where a section's evaluation frees them block by block (the weights do add up)."
                 if extrapolated else "")]
    write_text(path, "\n".join(lines) + "\n")


def main() -> None:
    import argparse

    from ..config import get_preset

    parser = argparse.ArgumentParser(description="one part of `framemem bench scale` (run by it in its own process)")
    parser.add_argument("--part", choices=["train", "section"], required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    config = get_preset(args.preset)
    if args.part == "train":
        result = part_train(config, args.layers, args.device)
    else:
        result = part_section(config, args.layers, args.device, args.method, args.seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
