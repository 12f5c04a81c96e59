"""Several memory encoders in one model (paper §4.5): e.g. 4x4x2 + 2x2x8, each at its own
rate and positions, tokens side by side, appended exactly as one encoder's."""
import json

import pytest
import torch

from framemem.cli.main import main
from framemem.rates import parse_rate
from framemem.errors import FrameMemError
from framemem.models.framemem import FrameMem
from framemem.models.memory_encoder import memory_positions
from framemem.models.multi_encoder import MultiMemoryEncoder
from framemem.pipelines.memory_state import MemoryState, section_low_res
from framemem.plan import plan

RATES = "4x4x2+2x2x8"


def _model(config, rate=RATES, window_frames=0):
    config.model.rate = parse_rate(rate)
    config.ar.window_frames = window_frames
    model = FrameMem.build(config).eval()
    for encoder in model.encoder.per_rate:  # a trained HR branch: not zero
        torch.nn.init.normal_(encoder.proj_out.weight, std=0.05)
    return model


def test_each_encoder_has_its_own_rate_and_positions_and_the_counts_agree_with_plan(config):
    model = _model(config)
    assert isinstance(model.encoder, MultiMemoryEncoder) and model.encoder.block_frames == 8  # lcm(2, 8)
    video = torch.rand(1, 3, 16, 32, 32) * 2 - 1  # 16 latent frames, 4x4 tokens each
    with torch.no_grad():
        _, memory = model.encode_history(video)
    counts = model.token_counts(16, 32, 32)
    row = plan(config, 32, 32, config.model.fps, 16 / config.model.fps, [config.model.rate])["rows"][1]
    assert memory.tokens.shape[1] == counts["memory"] == row["memory_tokens"] == 8 * 1 * 1 + 2 * 2 * 2
    assert row["name"] == f"rate {RATES}"
    # per unit of 8 latent frames: 4 tokens of 4x4x2 (one per 2 frames), then 4 of 2x2x8 (2x2 over 8 frames)
    fine = memory_positions((16, 4, 4), (2, 4, 4)).unflatten(0, (2, 4))
    coarse = memory_positions((16, 4, 4), (8, 2, 2)).unflatten(0, (2, 4))
    assert torch.equal(memory.positions, torch.cat([fine, coarse], dim=1).flatten(0, 1))
    # each encoder's tokens are its own φ's
    one = model.encoder.encoders[1]
    latents, low_res = model.history_latents(video)
    with torch.no_grad():
        alone = one.encode_latents(latents, low_res[1], model.dit.patch_embedding)
    assert torch.allclose(memory.tokens.unflatten(1, (2, 8))[:, :, 4:], alone.tokens.unflatten(1, (2, 4)), atol=1e-6)


@pytest.mark.parametrize("window_frames", [0, 3])
def test_appends_with_two_encoders_equal_encoding_the_whole_history(config, tmp_path, window_frames):
    model = _model(config, window_frames=window_frames)
    video = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        latents, whole = model.encode_history(video)
        expected = model.context(whole, latents, latents.shape[2])
        state = MemoryState(model)
        for start in (0, 8):  # one unit of 8 latent frames at a time, LR input as generation makes it
            pixels = video[:, :, start : start + 8]
            state.append(model.codec.encode(pixels), section_low_res(model, state, pixels, 8), pixels)
        appended = state.memory()
        assert state.tokens == appended.tokens.shape[1] == expected.tokens.shape[1]
        assert (appended.tokens - expected.tokens).abs().max() <= 1e-5
        assert torch.equal(appended.positions, expected.positions)
        window = MemoryState(model, max_blocks=1)  # the older unit leaves: both encoders' tokens of it
        for start in (0, 8):
            window.append(*model.history_latents(video[:, :, start : start + 8]))
    per_unit = whole.tokens.shape[1] // 2
    assert torch.allclose(window.memory().tokens[:, :per_unit], whole.tokens[:, per_unit:], atol=1e-5)
    state.save(tmp_path / "m.safetensors")
    assert torch.equal(MemoryState.load(tmp_path / "m.safetensors", model).memory().tokens, appended.tokens)
    with pytest.raises(FrameMemError, match="need whole blocks of 8"):
        state.append(latents[:, :, :2], None)
    other = _model(config, rate="4x4x2", window_frames=window_frames)
    with pytest.raises(FrameMemError, match="made by another model: rate"):
        MemoryState.load(tmp_path / "m.safetensors", other)


def test_two_encoders_train_save_and_load(config, tmp_path):
    from framemem.training.trainer import pretrain

    config.model.rate = parse_rate(RATES)
    config.train.steps = 2
    pretrain(config, tmp_path / "run")
    model = FrameMem.from_pretrained(tmp_path / "run" / "model")
    assert isinstance(model.encoder, MultiMemoryEncoder) and len(model.encoder.encoders) == 2
    assert json.loads((tmp_path / "run" / "model" / "framemem.json").read_text())["model"]["rate"] == [[4, 4, 2], [2, 2, 8]]
    video = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    trained = FrameMem.build(config)
    trained.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model.encode_history(video)[1].tokens, trained.eval().encode_history(video)[1].tokens)
    # stage 2 from it: sections are whole units of both encoders (8 latent frames)
    run = tmp_path / "ar"
    assert main(["finetune", "--memory-checkpoint", str(tmp_path / "run" / "model"), "--out", str(run),
                 "--steps", "1", "--batch-size", "1"]) == 0
    (tmp_path / "story.yaml").write_text("prompts:\n  - at: 0\n    prompt: a cat\n")
    out = tmp_path / "gen.mp4"
    assert main(["generate", "--checkpoint", str(run / "model"), "--storyboard", str(tmp_path / "story.yaml"),
                 "--seconds", "4", "--steps", "1", "--out", str(out)]) == 0
    sections = json.loads(out.with_suffix(".json").read_text())["sections"]
    assert [s["memory_tokens"] for s in sections] == [0, 8]  # two 2 s sections; the second reads both encoders


@pytest.mark.parametrize("args, message", [
    (["--rate", "+"], "an empty list of memory encoders"),
    (["--rate", ""], "an empty list of memory encoders"),
    (["--rate", "4x4x2+3x3x3"], "need three factors HxWxT"),
    (["--rate", RATES, "--set", "model.cross_attention=true"], "several memory encoders do not combine"),
    (["--rate", RATES, "--variant", "framepack"], "do not combine with the FramePack schedule"),
])
def test_bad_encoder_lists_are_one_line(tmp_path, capsys, args, message):
    code = main(["pretrain", "--out", str(tmp_path / "run"), "--steps", "1", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("framemem: error:") and message in err and "\n" not in err, err


def test_an_empty_list_in_a_config_file_is_one_line(config):
    data = config.to_dict()
    data["model"]["rate"] = []
    with pytest.raises(FrameMemError, match="an empty list of memory encoders"):
        type(config).from_dict(data)


def test_a_cache_holds_every_encoders_low_res_input_and_trains_both_stages(config, tmp_path, procedural_mp4):
    import numpy as np

    from framemem.data.cache import CachedHistories, build_cache
    from framemem.data.video import load_frames, to_model
    from framemem.training.stage2_autoregressive import finetune
    from framemem.training.trainer import pretrain

    for i, seconds in enumerate((5.0, 6.0)):
        procedural_mp4(seconds, name=f"v{i}.mp4", seed=i, size=32)
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        (tmp_path / f"v{i}.mp4").rename(videos / f"v{i}.mp4")
    config.model.rate = parse_rate(RATES)
    manifest = build_cache(config, videos, tmp_path / "cache")
    model = FrameMem.build(config)
    histories = CachedHistories(tmp_path / "cache", config, model.encoder.block_frames)
    record = next(v for v in manifest["videos"] if v["source"].endswith("v1.mp4"))
    pixels = to_model(load_frames(record["source"], 4.0, 32, 32)[None])[:, :, 8:16]
    latents, low_res = model.history_latents(pixels)
    got_latents, got_low_res = histories._read(record, 8, 8)
    assert len(got_low_res) == 2 and torch.allclose(got_latents, latents[0], atol=1e-6)
    assert all(torch.allclose(a, b[0], atol=1e-6) for a, b in zip(got_low_res, low_res))
    batch = histories.batch(np.random.default_rng(0), 2, 16)
    assert [x.shape[0] for x in batch[1]] == [2, 2] and batch[1][1].shape[2] == 2  # 2x2x8: one LR frame per 8
    config.train.steps = 1
    pretrain(config, tmp_path / "run", cache=tmp_path / "cache")
    assert finetune(config, tmp_path / "run" / "model", tmp_path / "ar", cache=tmp_path / "cache").step == 1


def test_a_cache_serves_a_cross_attention_model_too(config):
    from framemem.data.cache import lr_geometry

    config.model.cross_attention = True  # one φ, with features: the LR geometry is the same
    assert lr_geometry(config, 48).block_frames == 2
