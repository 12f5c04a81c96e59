import torch

from framemem.flow import add_noise, estimate_x0, make_scheduler, sample, sample_timesteps, shift_timesteps, velocity_target


def test_logit_normal_location_and_shift():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps((20000,), mean=0.2, std=1.0, generator=g)
    assert 0 < t.min() and t.max() < 1
    median = t.median().item()
    assert abs(median - torch.sigmoid(torch.tensor(0.2)).item()) < 0.02
    shifted = shift_timesteps(t, 3.0)
    assert (shifted >= t).all() and shifted.median() > median + 0.1


def test_noise_and_x0_estimate_are_inverse():
    x0, eps = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    t = torch.rand(2, 3)
    x_t = add_noise(x0, eps, t)
    assert torch.allclose(estimate_x0(x_t, velocity_target(x0, eps), t), x0, atol=1e-5)


def test_samplers_follow_a_straight_flow_exactly():
    x0 = torch.randn(1, 4, 2, 3, 3)
    noise = torch.randn_like(x0)
    calls = {"n": 0}

    def velocity(x_t, t):  # the true velocity of the straight path through x0
        calls["n"] += 1
        return (x_t - x0) / t[:, None, :, None, None].clamp_min(1e-6)

    for sampler in ("euler", "heun"):
        calls["n"] = 0
        out = sample(velocity, noise, make_scheduler(sampler), steps=6)
        assert torch.allclose(out, x0, atol=1e-4), sampler
        assert calls["n"] >= 6
