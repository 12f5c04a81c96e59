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


@pytest.fixture
def story(tmp_path):
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"prompts": [{"at": 0, "prompt": "a red square"}, {"at": 2, "prompt": "a brick wall"}]}))
    return path


def _generate(story, out, *extra):
    from framemem.cli.main import main

    return main(["generate", "--storyboard", str(story), "--seconds", "3", "--steps", "2", "--out", str(out), *extra])


def test_generate_checks_its_output_before_the_first_section(story, tmp_path, capsys, monkeypatch):
    from framemem.pipelines import FrameMemPipeline

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(FrameMemPipeline, "from_pretrained", no_model)
    (tmp_path / "a-file").write_text("")
    assert _generate(story, tmp_path / "a-file" / "story.mp4") == 2
    assert "framemem: error:" in capsys.readouterr().err
    (tmp_path / "old.mp4").write_bytes(b"earlier work")
    assert _generate(story, tmp_path / "old.mp4") == 2
    assert "already exist(s); pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "old.mp4").read_bytes() == b"earlier work"
    from framemem.cli.main import main

    assert main(["generate", "--storyboard", str(story), "--seconds", "100000", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "pass --allow-long" in capsys.readouterr().err


def test_generate_streams_sections_and_keeps_what_was_made_when_it_fails(story, tmp_path, capsys, monkeypatch):
    import av

    from framemem.pipelines import FrameMemPipeline

    calls, original = [0], FrameMemPipeline.denoise_section

    def crash_on_third(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("out of memory (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FrameMemPipeline, "denoise_section", crash_on_third)
    with pytest.raises(RuntimeError):
        _generate(story, tmp_path / "story.mp4")
    assert not (tmp_path / "story.mp4").exists()
    record = json.loads((tmp_path / "story.json").read_text())
    assert len(record["sections"]) == 2 and record["complete"] is False
    with av.open(str(tmp_path / "story.partial.mp4")) as f:
        frames = sum(1 for _ in f.decode(video=0))
    assert frames == 2 * 4  # two 1 s sections at the tiny preset's 4 fps
    monkeypatch.undo()
    assert _generate(story, tmp_path / "story.mp4", "--overwrite") == 0
    assert not (tmp_path / "story.partial.mp4").exists()
    assert "sections of 1s, 2 steps each: about" in capsys.readouterr().out
    with av.open(str(tmp_path / "story.mp4")) as f:
        assert sum(1 for _ in f.decode(video=0)) == 12
    assert json.loads((tmp_path / "story.json").read_text())["complete"] is True


def test_a_pipeline_asked_for_no_frames_keeps_none():
    import torch

    from framemem.pipelines import FrameMemPipeline

    pipe = FrameMemPipeline.from_pretrained("tiny-ar")
    seen = []
    out = pipe(prompt="a red square", seconds=2, num_inference_steps=1, output_type=None,
               generator=torch.Generator().manual_seed(0), callback_on_section_end=lambda p, i, x, r: seen.append(x.shape))
    assert out.frames is None and len(seen) == 2


def test_a_streamed_video_plays_up_to_the_last_second_written_if_the_process_dies(tmp_path):
    import shutil

    import av
    import numpy as np

    from framemem.data.video import VideoWriter

    writer = VideoWriter(tmp_path / "live.mp4", 4.0, 32, 32, streaming=True)
    rng = np.random.default_rng(0)
    for second in range(1, 4):
        writer.write(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
        shutil.copy(tmp_path / "live.mp4", tmp_path / f"killed-{second}.mp4")  # what a kill now would leave
    writer.close()
    for second in range(1, 4):
        with av.open(str(tmp_path / f"killed-{second}.mp4")) as f:
            assert sum(1 for _ in f.decode(video=0)) >= 4 * second - 1  # at most the frame awaiting its keyframe is lost
