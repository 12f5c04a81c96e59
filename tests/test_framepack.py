"""FramePack's geometric schedule as a memory: levels, padding, positions, initialisation."""
import pytest
import torch

from framemem.models.codecs import SpaceToDepthCodec
from framemem.models.framepack import FramePackEncoder, framepack_segments, framepack_tokens
from framemem.models.memory_encoder import memory_positions


def test_schedule_levels_and_budget():
    assert framepack_segments(20) == [(0, 17, 4), (17, 19, 2), (19, 20, 1)]
    assert framepack_segments(2) == [(0, 1, 2), (1, 2, 1)]  # too short for the 4x level
    assert framepack_tokens((80, 8, 8)) == 160  # the tiny preset's 20 s: as many as 4x4x2
    assert framepack_tokens((120, 30, 52)) == 30 * 52 + 15 * 26 + 30 * 8 * 13


@pytest.mark.parametrize("frames", [1, 3, 7, 12])
def test_tokens_positions_and_initialisation(frames):
    codec = SpaceToDepthCodec(factor=2)
    patch = torch.nn.Conv3d(12, 16, (1, 2, 2), stride=(1, 2, 2))
    encoder = FramePackEncoder(latent_channels=12, dit_width=16, patch_size=(1, 2, 2))
    encoder.init_from_patch_embedding(patch)
    video = torch.rand(1, 3, frames, 24, 40) * 2 - 1  # token grid (frames, 6, 10): 4x pads 6 -> 8, 10 -> 12
    latents = codec.encode(video)
    with torch.no_grad():
        memory = encoder(video, latents, codec, patch)
        newest = patch(latents[:, :, -1:]).flatten(2).transpose(1, 2)
    grid = encoder.token_grid(tuple(latents.shape[2:]))
    assert grid == (frames, 6, 10)
    assert memory.tokens.shape == (1, encoder.token_count(tuple(latents.shape[2:])), 16)
    assert memory.positions.shape == (memory.tokens.shape[1], 3)
    # the newest frame is the DiT's own patch embedding at its own positions
    assert torch.allclose(memory.tokens[:, -60:], newest, atol=1e-6)
    assert torch.equal(memory.positions[-60:], memory_positions((1, 6, 10), (1, 1, 1)) + torch.tensor([frames - 1.0, 0, 0]))
    # every token sits inside the history, older levels further back
    assert memory.positions[:, 0].max() == frames - 1 and memory.positions[:, 0].min() >= 0
    assert memory.positions[:, 0].diff().min() >= -1e-6  # time never goes backwards
