"""Memory that reads only memory (`model.memory_attention = "memory_only"`) and its keys and
values computed once per section."""
import json

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from framemem.errors import FrameMemError
from framemem.models.memory_dit import MemoryDiT, build_transformer
from framemem.models.memory_encoder import MemoryTokens


def _inputs(dit, batch=2, memory_tokens=7, frames=3):
    torch.manual_seed(1)
    x = torch.randn(batch, 48, frames, 8, 8)
    at = (20 + torch.arange(float(frames)))[None].expand(batch, -1)
    t = torch.rand(batch, frames)
    memory = MemoryTokens(torch.randn(batch, memory_tokens, dit.inner_dim), torch.rand(memory_tokens, 3) * 6, None)
    return x, at, t, memory, torch.randn(batch, 4, 8)


class _Masked(WanAttnProcessor):
    """The stock processor with an attention mask of our choosing (the block passes none)."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, self.mask, rotary_emb)


class _RowsZeroed(WanAttnProcessor):
    """The stock cross-attention with the output of the first `m` tokens zeroed (they skip the prompt)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        out = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        return torch.cat([torch.zeros_like(out[:, : self.m]), out[:, self.m :]], dim=1)


def test_memory_only_equals_the_stock_blocks_with_a_block_causal_mask(config):
    """The reference runs [memory ; targets] through diffusers' own blocks, memory queries
    masked from the targets and memory rows cut from the prompt's cross-attention. Two
    layers: in one, what memory becomes is never read."""
    config.model.transformer["num_layers"] = 2
    transformer = build_transformer(config.model).eval()
    joint, memory_only = MemoryDiT(transformer), MemoryDiT(transformer, memory_attention="memory_only")
    x, at, t, memory, text = _inputs(joint)
    m, n = memory.tokens.shape[1], memory.tokens.shape[1] + 3 * 16
    mask = torch.ones(n, n, dtype=torch.bool)
    mask[:m, m:] = False  # memory does not see the targets
    with torch.no_grad():
        ours = memory_only(x, at, t, memory, text)
        plain = joint(x, at, t, memory, text)
        for block in transformer.blocks:
            block.attn1.set_processor(_Masked(mask))
            block.attn2.set_processor(_RowsZeroed(m))
        reference = joint(x, at, t, memory, text)
    assert (ours - reference).abs().max() < 1e-5
    assert (ours - plain).abs().max() > 1e-3  # a different model from the joint one


def test_memory_only_without_memory_is_the_stock_forward(config):
    transformer = build_transformer(config.model).eval()
    x, at, t, _, text = _inputs(MemoryDiT(transformer))
    with torch.no_grad():
        stock = MemoryDiT(transformer)(x, at, t, text=text)
        ours = MemoryDiT(transformer, memory_attention="memory_only")(x, at, t, text=text)
    assert (ours - stock).abs().max() < 1e-5


def test_cached_keys_values_give_what_recomputing_gives_and_ignore_the_targets(config):
    config.model.transformer["num_layers"] = 2
    dit = MemoryDiT(build_transformer(config.model), memory_attention="memory_only").eval()
    x, at, t, memory, text = _inputs(dit)
    one = MemoryTokens(memory.tokens[:1], memory.positions, None)
    with torch.no_grad():
        cache = dit.memory_keys_values(one)  # batch 1, broadcast to both branches
        assert cache.tokens == 7 and len(cache.keys) == len(dit.transformer.blocks)
        recomputed = dit(x, at, t, MemoryTokens(one.tokens.expand(2, -1, -1), memory.positions, None), text)
        reused = dit(x, at, t, text=text, memory_cache=cache)
        again = dit(x.flip(0), at, t.flip(0), text=text.flip(0), memory_cache=cache)
    assert (reused - recomputed).abs().max() < 1e-5
    assert (again - reused.flip(0)).abs().max() < 1e-5


def test_a_section_with_reused_memory_equals_recomputing_it_every_step(tmp_path):
    import shutil

    import framemem
    from framemem import FrameMemPipeline

    shutil.copytree(framemem.pretrained("tiny-ar"), tmp_path / "m")  # the shipped weights, read memory-only
    saved = json.loads((tmp_path / "m" / "framemem.json").read_text())
    saved["model"]["memory_attention"] = "memory_only"
    (tmp_path / "m" / "framemem.json").write_text(json.dumps(saved))
    pipe = FrameMemPipeline.from_pretrained(tmp_path / "m")
    assert pipe.model.dit.memory_attention == "memory_only"
    state = pipe.encode_memory(video=torch.rand(3, 16, 64, 64) * 2 - 1)
    latents = torch.randn(1, 48, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    embeds = pipe.encode_prompt(["a red square", ""])
    calls = []
    original = pipe.model.dit.memory_keys_values
    pipe.model.dit.memory_keys_values = lambda memory: calls.append(1) or original(memory)
    reused = pipe.denoise_section(state.memory(), state.latent_frames, embeds, latents, 4, 3.0)
    assert len(calls) == 1  # once for 4 steps × 2 branches
    recomputed = pipe.denoise_section(state.memory(), state.latent_frames, embeds, latents, 4, 3.0,
                                      reuse_memory=False)
    assert len(calls) == 1 + 4  # every step
    assert (reused - recomputed).abs().max() < 1e-5


def test_memory_only_trains_its_memory_with_and_without_checkpointing(config):
    from framemem.models.framemem import FrameMem
    from framemem.training.stage1_retrieval import retrieval_loss

    config.model.memory_attention = "memory_only"
    model = FrameMem.build(config)
    history = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.dit.transformer.enable_gradient_checkpointing()
        retrieval_loss(model, history, config.train, torch.Generator().manual_seed(0)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert any(n.startswith("encoder.") and g.abs().sum() > 0 for n, g in grads[0].items())  # φ learns through memory
    assert grads[0].keys() == grads[1].keys()
    assert all((grads[0][n] - grads[1][n]).abs().max() < 1e-5 for n in grads[0])


def test_memory_only_takes_a_lora(config):
    dit = MemoryDiT(build_transformer(config.model), memory_attention="memory_only")
    x, at, t, memory, text = _inputs(dit)
    with torch.no_grad():
        before = dit(x, at, t, memory, text)
    dit.add_lora(rank=4)
    with torch.no_grad():
        assert (dit(x, at, t, memory, text) - before).abs().max() < 1e-6  # LoRA starts as identity
    dit(x, at, t, memory, text).square().mean().backward()
    lora = [p for n, p in dit.named_parameters() if "lora_A" in n and "attn1" in n]
    assert lora and all(p.grad is not None for p in lora)


def test_bad_memory_attention_settings_are_one_line(config, tmp_path, capsys):
    from framemem.cli.main import main
    from framemem.config import get_preset
    from framemem.models.framemem import FrameMem

    assert all(get_preset(p).model.memory_attention == "joint" for p in ("tiny", "wan2.2-ti2v-5b", "wan-14b"))
    joint = MemoryDiT(build_transformer(config.model))
    x, at, t, memory, text = _inputs(joint)
    with pytest.raises(FrameMemError, match="memory_cache needs model.memory_attention = memory_only"):
        joint(x, at, t, text=text, memory_cache=MemoryDiT(joint.transformer, memory_attention="memory_only")
              .memory_keys_values(memory))
    config.model.memory_attention = "memory_only"
    FrameMem.build(config).save_pretrained(tmp_path / "m")
    assert FrameMem.from_pretrained(tmp_path / "m").dit.memory_attention == "memory_only"
    saved = json.loads((tmp_path / "m" / "framemem.json").read_text())
    saved["model"]["memory_attention"] = "cached"
    (tmp_path / "m" / "framemem.json").write_text(json.dumps(saved))
    assert main(["retrieve", "--checkpoint", str(tmp_path / "m"), "--video", "any.mp4", "--times", "1",
                 "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == \
        "framemem: error: memory_attention = cached: must be one of joint, memory_only"


def test_memory_attention_is_set_from_the_command_line_in_stage_1_only(tmp_path, capsys):
    from framemem.cli.main import main
    from framemem.config import get_preset

    config = get_preset("tiny")
    config.override("model.memory_attention=memory_only")
    assert config.model.memory_attention == "memory_only"
    with pytest.raises(FrameMemError, match="model.NAME with NAME a plain field"):
        config.override("model.rate=2")  # a tuple: --rate sets it
    assert main(["pretrain", "--preset", "tiny", "--out", str(tmp_path / "r"), "--set", "model.memory_attention=all"]) == 2
    assert capsys.readouterr().err.strip() == "framemem: error: memory_attention = all: must be one of joint, memory_only"
    assert main(["finetune", "--preset", "tiny", "--memory-checkpoint", "tiny", "--out", str(tmp_path / "f"),
                 "--set", "model.memory_attention=memory_only"]) == 2
    assert "fine-tuning keeps the stage-1 checkpoint's model; set it in stage 1" in capsys.readouterr().err
