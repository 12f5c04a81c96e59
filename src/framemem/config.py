"""Typed presets: the numbers that make the tiny CPU model and Wan 2.2 differ.

Every preset runs through the same classes; a preset is numbers only.
A `FrameMemConfig` is saved next to every checkpoint (``framemem.json``) so a
checkpoint always knows the geometry it was trained for.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FrameMemError
from .files import write_json
from .rates import ALLOWED_RATE_FACTORS, EMPTY_RATES, Rate, format_rate, rate_list

PREDICTION_TYPES = ("velocity", "x0")
MEMORY_ATTENTION = ("joint", "memory_only")


@dataclass
class ModelConfig:
    """Geometry, codec, backbone and memory encoder.

    Attributes:
        fps, seconds, height, width: history video after preprocessing.
        codec: "space_to_depth" (pixel space, no weights) or "wan_vae".
        codec_factor: spatial factor of the codec (space-to-depth block, or the VAE's 8 / 16).
        codec_temporal_factor: the VAE's temporal factor (causal: 1 + 4k frames -> 1 + k).
        codec_channels: the VAE's latent channels (space-to-depth has 3·factor²).
        codec_scale: space-to-depth latent scale.
        vae_path: local diffusers folder or hub id for the Wan VAE.
        transformer: kwargs of diffusers' WanTransformer3DModel (random init), or
            ``transformer_path`` to load real weights.
        rate: memory compression (h, w, t) on top of latent and patchifier; a tuple of
            rates gives several memory encoders, each at its own rate (paper §4.5, e.g.
            4×4×2 plus 2×2×8), their tokens side by side.
        encoder_widths: HR-branch Conv3d channels; the paper uses 64,128,256,512.
        encoder_attention_heads: heads of the attention block at the last width.
        encoder_chunk_blocks: φ encodes this many memory frames at a time (bounded peak
            memory for long histories, same result); None: all at once.
        lora_rank: LoRA rank on the DiT over `transformer_path`'s weights; None trains
            the DiT fully.
        prediction_type: what the DiT's output is: "velocity" (ε − x0; Wan's pretrained
            weights) or "x0" (the clean sample, turned into a velocity inside the DiT, so
            loss, samplers and diagnostics are unchanged; Li & He 2025, arXiv:2511.13720).
        memory_attention: "joint" (memory tokens attend to the whole sequence and read the
            prompt) or "memory_only" (they attend only to memory and skip the prompt, so
            generation computes their keys and values once per section; a different model,
            trained so).
        cross_attention: the cross-attention enhancement (paper §4.5): φ's penultimate
            features feed every DiT block through an added, zero-initialised cross-attention
            (trained with φ in both stages). Needs φ's high-resolution branch.
    """

    fps: float = 4.0
    seconds: float = 20.0
    height: int = 64
    width: int = 64
    codec: str = "space_to_depth"
    codec_factor: int = 4
    codec_temporal_factor: int = 1
    codec_channels: int | None = None
    codec_scale: float = 0.5
    vae_path: str | None = None
    transformer: dict = field(default_factory=dict)
    transformer_path: str | None = None
    rate: Rate | tuple[Rate, ...] = (4, 4, 2)
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512)
    encoder_attention_heads: int = 8
    encoder_chunk_blocks: int | None = None
    lora_rank: int | None = None
    prediction_type: str = "velocity"
    memory_attention: str = "joint"
    cross_attention: bool = False

    @property
    def history_frames(self) -> int:
        return int(round(self.fps * self.seconds))

    @property
    def rates(self) -> tuple[Rate, ...]:
        """One (h, w, t) per memory encoder."""
        return rate_list(self.rate)

    @property
    def spatial_rate(self) -> tuple[int, int]:
        """(h, w) of the finest spatial rate among the encoders: the bicubic reference's factor."""
        return min(((h, w) for h, w, _ in self.rates), key=lambda hw: hw[0] * hw[1])

    def validate(self) -> None:
        if self.codec not in ("space_to_depth", "wan_vae"):
            raise FrameMemError(f"unknown codec '{self.codec}' (space_to_depth or wan_vae)")
        if not self.rates:
            raise FrameMemError(f"rate: {EMPTY_RATES}")
        for rate in self.rates:
            if len(rate) != 3 or any(r not in ALLOWED_RATE_FACTORS for r in rate):
                raise FrameMemError(f"rate {list(rate)}: need three factors h, w, t, each one of {ALLOWED_RATE_FACTORS}")
        if len(self.rates) > 1 and self.cross_attention:
            raise FrameMemError(f"rate {format_rate(self.rate)}: several memory encoders do not combine with "
                                "model.cross_attention (each would bring its own features)")
        if self.fps <= 0 or self.seconds <= 0:
            raise FrameMemError("fps and seconds must be positive")
        if self.codec == "wan_vae" and not self.vae_path:
            raise FrameMemError("codec wan_vae needs vae_path (a local diffusers folder or a hub id)")
        if self.lora_rank and not self.transformer_path:
            raise FrameMemError("lora_rank needs transformer_path: a checkpoint stores only the LoRA of a DiT "
                                "it must load from there")
        _check(self, positive=("height", "width", "codec_factor", "codec_temporal_factor", "encoder_attention_heads"),
               optional_positive=("encoder_chunk_blocks", "lora_rank"),
               choices={"prediction_type": PREDICTION_TYPES, "memory_attention": MEMORY_ATTENTION})


@dataclass
class TrainConfig:
    """Stage-1 retrieval pretraining hyper-parameters."""

    steps: int = 20000
    batch_size: int = 4
    targets_per_history: int = 4
    omega: str = "mixed"  # uniform | contiguous | mixed
    t_mean: float = 0.2  # logit-normal L(m, s) of the paper
    t_std: float = 1.0
    t_shift: float = 1.0
    lr: float = 1e-4
    encoder_lr: float | None = None  # None: same as lr
    # Query/key RMSNorm gains set how sharp attention can get; from scratch they must grow
    # several-fold before the DiT can pick one memory token, so they may learn faster.
    qk_norm_lr_scale: float = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float | None = None
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = False  # recompute DiT blocks in backward: less memory, ~30% more compute
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    # Share of histories drawn from the procedural generator when videos are given (--data);
    # without videos every history is procedural.
    procedural_fraction: float = 0.0
    procedural_pool: int | None = None  # training seeds in [0, pool), rendered once and cached
    # Histories of random length in [min, preset's seconds] (whole memory blocks); None:
    # always full length. φ is local in time and RoPE relative, so one model serves all
    # lengths; short histories are cheaper steps and an easier lookup for a DiT from scratch.
    history_seconds_min: float | None = None
    sample_steps: int = 20

    def validate(self) -> None:
        _check(self, positive=("steps", "batch_size", "targets_per_history", "lr", "t_std", "t_shift", "grad_clip",
                               "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "sample_steps"),
               optional_positive=("encoder_lr", "procedural_pool", "history_seconds_min"),
               non_negative=("warmup_steps", "weight_decay", "seed", "qk_norm_lr_scale"), fractions=("procedural_fraction",),
               choices={"omega": ("uniform", "contiguous", "mixed"), "mixed_precision": ("no", "fp16", "bf16")})
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise FrameMemError(f"ema_decay = {self.ema_decay}: must lie in (0, 1)")


@dataclass
class ARConfig:
    """Stage 2 (paper §3.2): autoregressive fine-tuning and generation.

    section_seconds: what one step of the loop generates (the paper: the next 1 s).
    text_encoder: "umt5" (Wan's, from `text_encoder_path` or the Wan folder) or "hashed"
        (the embedded default's, trained with the model); text_tokens: prompt length L.
    text_dropout / memory_dropout: chance a training sample loses its prompt / a batch its
        memory (classifier-free guidance, and robustness without history).
    t_mean, t_std, t_shift: L(0, 1) of the paper, then the usual shift.
    lora_rank: LoRA added to a fully trained DiT (a DiT that has a LoRA keeps training it).
    train_memory: fine-tune φ too (default: frozen, as pretrained).
    steps, lr: the fine-tuning budget (other optimiser settings are the preset's `train`).
    cfg, sample_steps: generation defaults.
    window_frames: the sliding window (paper §4.5): the last W latent frames of the history,
        at full resolution (the DiT's own patch embedding), clean, at their true positions,
        beside the memory; 0 turns it off. At most the history window.
    """

    section_seconds: float = 1.0
    text_encoder: str = "umt5"
    text_encoder_path: str | None = None
    text_tokens: int = 512
    text_buckets: int = 4096
    text_dropout: float = 0.1
    memory_dropout: float = 0.05
    t_mean: float = 0.0
    t_std: float = 1.0
    t_shift: float = 3.0
    lora_rank: int | None = 128
    train_memory: bool = False
    steps: int = 10000
    lr: float = 1e-4
    cfg: float = 5.0
    sample_steps: int = 30
    window_frames: int = 0

    def validate(self) -> None:
        _check(self, positive=("section_seconds", "text_tokens", "text_buckets", "t_std", "t_shift", "steps", "lr",
                               "sample_steps"),
               optional_positive=("lora_rank",), non_negative=("cfg", "window_frames"),
               fractions=("text_dropout", "memory_dropout"),
               choices={"text_encoder": ("umt5", "hashed")})


def _check(section, positive=(), optional_positive=(), non_negative=(), fractions=(), choices=None) -> None:
    """One-line errors for settings out of range (a NaN fails every comparison, so it is caught)."""
    prefix = "ar." if isinstance(section, ARConfig) else ""

    def bad(name, need):
        raise FrameMemError(f"{prefix}{name} = {getattr(section, name)}: must be {need}")

    for name in positive:
        if not getattr(section, name) > 0:
            bad(name, "positive")
    for name in optional_positive:
        if getattr(section, name) is not None and not getattr(section, name) > 0:
            bad(name, "positive or None")
    for name in non_negative:
        if not getattr(section, name) >= 0:
            bad(name, "0 or more")
    for name in fractions:
        if not 0 <= getattr(section, name) <= 1:
            bad(name, "between 0 and 1")
    for name, allowed in (choices or {}).items():
        if getattr(section, name) not in allowed:
            bad(name, "one of " + ", ".join(allowed))


@dataclass
class FrameMemConfig:
    preset: str
    model: ModelConfig
    train: TrainConfig
    ar: ARConfig = field(default_factory=ARConfig)
    stage: int = 1  # 1: retrieval pretraining, 2: autoregressive fine-tuning

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()
        self.ar.validate()

    def override(self, item: str) -> None:
        """`NAME=VALUE` sets a stage-1 training field (`train`), `ar.NAME=VALUE` a stage-2 one,
        `model.NAME=VALUE` a model choice of one word or number (not geometry tuples or the DiT's
        kwargs), converted to the field's declared type (ranges are `validate`'s job)."""
        name, _, text = item.partition("=")
        part, _, name = name.rpartition(".")
        section = {"": self.train, "train": self.train, "ar": self.ar, "model": self.model}.get(part)
        hints = typing.get_type_hints(type(section)) if section is not None else {}
        if part == "model":
            plain = {str, int, float, bool, type(None)}
            hints = {k: v for k, v in hints.items() if v in plain or (typing.get_origin(v) in (typing.Union, types.UnionType)
                                                                      and set(typing.get_args(v)) <= plain)}
        if name not in hints or not text:
            raise FrameMemError(f"--set {item}: expected NAME=VALUE with NAME a field of TrainConfig, ar.NAME "
                                "with NAME a field of ARConfig, or model.NAME with NAME a plain field of ModelConfig")
        try:
            setattr(section, name, _parse_value(text, hints[name]))
        except ValueError:
            kinds = " or ".join("none" if k is type(None) else k.__name__
                                for k in typing.get_args(hints[name]) or (hints[name],))
            raise FrameMemError(f"--set {item}: '{text}' is not {kinds}") from None

    @classmethod
    def from_dict(cls, data: dict) -> "FrameMemConfig":
        try:
            model = {k: v for k, v in data["model"].items() if k not in RETIRED_MODEL_FIELDS}
            rates = rate_list(model["rate"])
            model["rate"] = rates[0] if len(rates) == 1 else rates  # () fails validate with a one-line error
            model["encoder_widths"] = tuple(model["encoder_widths"])
            config = cls(preset=data["preset"], model=ModelConfig(**model), train=TrainConfig(**data["train"]),
                         ar=ARConfig(**data.get("ar", {})), stage=data.get("stage", 1))
        except (KeyError, TypeError) as err:
            raise FrameMemError(f"config is not a framemem config ({err})") from None
        config.validate()
        return config

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "FrameMemConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise FrameMemError(f"cannot read config {path}: {err}") from None


# Model fields that older checkpoints carry and nothing reads any more.
RETIRED_MODEL_FIELDS = ("text_tokens", "target_offsets")


def _parse_value(text: str, kind):
    """'none', a bool word, an int, a float or a string, as the field's type `kind` allows."""
    allowed = set(typing.get_args(kind)) or {kind}
    if text.lower() == "none" and type(None) in allowed:
        return None
    if bool in allowed:
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if text.lower() not in words:
            raise ValueError(text)
        return words[text.lower()]
    for convert in (int, float, str):
        if convert in allowed:
            return convert(text)
    raise ValueError(text)


def _tiny() -> FrameMemConfig:
    model = ModelConfig(
        fps=4.0,
        seconds=20.0,
        height=64,
        width=64,
        codec="space_to_depth",
        codec_factor=4,
        codec_scale=0.5,
        transformer=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=4,
            attention_head_dim=64,
            in_channels=48,
            out_channels=48,
            text_dim=32,
            freq_dim=64,
            ffn_dim=512,
            num_layers=4,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        ),
        rate=(4, 4, 2),
        encoder_widths=(32, 64, 128, 256),
        encoder_attention_heads=4,
    )
    train = TrainConfig(
        steps=14000,
        batch_size=4,
        targets_per_history=2,
        lr=1e-3,
        warmup_steps=100,
        mixed_precision="no",
        log_every=25,
        eval_every=250,
        checkpoint_every=250,
        procedural_fraction=0.7,
        procedural_pool=2048,
        history_seconds_min=4.0,
        sample_steps=16,
    )
    ar = ARConfig(section_seconds=1.0, text_encoder="hashed", text_tokens=16, text_buckets=2048, t_shift=1.0,
                  lora_rank=32, steps=2000, lr=5e-4, cfg=2.0, sample_steps=16)
    return FrameMemConfig("tiny", model, train, ar)


def _wan(preset: str, hub_id: str, fps: float, vae: tuple[int, int, int], dit: dict) -> FrameMemConfig:
    """Wan 2.2 at 480p: the VAE and DiT come from one diffusers folder or hub id; LoRA rank
    128 and encoder widths 64→512 as in the paper. `vae` is (spatial factor, temporal factor,
    channels); `dit` the DiT's architecture, which the loaded weights must match."""
    spatial, temporal, channels = vae
    model = ModelConfig(
        fps=fps,
        seconds=20.0,
        height=480,
        width=832,
        codec="wan_vae",
        codec_factor=spatial,
        codec_temporal_factor=temporal,
        codec_channels=channels,
        vae_path=hub_id,
        transformer=dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=channels, out_channels=channels,
                         text_dim=4096, freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                         eps=1e-6, **dit),
        transformer_path=hub_id,
        rate=(4, 4, 2),
        encoder_widths=(64, 128, 256, 512),
        encoder_attention_heads=8,
        encoder_chunk_blocks=8,
        lora_rank=128,
    )
    return FrameMemConfig(preset, model, TrainConfig(t_shift=3.0, gradient_checkpointing=True))


PRESETS = {
    "tiny": _tiny,
    # TI2V-5B: 16x spatial / 4x temporal VAE with 48 channels, a 3072-wide DiT (24 heads x 128,
    # 30 layers), 24 fps (Wan 2.2 configs).
    "wan2.2-ti2v-5b": lambda: _wan(
        "wan2.2-ti2v-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", 24.0, (16, 4, 48),
        dict(num_attention_heads=24, num_layers=30, ffn_dim=14336),
    ),
    # A14B (the high-noise expert, as in the paper): the Wan 2.1 VAE (8x spatial, 4x temporal,
    # 16 channels), a 5120-wide DiT (40 heads x 128, 40 layers), 16 fps.
    "wan-14b": lambda: _wan(
        "wan-14b", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", 16.0, (8, 4, 16),
        dict(num_attention_heads=40, num_layers=40, ffn_dim=13824),
    ),
}


def get_preset(name: str) -> FrameMemConfig:
    if name not in PRESETS:
        raise FrameMemError(f"unknown preset '{name}'; choose from {', '.join(PRESETS)}")
    config = PRESETS[name]()
    config.validate()
    return config
