"""Fault campaign: kill -9 during training and during checkpoint writes, damaged and
planted checkpoints. Every case must end in the weights of an uninterrupted run, or in a
one-line refusal; nothing in a run folder is unpickled."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fault_worker import config as fault_config
from framemem.errors import FrameMemError
from framemem.models.framemem import FrameMem
from framemem.training.checkpoints import STATE_FILE, complete_checkpoints
from framemem.training.trainer import pretrain

WORKER = Path(__file__).parent / "fault_worker.py"


def _work(run: Path, spec: str) -> int:
    done = subprocess.run([sys.executable, str(WORKER), str(run), spec], capture_output=True, text=True, timeout=300)
    if done.returncode not in (0, -9):
        raise AssertionError(done.stderr[-2000:])
    return done.returncode


def _same_weights(a: Path, b: Path) -> None:
    x, y = FrameMem.from_pretrained(a).state_dict(), FrameMem.from_pretrained(b).state_dict()
    assert x.keys() == y.keys()
    for name in x:
        assert torch.equal(x[name], y[name]), name


def _losses(run: Path) -> dict:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every faulted one must end equal to."""
    run = tmp_path_factory.mktemp("straight") / "run"
    pretrain(fault_config(), run)
    return run


def test_kill_9_at_random_steps_and_during_checkpoint_writes_resumes_exactly(straight, tmp_path):
    rng = np.random.default_rng(2026)
    run = tmp_path / "run"
    kills = [f"step:{rng.integers(1, 4)}", f"save:{rng.integers(1, 3)}"]  # each in a process of its own
    for spec in kills:
        assert _work(run, spec) == -9, spec  # killed where asked
    pretrain(fault_config(), run, resume=True)  # and finished here
    _same_weights(straight / "model", run / "model")
    assert _losses(run) == _losses(straight)
    assert not list((run / "checkpoints").glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncated model", "truncated optimizer", "broken state", "missing ema"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before_with_a_warning(straight, tmp_path, damage, caplog):
    run = tmp_path / "run"
    pretrain(fault_config(), run)
    latest = complete_checkpoints(run)[0]
    assert latest.name == "step-6"
    target = {"truncated model": "model.safetensors", "truncated optimizer": "optimizer.safetensors",
              "broken state": STATE_FILE, "missing ema": "ema.safetensors"}[damage]
    if damage == "missing ema":
        (latest / target).unlink()
    else:
        data = (latest / target).read_bytes()
        (latest / target).write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="framemem"):
        pretrain(fault_config(), run, resume=True)
    assert "step-6" in caplog.text and "trying the checkpoint before it" in caplog.text
    _same_weights(straight / "model", run / "model")  # trained on from step 4 to the same end


def test_when_no_checkpoint_reads_back_resume_says_so(tmp_path):
    config = fault_config()
    config.train.steps = 2
    pretrain(config, tmp_path / "run")
    for ckpt in complete_checkpoints(tmp_path / "run"):
        (ckpt / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(FrameMemError, match="no checkpoint reads back whole"):
        pretrain(fault_config(), tmp_path / "run", resume=True)


class _Planted:
    """Unpickling this creates the file MARKER: the proof that a load ran code."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickles_planted_in_a_run_folder_are_never_loaded(tmp_path):
    config = fault_config()
    config.train.steps = 2
    run = tmp_path / "run"
    pretrain(config, run)
    ckpt = complete_checkpoints(run)[0]
    planted = _Planted()
    planted.marker = str(tmp_path / "code-ran")
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scaler.pt"):
        (ckpt / name).write_bytes(pickle.dumps(planted))
    config.train.steps = 4
    pretrain(config, run, resume=True, accept_changes=True)
    assert not (tmp_path / "code-ran").exists()
    # a checkpoint in the old Accelerate layout (pickled optimizer and EMA) is refused, not read
    state = json.loads((ckpt / STATE_FILE).read_text())
    for other in complete_checkpoints(run):
        if other != ckpt:
            other.rename(other.with_name(".gone-" + other.name))
    state.pop("format")
    (ckpt / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(FrameMemError, match="older framemem .*pickled"):
        pretrain(config, run, resume=True, accept_changes=True)
    assert not (tmp_path / "code-ran").exists()


def _broken(kind: str, path: Path, good: Path) -> None:
    """A file of one kind of damage a real collection holds."""
    import av

    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(len(path.name)).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("this is not a video")
    elif kind == "header only":
        path.write_bytes(good.read_bytes()[:300])
    elif kind == "audio only":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            for packet in [*stream.encode(frame), *stream.encode()]:
                container.mux(packet)
    elif kind == "too short":
        from framemem.data.video import write_video

        write_video(path, np.zeros((1, 64, 64, 3), dtype=np.uint8), 8.0)


KINDS = ("empty", "random bytes", "text", "header only", "audio only", "too short")


@pytest.mark.parametrize("seed", [0, 1])
def test_collections_with_a_third_to_half_broken_files_count_right(seed, tmp_path, procedural_mp4, config):
    from framemem.data.cache import build_cache
    from framemem.data.video import VideoDataset

    rng = np.random.default_rng(seed)
    folder = tmp_path / "videos"
    folder.mkdir()
    good_count = int(rng.integers(4, 7))
    broken_count = int(rng.integers(int(np.ceil(good_count * 0.5)), good_count + 1))  # 33-50 % of the files
    goods = [procedural_mp4(2.0, f"videos/good-{i}.mp4", seed=i) for i in range(good_count)]
    kinds = [KINDS[i % len(KINDS)] for i in rng.permutation(broken_count)]
    for i, kind in enumerate(kinds):
        _broken(kind, folder / f"broken-{i}.mp4", goods[0])
    dataset = VideoDataset(folder, fps=4.0, height=32, width=32, min_frames=4)
    assert sorted(p.name for p in dataset.usable) == sorted(g.name for g in goods)
    assert len(dataset.skipped) == broken_count, dataset.skipped
    assert dataset.summary() == f"{good_count} usable videos, {broken_count} skipped"
    config.model.fps = 4.0
    manifest = build_cache(config, folder, tmp_path / "cache")
    assert (len(manifest["videos"]), len(manifest["skipped"])) == (good_count, broken_count)


def _commands():
    """(name, subparser) of every command of the CLI, `bench X` included."""
    import argparse

    from framemem.cli.main import build_parser

    def subparsers(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    found = []
    for name, sub in subparsers(build_parser()).items():
        if name == "bench":
            found += [(f"bench {k}", v) for k, v in subparsers(sub).items()]
        else:
            found.append((name, sub))
    return found


def _required(sub) -> list[str]:
    return [word for a in sub._actions if a.required and a.option_strings for word in (a.option_strings[0], "x")]


def _bad_arguments():
    """For every command: an unknown option, each required option left out, and each typed
    or restricted option given a value it refuses."""
    cases = []
    for name, sub in _commands():
        required = _required(sub)
        cases.append((name, [*required, "--no-such-option"]))
        for action in sub._actions:
            if action.required and action.option_strings:
                rest = [w for a in sub._actions if a.required and a.option_strings and a is not action
                        for w in (a.option_strings[0], "x")]
                cases.append((name, rest))
            if action.option_strings and (action.type is not None or action.choices) and action.nargs in (None, "+"):
                for value in ("nan", "-1", "abc"):
                    cases.append((name, [*required, action.option_strings[0], value]))
    return cases


@pytest.mark.parametrize("name, argv", _bad_arguments(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_command_refuses_bad_arguments_in_one_line(name, argv, capsys):
    from framemem.cli.main import main

    code = main([*name.split(), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("framemem: error: "), err
    assert "Traceback" not in err


def test_sharded_training_is_refused_rather_than_checkpointed_from_one_shard(tmp_path, monkeypatch):
    import accelerate
    from accelerate.utils import DistributedType

    monkeypatch.setattr(accelerate.Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    with pytest.raises(FrameMemError, match="FSDP: framemem's checkpoints are written by one process"):
        pretrain(fault_config(), tmp_path / "run")
