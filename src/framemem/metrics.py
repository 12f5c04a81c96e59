"""Image metrics on videos in [-1, 1]: PSNR (data range 1 after mapping to [0, 1]), SSIM
(scikit-image, Gaussian-weighted as in Wang et al., 2004) and LPIPS from local weight files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from .errors import FrameMemError


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu()


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1) of per-seed figures; the std of one seed is 0."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB over frames; a, b: (..., 3, H, W) or (B, 3, T, H, W) in [-1, 1]."""
    mse = (_unit(a) - _unit(b)).pow(2)
    if a.ndim == 5:  # per frame: (B, 3, T, H, W) -> (B, T)
        mse = mse.mean(dim=(1, 3, 4))
    else:
        mse = mse.flatten(-3).mean(-1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM over frames; a, b: (3, H, W) or (N, 3, H, W) in [-1, 1]. Wang et al. (2004):
    an 11-tap Gaussian window (σ = 1.5), population covariances, the 5-pixel border left out."""
    x, y = _unit(a).numpy(), _unit(b).numpy()
    if x.ndim == 3:
        x, y = x[None], y[None]
    scores = [
        structural_similarity(xi, yi, channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for xi, yi in zip(x, y)
    ]
    return float(np.mean(scores))


# LPIPS (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
# Metric"), AlexNet version: unit-normalised activations after each of AlexNet's five ReLUs,
# squared differences weighted per channel by learned 1×1 layers, averaged over space, summed.
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)  # their input scaling


class LPIPS(torch.nn.Module):
    """LPIPS distance between images in [-1, 1]; weights only from local files (`from_files`).

    `features` has torchvision's AlexNet layout (`features.N.*`), `lins[k]` the 1×1 weights
    of the LPIPS release (`lin{k}.model.1.weight`)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in ALEXNET_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    @classmethod
    def from_files(cls, backbone: str | Path, linear: str | Path) -> "LPIPS":
        """`backbone`: torchvision's AlexNet weights (e.g. alexnet-owt-7be5be79.pth);
        `linear`: the LPIPS release's alex.pth (v0.1). .pth or .safetensors."""
        import re

        model = cls()
        weights = _load_weights(backbone)
        wanted = model.features.state_dict()
        missing = [f"features.{k}" for k in wanted if f"features.{k}" not in weights]
        if missing:
            raise FrameMemError(f"LPIPS backbone {backbone} is not torchvision's AlexNet: no {missing[0]}")
        model.features.load_state_dict({k: weights[f"features.{k}"] for k in wanted})
        lins = {int(m.group(1)): v for k, v in _load_weights(linear).items()
                if (m := re.fullmatch(r"lin(\d)\.model\.\d\.weight", k))}
        if sorted(lins) != list(range(len(ALEXNET_CHANNELS))):
            raise FrameMemError(f"LPIPS linear weights {linear} lack lin0…lin4 (expected the LPIPS release's alex.pth)")
        for k, lin in enumerate(model.lins):
            lin.weight.data.copy_(lins[k].reshape(lin.weight.shape))
        return model.eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (N, 3, H, W) in [-1, 1] -> (N,) distances."""
        def taps(x):
            x, out = (x.float().clamp(-1, 1) - self.shift) / self.scale, []
            for layer in self.features:
                x = layer(x)
                if isinstance(layer, torch.nn.ReLU):
                    out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            return out

        return sum(lin((fa - fb).pow(2)).mean(dim=(1, 2, 3)) for lin, fa, fb in zip(self.lins, taps(a), taps(b)))


def _load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FrameMemError(f"LPIPS weight file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file: one line, not a traceback
        raise FrameMemError(f"cannot read LPIPS weights {path}: {str(error).splitlines()[0]}") from None


def bicubic_reference(frames: torch.Tensor, factor_h: int, factor_w: int) -> torch.Tensor:
    """What a low-resolution copy holds: (N, 3, H, W) down by the spatial rate (antialiased
    bicubic), then back up (bicubic)."""
    h, w = frames.shape[-2:]
    small = F.interpolate(
        frames, size=(math.ceil(h / factor_h), math.ceil(w / factor_w)), mode="bicubic", antialias=True
    )
    return F.interpolate(small, size=(h, w), mode="bicubic").clamp(-1, 1)


class Continuity:
    """Consecutive-frame PSNR of a video as it streams, split at section boundaries: the mean
    across boundaries divided by the mean within sections is 1.0 when no cut shows, and
    lower the more a new section jumps from the last frame before it.

    `add(frames, new_section=True, planned_cut=False)` takes uint8 (T, H, W, 3) frames in
    order; a boundary where the storyboard asks for a new shot (`planned_cut`) is not scored."""

    def __init__(self):
        self.last, self.across, self.within = None, [], []

    def add(self, frames, new_section: bool = True, planned_cut: bool = False) -> None:
        frames = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (T, 3, H, W)
        for i, frame in enumerate(frames):
            if self.last is not None and not (planned_cut and i == 0):
                (self.across if new_section and i == 0 else self.within).append(psnr(self.last, frame))
            self.last = frame

    def summary(self) -> dict | None:
        """{"across_db", "within_db", "ratio"}, or None before a boundary and a pair inside a section."""
        if not self.across or not self.within:
            return None
        across, within = float(np.mean(self.across)), float(np.mean(self.within))
        return {"across_db": across, "within_db": within, "ratio": across / within, "boundaries": len(self.across)}
