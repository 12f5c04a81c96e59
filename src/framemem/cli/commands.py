"""`framemem retrieve` and `framemem demo`: frames back from memory, as PNGs and metrics."""
from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..config import format_rate
from ..errors import FrameMemError
from ..files import save_image, write_json
from ..metrics import psnr, ssim
from ..models.framemem import FrameMem
from ..training.stage1_retrieval import bicubic_reference, retrieve_frames
from ..data.video import load_frames, to_model, to_uint8, write_video

DEMO_SEED_BASE = 1_500_000_000  # procedural demo videos: never trained on, never held out
DEMO_INIT_SECONDS, DEMO_GENERATE_SECONDS = 8.0, 12.0


def load_model(checkpoint: str | Path) -> FrameMem:
    """A checkpoint folder's (or hub repo's) model, on the GPU when there is one."""
    from ..hub import checkpoint_folder

    path = checkpoint_folder(checkpoint)
    if not path.exists():
        raise FrameMemError(f"checkpoint {path}: no such folder")
    model = FrameMem.from_pretrained(path)
    if model.config.stage == 0:
        raise FrameMemError(f"{path}: a base DiT (framemem base) has no trained memory; start stage 1 from it with "
                            f"framemem pretrain --model-path {path}")
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def time_label(seconds: float) -> str:
    return f"{seconds:.2f}"


def random_times(frames: int, fps: float, count: int, rng: np.random.Generator) -> list[float]:
    """Sorted times (seconds) of `count` distinct random frames of a `frames`-frame history."""
    indices = rng.choice(frames, size=min(count, frames), replace=False)
    return sorted(round(float(i) / fps, 2) for i in indices)


def check_history(model: FrameMem, frames: torch.Tensor, source: str) -> None:
    """A history must fit the codec × patch grid and hold one temporal stride of φ."""
    t, h, w, _ = frames.shape
    model.check_frame_size(h, w)
    stride = model.encoder.block_frames
    if model.codec.latent_frames(t) < stride:
        fps = model.config.model.fps
        raise FrameMemError(
            f"{source}: too short ({t} frames at {fps:g} fps); the memory needs at least "
            f"{model.codec.pixel_frames(stride)} frames (one temporal stride)"
        )


def run_retrieval(model: FrameMem, frames: torch.Tensor, times: list[float], out: str | Path,
                  steps: int | None = None, sampler: str = "euler", seed: int = 0, source: str = "video",
                  lpips=None) -> dict:
    """Retrieve the frames at `times` (seconds) of a uint8 history (T, H, W, 3) and write
    gt_/retrieved_/bicubic_<time>.png, grid.png and metrics.json to `out`: per frame and on
    average, PSNR/SSIM of the sampled and one-step retrieval and of two references, the
    bicubic copy (÷ the spatial rate and back up) and the history's mean frame. With `lpips`
    (a `metrics.LPIPS`), records also hold the LPIPS of the retrieved and bicubic frames."""
    mc = model.config.model
    check_history(model, frames, source)
    duration = len(frames) / mc.fps
    for t in times:
        if not 0 <= t < duration:
            raise FrameMemError(f"time {t:g}s is outside the video (0 to {duration:.2f}s at {mc.fps:g} fps)")
    indices = [min(int(round(t * mc.fps)), len(frames) - 1) for t in times]
    video = to_model(frames)
    steps = steps or model.config.train.sample_steps
    retrieved, memory = retrieve_frames(model, video, indices, steps=steps, sampler=sampler, seed=seed)
    mean_estimate, _ = retrieve_frames(model, video, indices, one_step=True, seed=seed)
    truth = video[0, :, indices].transpose(0, 1)  # (K, 3, H, W)
    got = retrieved[0].transpose(0, 1)
    one_step = mean_estimate[0].transpose(0, 1)
    rh, rw, _ = mc.rate
    bicubic = bicubic_reference(truth, rh, rw)
    mean_frame = video[0].mean(dim=1)  # (3, H, W): what a model that ignores its memory can reach

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for k, t in enumerate(times):
        label = time_label(t)
        for name, image in (("gt", truth[k]), ("retrieved", got[k]), ("bicubic", bicubic[k])):
            save_image(_to_image(image), out / f"{name}_{label}.png")
        records.append({
            "time": t, "frame_index": indices[k],
            "psnr": psnr(got[k], truth[k]), "ssim": ssim(got[k], truth[k]),
            "one_step_psnr": psnr(one_step[k], truth[k]), "one_step_ssim": ssim(one_step[k], truth[k]),
            "bicubic_psnr": psnr(bicubic[k], truth[k]), "bicubic_ssim": ssim(bicubic[k], truth[k]),
            "mean_frame_psnr": psnr(mean_frame, truth[k]), "mean_frame_ssim": ssim(mean_frame, truth[k]),
        })
        if lpips is not None:
            with torch.no_grad():
                records[-1]["lpips"] = float(lpips(got[k : k + 1], truth[k : k + 1]))
                records[-1]["bicubic_lpips"] = float(lpips(bicubic[k : k + 1], truth[k : k + 1]))
    save_image(_grid(truth, got, bicubic, times), out / "grid.png")
    counts = model.token_counts(len(frames), frames.shape[1], frames.shape[2])
    keys = [k for k in records[0] if k not in ("time", "frame_index")]
    metrics = {
        "video": source, "frames": len(frames), "fps": mc.fps, "duration_seconds": duration,
        "resolution": [frames.shape[1], frames.shape[2]], "rate": format_rate(mc.rate),
        "tokens": {"full_context": counts["full_context"], "memory": memory.tokens.shape[1],
                   "memory_ideal": counts["memory_ideal"]},
        "sampler": sampler, "steps": steps, "seed": seed,
        "per_frame": records,
        "mean": {key: float(np.mean([r[key] for r in records])) for key in keys},
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def retrieve_command(checkpoint, video_path, times, out, steps=None, sampler="euler", seed=0) -> dict:
    model = load_model(checkpoint)
    mc = model.config.model
    frames = load_frames(video_path, mc.fps, mc.height, mc.width)
    metrics = run_retrieval(model, frames, times, out, steps, sampler, seed, source=str(video_path))
    _print_summary(metrics, out)
    return metrics


def demo_command(checkpoint, video_path=None, out="demo_out", seed=None, count=4, steps=None,
                 ar_checkpoint=None) -> dict:
    """Retrieval on a video the model never saw; then, with a stage-2 checkpoint and no
    `video_path`, a continuation of the procedural video from its storyboard
    (generated.mp4/.png/.json)."""
    from ..data.procedural import procedural_video

    model = load_model(checkpoint)
    mc = model.config.model
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
    counts = model.token_counts(len(frames), mc.height, mc.width)
    print(f"  {len(frames)} frames, {duration:.1f}s at {mc.fps:g} fps, {mc.width}x{mc.height}")
    print(f"  full context {counts['full_context']} tokens -> memory {counts['memory']} tokens "
          f"(rate {format_rate(mc.rate)}, {counts['full_context'] / counts['memory']:.0f}x shorter)")
    metrics = run_retrieval(model, frames, times, out, steps, seed=seed, source=source)
    _print_summary(metrics, out)
    if ar_checkpoint is not None and video_path:
        print("\ngeneration skipped: it continues the procedural video from its own storyboard, and "
              f"{video_path} has none (use `framemem generate --init-video` with a storyboard of yours)")
    elif ar_checkpoint is not None:
        from ..data.storyboard import Storyboard

        init_seconds = DEMO_INIT_SECONDS
        board = Storyboard(tuple(s.start / mc.fps for s in shots), tuple(s.caption for s in shots))
        write_json(out / "storyboard.json", board.to_dict())
        write_video(out / "init.mp4", array[: int(init_seconds * mc.fps)], mc.fps)
        print(f"\ngeneration: the first {init_seconds:g}s of the history, then {DEMO_GENERATE_SECONDS:g}s more "
              "from its storyboard, section by section")
        generate_command(ar_checkpoint, out / "storyboard.json", DEMO_GENERATE_SECONDS, out / "generated.mp4",
                         out / "init.mp4", seed=seed, steps=steps)
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


def stage2_ready(model: FrameMem, checkpoint) -> FrameMem:
    """A loaded stage-2 model with its text encoder; a stage-1 checkpoint is a one-line error."""
    if model.config.stage != 2:
        raise FrameMemError(f"{checkpoint}: a stage-1 checkpoint (retrieval only); run `framemem finetune` on it first")
    if model.text_encoder is None:  # Wan's umT5 lives in the Wan folder
        from ..models.text_encoders import build_text_encoder

        model.text_encoder = build_text_encoder(model.config.ar, model.dit.text_dim,
                                                model.config.model.transformer_path).to(next(model.parameters()).device)
    return model


def generate_command(checkpoint, storyboard_path, seconds: float, out, init_video=None, cfg=None, seed: int = 0,
                     steps: int | None = None) -> list[dict]:
    """`framemem generate`: write `out` (e.g. story.mp4), story.png (contact sheet) and story.json (sections)."""
    from ..training.stage2_autoregressive import generate
    from ..data.storyboard import Storyboard
    from ..data.video import video_fps, video_size

    if Path(out).suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise FrameMemError(f"--out {out}: name an .mp4 (or .mov, .mkv) file")
    taken = {Path(p).resolve(): flag for p, flag in ((storyboard_path, "--storyboard"), (init_video, "--init-video")) if p}
    for written in (Path(out), Path(out).with_suffix(".png"), Path(out).with_suffix(".json")):
        if written.resolve() in taken:
            raise FrameMemError(f"--out {out} would overwrite {taken[written.resolve()]} {written}: choose another name")
    storyboard = Storyboard.load(storyboard_path)
    model = load_model(checkpoint)
    mc = model.config.model
    init = None
    if init_video:
        size, fps = video_size(init_video), video_fps(init_video)
        if size != (mc.height, mc.width) or abs(fps - mc.fps) > 1e-3:
            raise FrameMemError(f"{init_video}: {size[1]}x{size[0]} at {fps:g} fps; this model needs "
                                f"{mc.width}x{mc.height} at {mc.fps:g} fps")
        init = to_model(load_frames(init_video, mc.fps, mc.height, mc.width)[None])
    model = stage2_ready(model, checkpoint)
    video, sections = generate(model, storyboard, seconds, init, cfg, seed, steps)
    frames = to_uint8(video[0])
    out = Path(out)
    write_video(out, frames, mc.fps)
    offset = 0 if init is None else init.shape[2]
    per = (len(frames) - offset) // len(sections)  # pixel frames per section
    tiles = [(frames[offset + i * per + per // 2], f"{s['start_seconds']:.1f}s") for i, s in enumerate(sections)]
    save_image(_contact_sheet(tiles), out.with_suffix(".png"))
    write_json(out.with_suffix(".json"), {"checkpoint": str(checkpoint), "seconds": seconds, "seed": seed,
                                           "init_video": str(init_video) if init_video else None,
                                           "storyboard": storyboard.to_dict(), "sections": sections})
    print(f"wrote {out} ({len(frames)} frames, {len(frames) / mc.fps:.1f}s), {out.with_suffix('.png')}, {out.with_suffix('.json')}")
    return sections


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
