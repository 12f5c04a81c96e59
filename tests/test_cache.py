"""Chunked φ encoding and `framemem cache` (latents once, training from them after)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from framemem.data.cache import CachedHistories, build_cache, check_cache
from framemem.cli.main import main
from framemem.models.codecs import SpaceToDepthCodec
from framemem.config import get_preset
from framemem.rates import parse_rate
from framemem.errors import FrameMemError
from framemem.models.memory_encoder import MemoryEncoder
from framemem.models.framemem import FrameMem
from framemem.training.trainer import pretrain
from framemem.data.video import load_frames, to_model


@pytest.mark.parametrize("variant", ["proposed", "only_lr", "without_lr", "large_patchifier"])
def test_chunked_encoding_equals_the_whole(variant):
    codec = SpaceToDepthCodec(factor=2)
    patch = torch.nn.Conv3d(12, 16, (1, 2, 2), stride=(1, 2, 2))
    enc = MemoryEncoder(latent_channels=12, dit_width=16, rate=(2, 2, 2), widths=(4, 8, 8, 8),
                        attention_heads=2, variant=variant)
    if hasattr(enc, "proj_out"):
        torch.nn.init.normal_(enc.proj_out.weight, std=0.1)  # make the HR branch count
    video = torch.rand(1, 3, 11, 24, 20) * 2 - 1  # 11 frames: the last block is padded
    with torch.no_grad():
        whole = enc(video, codec.encode(video), codec, patch)
        for chunk in (1, 2, 4):
            chunked = enc(video, codec.encode(video), codec, patch, chunk_blocks=chunk)
            assert (chunked.tokens - whole.tokens).abs().max() <= 1e-5
            assert torch.equal(chunked.positions, whole.positions)


@pytest.fixture
def video_folder(tmp_path, procedural_mp4):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i, seconds in enumerate((3.0, 6.0, 4.0, 5.0)):
        procedural_mp4(seconds, name=f"videos/v{i}.mp4", seed=i)
    (folder / "v0.txt").write_text("a red square drifts\n")
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    return folder


def test_cache_matches_encoding_the_pixels_and_resumes(tmp_path, video_folder):
    config = get_preset("tiny")
    manifest = build_cache(config, video_folder, tmp_path / "cache", shard_videos=3)
    assert len(manifest["videos"]) == 4 and list(manifest["skipped"]) == [str((video_folder / "broken.mp4").resolve())]
    assert {v["caption"] for v in manifest["videos"]} == {"a red square drifts", None}
    assert len(list((tmp_path / "cache" / "shards").glob("*.safetensors"))) == 2  # 3 + 1 videos

    again = build_cache(config, video_folder, tmp_path / "cache")  # resumes: nothing left to do
    assert again["processed_per_rank"] == [0] and again["videos"] == manifest["videos"]
    with open(tmp_path / "cache" / "progress" / "rank-0.jsonl", "a") as f:
        f.write('{"source": "/v')  # a kill mid-append: resume reads past it
    assert build_cache(config, video_folder, tmp_path / "cache")["videos"] == manifest["videos"]
    progress = (tmp_path / "cache" / "progress" / "rank-0.jsonl").read_text()
    assert progress.endswith("}\n") and '"/v' not in progress  # the next append starts a line of its own

    model = FrameMem.build(config)
    histories = CachedHistories(tmp_path / "cache", config, model.encoder.block_frames)
    latents, low_res = histories.batch(np.random.default_rng(0), 2, 8)
    assert latents.shape == (2, 48, 8, 16, 16) and low_res.shape == (2, 48, 4, 4, 4)
    # a cached window is exactly what encoding that window's pixels gives
    record = next(v for v in manifest["videos"] if v["source"].endswith("v1.mp4"))
    pixels = to_model(load_frames(record["source"], 4.0, 64, 64)[None])[:, :, 8:16]
    expected = model.history_latents(pixels)
    got = histories._read(record, 8, 8)
    assert torch.allclose(got[0], expected[0][0], atol=1e-6) and torch.allclose(got[1], expected[1][0], atol=1e-6)


def test_cache_from_another_preset_is_refused(tmp_path, video_folder, capsys):
    config = get_preset("tiny")
    build_cache(config, video_folder, tmp_path / "cache")
    other = get_preset("tiny")
    other.model.rate = parse_rate("2x2x2")
    with pytest.raises(FrameMemError, match="rate"):
        check_cache(tmp_path / "cache", other)
    capsys.readouterr()
    code = main(["pretrain", "--rate", "2x2x2", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cache was written for preset 'tiny'" in err[0]
    with pytest.raises(FrameMemError, match="not a folder of videos"):  # a typo in --data leaves no folder
        build_cache(config, tmp_path / "no-such-videos", tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_both_stages_read_the_cache(tmp_path, video_folder, config):
    from framemem.training.stage2_autoregressive import finetune

    config.model.height = config.model.width = 64
    build_cache(config, video_folder, tmp_path / "cache")
    config.train.steps = 2
    trainer = pretrain(config, tmp_path / "run", cache=tmp_path / "cache")
    assert trainer.step == 2 and (tmp_path / "run" / "model" / "framemem.json").is_file()
    histories = CachedHistories(tmp_path / "cache", config, trainer.unwrapped.encoder.block_frames)
    _, _, captions, text = histories.captioned_batch(np.random.default_rng(0), 8, 4)
    assert "a red square drifts" in captions and "" in captions and text is None  # hashed: trained, not cached
    trainer = finetune(config, tmp_path / "run" / "model", tmp_path / "ar", cache=tmp_path / "cache")
    assert trainer.step == 2 and (tmp_path / "ar" / "model" / "text_encoder").is_dir()


def test_two_processes_share_the_videos(tmp_path, video_folder):
    """Under torchrun, each rank caches its own slice: none twice, none missed."""
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "framemem.cli.main",
           "cache", "--preset", "tiny", "--data", str(video_folder), "--out", str(out), "--shard-videos", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["processed_per_rank"] == [3, 2]  # 5 files, [rank::2]
    sources = [v["source"] for v in manifest["videos"]] + list(manifest["skipped"])
    assert sorted(sources) == sorted(str(p.resolve()) for p in video_folder.glob("*.mp4"))
    ranks = {p.name: {json.loads(line)["source"] for line in p.read_text().splitlines()}
             for p in (out / "progress").glob("*.jsonl")}
    assert len(ranks) == 2 and not set.intersection(*ranks.values())


def test_a_frozen_text_encoder_has_its_caption_embeddings_cached(tmp_path, video_folder, config):
    from conftest import write_tiny_umt5

    from framemem.training.stage2_autoregressive import ar_loss, draw_batch
    from framemem.models.text_encoders import UMT5TextEncoder, build_text_encoder

    config.model.height = config.model.width = 64
    config.model.transformer["text_dim"] = 16
    config.ar.text_encoder, config.ar.text_tokens = "umt5", 6
    config.ar.text_encoder_path = str(write_tiny_umt5(tmp_path / "wan"))
    build_cache(config, video_folder, tmp_path / "cache")
    model = FrameMem.build(config)
    histories = CachedHistories(tmp_path / "cache", config, model.encoder.block_frames)
    encoder = UMT5TextEncoder(config.ar.text_encoder_path, max_tokens=6)
    captioned = next(v for v in histories.videos if v["caption"])
    expected = encoder([captioned["caption"]])[0]
    assert torch.allclose(histories.text(captioned), expected, atol=2e-2)  # stored in bf16
    assert torch.allclose(histories.null_text, encoder([""])[0], atol=2e-2)
    batch = draw_batch(histories, model, np.random.default_rng(1), 3)
    assert batch.text.shape == (3, 6, 16)
    model.text_encoder = build_text_encoder(config.ar, 16, None)
    loss = ar_loss(model, batch, config.ar, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
