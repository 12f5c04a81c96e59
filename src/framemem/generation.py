"""A generated video written to disk as it is made: what `framemem generate` and the app's
Generate tab both run.

`write_generation` streams each section into NAME.partial.mp4 (a fragmented MP4 that plays
even after a kill), rewrites NAME.json after every section, and at the end renames the
video to NAME.mp4 and writes NAME.png (a contact sheet, one frame a section). No frames are
kept beyond the memory's window, so RAM stays bounded however long the video.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from .data.storyboard import Storyboard
from .data.video import VideoWriter, to_uint8
from .errors import FrameMemError
from .files import save_image, write_json
from .metrics import Continuity
from .pipelines import FrameMemPipeline
from .pipelines.inputs import video_frames

MAX_SECONDS = 300.0  # longer generations need allow_long (--allow-long)
SHEET_TILES = 64  # the contact sheet shows at most this many sections, evenly spread
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


class GenerationCancelled(FrameMemError):
    """Raised inside a generation when its `should_stop` says so; what was made is kept."""


def check_start(init_video, init_image) -> None:
    if init_video is not None and init_image is not None:
        raise FrameMemError("give a video to continue or a start image, not both")


def partial_path(out: Path) -> Path:
    """Where a video being made streams to: story.mp4 -> story.partial.mp4."""
    return out.with_name(f"{out.stem}.partial{out.suffix}")


def write_generation(pipe: FrameMemPipeline, storyboard: Storyboard, seconds: float, out: str | Path,
                     init_video=None, init_image=None, cfg: float | None = None, seed: int = 0,
                     steps: int | None = None, checkpoint: str = "", on_start: Callable | None = None,
                     on_section: Callable | None = None, should_stop: Callable | None = None) -> dict:
    """Generate `seconds` of new video from `storyboard` and write `out` (.mp4: the init
    video, if any, then the new frames), out.png and out.json.

    init_video / init_image: a video to continue (any accepted video input) or a start image
    (held still for one memory block; not written to the video). on_start(count, estimate):
    the section count and an estimate of the wall time in seconds, before the first section.
    on_section(index, count, frames, record): after each section, with its new frames uint8
    (T, H, W, 3). should_stop(): checked after every denoising step; when it returns True the
    generation ends with GenerationCancelled and the sections made stay in the partial MP4.
    Returns the JSON record (settings and sections)."""
    out = Path(out)
    check_start(init_video, init_image)
    mc = pipe.framemem_config.model
    memory, history = None, torch.zeros((0, mc.height, mc.width, 3), dtype=torch.uint8)
    if init_video is not None:
        what = str(init_video) if isinstance(init_video, (str, Path)) else "init video"
        history = video_frames(init_video, mc.height, mc.width, mc.fps, what)
        memory = pipe.encode_memory(video=history)
        history = history[: pipe.codec.pixel_frames(memory.latent_frames)]  # whole memory blocks
    elif init_image is not None:
        memory = pipe.encode_memory(image=init_image)
    cfg = pipe.framemem_config.ar.cfg if cfg is None else float(cfg)
    steps = steps or pipe.framemem_config.ar.sample_steps
    count = pipe.section_count(seconds, continuing=memory is not None)
    if on_start is not None:
        on_start(count, pipe.estimate_seconds(seconds, steps, cfg))
    wanted = max(1, int(round(seconds * mc.fps)))
    shown = set(np.linspace(0, count - 1, min(count, SHEET_TILES)).round().astype(int).tolist())
    record = {"checkpoint": str(checkpoint), "seconds": seconds, "seed": seed, "guidance_scale": cfg,
              "num_inference_steps": steps, "init_video": str(init_video) if isinstance(init_video, (str, Path)) else None,
              "init_image": str(init_image) if isinstance(init_image, (str, Path)) else None,
              "storyboard": storyboard.to_dict(), "sections": [], "complete": False}
    partial = partial_path(out)
    writer = VideoWriter(partial, mc.fps, mc.height, mc.width, streaming=True)
    writer.write(history)
    continuity = Continuity()
    continuity.add(history[-1:])  # the cut from the video continued to the first section counts too
    last_prompt = [storyboard.prompt_at(len(history) / mc.fps - 1e-6) if len(history) else None]
    tiles, made = [], [0]

    def section_done(pipe, index, pixels, section):
        frames = to_uint8(pixels[0].cpu())[: wanted - made[0]]  # the last section may run past `seconds`
        made[0] += len(frames)
        writer.write(frames)
        continuity.add(frames, planned_cut=section["prompt"] != last_prompt[0] and last_prompt[0] is not None)
        last_prompt[0] = section["prompt"]
        record["continuity"] = continuity.summary()
        if index in shown:
            tiles.append((frames[len(frames) // 2], f"{section['start_seconds']:.1f}s"))
        record["sections"].append(section)
        write_json(out.with_suffix(".json"), record)
        if on_section is not None:
            on_section(index, count, frames, section)

    def step_done(pipe, step, timestep, kwargs):
        if should_stop():
            raise GenerationCancelled(f"cancelled after {len(record['sections'])} of {count} sections; "
                                      f"what was made is in {partial}")
        return kwargs

    try:
        pipe(storyboard, seconds=seconds, memory=memory, guidance_scale=cfg, num_inference_steps=steps,
             generator=torch.Generator().manual_seed(seed), output_type=None, callback_on_section_end=section_done,
             callback_on_step_end=step_done if should_stop is not None else None)
    except BaseException:
        writer.close()
        print(f"stopped: the {len(record['sections'])} sections made are in {partial} and {out.with_suffix('.json')}",
              file=sys.stderr)
        raise
    writer.close()
    os.replace(partial, out)
    save_image(contact_sheet(tiles), out.with_suffix(".png"))
    record["complete"] = True
    record["frames"] = len(history) + made[0]
    write_json(out.with_suffix(".json"), record)
    return record


def check_output(out: Path, overwrite: bool, inputs: dict) -> None:
    """`out` must name a video file, replace none of `inputs` ({path: flag}), and exist only
    with `overwrite`; its folder must be writable (checked now, not after the last section)."""
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise FrameMemError(f"--out {out}: name an .mp4 (or .mov, .mkv) file")
    written = (out, out.with_suffix(".png"), out.with_suffix(".json"))
    taken = {Path(p).resolve(): flag for p, flag in inputs.items() if p}
    for path in written:
        if path.resolve() in taken:
            raise FrameMemError(f"--out {out} would overwrite {taken[path.resolve()]} {path}: choose another name")
    existing = [str(path) for path in written if path.exists()]
    if existing and not overwrite:
        raise FrameMemError(f"--out {out}: {', '.join(existing)} already exist(s); pass --overwrite, or choose another name")
    partial = partial_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.open("wb").close()
        partial.unlink()  # a load that fails next leaves nothing behind
    except OSError as err:
        raise FrameMemError(f"--out {out}: cannot write there ({err.strerror})") from None


def generate_command(checkpoint, storyboard_path, seconds: float, out, init_video=None, cfg=None, seed: int = 0,
                     steps: int | None = None, overwrite: bool = False, allow_long: bool = False,
                     init_image=None) -> list[dict]:
    """`framemem generate`: check the paths, load the checkpoint, then `write_generation`."""
    from .outputs import load_generation

    out = Path(out)
    check_start(init_video, init_image)
    check_output(out, overwrite, {storyboard_path: "--storyboard", init_video: "--init-video",
                                  init_image: "--init-image"})
    if seconds > MAX_SECONDS and not allow_long:
        raise FrameMemError(f"--seconds {seconds:g}: more than {MAX_SECONDS:g} s of video takes hours; "
                            "pass --allow-long to generate it anyway")
    storyboard = Storyboard.load(storyboard_path)
    pipe = load_generation(checkpoint)
    section = pipe.framemem_config.ar.section_seconds

    def announce(count, estimate):
        print(f"{count} sections of {section:g}s, {steps or pipe.framemem_config.ar.sample_steps} steps each: "
              f"about {duration_text(estimate)} on this machine (denoising alone)")

    record = write_generation(pipe, storyboard, seconds, out, init_video, init_image, cfg, seed, steps,
                              str(checkpoint), on_start=announce)
    fps = pipe.framemem_config.model.fps
    print(f"wrote {out} ({record['frames']} frames, {record['frames'] / fps:.1f}s), {out.with_suffix('.png')}, "
          f"{out.with_suffix('.json')}")
    if record.get("continuity"):
        c = record["continuity"]
        print(f"continuity: consecutive frames match at {c['across_db']:.1f} dB PSNR across the {c['boundaries']} "
              f"section boundaries, {c['within_db']:.1f} dB within sections (ratio {c['ratio']:.2f}; 1.00 = no visible cut)")
    return record["sections"]


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def contact_sheet(tiles: list[tuple[torch.Tensor, str]], columns: int = 8, scale: int = 2) -> Image.Image:
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
