"""What a hostile user broke once (issue 18), each case reproduced: resume settings, run
folders, config/weight agreement, generate's output, truncated videos and small inputs."""
import json

import pytest

from framemem.cli.main import _preset_with_overrides, build_parser
from framemem.config import FrameMemConfig
from framemem.errors import FrameMemError
from framemem.training.checkpoints import latest_checkpoint, read_state
from framemem.training.trainer import pretrain


def test_a_fresh_run_never_replaces_the_model_and_log_of_a_finished_one(config, tmp_path):
    config.train.steps = 2
    pretrain(config, tmp_path / "run")
    for ckpt in (tmp_path / "run" / "checkpoints").iterdir():  # e.g. deleted to save space
        import shutil
        shutil.rmtree(ckpt)
    before = (tmp_path / "run" / "log.jsonl").read_text()
    with pytest.raises(FrameMemError, match="holds a trained model/"):
        pretrain(config, tmp_path / "run")
    assert (tmp_path / "run" / "log.jsonl").read_text() == before


def test_resume_keeps_the_recorded_settings_unless_changes_are_accepted(config, tmp_path, caplog):
    config.train.steps, config.train.lr = 2, 1e-3
    run = tmp_path / "run"
    pretrain(config, run)
    changed = FrameMemConfig.from_dict(config.to_dict())
    changed.train.steps, changed.train.lr = 4, 0.5
    with caplog.at_level("WARNING", logger="framemem"):
        trainer = pretrain(changed, run, resume=True)
    assert "not applied: steps 2 -> 4, lr 0.001 -> 0.5" in caplog.text
    assert trainer.step == 2 and trainer.optimizer.param_groups[0]["initial_lr"] == 1e-3
    assert FrameMemConfig.load(run / "framemem.json").train.lr == 1e-3  # what it trained with is what it records
    changed = FrameMemConfig.from_dict(config.to_dict())
    changed.train.steps, changed.train.lr = 4, 0.5
    caplog.clear()
    with caplog.at_level("WARNING", logger="framemem"):
        trainer = pretrain(changed, run, resume=True, accept_changes=True)
    assert "with changed settings: steps 2 -> 4, lr 0.001 -> 0.5" in caplog.text
    assert trainer.step == 4 and trainer.optimizer.param_groups[0]["initial_lr"] == 0.5
    assert read_state(latest_checkpoint(run))["config"]["train"]["lr"] == 0.5
    assert FrameMemConfig.load(run / "framemem.json").train.lr == 0.5


@pytest.mark.parametrize("argv, steps, lr", [
    ([], 2000, 5e-4),
    (["--set", "ar.steps=7", "--set", "ar.lr=0.003"], 7, 0.003),
    (["--steps", "9", "--lr", "0.002"], 9, 0.002),
    (["--set", "steps=11"], 11, 5e-4),
])
def test_finetune_budget_follows_ar_overrides(argv, steps, lr):
    args = build_parser().parse_args(["finetune", "--memory-checkpoint", "m", "--out", "o", *argv])
    config = _preset_with_overrides(args, stage=2)
    assert (config.train.steps, config.train.lr) == (steps, lr)
    assert (config.ar.steps, config.ar.lr) == (steps, lr)  # the recorded config says what ran
