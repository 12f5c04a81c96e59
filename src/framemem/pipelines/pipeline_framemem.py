"""`FrameMemPipeline`: a long video from a storyboard, section by section, with a memory.

Each section (the preset's `section_seconds`, whole memory blocks) is denoised beside the
memory tokens of everything before it (clean, t = 0) and the prompt active at its middle,
with classifier-free guidance; then it is decoded and appended to the memory (only the new
frames are encoded), and blocks older than the preset's history window leave the memory.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..data.video import to_model
from ..errors import FrameMemError
from ..flow import make_scheduler, sample
from ..models.framemem import section_latent_frames, window_blocks
from ..models.memory_encoder import MemoryTokens, stand_in_memory
from .base import FrameMemPipelineBase
from .inputs import as_storyboard, image_frame, video_frames
from .memory_state import MemoryState, section_low_res


@dataclass
class FrameMemPipelineOutput(BaseOutput):
    """frames: the generated video (not the history it continues), as `output_type` gives
    it: "pil" [[PIL.Image, ...]], "np" (1, T, H, W, 3) and "pt" (1, T, 3, H, W) in [0, 1],
    "latent" (1, C, T', h, w). sections: per section its start (seconds, of the whole video),
    prompt and the memory tokens it saw. memory: the memory after the last section (pass it
    as `memory=` to continue)."""

    frames: object
    sections: list[dict]
    memory: MemoryState


class FrameMemPipeline(FrameMemPipelineBase):
    """Long-video generation with a stage-2 checkpoint (`framemem finetune`).

    >>> pipe = FrameMemPipeline.from_pretrained("tiny-ar")
    >>> out = pipe([(0, "a red square moves right"), (3, "a brick wall")], seconds=6,
    ...            generator=torch.Generator().manual_seed(0))
    >>> out.frames[0]  # list of PIL images
    """

    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    @classmethod
    def _check_stage(cls, config) -> None:
        if config.stage != 2:
            raise FrameMemError("a stage-1 checkpoint (retrieval only) cannot generate; fine-tune it with "
                                "`framemem finetune`, or use FrameMemRetrievalPipeline")

    @classmethod
    def _default_scheduler(cls, config):
        return make_scheduler("euler", config.ar.t_shift)

    # ---- memory --------------------------------------------------------------------------
    def new_memory(self) -> MemoryState:
        """An empty memory with this model's history window."""
        return MemoryState(self.model, window_blocks(self.model))

    @torch.no_grad()
    def encode_memory(self, video=None, image=None) -> MemoryState:
        """The memory of a history `video` (any accepted video input; its length is cut to
        whole memory blocks), or of a start `image` held still for one block.
        Returns a `MemoryState`: pass it as `memory=`, save it with `.save(path)`."""
        model, mc = self.model, self.framemem_config.model
        if (video is None) == (image is None):
            raise FrameMemError("encode_memory: give a video or an image")
        block = model.encoder.block_frames
        if image is not None:
            frames = image_frame(image, mc.height, mc.width).expand(model.codec.pixel_frames(block), -1, -1, -1)
        else:
            frames = video_frames(video, mc.height, mc.width, mc.fps, "video")
        whole = model.codec.latent_frames(len(frames)) // block * block
        if whole == 0:
            raise FrameMemError(f"video: too short ({len(frames)} frames at {mc.fps:g} fps); the memory needs at "
                                f"least {model.codec.pixel_frames(block)} frames (one memory block)")
        pixels = to_model(frames[: model.codec.pixel_frames(whole)]).to(self._execution_device)
        latents, low_res = model.history_latents(pixels)
        state = self.new_memory()
        state.append(latents, low_res, pixels)
        return state

    def load_memory(self, path) -> MemoryState:
        """A memory saved with `MemoryState.save`, checked against this model."""
        return MemoryState.load(path, self.model)

    def section_count(self, seconds: float, continuing: bool = False) -> int:
        """Sections `seconds` of new video take (after a history when `continuing`)."""
        codec, fps = self.codec, self.framemem_config.model.fps
        section = section_latent_frames(self.model)
        wanted = max(1, int(round(seconds * fps)))
        per_section = section * codec.temporal_factor  # a causal codec's first section has 1 + tf·(S−1)
        first = per_section if continuing else codec.pixel_frames(section)
        return 1 + max(0, -(-(wanted - first) // per_section))

    @torch.no_grad()
    def estimate_seconds(self, seconds: float, num_inference_steps: int, guidance_scale: float) -> float:
        """Wall time `seconds` of new video would take here, from one timed DiT evaluation
        with a full history window of memory tokens (denoising only, so a lower bound; with
        memory computed once per section, that pass is timed and added per section)."""
        model, mc = self.model, self.framemem_config.model
        device = self._execution_device
        branches = 1 if guidance_scale == 1 else 2
        section = section_latent_frames(model)
        shape = (branches, self.codec.channels, section, *self.codec.latent_shape(1, mc.height, mc.width)[1:])
        window = model.codec.pixel_frames(window_blocks(model) * model.encoder.block_frames)
        memory_tokens = model.token_counts(window, mc.height, mc.width)["memory"]
        window_tokens = math.prod(shape[3:]) // math.prod(model.dit.patch_size[1:])
        tokens = memory_tokens + self.framemem_config.ar.window_frames * window_tokens
        memory = stand_in_memory(model.encoder, branches, tokens, memory_tokens, device=device)  # the window has no features
        frames = torch.arange(section, device=device).float()[None].expand(branches, -1)
        text = self.encode_prompt(["", ""])[:branches]
        x, t = torch.zeros(shape, device=device), torch.full((branches, 1), 0.5, device=device)
        once = model.dit.memory_attention == "memory_only"  # keys and values once per section, then the section alone
        timings, once_timings, cache = [], [0.0], None
        for _ in range(2):  # the first call pays one-off costs
            start = time.perf_counter()
            if once:
                cache = model.dit.memory_keys_values(dataclasses.replace(memory, tokens=memory.tokens[:1]))
                once_timings.append(time.perf_counter() - start)
                start = time.perf_counter()
            model.dit(x, frames, t.expand(branches, section), memory, text, memory_cache=cache)
            timings.append(time.perf_counter() - start)
        return (once_timings[-1] + timings[-1] * num_inference_steps) * self.section_count(seconds)

    # ---- one section ---------------------------------------------------------------------
    def denoise_section(self, memory: MemoryTokens | None, offset: int, prompt_embeds: torch.Tensor,
                        latents: torch.Tensor, num_inference_steps: int, guidance_scale: float,
                        on_step: Callable | None = None, reuse_memory: bool = True) -> torch.Tensor:
        """Sample one section (1, C, S, h, w) at latent frames offset…offset+S−1 from noise
        `latents`, given the memory and `prompt_embeds` (2, L, D): the prompt's and the empty
        one's. guidance_scale 1 runs the conditional branch alone. A memory that reads only
        memory (`model.memory_attention` "memory_only") offers the same keys and values to
        every step and branch: they are computed once here (`reuse_memory=False` recomputes
        them at every evaluation, the same numbers, for timing)."""
        model = self.model
        branches = 1 if guidance_scale == 1 else 2
        section = latents.shape[2]
        frames = (offset + torch.arange(section, device=latents.device)).float()[None].expand(branches, -1)
        text = prompt_embeds[:branches]
        cache = None
        if model.dit.memory_attention == "memory_only" and reuse_memory:
            cache = model.dit.memory_keys_values(memory)  # batch 1: both branches read it
        elif memory is not None:
            memory = dataclasses.replace(memory, tokens=memory.tokens.expand(branches, -1, -1))

        def velocity(x, t):
            v = model.dit(x.expand(branches, -1, -1, -1, -1), frames, t.expand(branches, -1), memory, text,
                          memory_cache=cache)
            if branches == 1:
                return v
            cond, uncond = v.chunk(2)
            return uncond + guidance_scale * (cond - uncond)

        return sample(velocity, latents, self.scheduler, num_inference_steps, on_step)

    # ---- the call ------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        storyboard=None,
        prompt: str | None = None,
        seconds: float | None = None,
        video=None,
        image=None,
        memory: MemoryState | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        callback_on_section_end: Callable | None = None,
    ):
        """Generate `seconds` of new video.

        Args:
            storyboard: timestamped prompts: a YAML/JSON path, a dict {"prompts": [{"at",
                "prompt"}]}, or a list of (seconds, prompt); times are of the whole video,
                the history included. Or `prompt`: one prompt for all of it.
            video / image / memory: what to continue (at most one): a history video, a start
                image (held still for one memory block), or a `MemoryState` (not modified).
            num_inference_steps, guidance_scale: per section (defaults: the checkpoint's).
            generator: a torch.Generator for the noise of every section.
            output_type: "pil", "np", "pt" or "latent"; None keeps no frames (RAM stays bounded by
                the history window: take each section from `callback_on_section_end`).
            callback_on_step_end: `fn(pipe, step, timestep, kwargs) -> kwargs` after every
                denoising step of every section (`pipe.section_index` tells which);
                kwargs holds `callback_on_step_end_tensor_inputs` ("latents", "prompt_embeds");
                a returned "latents" replaces them.
            callback_on_section_end: `fn(pipe, index, frames, record)` after each section,
                with its decoded frames (1, 3, T, H, W) in [-1, 1] (e.g. to write as you go).
        Returns:
            FrameMemPipelineOutput, or the tuple (frames, sections, memory) without return_dict.
        """
        config = self.framemem_config
        mc, ar = config.model, config.ar
        board = as_storyboard(storyboard, prompt)
        if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or seconds <= 0:
            raise FrameMemError(f"seconds must be a positive number (got {seconds!r})")
        guidance_scale = ar.cfg if guidance_scale is None else float(guidance_scale)
        if not math.isfinite(guidance_scale):
            raise FrameMemError(f"guidance_scale must be a finite number (got {guidance_scale:g})")
        steps = ar.sample_steps if num_inference_steps is None else num_inference_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise FrameMemError(f"num_inference_steps must be a positive integer (got {steps!r})")
        if output_type is not None:  # None: nothing kept (stream the sections with callback_on_section_end)
            self._check_output_type(output_type)
        self._check_callback_inputs(callback_on_step_end_tensor_inputs)
        if sum(x is not None for x in (video, image, memory)) > 1:
            raise FrameMemError("give at most one of video, image and memory to continue")

        model, codec = self.model, self.codec
        device = self._execution_device
        if memory is not None:
            if not isinstance(memory, MemoryState):
                raise FrameMemError(f"memory: expected a MemoryState, not {type(memory).__name__}")
            state = memory.copy()
        elif video is not None or image is not None:
            state = self.encode_memory(video=video, image=image)
        else:
            state = self.new_memory()

        section = section_latent_frames(model)
        h, w = codec.latent_shape(1, mc.height, mc.width)[1:]
        wanted = max(1, int(round(seconds * mc.fps)))  # new pixel frames
        count = self.section_count(seconds, continuing=state.decode_past is not None)
        self._interrupt = False
        pieces, latents_out, records = [], [], []
        for index in self.progress_bar(range(count)):
            self.section_index = index
            start = state.latent_frames * codec.temporal_factor / mc.fps
            text = board.prompt_at(start + ar.section_seconds / 2)
            prompt_embeds = self.encode_prompt([text, ""])
            tokens = state.memory()
            latents = randn_tensor((1, codec.channels, section, h, w), generator=generator, device=device,
                                   dtype=torch.float32)
            on_step = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs,
                                          {"prompt_embeds": prompt_embeds})
            x0 = self.denoise_section(tokens, state.latent_frames, prompt_embeds, latents, steps, guidance_scale,
                                      on_step)
            pixels = codec.decode_after(x0, state.decode_past).clamp(-1, 1)
            state.append(x0, section_low_res(model, state, pixels, section), pixels)
            if output_type == "latent":
                latents_out.append(x0.cpu())
            elif output_type is not None:
                pieces.append(pixels.cpu())
            records.append({"start_seconds": round(start, 3), "prompt": text,
                            "memory_tokens": 0 if tokens is None else tokens.tokens.shape[1]})
            if callback_on_section_end is not None:
                callback_on_section_end(self, index, pixels, records[-1])
            if self.interrupt:
                break
        self.maybe_free_model_hooks()

        if output_type is None:
            frames = None
        elif output_type == "latent":
            frames = torch.cat(latents_out, dim=2)
        else:
            frames = self._postprocess(torch.cat(pieces, dim=2)[:, :, :wanted], output_type)
        if not return_dict:
            return frames, records, state
        return FrameMemPipelineOutput(frames=frames, sections=records, memory=state)
