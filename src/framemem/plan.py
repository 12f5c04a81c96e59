"""The context planner: tokens, attention cost and activation memory before any GPU hour.

For a preset's DiT and codec at a resolution, fps and history length it counts, per
memory rate and for FramePack's geometric schedule:

* full-context tokens: every latent patch of the history (what plain attention would see);
* memory tokens, ideal (full / rate, the paper's count) and padded (what φ really returns:
  grids that do not divide are padded, `memory.memory_grid`); a rate such as 4x4x2+2x2x8
  (several memory encoders) counts every encoder's tokens;
* attention FLOPs of one DiT forward over [memory ; section], section = the frames being
  generated: 4·N²·D per layer (QKᵀ and A·V, 2 FLOPs per multiply-add);
* the cost of one guided denoising step (2 branches, every layer: projections, text
  cross-attention, feed-forward and attention, 2 FLOPs per multiply-add), as today
  (memory recomputed at every step) and with `model.memory_attention = "memory_only"`,
  where the memory's keys and values are computed once per section: a step then runs the
  section's tokens only, over memory + section keys, plus the memory's pass once;
* activation memory of one training forward in bf16 with gradient checkpointing at batch
  1: every block's input (L·N·D) plus one block recomputed in backward (≈ N·(12·D + 2·F),
  F the feed-forward width; memory-efficient attention holds no N×N matrix). An estimate.

Everything comes from the preset's numbers (`codecs.codec_geometry`); no weights are read.
"""
from __future__ import annotations

import math

from .models.codecs import codec_geometry
from .config import FrameMemConfig
from .rates import format_rate, rate_list
from .errors import FrameMemError
from .models.framepack import framepack_tokens
from .models.memory_encoder import memory_grid

PAPER_RATES = ((4, 4, 2), (2, 2, 2), (2, 2, 4), (2, 2, 1))
BF16_BYTES = 2


def plan(config: FrameMemConfig, height: int, width: int, fps: float, seconds: float,
         rates=PAPER_RATES, section_seconds: float = 1.0, window_frames: int | None = None) -> dict:
    """Rows for the full context, each rate (h, w, t) and the FramePack schedule. A sliding
    window (`window_frames` latent frames, default the preset's `ar.window_frames`) adds its
    full-resolution tokens to every memory row."""
    mc = config.model
    arch = mc.transformer
    if not arch:
        raise FrameMemError(f"preset {config.preset} has no DiT numbers to plan with")
    if fps <= 0 or seconds <= 0 or section_seconds <= 0:
        raise FrameMemError("fps, seconds and section seconds must be positive")
    if round(seconds * fps) < 1:
        raise FrameMemError(f"{seconds} s at {fps} fps is less than one frame")
    geometry = codec_geometry(mc)
    _, ph, pw = arch["patch_size"]
    unit_h, unit_w = geometry.spatial_factor * ph, geometry.spatial_factor * pw
    if height % unit_h or width % unit_w:
        raise FrameMemError(f"resolution {width}x{height} is not a multiple of codec x patch ({unit_w}x{unit_h})")
    width_d = arch["num_attention_heads"] * arch["attention_head_dim"]
    layers, ffn = arch["num_layers"], arch["ffn_dim"]

    def tokens_of(frames: int) -> tuple[int, int, int]:
        t, h, w = geometry.latent_shape(frames, height, width)
        return t, h // ph, w // pw

    history = tokens_of(int(round(seconds * fps)))
    section = math.prod(tokens_of(max(1, int(round(section_seconds * fps)))))
    full = math.prod(history)
    window_frames = config.ar.window_frames if window_frames is None else window_frames
    if not 0 <= window_frames <= history[0]:
        raise FrameMemError(f"window frames: {window_frames}: the history holds {history[0]} latent frames")
    window = window_frames * history[1] * history[2]

    dense = 12 * width_d**2 + 4 * width_d * ffn  # FLOPs a token costs a layer outside attention

    def row(name: str, memory: int, ideal: float | None = None) -> dict:
        n = memory + section
        step = 2 * layers * (n * dense + 4 * n * n * width_d)
        reused = 2 * layers * (section * dense + 4 * section * n * width_d)
        # once per section, one branch, no prompt; the last layer only offers its keys and values
        once = (layers - 1) * (memory * (dense - 4 * width_d**2) + 4 * memory**2 * width_d) + memory * 6 * width_d**2
        return {
            "step_tflops": step / 1e12, "step_tflops_reused": reused / 1e12, "once_tflops": once / 1e12,
            "name": name, "memory_tokens": memory, "memory_tokens_ideal": ideal,
            "ratio": full / memory, "sequence": n,
            "attention_tflops": 4 * n * n * width_d * layers / 1e12,
            "activation_gb": BF16_BYTES * n * (layers * width_d + 12 * width_d + 2 * ffn) / 1e9,
        }

    rows = [row("full context", full, full)]
    beside = f" + window {window_frames}" if window else ""
    for rate in rates:  # one (h, w, t), or several memory encoders' side by side
        padded = sum(math.prod(memory_grid(history, (rt, rh, rw))) for rh, rw, rt in rate_list(rate))
        ideal = sum(full / (rh * rw * rt) for rh, rw, rt in rate_list(rate))
        rows.append(row(f"rate {format_rate(rate)}{beside}", padded + window, ideal + window))
    rows.append(row("FramePack schedule (1 + 2 frames, then 4x)", framepack_tokens(history)))
    return {
        "preset": config.preset, "resolution": f"{width}x{height}", "fps": fps, "seconds": seconds,
        "section_seconds": section_seconds, "token_grid": list(history), "section_tokens": section,
        "window_frames": window_frames, "window_tokens": window,
        "dit": {"width": width_d, "layers": layers, "ffn": ffn},
        "codec": {"spatial": geometry.spatial_factor, "temporal": geometry.temporal_factor, "causal": geometry.causal},
        "rows": rows,
    }


def _tflops(value: float) -> str:
    """One decimal at real size, three significant digits below 1 TFLOP (the tiny preset)."""
    return f"{value:.1f}" if value >= 1 else f"{value:.3g}"


def format_plan(result: dict) -> str:
    """The plan as a Markdown table (also readable in a terminal)."""
    t, h, w = result["token_grid"]
    lines = [
        f"{result['preset']}: {result['seconds']:g} s of {result['resolution']} at {result['fps']:g} fps "
        f"-> token grid {t} x {h} x {w} (codec x{result['codec']['spatial']} spatial, x{result['codec']['temporal']} "
        f"temporal; patch 1x2x2); DiT {result['dit']['width']} wide, {result['dit']['layers']} layers; "
        f"each forward adds a {result['section_seconds']:g} s section of {result['section_tokens']:,} tokens"
        + (f"; a sliding window of {result['window_frames']} full-resolution latent frames adds "
           f"{result['window_tokens']:,} tokens to each rate's row." if result.get("window_tokens") else "."),
        "",
        "| context | memory tokens (padded) | ideal count | full / memory | attention TFLOPs per forward "
        "| TFLOPs per guided step | memory computed once: per step + once per section | activation GB (train, bf16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ideal = f"{r['memory_tokens_ideal']:,.0f}" if r["memory_tokens_ideal"] is not None else "—"
        lines.append(f"| {r['name']} | {r['memory_tokens']:,} | {ideal} | {r['ratio']:.1f}x | "
                     f"{_tflops(r['attention_tflops'])} | {_tflops(r['step_tflops'])} | "
                     f"{_tflops(r['step_tflops_reused'])} + {_tflops(r['once_tflops'])} | {r['activation_gb']:.1f} |")
    lines += ["", "A guided step runs both branches through every layer. With `model.memory_attention = "
              "memory_only` the memory attends only to itself and skips the prompt, so its keys and values are "
              "computed once per section and each step runs the section's tokens only (a model trained so)."]
    return "\n".join(lines)


def parse_resolution(text: str) -> tuple[int, int]:
    """'832x480' -> (height, width) = (480, 832)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FrameMemError(f"resolution '{text}' is not WIDTHxHEIGHT, e.g. 832x480") from None
    if width <= 0 or height <= 0:
        raise FrameMemError(f"resolution '{text}' must be positive")
    return height, width


__all__ = ["plan", "format_plan", "framepack_tokens", "parse_resolution", "PAPER_RATES"]
