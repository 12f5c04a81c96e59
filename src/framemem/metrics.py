"""Image metrics on videos in [-1, 1]: PSNR (data range 1 after mapping to [0, 1]) and SSIM
(scikit-image, Gaussian-weighted as in Wang et al., 2004)."""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB over frames; a, b: (..., 3, H, W) or (B, 3, T, H, W) in [-1, 1]."""
    mse = (_unit(a) - _unit(b)).pow(2)
    if a.ndim == 5:  # per frame: (B, 3, T, H, W) -> (B, T)
        mse = mse.mean(dim=(1, 3, 4))
    else:
        mse = mse.flatten(-3).mean(-1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM over frames; a, b: (3, H, W) or (N, 3, H, W) in [-1, 1]."""
    x, y = _unit(a).numpy(), _unit(b).numpy()
    if x.ndim == 3:
        x, y = x[None], y[None]
    scores = [
        structural_similarity(xi, yi, channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, win_size=7)
        for xi, yi in zip(x, y)
    ]
    return float(np.mean(scores))
