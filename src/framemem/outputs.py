"""What `framemem retrieve` and `demo` write (PNGs, grids, MP4s, JSON), over the pipelines; the benchmarks write the same.
`framemem generate` writes through `generation`."""
from __future__ import annotations

import re
import secrets
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .rates import format_rate
from .files import save_image, write_json
from .metrics import psnr
from .data.video import load_frames, to_uint8, write_video
from .flow import make_scheduler
from .pipelines import FrameMemPipeline, FrameMemRetrievalPipeline
from .pipelines.inputs import video_frames

DEMO_SEED_BASE = 1_500_000_000  # procedural demo videos: never trained on, never held out
DEMO_INIT_SECONDS, DEMO_GENERATE_SECONDS = 8.0, 12.0
OTHER_SEED_OFFSET = 777_777  # the demo's "another video": a procedural video of another seed


def _on_device(pipe):
    """Command-line runs use the GPU when there is one."""
    return pipe.to("cuda") if torch.cuda.is_available() else pipe


def load_retrieval(checkpoint) -> FrameMemRetrievalPipeline:
    """The retrieval pipeline of a checkpoint folder, hub repo or shipped model name."""
    return _on_device(FrameMemRetrievalPipeline.from_pretrained(checkpoint))


def load_generation(checkpoint) -> FrameMemPipeline:
    """The generation pipeline of a stage-2 checkpoint; a stage-1 one is a one-line error."""
    return _on_device(FrameMemPipeline.from_pretrained(checkpoint))


def as_uint8(frames) -> torch.Tensor:
    """A pipeline's "pt" frames (T, 3, H, W) in [0, 1] -> uint8 (T, H, W, 3)."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def time_label(seconds: float) -> str:
    return f"{seconds:.2f}"


def random_times(frames: int, fps: float, count: int, rng: np.random.Generator) -> list[float]:
    """Sorted times (seconds) of `count` distinct random frames of a `frames`-frame history."""
    indices = rng.choice(frames, size=min(count, frames), replace=False)
    return sorted(round(float(i) / fps, 2) for i in indices)


def run_retrieval(pipe: FrameMemRetrievalPipeline, frames, times: list[float], out: str | Path,
                  steps: int | None = None, sampler: str = "euler", seed: int = 0, source: str = "video",
                  lpips=None, other=None) -> dict:
    """Retrieve the frames at `times` (seconds) of a history (any video the pipeline takes)
    and write gt_/retrieved_/bicubic_<time>.png, grid.png and metrics.json to `out`: per frame
    and on average, PSNR/SSIM of the sampled and one-step retrieval and of two references,
    the bicubic copy (÷ the spatial rate and back up) and the history's mean frame. With
    `lpips` (a `metrics.LPIPS`), records also hold the LPIPS of the retrieved and bicubic frames.
    With `other` (another video, as long), the same times are also retrieved from its memory
    with the same noise, and each record gets `swapped_psnr`: what a memory of the wrong
    video gives, the floor that this video's memory must beat."""
    mc = pipe.framemem_config.model
    wanted = make_scheduler(sampler, pipe.scheduler.config.shift)
    if type(pipe.scheduler) is not type(wanted):  # --sampler names the scheduler; one of that kind is kept
        pipe.scheduler = wanted
    steps = steps or pipe.framemem_config.train.sample_steps
    frames = video_frames(frames, mc.height, mc.width, mc.fps, source)
    result = pipe(frames, times, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                  output_type="pt", lpips=lpips)
    truth, got, one_step, bicubic = (x * 2 - 1 for x in (result.ground_truth, result.frames, result.one_step,
                                                          result.bicubic))
    rows = [("truth", truth), ("retrieved\n(sampled)", got), ("one-step\n(the memory's\nmean)", one_step),
            ("bicubic\n(low-res\ncopy)", bicubic)]
    if other is not None:
        other = video_frames(other, mc.height, mc.width, mc.fps, "other video")
        swapped = pipe(other, result.times, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                       output_type="pt", compute_metrics=False).frames * 2 - 1
        for k, record in enumerate(result.metrics["per_frame"]):
            record["swapped_psnr"] = psnr(swapped[k], truth[k])
        result.metrics["mean"]["swapped_psnr"] = float(np.mean([r["swapped_psnr"] for r in result.metrics["per_frame"]]))
        rows.append(("another\nvideo's\nmemory", swapped))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # a previous retrieval's frames at other times would sit beside these
        if re.fullmatch(r"(gt|retrieved|bicubic)_\d+\.\d\d\.png", old.name):
            old.unlink()
    for k, t in enumerate(result.times):
        label = time_label(t)
        for name, image in (("gt", truth[k]), ("retrieved", got[k]), ("bicubic", bicubic[k])):
            save_image(_to_image(image), out / f"{name}_{label}.png")
    save_image(_grid(rows, result.times), out / "grid.png")
    counts = pipe.model.token_counts(len(frames), frames.shape[1], frames.shape[2])
    metrics = {
        "video": source, "frames": len(frames), "fps": mc.fps, "duration_seconds": len(frames) / mc.fps,
        "resolution": [frames.shape[1], frames.shape[2]], "rate": format_rate(mc.rate),
        "tokens": {"full_context": result.full_context_tokens, "memory": result.memory_tokens,
                   "memory_ideal": counts["memory_ideal"]},
        "sampler": sampler, "steps": steps, "seed": seed, **result.metrics,
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def retrieve_command(checkpoint, video_path, times, out, steps=None, sampler="euler", seed=0) -> dict:
    pipe = load_retrieval(checkpoint)
    metrics = run_retrieval(pipe, video_path, times, out, steps, sampler, seed, source=str(video_path))
    _print_summary(metrics, out)
    return metrics


def demo_command(checkpoint, video_path=None, out="demo_out", seed=None, count=4, steps=None,
                 ar_checkpoint=None) -> dict:
    """Retrieval on a video the model never saw; then, with a stage-2 checkpoint and no
    `video_path`, a continuation of the procedural video from its storyboard
    (generated.mp4/.png/.json)."""
    from .data.procedural import procedural_video

    pipe = load_retrieval(checkpoint)
    mc = pipe.framemem_config.model
    seed = secrets.randbelow(1_000_000) if seed is None else seed
    out = Path(out)
    array, shots = procedural_video(DEMO_SEED_BASE + seed, mc.history_frames, mc.height, mc.width, mc.fps)
    if video_path:
        frames = load_frames(video_path, mc.fps, mc.height, mc.width)
        source = str(video_path)
    else:
        frames = torch.from_numpy(array)
        source = f"procedural video, seed {DEMO_SEED_BASE + seed} (never seen in training)"
        write_video(out / "history.mp4", array, mc.fps)
    duration = len(frames) / mc.fps
    rng = np.random.default_rng(seed)
    times = random_times(len(frames), mc.fps, count, rng)
    print(f"history: {source}")
    counts = pipe.model.token_counts(len(frames), mc.height, mc.width)
    print(f"  {len(frames)} frames, {duration:.1f}s at {mc.fps:g} fps, {mc.width}x{mc.height}")
    print(f"  full context {counts['full_context']} tokens -> memory {counts['memory']} tokens "
          f"(rate {format_rate(mc.rate)}, {counts['full_context'] / counts['memory']:.0f}x shorter)")
    other = None
    if not video_path:  # another video like this one (with --video, no video of the same kind is at hand)
        other, _ = procedural_video(DEMO_SEED_BASE + seed + OTHER_SEED_OFFSET, len(frames), mc.height, mc.width, mc.fps)
    metrics = run_retrieval(pipe, frames, times, out, steps, seed=seed, source=source, other=other)
    _print_summary(metrics, out)
    if ar_checkpoint is not None and video_path:
        print("\ngeneration skipped: it continues the procedural video from its own storyboard, and "
              f"{video_path} has none (use `framemem generate --init-video` with a storyboard of yours)")
    elif ar_checkpoint is not None:
        from .data.storyboard import Storyboard

        init_seconds = DEMO_INIT_SECONDS
        board = Storyboard(tuple(s.start / mc.fps for s in shots), tuple(s.caption for s in shots))
        write_json(out / "storyboard.json", board.to_dict())
        write_video(out / "init.mp4", array[: int(init_seconds * mc.fps)], mc.fps)
        print(f"\ngeneration: the first {init_seconds:g}s of the history, then {DEMO_GENERATE_SECONDS:g}s more "
              "from its storyboard, section by section")
        from .generation import generate_command

        generate_command(ar_checkpoint, out / "storyboard.json", DEMO_GENERATE_SECONDS, out / "generated.mp4",
                         out / "init.mp4", seed=seed, steps=steps, overwrite=True)
    return metrics


def _print_summary(metrics: dict, out) -> None:
    print(f"{'time':>7} {'PSNR':>7} {'SSIM':>6} | {'bicubic PSNR':>12} {'SSIM':>6}")
    for r in metrics["per_frame"]:
        print(f"{r['time']:>6.2f}s {r['psnr']:>7.2f} {r['ssim']:>6.3f} | {r['bicubic_psnr']:>12.2f} {r['bicubic_ssim']:>6.3f}")
    m = metrics["mean"]
    print(f"{'mean':>7} {m['psnr']:>7.2f} {m['ssim']:>6.3f} | {m['bicubic_psnr']:>12.2f} {m['bicubic_ssim']:>6.3f}")
    print(memory_reading(m))
    print(f"wrote {out}/ (gt_*, retrieved_*, bicubic_*.png, grid.png, metrics.json)")


def memory_reading(mean: dict) -> str:
    """One line on what the mean figures say about the memory."""
    line = f"reading: retrieved frames score {mean['psnr']:.1f} dB against their own moment"
    if mean.get("nearby_psnr") is not None:
        line += f", {mean['nearby_psnr']:.1f} dB against the frames 1-3 s away"
    if mean.get("swapped_psnr") is not None:
        line += f", {mean['swapped_psnr']:.1f} dB when read from another video's memory"
    alternatives = [v for v in (mean.get("nearby_psnr"), mean.get("swapped_psnr")) if v is not None]
    if alternatives:
        gap = mean["psnr"] - max(alternatives)
        line += (f": the memory holds which moment it is (+{gap:.1f} dB over the closer alternative)" if gap > 0
                 else ": the memory does not single out the moment")
    paints = "it already matches" if mean["psnr"] >= mean["bicubic_psnr"] else "it does not yet paint"
    return f"{line}; the bicubic copy's {mean['bicubic_psnr']:.1f} dB is detail {paints}"


def _to_image(frame: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> PIL image."""
    return Image.fromarray(to_uint8(frame[:, None])[0].numpy())


def _grid(rows: list[tuple[str, torch.Tensor]], times, scale: int = 4) -> Image.Image:
    """One row per (label, frames (K, 3, H, W) in [-1, 1]), one column per time."""
    k, _, h, w = rows[0][1].shape
    cell_h, cell_w, pad, top, left = h * scale, w * scale, 4, 18, 84
    canvas = Image.new("RGB", (left + k * (cell_w + pad), top + len(rows) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, frames) in enumerate(rows):
        y = top + row * (cell_h + pad)
        draw.multiline_text((4, y + cell_h // 2 - 7 * (name.count("\n") + 1)), name, fill="black")
        for col in range(k):
            x = left + col * (cell_w + pad)
            canvas.paste(_to_image(frames[col]).resize((cell_w, cell_h), Image.NEAREST), (x, y))
            if row == 0:
                draw.text((x + 2, 3), f"t = {times[col]:.2f}s", fill="black")
    return canvas


