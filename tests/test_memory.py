import itertools

import pytest
import torch

from framemem.models.codecs import SpaceToDepthCodec
from framemem.models.memory_encoder import MemoryEncoder, axis_centres, memory_positions

RATES = list(itertools.product((1, 2, 4, 8), repeat=3))


def encoder(rate, variant="proposed", dit_width=16):
    return MemoryEncoder(latent_channels=12, dit_width=dit_width, patch_size=(1, 2, 2), rate=rate,
                         widths=(4, 8, 8, 8), attention_heads=2, variant=variant)


@pytest.mark.parametrize("rate", RATES, ids=lambda r: "x".join(map(str, r)))
def test_token_count_and_positions_for_every_rate(rate):
    codec = SpaceToDepthCodec(factor=2)
    enc = encoder(rate)
    patch = torch.nn.Conv3d(12, 16, (1, 2, 2), stride=(1, 2, 2))
    video = torch.rand(1, 3, 9, 24, 40) * 2 - 1  # token grid 9 x 6 x 10: most rates need padding
    latents = codec.encode(video)
    with torch.no_grad():
        out = enc(video, latents, codec, patch)
    rh, rw, rt = rate
    expected_grid = (-(-9 // rt), -(-6 // rh), -(-10 // rw))
    assert out.grid == expected_grid == enc.memory_grid(tuple(latents.shape[2:]))
    assert out.tokens.shape == (1, enc.token_count(tuple(latents.shape[2:])), 16)
    assert out.positions.shape == (out.tokens.shape[1], 3)
    # every position lies inside the real token grid, at its receptive field's centre
    assert out.positions[:, 0].max() <= 8 and out.positions[:, 1].max() <= 5 and out.positions[:, 2].max() <= 9
    first_centre = [sum(min(j, n - 1) for j in range(r)) / r for n, r in ((9, rt), (6, rh), (10, rw))]
    assert out.positions[0].tolist() == pytest.approx(first_centre)


def test_padded_centres_replicate_the_edge():
    assert axis_centres(8, 4).tolist() == [1.5, 5.5]
    assert axis_centres(30, 4).tolist()[-1] == pytest.approx((28 + 29 + 29 + 29) / 4)
    assert memory_positions((2, 4, 4), (2, 4, 4)).tolist() == [[0.5, 1.5, 1.5]]


def test_paper_worked_example_480p():
    """DESIGN.md: 20 s of 480p, 8x VAE, 2x2 patches at 4x4x2 -> 6,240 tokens (5,850 ideal)."""
    enc = MemoryEncoder(latent_channels=16, dit_width=32, rate=(4, 4, 2), widths=(4, 8, 8, 8), attention_heads=2)
    latent = (120, 60, 104)  # 20 s · 24 fps / 4, 480/8, 832/8
    assert enc.token_grid(latent) == (120, 30, 52)
    assert enc.memory_grid(latent) == (60, 8, 13)
    assert enc.token_count(latent) == 6240


def test_fresh_encoder_equals_its_lr_branch():
    codec = SpaceToDepthCodec(factor=2)
    patch = torch.nn.Conv3d(12, 16, (1, 2, 2), stride=(1, 2, 2))
    video = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    latents = codec.encode(video)
    with torch.no_grad():
        full = encoder((4, 4, 2))(video, latents, codec, patch)
        lr = encoder((4, 4, 2), "only_lr")(video, latents, codec, patch)
        hr = encoder((4, 4, 2), "without_lr")(video, latents, codec, patch)
    assert torch.equal(full.tokens, lr.tokens)
    assert hr.tokens.abs().max() == 0  # zero-initialised projection
    assert lr.tokens.abs().max() > 0


@pytest.mark.parametrize("variant", ["without_lr", "large_patchifier"])
def test_a_variant_without_lr_ignores_cached_low_res(variant):
    """A cache stores the LR copy whatever the variant: encoding from (latents, low_res)
    must give the same memory as encoding from the video."""
    codec = SpaceToDepthCodec(factor=2)
    patch = torch.nn.Conv3d(12, 16, (1, 2, 2), stride=(1, 2, 2))
    enc = encoder((2, 2, 2), variant)
    if variant == "without_lr":
        torch.nn.init.normal_(enc.proj_out.weight, std=0.1)
    video = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    latents = codec.encode(video)
    low_res = encoder((2, 2, 2), "only_lr").low_res_latents(video, codec, tuple(latents.shape[2:]))
    with torch.no_grad():
        from_video = enc(video, latents, codec, patch).tokens
        from_cache = enc.encode_latents(latents, low_res, patch).tokens
    assert torch.equal(from_video, from_cache)


def test_memory_is_local_in_time():
    """Memory of a video = memory of its temporal blocks (what incremental append needs)."""
    codec = SpaceToDepthCodec(factor=2)
    patch = torch.nn.Conv3d(12, 16, (1, 2, 2), stride=(1, 2, 2))
    enc = encoder((2, 2, 2))
    torch.nn.init.normal_(enc.proj_out.weight, std=0.1)
    video = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    with torch.no_grad():
        whole = enc(video, codec.encode(video), codec, patch).tokens
        first = enc(video[:, :, :4], codec.encode(video[:, :, :4]), codec, patch).tokens
        second = enc(video[:, :, 4:], codec.encode(video[:, :, 4:]), codec, patch).tokens
    assert torch.allclose(whole, torch.cat([first, second], dim=1), atol=1e-5)


@pytest.mark.parametrize("rate", [(4, 4, 2), (2, 2, 1), (2, 4, 4)])
def test_large_patchifier_starts_as_the_patch_embedding_of_block_means(rate):
    """FramePack's initialisation: the repeated, divided kernel embeds each rate block as the
    DiT embeds one patch of the block-averaged latents."""
    codec = SpaceToDepthCodec(factor=2)
    patch = torch.nn.Conv3d(12, 16, (1, 2, 2), stride=(1, 2, 2))
    enc = encoder(rate, "large_patchifier")
    enc.init_from_patch_embedding(patch)
    video = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    latents = codec.encode(video)  # (1, 12, 8, 16, 16)
    rh, rw, rt = rate
    block_means = torch.nn.functional.avg_pool3d(latents, (rt, rh, rw))  # latents at 1/rate resolution
    with torch.no_grad():
        memory = enc(video, latents, codec, patch)
        expected = patch(block_means).flatten(2).transpose(1, 2)
    assert memory.tokens.shape == (1, enc.token_count((8, 16, 16)), 16)
    assert torch.allclose(memory.tokens, expected, atol=1e-5)
