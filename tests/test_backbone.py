import torch
from diffusers import WanTransformer3DModel

from framemem.models.memory_dit import MemoryDiT, build_transformer, grid_positions
from framemem.models.memory_encoder import MemoryTokens


def test_no_memory_reproduces_stock_forward(config):
    transformer = build_transformer(config.model).eval()
    dit = MemoryDiT(transformer)
    x = torch.randn(2, 48, 3, 8, 8)
    t = torch.tensor([0.25, 0.9])
    text = torch.randn(2, 1, 8)
    with torch.no_grad():
        stock = transformer(x, t * 1000, text).sample
        ours = dit(x, torch.arange(3.0)[None].expand(2, 3), t, text=text)
    assert ours.shape == stock.shape
    assert (ours - stock).abs().max() < 1e-5


def test_memory_changes_targets_and_positions_matter(config):
    dit = MemoryDiT(build_transformer(config.model)).eval()
    x = torch.randn(1, 48, 1, 8, 8)
    frames = torch.tensor([[2.0]])
    t = torch.tensor([1.0])
    memory = torch.randn(1, 6, dit.inner_dim)
    pos = torch.rand(6, 3) * 4
    with torch.no_grad():
        plain = dit(x, frames, t)
        with_mem = dit(x, frames, t, MemoryTokens(memory, pos, None))
        moved = dit(x, frames, t, MemoryTokens(memory, pos + torch.tensor([3.0, 0, 0]), None))
    assert with_mem.shape == plain.shape == (1, 48, 1, 8, 8)
    assert not torch.allclose(plain, with_mem, atol=1e-4)
    assert not torch.allclose(with_mem, moved, atol=1e-5)


def test_grid_positions_layout():
    pos = grid_positions(torch.tensor([[5.0, 9.0]]), 2, 3)
    assert pos.shape == (1, 12, 3)
    assert pos[0, 0].tolist() == [5.0, 0.0, 0.0]
    assert pos[0, 5].tolist() == [5.0, 1.0, 2.0]
    assert pos[0, 6].tolist() == [9.0, 0.0, 0.0]


def test_lora_trains_only_adapters_and_starts_as_identity(config):
    dit = MemoryDiT(build_transformer(config.model)).eval()
    x, frames, t = torch.randn(1, 48, 2, 8, 8), torch.tensor([[0.0, 1.0]]), torch.tensor([0.5])
    with torch.no_grad():
        before = dit(x, frames, t)
    dit.add_lora(rank=4)
    trainable = [n for n, p in dit.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    with torch.no_grad():
        after = dit(x, frames, t)
    assert torch.allclose(before, after, atol=1e-6)
    assert isinstance(dit.transformer, WanTransformer3DModel)


def test_x0_prediction_returns_the_networks_output_as_the_x0_estimate(config):
    from framemem.flow import estimate_x0

    transformer = build_transformer(config.model).eval()
    velocity, clean = MemoryDiT(transformer), MemoryDiT(transformer, "x0")  # one network, read two ways
    x = torch.randn(2, 48, 3, 8, 8)
    frames = torch.arange(3.0)[None].expand(2, 3)
    memory = MemoryTokens(torch.randn(2, 5, velocity.inner_dim), torch.rand(5, 3) * 3, None)
    with torch.no_grad():
        raw = velocity(x, frames, torch.ones(2, 3), memory)  # the network's output, as is
        at_one = clean(x, frames, torch.ones(2, 3), memory)
        assert (estimate_x0(x, at_one, torch.ones(2, 3)) - raw).abs().max() < 1e-5
        t = torch.tensor([[0.5, 0.25, 0.01]]).expand(2, 3)
        raw = velocity(x, frames, t, memory)
        expected = (x - raw) / torch.tensor([0.5, 0.25, 0.05])[None, None, :, None, None]  # t clamped at 0.05
        assert (clean(x, frames, t, memory) - expected).abs().max() < 1e-4


def test_the_prediction_type_is_saved_checked_and_the_wan_presets_keep_velocity(config, tmp_path, capsys):
    import json

    import pytest

    from framemem.cli.main import main
    from framemem.config import get_preset
    from framemem.errors import FrameMemError
    from framemem.models.framemem import FrameMem

    assert all(get_preset(p).model.prediction_type == "velocity" for p in ("tiny", "wan2.2-ti2v-5b", "wan-14b"))
    config.model.prediction_type = "x0"
    FrameMem.build(config).save_pretrained(tmp_path / "x0")
    assert FrameMem.from_pretrained(tmp_path / "x0").dit.prediction_type == "x0"
    saved = json.loads((tmp_path / "x0" / "framemem.json").read_text())
    saved["model"]["prediction_type"] = "epsilon"
    (tmp_path / "x0" / "framemem.json").write_text(json.dumps(saved))
    assert main(["retrieve", "--checkpoint", str(tmp_path / "x0"), "--video", "any.mp4", "--times", "1",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "framemem: error: prediction_type = epsilon: must be one of velocity, x0"
    with pytest.raises(FrameMemError, match="unknown prediction type"):
        MemoryDiT(build_transformer(config.model), "eps")
