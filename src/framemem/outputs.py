"""What `framemem retrieve`, `generate` and `demo` write (PNGs, grids, MP4s, JSON), over the pipelines; the benchmarks write the same."""
from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .config import format_rate
from .errors import FrameMemError
from .files import save_image, write_json
from .data.video import load_frames, to_uint8, write_video
from .flow import make_scheduler
from .pipelines import FrameMemPipeline, FrameMemRetrievalPipeline
from .pipelines.inputs import video_frames

DEMO_SEED_BASE = 1_500_000_000  # procedural demo videos: never trained on, never held out
DEMO_INIT_SECONDS, DEMO_GENERATE_SECONDS = 8.0, 12.0


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
                  lpips=None) -> dict:
    """Retrieve the frames at `times` (seconds) of a history (any video the pipeline takes)
    and write gt_/retrieved_/bicubic_<time>.png, grid.png and metrics.json to `out`: per frame
    and on average, PSNR/SSIM of the sampled and one-step retrieval and of two references,
    the bicubic copy (÷ the spatial rate and back up) and the history's mean frame. With
    `lpips` (a `metrics.LPIPS`), records also hold the LPIPS of the retrieved and bicubic frames."""
    mc = pipe.framemem_config.model
    wanted = make_scheduler(sampler, pipe.scheduler.config.shift)
    if type(pipe.scheduler) is not type(wanted):  # --sampler names the scheduler; one of that kind is kept
        pipe.scheduler = wanted
    steps = steps or pipe.framemem_config.train.sample_steps
    frames = video_frames(frames, mc.height, mc.width, mc.fps, source)
    result = pipe(frames, times, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                  output_type="pt", lpips=lpips)
    truth, got, bicubic = (x * 2 - 1 for x in (result.ground_truth, result.frames, result.bicubic))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # a previous retrieval's frames at other times would sit beside these
        if re.fullmatch(r"(gt|retrieved|bicubic)_\d+\.\d\d\.png", old.name):
            old.unlink()
    for k, t in enumerate(result.times):
        label = time_label(t)
        for name, image in (("gt", truth[k]), ("retrieved", got[k]), ("bicubic", bicubic[k])):
            save_image(_to_image(image), out / f"{name}_{label}.png")
    save_image(_grid(truth, got, bicubic, result.times), out / "grid.png")
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
    metrics = run_retrieval(pipe, frames, times, out, steps, seed=seed, source=source)
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
        generate_command(ar_checkpoint, out / "storyboard.json", DEMO_GENERATE_SECONDS, out / "generated.mp4",
                         out / "init.mp4", seed=seed, steps=steps, overwrite=True)
    return metrics


def _print_summary(metrics: dict, out) -> None:
    print(f"{'time':>7} {'PSNR':>7} {'SSIM':>6} | {'bicubic PSNR':>12} {'SSIM':>6}")
    for r in metrics["per_frame"]:
        print(f"{r['time']:>6.2f}s {r['psnr']:>7.2f} {r['ssim']:>6.3f} | {r['bicubic_psnr']:>12.2f} {r['bicubic_ssim']:>6.3f}")
    m = metrics["mean"]
    print(f"{'mean':>7} {m['psnr']:>7.2f} {m['ssim']:>6.3f} | {m['bicubic_psnr']:>12.2f} {m['bicubic_ssim']:>6.3f}")
    print(f"wrote {out}/ (gt_*, retrieved_*, bicubic_*.png, grid.png, metrics.json)")


def _to_image(frame: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> PIL image."""
    return Image.fromarray(to_uint8(frame[:, None])[0].numpy())


def _grid(truth, got, bicubic, times, scale: int = 4) -> Image.Image:
    """Rows: ground truth, retrieved, bicubic reference; one column per time."""
    k, _, h, w = truth.shape
    cell_h, cell_w, pad, top, left = h * scale, w * scale, 4, 18, 74
    canvas = Image.new("RGB", (left + k * (cell_w + pad), top + 3 * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, frames) in enumerate((("truth", truth), ("retrieved", got), ("bicubic", bicubic))):
        y = top + row * (cell_h + pad)
        draw.text((4, y + cell_h // 2 - 6), name, fill="black")
        for col in range(k):
            x = left + col * (cell_w + pad)
            canvas.paste(_to_image(frames[col]).resize((cell_w, cell_h), Image.NEAREST), (x, y))
            if row == 0:
                draw.text((x + 2, 3), f"t = {times[col]:.2f}s", fill="black")
    return canvas


MAX_SECONDS = 300.0  # longer generations need allow_long (--allow-long)
SHEET_TILES = 64  # the contact sheet shows at most this many sections, evenly spread


def generate_command(checkpoint, storyboard_path, seconds: float, out, init_video=None, cfg=None, seed: int = 0,
                     steps: int | None = None, overwrite: bool = False, allow_long: bool = False) -> list[dict]:
    """`framemem generate`: write `out` (e.g. story.mp4: the init video, then the new
    frames), story.png (contact sheet) and story.json (settings and sections).

    The video streams: each section is written as it is made into story.partial.mp4 (a
    fragmented MP4 that plays even after a kill), renamed to `out` at the end; story.json
    is rewritten after every section. No frames are kept beyond the memory's window."""
    from .data.storyboard import Storyboard
    from .data.video import VideoWriter

    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise FrameMemError(f"--out {out}: name an .mp4 (or .mov, .mkv) file")
    written = (out, out.with_suffix(".png"), out.with_suffix(".json"))
    taken = {Path(p).resolve(): flag for p, flag in ((storyboard_path, "--storyboard"), (init_video, "--init-video")) if p}
    for path in written:
        if path.resolve() in taken:
            raise FrameMemError(f"--out {out} would overwrite {taken[path.resolve()]} {path}: choose another name")
    existing = [str(path) for path in written if path.exists()]
    if existing and not overwrite:
        raise FrameMemError(f"--out {out}: {', '.join(existing)} already exist(s); pass --overwrite, or choose another name")
    if seconds > MAX_SECONDS and not allow_long:
        raise FrameMemError(f"--seconds {seconds:g}: more than {MAX_SECONDS:g} s of video takes hours; "
                            "pass --allow-long to generate it anyway")
    storyboard = Storyboard.load(storyboard_path)
    partial = out.with_name(f"{out.stem}.partial{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.open("wb").close()  # a folder we cannot write to fails now, not after the last section
        partial.unlink()  # a load that fails next leaves nothing behind
    except OSError as err:
        raise FrameMemError(f"--out {out}: cannot write there ({err.strerror})") from None
    pipe = load_generation(checkpoint)
    mc = pipe.framemem_config.model
    memory, history = None, torch.zeros((0, mc.height, mc.width, 3), dtype=torch.uint8)
    if init_video:
        history = video_frames(init_video, mc.height, mc.width, mc.fps, str(init_video))
        memory = pipe.encode_memory(video=history)
        history = history[: pipe.codec.pixel_frames(memory.latent_frames)]  # whole memory blocks
    cfg = pipe.framemem_config.ar.cfg if cfg is None else cfg
    steps = steps or pipe.framemem_config.ar.sample_steps
    count = pipe.section_count(seconds, continuing=memory is not None)
    estimate = pipe.estimate_seconds(seconds, steps, cfg)
    print(f"{count} sections of {pipe.framemem_config.ar.section_seconds:g}s, {steps} steps each: "
          f"about {_duration(estimate)} on this machine (denoising alone)")
    wanted = max(1, int(round(seconds * mc.fps)))
    shown = set(np.linspace(0, count - 1, min(count, SHEET_TILES)).round().astype(int).tolist())
    record = {"checkpoint": str(checkpoint), "seconds": seconds, "seed": seed, "guidance_scale": cfg,
              "num_inference_steps": steps, "init_video": str(init_video) if init_video else None,
              "storyboard": storyboard.to_dict(), "sections": [], "complete": False}
    writer = VideoWriter(partial, mc.fps, mc.height, mc.width, streaming=True)
    writer.write(history)
    tiles, made = [], [0]

    def on_section(pipe, index, pixels, section):
        frames = to_uint8(pixels[0].cpu())[: wanted - made[0]]  # the last section may run past `seconds`
        made[0] += len(frames)
        writer.write(frames)
        if index in shown:
            tiles.append((frames[len(frames) // 2], f"{section['start_seconds']:.1f}s"))
        record["sections"].append(section)
        write_json(out.with_suffix(".json"), record)

    try:
        pipe(storyboard, seconds=seconds, memory=memory, guidance_scale=cfg, num_inference_steps=steps,
             generator=torch.Generator().manual_seed(seed), output_type=None, callback_on_section_end=on_section)
    except BaseException:
        writer.close()
        print(f"stopped: the {len(record['sections'])} sections made are in {partial} and {out.with_suffix('.json')}",
              file=sys.stderr)
        raise
    writer.close()
    os.replace(partial, out)
    save_image(_contact_sheet(tiles), out.with_suffix(".png"))
    record["complete"] = True
    write_json(out.with_suffix(".json"), record)
    total = len(history) + made[0]
    print(f"wrote {out} ({total} frames, {total / mc.fps:.1f}s), {out.with_suffix('.png')}, {out.with_suffix('.json')}")
    return record["sections"]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _contact_sheet(tiles: list[tuple[torch.Tensor, str]], columns: int = 8, scale: int = 2) -> Image.Image:
    """uint8 (H, W, 3) frames with labels, in rows of `columns`."""
    h, w = tiles[0][0].shape[:2]
    cell_w, cell_h, label = w * scale, h * scale, 14
    rows = -(-len(tiles) // columns)
    canvas = Image.new("RGB", (min(columns, len(tiles)) * (cell_w + 4), rows * (cell_h + label + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (frame, text) in enumerate(tiles):
        x, y = (i % columns) * (cell_w + 4), (i // columns) * (cell_h + label + 4)
        canvas.paste(Image.fromarray(frame.numpy()).resize((cell_w, cell_h), Image.NEAREST), (x, y + label))
        draw.text((x + 2, y), text, fill="black")
    return canvas
