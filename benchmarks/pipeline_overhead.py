"""What FrameMemPipeline costs over calling the model directly, per generated section.

    python benchmarks/pipeline_overhead.py [--sections 8] [--steps 16] [--repeats 3] [--out results/pipeline-overhead]

Both sides generate the same sections with the shipped stage-2 model (`tiny-ar`): the
pipeline's `__call__`, and a plain loop over the same parts (text encoder, DiT with guidance,
diffusers' Euler scheduler, codec, `MemoryState.append`). Runs alternate, and each side's
median over `--repeats` is compared. Also checks that both give the same frames. Writes
OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from framemem import FrameMemPipeline
from framemem.files import write_json, write_text
from framemem.models.framemem import section_latent_frames, window_blocks
from framemem.pipelines.memory_state import MemoryState, section_low_res

BOARD = [(0.0, "a clock, the camera pans left"), (3.0, "a patch of grass, the camera zooms in")]


@torch.no_grad()
def direct(pipe, sections: int, steps: int, cfg: float, seed: int) -> torch.Tensor:
    """The same generation without the pipeline: the model's parts called one by one."""
    model = pipe.model
    mc, codec = model.config.model, model.codec
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    state = MemoryState(model, window_blocks(model))
    section = section_latent_frames(model)
    h, w = codec.latent_shape(1, mc.height, mc.width)[1:]
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for _ in range(sections):
        start = state.latent_frames / mc.fps
        prompt = BOARD[0][1] if start + 0.5 < BOARD[1][0] else BOARD[1][1]
        text = model.text_encoder([prompt, ""])
        x = torch.randn((1, codec.channels, section, h, w), generator=generator)
        frames = (state.latent_frames + torch.arange(section)).float()[None].expand(2, -1)
        memory = state.memory()
        if memory is not None:
            memory.tokens = memory.tokens.expand(2, -1, -1)
        scheduler.set_timesteps(steps)
        for timestep in scheduler.timesteps:
            t = (timestep / 1000).float().expand(2, section)
            cond, uncond = model.dit(x.expand(2, -1, -1, -1, -1), frames, t, memory, text).chunk(2)
            x = scheduler.step(uncond + cfg * (cond - uncond), timestep, x).prev_sample
        pixels = codec.decode_after(x, state.decode_past).clamp(-1, 1)
        state.append(x, section_low_res(model, state, pixels, section), pixels)
        pieces.append(pixels)
    return torch.cat(pieces, dim=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/pipeline-overhead")
    args = parser.parse_args()
    pipe = FrameMemPipeline.from_pretrained("tiny-ar")
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.framemem_config.ar.cfg

    def through_pipeline():
        out = pipe(BOARD, seconds=args.sections, num_inference_steps=args.steps, guidance_scale=cfg,
                   generator=torch.Generator().manual_seed(0), output_type="pt")
        return out.frames[0].permute(1, 0, 2, 3)[None] * 2 - 1  # (1, 3, T, H, W) in [-1, 1]

    def by_hand():
        return direct(pipe, args.sections, args.steps, cfg, 0)

    times = {"pipeline": [], "direct": []}
    outputs = {}
    through_pipeline()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("pipeline", through_pipeline), ("direct", by_hand)):
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append((time.perf_counter() - start) / args.sections)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["pipeline"] / median["direct"]
    diff = float((outputs["pipeline"] - outputs["direct"]).abs().max())
    record = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
              "sections": args.sections, "steps": args.steps, "repeats": args.repeats,
              "seconds_per_section": times, "median_seconds_per_section": median,
              "overhead": ratio - 1, "max_abs_difference": diff}
    text = (f"# Pipeline overhead per generated section\n\n"
            f"`python benchmarks/pipeline_overhead.py --sections {args.sections} --steps {args.steps} "
            f"--repeats {args.repeats}` (shipped `tiny-ar`, {torch.get_num_threads()} threads, CPU).\n\n"
            f"| | median s / section | runs |\n|---|---|---|\n"
            f"| FrameMemPipeline | {median['pipeline']:.3f} | {', '.join(f'{t:.3f}' for t in times['pipeline'])} |\n"
            f"| direct model calls | {median['direct']:.3f} | {', '.join(f'{t:.3f}' for t in times['direct'])} |\n\n"
            f"Overhead: {100 * (ratio - 1):+.1f} % (target ≤ 5 %). Largest difference between the two "
            f"videos: {diff:.2e} (in [-1, 1]).\n")
    write_json(args.out + ".json", record)
    write_text(args.out + ".md", text)
    print(text)


if __name__ == "__main__":
    main()
