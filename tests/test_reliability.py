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


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, message", [
    (("transformer/config.json", {"num_layers": 2}), "transformer/config.json has num_layers 2, framemem.json 1"),
    (("transformer/config.json framemem.json", {"num_layers": 2, "model__transformer__num_layers": 2}),
     "config.json says num_layers 2, the weights hold 1 blocks"),
    (("framemem.json", {"model__rate": [2, 2, 8]}), r"framemem.json has rate \(2, 2, 8\), memory_encoder/config.json \[4, 4, 2\]"),
    (("memory_encoder/config.json", {"rate": [2, 2, 8]}), r"framemem.json has rate \(4, 4, 2\), memory_encoder/config.json \[2, 2, 8\]"),
    (("memory_encoder/config.json framemem.json", {"widths": [8, 16, 32, 64], "model__encoder_widths": [8, 16, 32, 64]}),
     r"does not match its config \(attention.attn.in_proj_bias expected shape torch.Size\(\[192\]\), but got"),
    (("framemem.json", {"model__codec_factor": 2}), "the DiT's in_channels is 48, the space_to_depth codec gives 12"),
])
def test_a_checkpoint_whose_configs_disagree_with_its_weights_is_refused(config, tmp_path, edit, message):
    from framemem.models.framemem import FrameMem

    FrameMem.build(config).save_pretrained(tmp_path / "ckpt")
    files, changes = edit
    for name in files.split():
        ours = {k: v for k, v in changes.items() if (k.startswith("model__") == (name == "framemem.json"))}
        _edit_json(tmp_path / "ckpt" / name, **ours)
    with pytest.raises(FrameMemError, match=message):
        FrameMem.from_pretrained(tmp_path / "ckpt")
