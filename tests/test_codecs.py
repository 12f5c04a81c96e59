import pytest
import torch
from diffusers import AutoencoderKLWan

from framemem.models.codecs import LatentCodec, SpaceToDepthCodec, WanVAECodec, check_divisible
from framemem.errors import FrameMemError
from framemem.models.memory_encoder import MemoryEncoder


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
    from framemem.models.codecs import build_codec, codec_geometry
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


class CausalMeanCodec(LatentCodec):
    """A stand-in with the Wan VAE's time axis, in pixel space: latent 0 is frame 0, latent j
    the mean of frames 4j-3..4j; decoding a latent repeats it, plus half its change since the
    latent before (so a decoder's causal past shows in its pixels)."""

    causal, temporal_factor, channels = True, 4, 3

    def encode(self, video):
        blocks = [video[:, :, :1]] + [video[:, :, i : i + 4].mean(2, keepdim=True) for i in range(1, video.shape[2], 4)]
        return torch.cat(blocks, dim=2)

    def decode(self, latents):
        frames = [latents[:, :, :1]]
        for j in range(1, latents.shape[2]):
            z = latents[:, :, j : j + 1] + 0.5 * (latents[:, :, j : j + 1] - latents[:, :, j - 1 : j])
            frames.append(z.expand(-1, -1, 4, -1, -1))
        return torch.cat(frames, dim=2)


def test_scattered_latents_decode_from_themselves_alone():
    codec = CausalMeanCodec()
    latents = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(1, 3, 6, 2, 2)  # latent j holds the value j
    picked, pixel_frames = latents[:, :, [0, 3, 5]], [0, 10, 19]
    assert [codec.latent_index(p) for p in pixel_frames] == [0, 3, 5]
    decoded = codec.decode_frames(picked, pixel_frames)
    assert decoded.shape == (1, 3, 3, 2, 2) and torch.equal(decoded[0, 0, :, 0, 0], torch.tensor([0.0, 3.0, 5.0]))
    assert not torch.equal(codec.decode(picked)[0, 0, 1, 0, 0], torch.tensor(3.0))  # decoded as one clip: 0 leaks in
    # a continuation is decoded after its past: the same pixels as decoding the whole clip
    assert torch.equal(codec.decode_after(latents[:, :, 4:], latents[:, :, :4]), codec.decode(latents)[:, :, -8:])
    assert [codec.pixel_index(j) for j in (0, 1, 5)] == [0, 4, 20]


def test_the_lr_branch_covers_the_pixels_of_its_memory_frame_with_a_causal_codec():
    codec = CausalMeanCodec()
    encoder = MemoryEncoder(latent_channels=3, dit_width=8, patch_size=(1, 1, 1), rate=(1, 1, 2), variant="only_lr")
    video = torch.arange(25.0).view(1, 1, 25, 1, 1).expand(1, 3, 25, 2, 2)  # pixel frame i holds the value i
    latents = codec.encode(video)  # 7 latents: frame 0, then blocks of 4
    low_res = encoder.low_res_latents(video, codec, tuple(latents.shape[2:]))
    # memory frame i holds latents 2i, 2i+1 (the last one padded by replication): its LR latent is
    # the mean of exactly their pixels: 0..4, 5..12, 13..20, then 21..24 and its padding
    assert torch.allclose(low_res[0, 0, :, 0, 0], torch.tensor([2.0, 8.5, 16.5, 23.25]))


def test_retrieval_through_a_causal_wan_vae_returns_the_asked_frames(tmp_path):
    """The whole retrieval path with a (tiny, random) Wan VAE: frames scattered in time come
    back one per asked time, at the video's size, and the diagnostics compare real pixels."""
    from conftest import small_config

    from framemem.outputs import run_retrieval
    from framemem.flow import make_scheduler
    from framemem.models.framemem import FrameMem
    from framemem.pipelines import FrameMemRetrievalPipeline
    from framemem.training.stage1_retrieval import memory_diagnostics

    tiny_vae().save_pretrained(tmp_path / "vae")
    config = small_config()
    m = config.model
    m.codec, m.vae_path, m.codec_factor, m.codec_temporal_factor, m.codec_channels = "wan_vae", str(tmp_path / "vae"), 4, 2, 4
    m.transformer.update(in_channels=4, out_channels=4)
    model = FrameMem.build(config).eval()
    pipe = FrameMemRetrievalPipeline(model.dit.transformer, model.encoder, model.codec, make_scheduler(), config)
    frames = torch.randint(0, 256, (17, 32, 32, 3), dtype=torch.uint8)  # 4 s at 4 fps + frame 0
    retrieved = pipe(frames, [0.0, 1.5, 3.25], num_inference_steps=2, output_type="pt").frames
    assert retrieved.shape == (3, 3, 32, 32)  # one frame per asked frame, not a decoded clip
    metrics = run_retrieval(pipe, frames, [0.0, 1.5, 3.25], tmp_path / "out", steps=2)
    assert [r["frame_index"] for r in metrics["per_frame"]] == [0, 6, 13]
    assert all(0 < r["psnr"] < 60 for r in metrics["per_frame"])
    result = memory_diagnostics(model, [torch.rand(1, 3, 17, 32, 32) * 2 - 1] * 2)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.values())


def test_a_generated_section_gets_the_lr_memory_that_encoding_the_whole_video_gives():
    from types import SimpleNamespace

    from framemem.pipelines.memory_state import section_low_res

    codec = CausalMeanCodec()
    model = SimpleNamespace(codec=codec, encoder=MemoryEncoder(latent_channels=3, dit_width=8, patch_size=(1, 1, 1),
                                                                rate=(1, 1, 2), variant="only_lr"))
    video = torch.arange(29.0).view(1, 1, 29, 1, 1).expand(1, 3, 29, 2, 2)  # 8 latents; pixel i holds i
    pieces = [video[:, :, :13], video[:, :, 13:]]  # latents 0-3 (the video's start), then a section of 4
    state = SimpleNamespace(pixels=pieces[0])  # what the memory kept of the video so far
    low_res = section_low_res(model, state, pieces[1], 4)
    # its two memory frames hold latents 4, 5 (pixels 13..20) and 6, 7 (pixels 21..28)
    assert torch.allclose(low_res[0, 0, :, 0, 0], torch.tensor([16.5, 24.5]))
    alone = model.encoder.low_res_latents(pieces[1], codec, (4, 2, 2))  # the section as if it began a video
    assert not torch.allclose(alone[0, 0, :, 0, 0], low_res[0, 0, :, 0, 0])
