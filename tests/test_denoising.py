"""Stage 0 (`framemem base`): a DiT trained on plain video denoising, then stage 1 from it."""
import copy

import pytest
import torch
from conftest import fit_fixed_batch

from framemem.cli.main import main
from framemem.data.histories import HistorySampler
from framemem.training.stage0_denoising import base_pretrain, denoising_loss
from framemem.errors import FrameMemError
from framemem.outputs import load_retrieval
from framemem.models.framemem import FrameMem
from framemem.training.trainer import pretrain, step_generators


def test_a_few_steps_lower_the_denoising_loss_on_a_fixed_batch(config):
    model = FrameMem.build(config, "only_lr")
    video = HistorySampler(config.model).batch(step_generators(0, 0)[0], 2, 4)
    losses = fit_fixed_batch(model, lambda: model(denoising_loss, video, config, torch.Generator().manual_seed(0)), 12)
    assert losses[-1] < 0.8 * losses[0]


def test_stage1_starts_from_the_base_dit(config, tmp_path, capsys):
    config.train.steps = 2
    base_pretrain(copy.deepcopy(config), tmp_path / "base", clip_seconds=1.0)
    base = FrameMem.from_pretrained(tmp_path / "base" / "model")
    assert base.config.stage == 0
    config.model.transformer_path = str(tmp_path / "base" / "model")
    started = pretrain(copy.deepcopy(config), tmp_path / "stage1").unwrapped  # trained on from the base
    fresh = FrameMem.build(config)  # what stage 1 starts from: the base DiT's weights
    for name, weight in base.dit.transformer.state_dict().items():
        assert torch.equal(weight, fresh.dit.transformer.state_dict()[name]), name
    assert not torch.equal(started.dit.transformer.patch_embedding.weight, base.dit.transformer.patch_embedding.weight)
    with pytest.raises(FrameMemError, match="a base DiT .* has no trained memory"):
        load_retrieval(tmp_path / "base" / "model")
    with pytest.raises(FrameMemError, match="a base DiT is for presets trained from scratch"):
        base_pretrain(config, tmp_path / "again")
    assert main(["base", "--cache", "c", "--out", str(tmp_path / "x")]) == 2
    assert "framemem base reads videos" in capsys.readouterr().err
