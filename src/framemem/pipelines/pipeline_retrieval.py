"""`FrameMemRetrievalPipeline`: frames of a video back from its memory alone.

The history is compressed by φ; the DiT then denoises the latent frames at the asked times
with nothing but the memory as context (the stage-1 task), and each is decoded from itself
alone. Metrics compare every retrieved frame with the frame it stands for and with the
bicubic reference (the frame down by the spatial rate and back up: what a low-resolution
copy holds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..data.video import to_model
from ..errors import FrameMemError
from ..flow import estimate_x0, sample
from ..metrics import bicubic_reference, psnr, ssim
from .base import FrameMemPipelineBase
from .inputs import check_times, video_frames


@dataclass
class FrameMemRetrievalPipelineOutput(BaseOutput):
    """frames: the retrieved frames, one per time ("pil" a list of images, "np" (K, H, W, 3)
    and "pt" (K, 3, H, W) in [0, 1], "latent" (1, C, K, h, w)); one_step: the one-step
    estimates from the same noise (what the memory holds: the conditional mean, no sampler);
    ground_truth and bicubic: the frames they stand for and the bicubic reference; all in
    the same type ("latent": "pt" for all but frames).
    times (seconds) and frame_indices (of the decoded video); memory_tokens vs
    full_context_tokens; metrics: per frame and mean PSNR/SSIM of the sampled and one-step
    retrieval and of the references (None with `compute_metrics=False`)."""

    frames: object
    one_step: object
    ground_truth: object
    bicubic: object
    times: list[float]
    frame_indices: list[int]
    memory_tokens: int
    full_context_tokens: int
    metrics: dict | None


@dataclass
class EncodedHistory:
    """A history compressed once (`FrameMemRetrievalPipeline.encode`), to retrieve from many
    times without encoding it again: pixels (1, 3, T, H, W) in [-1, 1] on the model's device,
    its memory tokens, and the latent frame shape (C, h, w) the DiT denoises."""

    pixels: torch.Tensor
    memory: object
    latent_shape: tuple[int, int, int]

    @property
    def frames(self) -> int:
        return self.pixels.shape[2]


class FrameMemRetrievalPipeline(FrameMemPipelineBase):
    """Frame retrieval with any trained checkpoint (stage 1 or 2).

    >>> pipe = FrameMemRetrievalPipeline.from_pretrained("tiny")
    >>> out = pipe("clip.mp4", times=[1.5, 7.0])
    >>> out.frames[0], out.metrics["mean"]["psnr"]
    """

    @classmethod
    def _check_stage(cls, config) -> None:
        if config.stage == 0:
            raise FrameMemError("a base DiT (framemem base) has no trained memory; start stage 1 from it with "
                                "framemem pretrain --model-path")

    def check_history(self, frames: torch.Tensor, what: str = "video") -> None:
        """A history (T, H, W, 3) must fit the codec × patch grid and hold one temporal stride of φ."""
        model = self.model
        t, h, w, _ = frames.shape
        model.check_frame_size(h, w)
        stride = model.encoder.block_frames
        if model.codec.latent_frames(t) < stride:
            fps = self.framemem_config.model.fps
            raise FrameMemError(f"{what}: too short ({t} frames at {fps:g} fps); the memory needs at least "
                                f"{model.codec.pixel_frames(stride)} frames (one temporal stride)")

    @torch.no_grad()
    def encode(self, video, what: str = "video") -> EncodedHistory:
        """Compress a history (any accepted video input) once; pass the result as `video` to
        retrieve from it again without re-encoding (the app's slider does). `what` names it
        in errors."""
        mc = self.framemem_config.model
        frames = video_frames(video, mc.height, mc.width, mc.fps, what)
        self.check_history(frames, what)
        pixels = to_model(frames).to(self._execution_device)
        latents, memory = self.model.encode_history(pixels)
        c, _, h, w = latents.shape[1:]
        return EncodedHistory(pixels, memory, (c, h, w))

    @torch.no_grad()
    def __call__(
        self,
        video,
        times,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        compute_metrics: bool = True,
        lpips=None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ):
        """Retrieve the frames of `video` at `times` (seconds) from its memory.

        Args:
            video: a path, uint8 (T, H, W, 3), float (3, T, H, W) in [-1, 1], PIL images, or
                an `EncodedHistory` from `encode` (not encoded again).
            times: seconds inside the video (a number or a list).
            num_inference_steps: sampling steps (default: the checkpoint's `sample_steps`).
            generator: for the starting noise (one-step estimates use the same noise).
            compute_metrics: PSNR/SSIM vs ground truth, bicubic and mean-frame references;
                `lpips` (a `framemem.metrics.LPIPS`) adds LPIPS.
        Returns:
            FrameMemRetrievalPipelineOutput, or the tuple of its fields without return_dict.
        """
        mc = self.framemem_config.model
        self._check_output_type(output_type)
        self._check_callback_inputs(callback_on_step_end_tensor_inputs)
        steps = self.framemem_config.train.sample_steps if num_inference_steps is None else num_inference_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise FrameMemError(f"num_inference_steps must be a positive integer (got {steps!r})")
        history = video if isinstance(video, EncodedHistory) else self.encode(video)
        pixels, memory, (c, h, w) = history.pixels, history.memory, history.latent_shape
        times = check_times(times, history.frames, mc.fps)
        indices = [min(int(round(t * mc.fps)), history.frames - 1) for t in times]

        model, device = self.model, self._execution_device
        omega = torch.tensor([model.codec.latent_index(p) for p in indices], dtype=torch.float32, device=device)[None]
        noise = randn_tensor((1, c, len(indices), h, w), generator=generator, device=device, dtype=torch.float32)

        def velocity(x_t, t):
            return model.dit(x_t, omega, t, memory)

        on_step = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, {})
        x0 = sample(velocity, noise, self.scheduler, steps, on_step, self.progress_bar)
        self.maybe_free_model_hooks()
        retrieved = model.codec.decode_frames(x0, indices).clamp(-1, 1)[0].transpose(0, 1).cpu()  # (K, 3, H, W)
        truth = pixels[0, :, indices].transpose(0, 1).cpu()
        rh, rw = mc.spatial_rate
        bicubic = bicubic_reference(truth, rh, rw)

        ones = torch.ones(omega.shape, device=device)
        one_step = model.codec.decode_frames(estimate_x0(noise, velocity(noise, ones), ones), indices)
        one_step = one_step.clamp(-1, 1)[0].transpose(0, 1).cpu()
        metrics = None
        if compute_metrics:
            mean_frame = pixels[0].mean(dim=1).cpu()  # (3, H, W): what a model that ignores its memory can reach
            nearby = [nearby_frames(pixels[0], i, mc.fps).cpu() for i in indices]
            metrics = frame_metrics(times, indices, retrieved, one_step, truth, bicubic, mean_frame, lpips, nearby)
        counts = model.token_counts(history.frames, mc.height, mc.width)
        if output_type == "latent":
            shown, first, gt, bic = x0.cpu(), *((x + 1) / 2 for x in (one_step, truth, bicubic))
        else:
            shown, first, gt, bic = (self._postprocess(x.transpose(0, 1)[None], output_type)[0]
                                     for x in (retrieved, one_step, truth, bicubic))
        fields = (shown, first, gt, bic, times, indices, int(memory.tokens.shape[1]), counts["full_context"], metrics)
        if not return_dict:
            return fields
        return FrameMemRetrievalPipelineOutput(*fields)


NEARBY_SECONDS = (1.0, 3.0)  # temporal specificity: how the retrieval scores against the frames this far away
NEARBY_FRAMES = 8  # at most this many of them, evenly spread (a 24 fps video has ~100)


def nearby_frames(video: torch.Tensor, index: int, fps: float) -> torch.Tensor:
    """Up to NEARBY_FRAMES frames (N, 3, H, W) of `video` (3, T, H, W) 1-3 s before or
    after frame `index`, evenly spread over them."""
    low, high = NEARBY_SECONDS
    picked = [i for i in range(video.shape[1]) if low <= abs(i - index) / fps <= high]
    if len(picked) > NEARBY_FRAMES:
        picked = [picked[int(k)] for k in np.linspace(0, len(picked) - 1, NEARBY_FRAMES).round()]
    return video[:, picked].transpose(0, 1)


def frame_metrics(times, indices, retrieved, one_step, truth, bicubic, mean_frame, lpips=None, nearby=None) -> dict:
    """Per-frame and mean PSNR/SSIM of frames (K, 3, H, W) in [-1, 1] against `truth`.
    `nearby` (per frame, the frames 1-3 s away) adds `nearby_psnr`: the retrieval's mean PSNR
    against them (None when the video has none). A retrieval that holds its own moment
    scores higher against it than against its neighbours."""
    records = []
    for k, t in enumerate(times):
        record = {"time": t, "frame_index": indices[k],
                  "psnr": psnr(retrieved[k], truth[k]), "ssim": ssim(retrieved[k], truth[k]),
                  "one_step_psnr": psnr(one_step[k], truth[k]), "one_step_ssim": ssim(one_step[k], truth[k]),
                  "bicubic_psnr": psnr(bicubic[k], truth[k]), "bicubic_ssim": ssim(bicubic[k], truth[k]),
                  "mean_frame_psnr": psnr(mean_frame, truth[k]), "mean_frame_ssim": ssim(mean_frame, truth[k])}
        if nearby is not None:
            scores = [psnr(retrieved[k], frame) for frame in nearby[k]]
            record["nearby_psnr"] = float(np.mean(scores)) if scores else None
        if lpips is not None:
            record["lpips"] = float(lpips(retrieved[k : k + 1], truth[k : k + 1]))
            record["bicubic_lpips"] = float(lpips(bicubic[k : k + 1], truth[k : k + 1]))
        records.append(record)
    keys = [k for k in records[0] if k not in ("time", "frame_index")]
    means = {}
    for key in keys:
        values = [r[key] for r in records if r[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return {"per_frame": records, "mean": means}
