"""What both framemem pipelines share: their components, loading and saving.

A framemem checkpoint folder is also the pipeline's folder: `save_pretrained` writes the
checkpoint (framemem.json, memory_encoder/, transformer/ or transformer_lora/,
text_encoder/) plus diffusers' `model_index.json` and `scheduler/`. `from_pretrained` reads
such a folder, a folder written by `framemem pretrain`/`finetune` (no model_index.json:
the default scheduler is used), a hub repo id, or the name of a shipped model ("tiny",
"tiny-ar").
"""
from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.video_processor import VideoProcessor

from ..config import FrameMemConfig
from ..errors import FrameMemError
from ..files import write_json
from ..flow import make_scheduler
from ..hub import SHIPPED_MODELS, checkpoint_folder, pretrained
from ..models.framemem import FrameMem
from ..models.memory_dit import MemoryDiT

COMPONENTS = ("transformer", "memory_encoder", "codec", "scheduler", "text_encoder", "tokenizer")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class FrameMemPipelineBase(DiffusionPipeline):
    """Components: `transformer` (diffusers `WanTransformer3DModel`), `memory_encoder` (φ),
    `codec` (the latent codec: pixel space for tiny, Wan's `AutoencoderKLWan` for the Wan
    presets), `scheduler` (a diffusers flow-matching scheduler, swappable), `text_encoder`
    and `tokenizer` (stage 2), and `framemem_config` (the preset numbers, framemem.json)."""

    model_cpu_offload_seq = "text_encoder->memory_encoder->transformer->codec"
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, transformer, memory_encoder, codec, scheduler, framemem_config, text_encoder=None,
                 tokenizer=None):
        super().__init__()
        if isinstance(framemem_config, dict):
            framemem_config = FrameMemConfig.from_dict(framemem_config)
        self._check_stage(framemem_config)
        self.register_modules(transformer=transformer, memory_encoder=memory_encoder, codec=codec, scheduler=scheduler,
                              text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(framemem_config=framemem_config.to_dict())
        self.framemem_config = framemem_config
        self.video_processor = VideoProcessor(do_resize=False)
        self._interrupt = False

    @classmethod
    def _check_stage(cls, config: FrameMemConfig) -> None:
        """Raise FrameMemError when a checkpoint of this stage cannot run this pipeline."""

    @classmethod
    def _default_scheduler(cls, config: FrameMemConfig):
        """Euler without shift (retrieval's); generation uses its checkpoint's shift."""
        return make_scheduler("euler", 1.0)

    # ---- the model the library's functions take -----------------------------------------
    @property
    def model(self) -> FrameMem:
        """The components as one `FrameMem` (the same modules, not copies)."""
        parts = (self.transformer, self.memory_encoder, self.codec, self.text_encoder, self.framemem_config)
        if getattr(self, "_model_parts", None) is None or any(a is not b for a, b in zip(self._model_parts, parts)):
            model = FrameMem(self.framemem_config, self.codec, MemoryDiT.for_preset(self.transformer, self.framemem_config.model), self.memory_encoder,
                             self.text_encoder)
            object.__setattr__(self, "_model_parts", parts)
            object.__setattr__(self, "_model", model)
        return self._model

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` (e.g. from a callback) to stop generation after the current section."""
        return self._interrupt

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> text embeddings (B, L, text_dim); "" is the unconditional prompt."""
        if self.text_encoder is None:
            raise FrameMemError("this checkpoint has no text encoder (a stage-1 model retrieves; it does not generate)")
        return self.text_encoder(prompts).to(self._execution_device)

    def _postprocess(self, video: torch.Tensor, output_type: str):
        """(B, 3, T, H, W) in [-1, 1] -> diffusers' video outputs: "pil" a list (per video) of
        lists of PIL images, "np" (B, T, H, W, 3) in [0, 1], "pt" (B, T, 3, H, W) in [0, 1]."""
        return self.video_processor.postprocess_video(video.float().cpu(), output_type=output_type)

    @staticmethod
    def _check_output_type(output_type: str) -> None:
        if output_type not in OUTPUT_TYPES:
            raise FrameMemError(f"output_type '{output_type}': use one of {', '.join(OUTPUT_TYPES)}")

    def _check_callback_inputs(self, names) -> None:
        unknown = [n for n in names or () if n not in self._callback_tensor_inputs]
        if unknown:
            raise FrameMemError(f"callback_on_step_end_tensor_inputs: {', '.join(unknown)} not available "
                                f"(available: {', '.join(self._callback_tensor_inputs)})")

    def _step_callback(self, callback, tensor_inputs, extra: dict):
        """A `sample` on_step that runs diffusers' `callback_on_step_end(pipe, i, t, kwargs)`:
        the callback sees the tensors it asked for and may replace `latents`."""
        if callback is None:
            return None

        def on_step(i, timestep, latents):
            values = {"latents": latents, **extra}
            out = callback(self, i, timestep, {name: values[name] for name in tensor_inputs}) or {}
            return out.get("latents", latents)
        return on_step

    # ---- persistence ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, scheduler=None, torch_dtype: torch.dtype | None = None,
                        **kwargs):
        """A pipeline from a checkpoint folder, a hub repo id or a shipped model name
        ("tiny", "tiny-ar"). `scheduler` replaces the saved one; `torch_dtype` casts the
        weights (e.g. torch.bfloat16 on a GPU). Raises FrameMemError with one line."""
        if kwargs:
            raise FrameMemError(f"from_pretrained: unsupported option(s) {', '.join(sorted(kwargs))}")
        name = str(pretrained_model_name_or_path)
        path = Path(pretrained(name)) if name in SHIPPED_MODELS and not Path(name).exists() else checkpoint_folder(name)
        if not path.exists():
            raise FrameMemError(f"checkpoint {path}: no such folder (shipped models: {', '.join(SHIPPED_MODELS)})")
        model = FrameMem.from_pretrained(path)
        try:
            cls._check_stage(model.config)
        except FrameMemError as err:
            raise FrameMemError(f"{path}: {err}") from None
        if model.config.stage == 2 and model.text_encoder is None:  # Wan's umT5 lives in the Wan folder
            from ..models.text_encoders import build_text_encoder

            model.text_encoder = build_text_encoder(model.config.ar, model.dit.text_dim,
                                                    model.config.model.transformer_path)
        if scheduler is None:
            scheduler = _saved_scheduler(path) or cls._default_scheduler(model.config)
        tokenizer = getattr(model.text_encoder, "tokenizer", None)
        pipe = cls(model.dit.transformer, model.encoder, model.codec, scheduler, model.config, model.text_encoder,
                   tokenizer)
        pipe.register_to_config(_name_or_path=str(path))
        if torch_dtype is not None:
            pipe.to(torch_dtype)
        return pipe

    def save_pretrained(self, save_directory, safe_serialization: bool = True, torch_dtype: torch.dtype | None = None,
                        **kwargs) -> None:
        """Write the folder atomically: the framemem checkpoint, `scheduler/` and
        `model_index.json`; `from_pretrained` reads it back."""
        if not safe_serialization:
            raise FrameMemError("framemem writes safetensors only")
        if kwargs:
            raise FrameMemError(f"save_pretrained: unsupported option(s) {', '.join(sorted(kwargs))}")

        def extra(folder: Path) -> None:
            self.scheduler.save_pretrained(folder / "scheduler")
            index = {"_class_name": type(self).__name__, "_diffusers_version": diffusers.__version__}
            index.update({name: list(self.config[name]) for name in COMPONENTS})
            write_json(folder / "model_index.json", index)
        self.model.save_pretrained(save_directory, dtype=torch_dtype, extra=extra)


def _saved_scheduler(path: Path):
    """The scheduler a pipeline folder saved (a diffusers scheduler class, by name), or None."""
    config_file = path / "scheduler" / "scheduler_config.json"
    if not config_file.is_file():
        return None
    try:
        name = json.loads(config_file.read_text())["_class_name"]
    except (ValueError, KeyError, TypeError):
        raise FrameMemError(f"{config_file}: not a scheduler config (no '_class_name')") from None
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise FrameMemError(f"{config_file}: '{name}' is not a diffusers scheduler")
    return cls.from_pretrained(path, subfolder="scheduler")
