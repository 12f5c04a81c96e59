"""Stage 1: retrieval pretraining (paper Eq. 3) and the held-out signals that tell whether the memory is read.

    L = E || (ε − H_Ω) − G((H_Ω)_t, t, φ(H)) ||²,   t ~ L(0.2, 1),  Ω random every step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..flow import add_noise, estimate_x0, sample_timesteps, velocity_target
from ..models.memory_encoder import MemoryTokens
from ..metrics import bicubic_reference, psnr

OMEGA_STRATEGIES = ("uniform", "contiguous", "mixed")


def select_omega(strategy: str, frames: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct latent frame indices of a history of `frames`, sorted: (k,) long.

    uniform: anywhere; contiguous: one random span; mixed: either, 50/50.
    """
    k = min(k, frames)
    if strategy == "mixed":
        pick = torch.rand((), generator=generator).item() < 0.5
        strategy = "uniform" if pick else "contiguous"
    if strategy == "uniform":
        return torch.randperm(frames, generator=generator)[:k].sort().values
    if strategy == "contiguous":
        start = int(torch.randint(0, frames - k + 1, (), generator=generator))
        return torch.arange(start, start + k)
    raise ValueError(f"unknown Ω strategy '{strategy}' ({', '.join(OMEGA_STRATEGIES)})")


def gather_frames(latents: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """latents (B, C, T, h, w), omega (B, K) -> (B, C, K, h, w)."""
    b, c, _, h, w = latents.shape
    index = omega[:, None, :, None, None].expand(b, c, omega.shape[1], h, w).to(latents.device)
    return torch.gather(latents, 2, index)


def retrieval_loss(model, video: torch.Tensor, train_config, generator: torch.Generator) -> torch.Tensor:
    """One stage-1 loss on a batch of histories.

    Args:
        model: FrameMem. video: (B, 3, T, H, W) clean histories in [-1, 1], or their
            (latents, low_res) from a cache (`FrameMem.encode_history`).
        generator: the step's generator (Ω, t and ε all come from it: resumable exactly).
    Returns:
        scalar flow loss on the target tokens only.
    """
    latents, memory = model.encode_history(video)
    b, t_lat = latents.shape[0], latents.shape[2]
    k = train_config.targets_per_history
    omega = torch.stack([select_omega(train_config.omega, t_lat, k, generator) for _ in range(b)])
    x0 = gather_frames(latents, omega)
    t = sample_timesteps(tuple(omega.shape), train_config.t_mean, train_config.t_std, train_config.t_shift, generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    t = t.to(x0.device)
    v = model.dit(add_noise(x0, noise, t), omega.float().to(x0.device), t, memory)
    return F.mse_loss(v.float(), velocity_target(x0, noise).float())


@torch.no_grad()
def memory_diagnostics(model, videos: list[torch.Tensor], frames_per_video: int = 4, seed: int = 0) -> dict:
    """What tells whether the memory is used, on held-out videos (each (1, 3, T, H, W)).

    one_step_psnr: PSNR of the x0 estimate from pure noise (t = 1), i.e. the conditional
        mean given the memory, at evenly spaced frames.
    loss_t1 / loss_t1_swapped: flow loss at t = 1 with the true memory vs another
        history's memory; memory_gap = swapped − true (> 0 means the memory is read).
    mean_frame_psnr / bicubic_psnr: references at the same frames, the history's mean
        frame (a floor) and the frame down by the spatial rate and back up.
    """
    generator = torch.Generator().manual_seed(seed)
    encoded = [model.encode_history(v) for v in videos]
    rh, rw = model.config.model.spatial_rate
    psnrs, true_losses, swapped_losses, mean_psnrs, bicubic_psnrs = [], [], [], [], []
    for i, (video, (latents, memory)) in enumerate(zip(videos, encoded)):
        t_lat = latents.shape[2]
        omega = torch.linspace(0, t_lat - 1, min(frames_per_video, t_lat)).round().long()[None]
        x0 = gather_frames(latents, omega)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        t = torch.ones(omega.shape, device=x0.device)
        frames = omega.float().to(x0.device)
        v = model.dit(noise, frames, t, memory)
        target = velocity_target(x0, noise)
        true_losses.append(F.mse_loss(v, target).item())
        pixel_frames = [model.codec.pixel_index(j) for j in omega[0].tolist()]
        estimate = model.codec.decode_frames(estimate_x0(noise, v, t), pixel_frames)
        truth = video[:, :, pixel_frames]
        psnrs.append(psnr(estimate, truth))
        frames_px = truth[0].transpose(0, 1)  # (K, 3, H, W)
        mean_psnrs.append(psnr(video[0].mean(dim=1, keepdim=True).transpose(0, 1).expand_as(frames_px), frames_px))
        bicubic_psnrs.append(psnr(bicubic_reference(frames_px, rh, rw), frames_px))
        if len(videos) > 1:
            other: MemoryTokens = encoded[(i + 1) % len(videos)][1]
            v_other = model.dit(noise, frames, t, other)
            swapped_losses.append(F.mse_loss(v_other, target).item())
    result = {
        "one_step_psnr": sum(psnrs) / len(psnrs), "loss_t1": sum(true_losses) / len(true_losses),
        "mean_frame_psnr": sum(mean_psnrs) / len(mean_psnrs), "bicubic_psnr": sum(bicubic_psnrs) / len(bicubic_psnrs),
    }
    if swapped_losses:
        result["loss_t1_swapped"] = sum(swapped_losses) / len(swapped_losses)
        result["memory_gap"] = result["loss_t1_swapped"] - result["loss_t1"]
    return result
