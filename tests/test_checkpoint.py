"""Checkpoint folders: full DiT (tiny) and peft LoRA over real weights loaded from disk."""
import os

import pytest
import torch

from framemem.models.memory_dit import build_transformer
from framemem.errors import FrameMemError
from framemem.models.framemem import FrameMem


def _outputs(model, video):
    latents, memory = model.encode_history(video)
    x = torch.randn(1, latents.shape[1], 2, *latents.shape[3:], generator=torch.Generator().manual_seed(1))
    return model.dit(x, torch.tensor([[1.0, 5.0]]), torch.tensor([0.7]), memory)


def test_lora_over_local_base_weights_round_trips(config, tmp_path):
    build_transformer(config.model).save_pretrained(tmp_path / "wan" / "transformer")  # a "real" diffusers folder
    config.model.transformer_path = str(tmp_path / "wan")
    config.model.lora_rank = 4
    model = FrameMem.build(config).eval()
    trainable = {n for n, p in model.dit.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)
    with torch.no_grad():
        for name, p in model.dit.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)  # as if trained
        torch.nn.init.normal_(model.encoder.proj_out.weight, std=0.05)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "transformer_lora").is_dir() and not (tmp_path / "ckpt" / "transformer").exists()
    loaded = FrameMem.from_pretrained(tmp_path / "ckpt")
    video = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(_outputs(model, video), _outputs(loaded, video), atol=1e-5)


def test_save_is_atomic_and_replaces(config, tmp_path):
    model = FrameMem.build(config)
    model.save_pretrained(tmp_path / "ckpt")
    live = {k: v.clone() for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path / "ckpt", dtype=torch.float16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folders left
    assert all(torch.equal(live[k], v) for k, v in model.state_dict().items())  # the fp16 copy is a copy
    os.replace(tmp_path / "ckpt", tmp_path / ".ckpt.old")  # killed between the two renames of a save
    recovered = FrameMem.from_pretrained(tmp_path / "ckpt").state_dict()
    assert all(torch.allclose(recovered[k], v, atol=1e-3) for k, v in live.items())
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    mask = os.umask(0o022)  # the folder comes from mkdtemp (0700), its weights from safetensors (0600)
    try:
        model.save_pretrained(tmp_path / "ckpt")
    finally:
        os.umask(mask)
    items = [tmp_path / "ckpt", *(tmp_path / "ckpt").rglob("*")]
    assert {p.stat().st_mode & 0o777 for p in items if p.is_dir()} == {0o755}
    assert {p.stat().st_mode & 0o777 for p in items if p.is_file()} == {0o644}
    loaded = FrameMem.from_pretrained(tmp_path / "ckpt")
    assert next(loaded.dit.parameters()).dtype == torch.float32


@pytest.mark.parametrize("variant", ["only_lr", "without_lr", "large_patchifier", "framepack"])
def test_every_variant_round_trips(config, tmp_path, variant):
    model = FrameMem.build(config, variant).eval()
    if variant == "without_lr":
        with torch.no_grad():
            torch.nn.init.normal_(model.encoder.proj_out.weight, std=0.05)
    model.save_pretrained(tmp_path / "ckpt", dtype=torch.float16)  # only_lr: φ has no weights of its own
    loaded = FrameMem.from_pretrained(tmp_path / "ckpt")
    assert loaded.encoder.config.variant == variant
    video = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(_outputs(model, video), _outputs(loaded, video), atol=1e-2)


def test_dit_weights_that_do_not_fit_the_preset_are_refused(config, tmp_path):
    from framemem.errors import FrameMemError

    build_transformer(config.model).save_pretrained(tmp_path / "wan" / "transformer")
    config.model.transformer_path = str(tmp_path / "wan")
    assert build_transformer(config.model).config.num_layers == 1
    config.model.transformer["num_layers"] = 2  # e.g. 5B weights given to the 14B preset
    with pytest.raises(FrameMemError, match=r"do not fit the preset: num_layers 1 \(preset: 2\)"):
        build_transformer(config.model)


def test_a_hub_id_is_downloaded_and_a_missing_one_fails_clearly(config, tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    FrameMem.build(config).save_pretrained(tmp_path / "snapshot")
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo: asked.append(repo) or str(tmp_path / "snapshot"))
    assert FrameMem.from_pretrained("someone/framemem-tiny").config.preset == config.preset
    assert asked == ["someone/framemem-tiny"]
    monkeypatch.undo()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FrameMemError, match="no-such/model: no such folder, and the hub could not provide it"):
        FrameMem.from_pretrained("no-such/model")
    monkeypatch.chdir(tmp_path)  # under an existing folder: a typo of a local path, not a hub id
    with pytest.raises(FrameMemError, match="not a framemem checkpoint"):
        FrameMem.from_pretrained("snapshot/model")
