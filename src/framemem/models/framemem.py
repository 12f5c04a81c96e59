"""`FrameMem`: codec + DiT with memory + memory encoder φ, saved and loaded as one folder.

Checkpoint folder layout (diffusers conventions inside):

    framemem.json            FrameMemConfig (preset numbers, variant)
    memory_encoder/          MemoryEncoder.save_pretrained (safetensors)
    transformer/             full DiT (when trained fully, e.g. the tiny preset)
    transformer_lora/        peft LoRA of the DiT (when `lora_rank` is set); the base
                             DiT is `model.transformer_path`
    text_encoder/            stage 2 with the embedded text encoder (`HashedTextEncoder`);
                             Wan's umT5 is loaded from its own folder instead

A fully trained DiT fine-tuned with a stage-2 LoRA is saved with the LoRA fused in.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open

from .memory_dit import MemoryDiT, build_transformer, grid_positions
from .codecs import LatentCodec, build_codec, check_divisible
from ..config import FrameMemConfig
from ..rates import format_rate
from ..errors import FrameMemError
from ..files import default_permissions, remove_stale_temporaries, temporary_name
from .framepack import FramePackEncoder
from .memory_encoder import VARIANTS as ENCODER_VARIANTS
from .memory_encoder import MemoryEncoder, MemoryTokens
from .multi_encoder import MultiMemoryEncoder
from .text_encoders import HashedTextEncoder

VARIANTS = ENCODER_VARIANTS + ("framepack",)


class FrameMem(nn.Module):
    def __init__(self, config: FrameMemConfig, codec: LatentCodec, dit: MemoryDiT, encoder: MemoryEncoder,
                 text_encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.codec = codec
        self.dit = dit
        self.encoder = encoder
        self.text_encoder = text_encoder  # stage 2 only
        self.check_window()

    def check_window(self) -> None:
        """The sliding window (`ar.window_frames`) must fit in the history window."""
        window = self.config.ar.window_frames
        if window == 0:
            return
        history = window_blocks(self) * self.encoder.block_frames
        if window > history:
            raise FrameMemError(f"ar.window_frames = {window}: longer than the history window "
                                f"({history} latent frames)")

    def window_tokens(self, latents: torch.Tensor, first: int) -> MemoryTokens:
        """Sliding-window context: clean latents (B, C, W, h, w) that start at latent frame
        `first`, patch-embedded by the DiT at full resolution -> tokens (B, W·h'·w', D) and
        positions (W·h'·w', 3) at their true frames."""
        tokens = self.dit.patch_embedding(latents).flatten(2).transpose(1, 2)
        _, ph, pw = self.dit.patch_size
        frames = (first + torch.arange(latents.shape[2], device=latents.device)).float()[None]
        positions = grid_positions(frames, latents.shape[3] // ph, latents.shape[4] // pw)[0]
        return MemoryTokens(tokens, positions, None)

    def context(self, memory: MemoryTokens | None, latents: torch.Tensor, end: int) -> MemoryTokens | None:
        """`memory` with the sliding window of latents (B, C, ·, h, w) that end at latent
        frame `end` (exclusive) beside it: what the DiT reads before a section."""
        width = min(self.config.ar.window_frames, end, latents.shape[2])
        if width == 0:
            return memory
        window = self.window_tokens(latents[:, :, -width:], end - width)
        if memory is None:
            return window
        positions = memory.positions if memory.positions.ndim == 2 else memory.positions[0]
        return MemoryTokens(torch.cat([memory.tokens, window.tokens.to(memory.tokens)], dim=1),
                            torch.cat([positions, window.positions.to(positions)]), None,
                            memory.features, memory.feature_attention)  # the window adds no features

    @classmethod
    def build(cls, config: FrameMemConfig, variant: str = "proposed") -> "FrameMem":
        """A fresh model: random DiT (or real weights + LoRA) and a fresh φ."""
        config.model.validate()
        codec = build_codec(config.model)
        dit = MemoryDiT.for_preset(build_transformer(config.model), config.model)
        if config.model.lora_rank:
            dit.add_lora(config.model.lora_rank)
        encoder = build_memory_encoder(
            config.model, codec.channels, dit.inner_dim, dit.patch_size, variant, dit.patch_embedding,
            dit_layers=len(dit.transformer.blocks),
        )
        check_divisible(config.model.height, config.model.width, codec, dit.patch_size)
        return cls(config, codec, dit, encoder)

    def forward(self, objective, *args):
        """Run a training objective `objective(self, *args)` inside forward, so a
        DDP-wrapped model synchronises its gradients."""
        return objective(self, *args)

    # ---- geometry ---------------------------------------------------------------------
    def check_frame_size(self, height: int, width: int) -> None:
        check_divisible(height, width, self.codec, self.dit.patch_size)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return self.codec.latent_shape(frames, height, width)

    def token_counts(self, frames: int, height: int, width: int) -> dict:
        """Full-context tokens (every latent patch) vs memory tokens (padded and ideal)."""
        latent = self.latent_shape(frames, height, width)
        grid = self.encoder.token_grid(latent)
        full = grid[0] * grid[1] * grid[2]
        return {"full_context": full, "memory": self.encoder.token_count(latent),
                "memory_ideal": self.encoder.ideal_token_count(latent)}

    # ---- memory -----------------------------------------------------------------------
    def history_latents(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """video (B, 3, T, H, W) in [-1, 1] -> latents (B, C, T', H', W') and the input of
        φ's LR branch (`MemoryEncoder.low_res_latents`; None without one): what a cache stores."""
        latents = self.codec.encode(video)
        return latents, self.encoder.low_res_latents(video, self.codec, tuple(latents.shape[2:]))

    def encode_history(self, history) -> tuple[torch.Tensor, MemoryTokens]:
        """history: pixels (B, 3, T, H, W) in [-1, 1], or (latents, low_res) read from a
        cache -> latents (B, C, T', H', W') and memory tokens, encoded in chunks of
        `model.encoder_chunk_blocks` memory frames when set."""
        latents, low_res = self.history_latents(history) if torch.is_tensor(history) else history
        memory = self.encoder.encode_latents(latents, low_res, self.dit.patch_embedding,
                                             self.config.model.encoder_chunk_blocks)
        return latents, memory

    # ---- persistence ------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None, extra=None) -> None:
        """Write the checkpoint folder atomically (a temporary sibling, then rename);
        `extra(folder)` writes more files into it before the rename (a pipeline's own)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)  # what killed saves left
        tmp = path.parent / temporary_name(path.name)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        try:
            self.config.save(tmp / "framemem.json")
            _save_module(self.encoder, tmp / "memory_encoder", dtype)
            transformer = self.dit.transformer
            if self.config.model.lora_rank:
                transformer.save_lora_adapter(str(tmp / "transformer_lora"))
            elif getattr(transformer, "peft_config", None):  # a stage-2 LoRA on a full DiT
                fused = copy.deepcopy(transformer)
                fused.fuse_lora()
                fused.unload_lora()
                _save_module(fused, tmp / "transformer", dtype)
            else:
                _save_module(transformer, tmp / "transformer", dtype)
            if isinstance(self.text_encoder, HashedTextEncoder):
                _save_module(self.text_encoder, tmp / "text_encoder", dtype)
            if extra is not None:
                extra(tmp)
            default_permissions(tmp)
            old = _previous(path)
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                os.replace(path, old)  # from here until the next rename `from_pretrained` reads `old`
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "FrameMem":
        """Load a checkpoint folder or hub repo id; a missing or mismatched one raises FrameMemError."""
        from diffusers import WanTransformer3DModel

        from ..hub import checkpoint_folder

        if not Path(path).exists() and (_previous(Path(path)) / "framemem.json").is_file():
            path = _previous(Path(path))  # a save was killed between its two renames
        path = checkpoint_folder(path)
        if not (path / "framemem.json").is_file():
            raise FrameMemError(f"{path}: not a framemem checkpoint (no framemem.json)")
        config = FrameMemConfig.load(path / "framemem.json")
        codec = build_codec(config.model)
        problem = config_disagreement(path, config, codec.channels)
        if problem:
            raise FrameMemError(f"{path}: {problem}; a checkpoint's configs and weights must agree")
        try:
            if (path / "transformer").is_dir():
                transformer = WanTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=torch.float32)
            else:
                transformer = build_transformer(config.model)
            dit = MemoryDiT.for_preset(transformer, config.model)
            if (path / "transformer_lora").is_dir():
                transformer.load_lora_adapter(
                    str(path / "transformer_lora"), prefix=None, weight_name="pytorch_lora_weights.safetensors"
                )
            encoder = load_memory_encoder(path / "memory_encoder")
            text_encoder = None
            if (path / "text_encoder").is_dir():
                text_encoder = HashedTextEncoder.from_pretrained(path / "text_encoder", torch_dtype=torch.float32)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            first = first.split(". If you want")[0].replace("Cannot load  because ", "")  # diffusers' size mismatch
            raise FrameMemError(f"{path}: checkpoint is incomplete or does not match its config ({first})") from None
        if encoder.config.dit_width != dit.inner_dim or encoder.config.latent_channels != codec.channels:
            raise FrameMemError(f"{path}: memory encoder and DiT/codec widths do not match")
        problem = weights_disagreement(path, {"transformer": transformer, "memory_encoder": encoder,
                                              "text_encoder": text_encoder})
        if problem:
            raise FrameMemError(f"{path}: {problem}; a checkpoint's configs and weights must agree")
        check_divisible(config.model.height, config.model.width, codec, dit.patch_size)
        return cls(config, codec, dit, encoder, text_encoder).eval()


def config_disagreement(path: Path, config: FrameMemConfig, codec_channels: int) -> str | None:
    """The first way a checkpoint's configs disagree, read before any weights (a rate edited
    in one config but not the other would load silently): framemem.json against each part's
    config, and the codec's channels against the DiT's."""
    mc = config.model

    def same(a, b) -> bool:
        plain = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
        return json.dumps(plain(a)) == json.dumps(plain(b))

    if (path / "transformer" / "config.json").is_file():
        dit = _read_json(path / "transformer" / "config.json")
        for name, value in mc.transformer.items():
            if name in dit and not same(dit[name], value):
                return f"transformer/config.json has {name} {dit[name]}, framemem.json {value}"
        for name in ("in_channels", "out_channels"):
            if name in dit and dit[name] != codec_channels:
                return f"the DiT's {name} is {dit[name]}, the {mc.codec} codec gives {codec_channels} channels"
    if (path / "memory_encoder" / "config.json").is_file():
        enc = _read_json(path / "memory_encoder" / "config.json")
        if "rate" in enc:
            for name, ours, key in (("rate", mc.rate, "rate"), ("encoder_widths", mc.encoder_widths, "widths"),
                                    ("encoder_attention_heads", mc.encoder_attention_heads, "attention_heads")):
                if key in enc and not same(ours, enc[key]):
                    return f"framemem.json has {name} {ours}, memory_encoder/config.json {enc[key]}"
            layers = enc.get("cross_attention_layers", 0)
            if bool(layers) != bool(mc.cross_attention):
                return (f"framemem.json asks for cross_attention {str(mc.cross_attention).lower()}, "
                        f"memory_encoder/config.json has {layers} cross-attention layers")
            depth = mc.transformer.get("num_layers")
            if layers and depth and layers != depth:
                return f"memory_encoder/config.json has {layers} cross-attention layers, the DiT {depth} blocks"
    return None


def weights_disagreement(path: Path, parts: dict) -> str | None:
    """The first weights file that does not fit the module built from its config (diffusers
    only warns about weights missing from a file)."""
    for folder, module in parts.items():
        lora_on_top = folder == "transformer" and (path / "transformer_lora").is_dir()
        if module is not None and (path / folder).is_dir() and not lora_on_top:
            problem = _weights_disagree(path / folder, module)
            if problem:
                return f"{folder}: {problem}"
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FrameMemError(f"{path}: not readable JSON ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise FrameMemError(f"{path}: not a config (a JSON object)")
    return data


def _weights_disagree(folder: Path, module: nn.Module) -> str | None:
    """Names and shapes in the folder's safetensors files against the module's state dict."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None  # a module without weights (e.g. only_lr's φ)
    stored = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            stored.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if "blocks.0.attn1.to_q.weight" in expected:  # name the DiT's depth rather than a key
        depth = lambda keys: len({k.split(".")[1] for k in keys if k.startswith("blocks.")})  # noqa: E731
        if depth(stored) != depth(expected):
            return f"config.json says num_layers {depth(expected)}, the weights hold {depth(stored)} blocks"
    missing, extra = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
    if missing or extra:
        first = missing[0] if missing else extra[0]
        return f"{len(missing)} weights missing from the files, {len(extra)} not in config.json (e.g. {first})"
    wrong = [k for k in expected if stored[k] != expected[k]]
    if wrong:
        return f"{wrong[0]} is {list(stored[wrong[0]])} in the files, {list(expected[wrong[0]])} by config.json"
    return None


def section_latent_frames(model: FrameMem) -> int:
    """Latent frames one generated section holds: the preset's section length, in whole memory blocks."""
    mc, ar = model.config.model, model.config.ar
    latent = round(ar.section_seconds * mc.fps) // model.codec.temporal_factor
    block = model.encoder.block_frames
    return max(block, latent // block * block)


def window_blocks(model: FrameMem) -> int:
    """Memory blocks the history window keeps (the preset's `seconds` of history)."""
    latent = model.codec.latent_frames(model.config.model.history_frames)
    return max(1, latent // model.encoder.block_frames)


def build_memory_encoder(model_config, latent_channels: int, dit_width: int, patch, variant: str = "proposed",
                         patch_embedding: nn.Conv3d | None = None, dit_layers: int = 0) -> MemoryEncoder | FramePackEncoder:
    """A fresh φ (or a FramePack peer) for a preset; `patch_embedding` (the DiT's)
    initialises larger patchifiers FramePack's way; `dit_layers`: the DiT's depth, which
    `model.cross_attention` gives a feature projection each."""
    if variant not in VARIANTS:
        raise FrameMemError(f"unknown memory variant '{variant}' ({', '.join(VARIANTS)})")
    cross = getattr(model_config, "cross_attention", False)
    if cross and (variant == "framepack" or not dit_layers):
        raise FrameMemError("model.cross_attention needs φ's features and the DiT's depth "
                            + ("(the FramePack schedule has no φ)" if variant == "framepack" else "(dit_layers)"))
    rates = model_config.rates  # several with cross-attention: refused by the config's validate
    if len(rates) > 1 and variant == "framepack":
        raise FrameMemError(f"several memory encoders ({format_rate(rates)}) do not combine with the FramePack schedule")
    if variant == "framepack":
        encoder = FramePackEncoder(latent_channels=latent_channels, dit_width=dit_width, patch_size=tuple(patch))
    elif len(rates) > 1:
        encoder = MultiMemoryEncoder(latent_channels=latent_channels, dit_width=dit_width, patch_size=tuple(patch),
                                     rate=rates, widths=tuple(model_config.encoder_widths),
                                     attention_heads=model_config.encoder_attention_heads, variant=variant)
    else:
        encoder = MemoryEncoder(
            latent_channels=latent_channels,
            dit_width=dit_width,
            patch_size=tuple(patch),
            rate=rates[0],
            widths=tuple(model_config.encoder_widths),
            attention_heads=model_config.encoder_attention_heads,
            variant=variant,
            cross_attention_layers=dit_layers if cross else 0,
        )
    if patch_embedding is not None:
        encoder.init_from_patch_embedding(patch_embedding)
    return encoder


def load_memory_encoder(folder: Path) -> MemoryEncoder | FramePackEncoder:
    """The encoder class named in the folder's config; one without weights of its own
    (only_lr) is built from its config alone."""
    config = MemoryEncoder.load_config(folder)
    cls = FramePackEncoder if config.get("variant") == "framepack" else MemoryEncoder
    if config.get("_class_name") == MultiMemoryEncoder.__name__:
        cls = MultiMemoryEncoder
    encoder = cls.from_config(config)
    if any(True for _ in encoder.parameters()):
        encoder = cls.from_pretrained(folder, torch_dtype=torch.float32)
    return encoder


def _previous(path: Path) -> Path:
    """Where `save_pretrained` keeps the folder it replaces while it renames."""
    return path.with_name(f".{path.name}.old")


def _save_module(module, path: Path, dtype: torch.dtype | None) -> None:
    first = next(module.parameters(), None)
    if dtype is None or first is None:
        module.save_pretrained(path)
        return
    # a cast copy: casting the module there and back would round the weights still in training
    copy.deepcopy(module).to(dtype).save_pretrained(path)
