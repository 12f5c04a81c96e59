"""The context planner: the paper's worked example, and agreement with φ's real output."""
import math

import pytest
import torch

from framemem.cli.main import main
from framemem.models.codecs import SpaceToDepthCodec
from framemem.config import get_preset
from framemem.models.memory_encoder import MemoryEncoder
from framemem.plan import framepack_tokens, plan

RATES = [(h, w, t) for h in (1, 2, 4, 8) for w in (1, 2, 4, 8) for t in (1, 2, 4, 8)]


def test_paper_worked_example():
    config = get_preset("wan-14b")  # 8x VAE, 2x2 patches
    sixty = plan(config, 480, 832, 24, 60, rates=[(4, 4, 2)])
    assert sixty["rows"][0]["memory_tokens"] == 561_600
    twenty = plan(config, 480, 832, 24, 20, rates=[(4, 4, 2)])
    full, rate = twenty["rows"][0], twenty["rows"][1]
    assert full["memory_tokens"] == 187_200
    assert rate["memory_tokens_ideal"] == 5_850 and rate["memory_tokens"] == 60 * 8 * 13
    # FramePack: 1 frame at the patch, 2 at 2x (15 x 26), the other 117 at 4x (30 blocks of 8 x 13)
    assert twenty["rows"][-1]["memory_tokens"] == 30 * 52 + 15 * 26 + 30 * 8 * 13
    assert framepack_tokens((120, 30, 52)) == twenty["rows"][-1]["memory_tokens"]
    # attention cost is quadratic in the sequence: memory + a 1 s section
    n = rate["sequence"]
    assert n == 6_240 + 6 * 30 * 52
    assert rate["attention_tflops"] == pytest.approx(4 * n * n * 5120 * 40 / 1e12)


def test_padded_counts_agree_with_the_encoders_real_output_for_every_rate():
    config = get_preset("tiny")  # space-to-depth x4, patch 2: 8-pixel units
    height, width, frames = 40, 56, 6  # token grid 6 x 5 x 7: nothing divides evenly
    codec = SpaceToDepthCodec(4)
    patch = torch.nn.Conv3d(48, 8, (1, 2, 2), stride=(1, 2, 2))
    video = torch.rand(1, 3, frames, height, width) * 2 - 1
    latents = codec.encode(video)
    result = plan(config, height, width, config.model.fps, frames / config.model.fps, rates=RATES)
    assert result["token_grid"] == [6, 5, 7]
    for rate, row in zip(RATES, result["rows"][1:]):
        encoder = MemoryEncoder(latent_channels=48, dit_width=8, rate=rate, widths=(4, 4, 4, 4), attention_heads=2)
        with torch.no_grad():
            memory = encoder(video, latents, codec, patch)
        assert memory.tokens.shape[1] == row["memory_tokens"] == encoder.token_count(tuple(latents.shape[2:])), rate
        assert row["memory_tokens_ideal"] == pytest.approx(6 * 5 * 7 / math.prod(rate))


def test_plan_command_prints_the_table_and_rejects_bad_input(capsys, tmp_path):
    assert main(["plan", "--model", "wan2.2-ti2v-5b", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "| rate 4x4x2 | 1,680 | 1,462 |" in out and (tmp_path / "p.json").exists()
    for bad in (["--resolution", "830x480"], ["--resolution", "wide"], ["--rate", "3x3x3"], ["--seconds", "-1"]):
        assert main(["plan", "--model", "wan-14b", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("framemem: error:")


def test_the_per_step_cost_with_and_without_memory_reuse_is_what_the_dit_computes():
    """Matrix-multiply FLOPs inside the DiT's blocks, counted by torch, against the planner's
    (attention itself is not counted by torch on a CPU, so its term is set apart)."""
    from torch.utils.flop_counter import FlopCounterMode

    from framemem.models.memory_dit import MemoryDiT, build_transformer
    from framemem.models.memory_encoder import MemoryTokens

    config = get_preset("tiny")
    mc = config.model
    result = plan(config, mc.height, mc.width, mc.fps, mc.seconds, [mc.rate])
    row, s = result["rows"][1], result["section_tokens"]
    m, n, layers, d = row["memory_tokens"], row["sequence"], result["dit"]["layers"], result["dit"]["width"]
    transformer = build_transformer(mc).eval()
    joint, once = MemoryDiT(transformer), MemoryDiT(transformer, memory_attention="memory_only")
    x, frames, t = torch.randn(2, 48, 4, 16, 16), torch.arange(4.0)[None].expand(2, -1), torch.rand(2, 4)
    memory = MemoryTokens(torch.randn(1, m, d), torch.rand(m, 3) * 8, None)
    text = torch.zeros(2, config.ar.text_tokens, mc.transformer["text_dim"])

    def block_flops(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        counts = counter.get_flop_counts()
        outside = [k for k in counts if k.endswith(("condition_embedder", ".proj_out")) or k == "WanTimeTextImageEmbedding"]
        matmul = lambda k: sum(v for op, v in counts[k].items() if "mm" in str(op))  # noqa: E731
        return (matmul("Global") - sum(matmul(k) for k in outside)) / 1e12

    with torch.no_grad():
        cache = once.memory_keys_values(memory)
        measured = {"step_tflops": block_flops(lambda: joint(x, frames, t, MemoryTokens(memory.tokens.expand(2, -1, -1),
                                                                                        memory.positions, None), text)),
                    "step_tflops_reused": block_flops(lambda: once(x, frames, t, None, text, memory_cache=cache)),
                    "once_tflops": block_flops(lambda: once.memory_keys_values(memory))}
    attention = {"step_tflops": 2 * layers * 4 * n * n * d, "step_tflops_reused": 2 * layers * 4 * s * n * d,
                 "once_tflops": (layers - 1) * 4 * m * m * d}
    for key, value in measured.items():
        assert row[key] - attention[key] / 1e12 == pytest.approx(value, rel=0.03), key
    assert row["step_tflops_reused"] < 0.7 * row["step_tflops"]
