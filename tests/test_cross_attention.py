"""The cross-attention enhancement (`model.cross_attention`): φ's penultimate features read
by every DiT block through an added, zero-initialised cross-attention."""
import dataclasses
import json

import pytest
import torch

from framemem.errors import FrameMemError
from framemem.models.framemem import FrameMem
from framemem.pipelines.memory_state import MemoryState


def _model(config, memory_attention="joint", layers=2):
    config.model.transformer["num_layers"] = layers
    config.model.cross_attention = True
    config.model.memory_attention = memory_attention
    return FrameMem.build(config).eval()


def _wake(model):
    """Non-zero value projections: a trained model's."""
    with torch.no_grad():
        for project in model.encoder.feature_attention:
            project.to_v.weight.normal_(0, 0.5)


def _inputs(model, history_frames=16):
    torch.manual_seed(3)
    video = torch.rand(1, 3, history_frames, 32, 32) * 2 - 1
    _, memory = model.encode_history(video)
    x = torch.randn(2, model.codec.channels, 2, 8, 8)
    frames = torch.tensor([[3.0, 17.0], [5.0, 18.0]])
    return x, frames, torch.rand(2, 2), dataclasses.replace(memory, tokens=memory.tokens.expand(2, -1, -1)), \
        torch.randn(2, 4, 8)


@pytest.mark.parametrize("memory_attention", ["joint", "memory_only"])
def test_a_fresh_cross_attention_model_equals_the_model_without_it(config, memory_attention):
    model = _model(config, memory_attention)
    x, frames, t, memory, text = _inputs(model)
    assert memory.features.shape == (1, memory.tokens.shape[1], 32)  # φ's last width
    plain = FrameMem.build(_plain(config)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)  # the same weights but for the added projections
    with torch.no_grad():
        ours = model.dit(x, frames, t, memory, text)
        without = plain.dit(x, frames, t, dataclasses.replace(memory, features=None, feature_attention=None), text)
        _wake(model)
        woken = model.dit(x, frames, t, memory, text)
    assert (ours - without).abs().max() < 1e-5
    assert (woken - ours).abs().max() > 1e-3  # the added path is live


def _plain(config):
    import copy

    other = copy.deepcopy(config)
    other.model.cross_attention = False
    return other


def test_memory_read_once_reuses_the_feature_keys_values(config):
    model = _model(config, "memory_only")
    _wake(model)
    x, frames, t, memory, text = _inputs(model)
    one = dataclasses.replace(memory, tokens=memory.tokens[:1])
    with torch.no_grad():
        cache = model.dit.memory_keys_values(one)
        assert len(cache.features) == 2
        recomputed = model.dit(x, frames, t, memory, text)
        reused = model.dit(x, frames, t, text=text, memory_cache=cache)
    assert (reused - recomputed).abs().max() < 1e-5


def test_appending_with_features_equals_encoding_the_whole_history_and_survives_save(config, tmp_path):
    model = _model(config)
    video = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    _, whole = model.encode_history(video)
    state = MemoryState(model)
    block = model.encoder.block_frames
    for start in range(0, 16, block):
        latents, low_res = model.history_latents(video[:, :, start:start + block])
        state.append(latents, low_res)
    appended = state.memory()
    assert (appended.features - whole.features).abs().max() < 1e-5
    assert (appended.tokens - whole.tokens).abs().max() < 1e-5
    state.save(tmp_path / "m.safetensors")
    loaded = MemoryState.load(tmp_path / "m.safetensors", model).memory()
    assert torch.equal(loaded.features, appended.features) and loaded.feature_attention is model.encoder.feature_attention
    plain = FrameMem.build(_plain(config))
    with pytest.raises(FrameMemError, match="cross_attention True \\(model: False\\)"):
        MemoryState.load(tmp_path / "m.safetensors", plain)


def test_cross_attention_trains_in_stage_1_with_a_lora_on_the_dit(config):
    from framemem.training.stage1_retrieval import retrieval_loss

    model = _model(config, layers=1)
    model.dit.add_lora(rank=4)  # the Wan presets' way: a frozen DiT with a LoRA
    loss = retrieval_loss(model, torch.rand(2, 3, 16, 32, 32) * 2 - 1, config.train, torch.Generator().manual_seed(0))
    loss.backward()
    value = model.encoder.feature_attention[0].to_v.weight.grad
    assert value is not None and value.abs().sum() > 0  # the zero projection learns from the first step
    assert all(p.grad is not None for n, p in model.dit.named_parameters() if "lora_A" in n and "attn2" in n)


def test_cross_attention_is_saved_loaded_and_trained_in_stage_2(config, tmp_path):
    """Both stages on the project's own trainers: the projections come back from the stage-1
    checkpoint and stage 2 trains them (φ's other weights stay frozen, as by default)."""
    from framemem.training.trainer import pretrain
    from framemem.training.stage2_autoregressive import finetune

    config.model.cross_attention, config.train.steps = True, 2
    pretrain(config, tmp_path / "s1")
    stage1 = FrameMem.from_pretrained(tmp_path / "s1" / "model")
    x, frames, t, memory, text = _inputs(stage1)
    assert memory.feature_attention is stage1.encoder.feature_attention
    finetune(config, tmp_path / "s1" / "model", tmp_path / "s2")
    stage2 = FrameMem.from_pretrained(tmp_path / "s2" / "model")
    before, after = stage1.encoder.state_dict(), stage2.encoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("feature_attention.") for k in moved)
    from framemem import FrameMemPipeline

    assert FrameMemPipeline.from_pretrained(tmp_path / "s2" / "model").estimate_seconds(1.0, 2, 3.0) > 0  # times the features too


def test_bad_cross_attention_settings_are_one_line(config, tmp_path, capsys):
    from framemem.cli.main import main

    config.model.cross_attention = True
    with pytest.raises(FrameMemError, match="variant only_lr has none"):
        FrameMem.build(config, "only_lr")
    FrameMem.build(_plain(config)).save_pretrained(tmp_path / "m")  # a checkpoint without it
    saved = json.loads((tmp_path / "m" / "framemem.json").read_text())
    saved["model"]["cross_attention"] = True
    (tmp_path / "m" / "framemem.json").write_text(json.dumps(saved))
    assert main(["retrieve", "--checkpoint", str(tmp_path / "m"), "--video", "any.mp4", "--times", "1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("framemem: error: ") and "framemem.json asks for cross_attention true, " \
        "memory_encoder/config.json has 0 cross-attention layers" in err and "\n" not in err
    assert main(["finetune", "--preset", "tiny", "--memory-checkpoint", "tiny", "--out", str(tmp_path / "f"),
                 "--set", "model.cross_attention=true"]) == 2
    assert "fine-tuning keeps the stage-1 checkpoint's model; set it in stage 1" in capsys.readouterr().err
    from framemem.config import get_preset

    preset = get_preset("tiny")
    preset.override("model.cross_attention=yes")
    assert preset.model.cross_attention is True
