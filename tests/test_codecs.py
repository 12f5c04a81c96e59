import pytest
import torch
from diffusers import AutoencoderKLWan

from framemem.codecs import SpaceToDepthCodec, WanVAECodec, check_divisible
from framemem.errors import FrameMemError


def test_space_to_depth_is_lossless():
    codec = SpaceToDepthCodec(factor=4, scale=0.5)
    video = torch.rand(2, 3, 5, 32, 16) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (2, 48, 5, 8, 4) and codec.channels == 48
    assert torch.equal(codec.decode(latents), video)
    with pytest.raises(FrameMemError):
        codec.encode(torch.zeros(1, 3, 1, 30, 32))


def test_divisibility_check():
    check_divisible(64, 64, SpaceToDepthCodec(4), (1, 2, 2))
    with pytest.raises(FrameMemError, match="not a multiple"):
        check_divisible(60, 64, SpaceToDepthCodec(4), (1, 2, 2))


def tiny_vae():
    return AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True],
                            latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
                            scale_factor_spatial=4, scale_factor_temporal=2)


def test_wan_vae_codec_from_a_saved_folder(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "pipe" / "vae")
    for source in (tmp_path / "pipe", tmp_path / "pipe" / "vae"):  # pipeline folder or model folder
        codec = WanVAECodec.from_pretrained(str(source))
        assert (codec.spatial_factor, codec.temporal_factor, codec.channels) == (4, 2, 4)
    assert [codec.latent_index(i) for i in range(5)] == [0, 1, 1, 2, 2]  # causal: frame 0 alone
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (1, 4, codec.latent_frames(5), 4, 4)
    assert codec.decode(latents).shape[2:] == (codec.pixel_frames(latents.shape[2]), 16, 16)


def test_wan_vae_without_network_fails_clearly(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FrameMemError, match="cannot load AutoencoderKLWan"):
        WanVAECodec.from_pretrained("framemem-test/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrameMemError, match="no config.json here"):
        WanVAECodec.from_pretrained(str(tmp_path / "empty"))


def test_a_vae_that_does_not_fit_the_preset_is_refused(tmp_path):
    from framemem.codecs import build_codec, codec_geometry
    from framemem.config import get_preset

    tiny_vae().save_pretrained(tmp_path / "pipe" / "vae")
    model = get_preset("wan-14b").model  # expects the 8x, 4x, 16-channel Wan 2.1 VAE
    model.vae_path = str(tmp_path / "pipe")
    with pytest.raises(FrameMemError, match=r"does not fit the preset \(x8, x4, 16 channels\)"):
        build_codec(model)
    model.codec_factor, model.codec_temporal_factor, model.codec_channels = 4, 2, 4
    codec = build_codec(model)
    geometry = codec_geometry(model)  # the same numbers without weights
    for frames in (1, 5, 9, 20):
        assert geometry.latent_shape(frames, 16, 16) == codec.latent_shape(frames, 16, 16)
        assert geometry.latent_index(frames) == codec.latent_index(frames)


def test_a_folder_without_its_weights_names_the_missing_files(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FrameMemError, match="missing weight files: diffusion_pytorch_model.safetensors"):
        WanVAECodec.from_pretrained(str(tmp_path / "pipe"))
    with pytest.raises(FrameMemError, match="no such folder"):
        WanVAECodec.from_pretrained(str(tmp_path / "not-there"))
