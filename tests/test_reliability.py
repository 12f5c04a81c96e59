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


def _faststart_mp4(path, frames: int, size: int = 32):
    """An mp4 with its index at the start (as web uploads have), random frames."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8, options={"crf": "12"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_a_truncated_video_is_read_with_a_warning(tmp_path, caplog, keep):
    from framemem.data.video import read_video

    whole = _faststart_mp4(tmp_path / "whole.mp4", 40)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    with caplog.at_level("WARNING", logger="framemem"):
        assert len(read_video(whole, 8, 32, 32)) == 40
    assert "truncated" not in caplog.text
    with caplog.at_level("WARNING", logger="framemem"):
        frames = read_video(cut, 8, 32, 32)
    assert 0 < len(frames) < 40
    assert f"cut.mp4 looks truncated: {len(frames)} of its 40 frames decoded" in caplog.text


def test_the_cache_skips_what_training_would_never_draw(config, tmp_path, procedural_mp4):
    from framemem.data.cache import build_cache

    config.model.fps = 8.0
    procedural_mp4(2.0, "long.mp4")
    procedural_mp4(0.125, "one-frame.mp4")
    manifest = build_cache(config, tmp_path, tmp_path / "cache")
    assert [v["source"].rsplit("/", 1)[-1] for v in manifest["videos"]] == ["long.mp4"]
    assert "too short (1 frames < 8)" in next(iter(manifest["skipped"].values()))


@pytest.mark.parametrize("text, message", [
    ("prompts:\n  - at: 0\n    prompt: 42\n", r"'prompt' must be text, not 42 \(quote it in YAML\)"),
    ("prompts:\n  - at: 0\n    prompt: '  '\n", "empty prompt"),
])
def test_storyboard_prompts_that_are_not_text(tmp_path, text, message):
    from framemem.data.storyboard import Storyboard

    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(FrameMemError, match=message):
        Storyboard.load(tmp_path / "s.yaml")


def test_a_folder_given_as_a_video_is_called_a_folder(tmp_path, capsys):
    from framemem.cli.main import main

    assert main(["retrieve", "--video", str(tmp_path), "--times", "1", "--out", str(tmp_path / "o")]) == 2
    assert "is a folder, not a video file" in capsys.readouterr().err


def test_killed_writes_leave_nothing_behind_the_next_write(config, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from framemem.files import temporary_name, write_text
    from framemem.models.framemem import FrameMem

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    mine = temporary_name("metrics", ".json")
    stale_file = tmp_path / mine.replace(f"-{os.getpid()}.", f"-{pid}.")
    stale_file.write_text("half")
    stale_folder = tmp_path / temporary_name("model").replace(f"-{os.getpid()}", f"-{pid}")
    (stale_folder / "memory_encoder").mkdir(parents=True)
    live = tmp_path / f".metrics.tmp-{socket.gethostname()}-1.json"  # pid 1 is alive
    live.write_text("being written")
    write_text(tmp_path / "metrics.json", "{}")
    FrameMem.build(config).save_pretrained(tmp_path / "model")
    assert not stale_file.exists() and not stale_folder.exists()
    assert live.exists()  # a write still running is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "metrics.json", "model"])


def test_retrieving_into_a_used_folder_replaces_the_earlier_frames(tmp_path, procedural_mp4):
    from framemem.cli.main import main

    video = procedural_mp4(8.0)
    out = tmp_path / "out"
    assert main(["retrieve", "--video", str(video), "--times", "1,2", "--out", str(out), "--steps", "1"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["retrieve", "--video", str(video), "--times", "3", "--out", str(out), "--steps", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bicubic_3.00.png", "grid.png", "gt_3.00.png", "metrics.json",
                                                     "notes.txt", "retrieved_3.00.png"]


@pytest.mark.parametrize("command", ["base", "pretrain", "finetune --memory-checkpoint m"])
def test_training_commands_need_a_run_folder(command, capsys):
    from framemem.cli.main import main

    assert main(command.split()) == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_help_shows_every_default():
    import argparse

    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0]
    commands = dict(subs.choices)
    benches = [a for a in commands.pop("bench")._actions if isinstance(a, argparse._SubParsersAction)][0]
    commands.update({f"bench {k}": v for k, v in benches.choices.items()})
    for name, sub in commands.items():
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            text = sub.format_help()
            shown = action.default is None or action.default is False or "default" in action.help
            assert shown or f"(default: {action.default})" in " ".join(text.split()), (name, action.option_strings)
