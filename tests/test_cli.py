"""The command line: one-line errors with exit status 2, and real outputs."""
import json

import pytest

from framemem.cli.main import main
from framemem.models.framemem import FrameMem


@pytest.fixture
def checkpoint(config, tmp_path):
    path = tmp_path / "ckpt"
    FrameMem.build(config).save_pretrained(path)
    return path


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_retrieve_writes_pngs_and_metrics(checkpoint, procedural_mp4, tmp_path, capsys):
    video = procedural_mp4(6.0)  # longer than the 4 s history the model was built for
    code, out, err = run(["retrieve", "--checkpoint", checkpoint, "--video", video, "--times", "0.5,3,5.75",
                          "--out", tmp_path / "r", "--steps", "2"], capsys)
    assert code == 0, err
    names = {p.name for p in (tmp_path / "r").iterdir()}
    for label in ("0.50", "3.00", "5.75"):
        assert {f"gt_{label}.png", f"retrieved_{label}.png"} <= names
    assert "grid.png" in names
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["frames"] == 24 and metrics["rate"] == "4x4x2"
    # the memory grows with the video: 24 frames of 4x4 tokens at 4x4x2 -> 12 x 1 x 1
    assert metrics["tokens"] == {"full_context": 24 * 16, "memory": 12, "memory_ideal": 12.0}
    assert len(metrics["per_frame"]) == 3
    assert all(0 <= r["ssim"] <= 1 and r["bicubic_psnr"] > 10 for r in metrics["per_frame"])


@pytest.mark.parametrize("case", ["not_video", "time_outside", "too_short", "missing_ckpt", "bad_ckpt", "bad_resolution", "bad_times"])
def test_bad_input_is_one_line_and_nonzero(case, checkpoint, procedural_mp4, tmp_path, capsys):
    video, times, ckpt = procedural_mp4(2.0), "0.5", checkpoint
    if case == "not_video":
        video = tmp_path / "notes.txt"
        video.write_text("hello")
    elif case == "time_outside":
        times = "0.5,9"
    elif case == "too_short":
        video = procedural_mp4(0.125, "one_frame.mp4")  # 1 frame: less than one temporal stride
    elif case == "missing_ckpt":
        ckpt = tmp_path / "nowhere"
    elif case == "bad_ckpt":
        (checkpoint / "memory_encoder" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    elif case == "bad_resolution":
        cfg = json.loads((checkpoint / "framemem.json").read_text())
        cfg["model"]["height"] = 30
        (checkpoint / "framemem.json").write_text(json.dumps(cfg))
    elif case == "bad_times":
        times = "soon"
    code, out, err = run(["retrieve", "--checkpoint", ckpt, "--video", video, "--times", times, "--out", tmp_path / "o"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("framemem: error:"), err
    assert "Traceback" not in err


def test_mismatched_checkpoint_is_refused(checkpoint, config, tmp_path, procedural_mp4, capsys):
    config.model.transformer["num_attention_heads"] = 4  # another DiT width than the saved encoder
    other = tmp_path / "other"
    FrameMem.build(config).save_pretrained(other)
    (other / "memory_encoder").rename(tmp_path / "x")
    (checkpoint / "memory_encoder").rename(other / "memory_encoder")
    code, _, err = run(["retrieve", "--checkpoint", other, "--video", procedural_mp4(2.0), "--times", "1",
                        "--out", tmp_path / "o"], capsys)
    assert code == 2 and "do not match" in err


@pytest.mark.parametrize("args, message", [
    (["--preset", "wan2.2-ti2v-5b", "--model-path", "/no/such/wan-folder"], "/no/such/wan-folder: no such folder"),
    (["--preset", "tiny", "--model-path", "/no/such/base"], "/no/such/base: no such folder"),
])
def test_model_path_errors_are_one_line(args, message, tmp_path, capsys):
    code = main(["pretrain", *args, "--out", str(tmp_path / "run"), "--steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("args, message", [
    (["plan", "--fps", "0"], "framemem: error: argument --fps: must be > 0, not 0 (see framemem plan --help)"),
    (["demo", "--frames", "-1"], "framemem: error: argument --frames: must be > 0, not -1"),
    (["cache", "--data", "v", "--out", "c", "--max-seconds", "nan"], "argument --max-seconds: must be > 0, not nan"),
    (["pretrain", "--data"], "argument --data: expected at least one argument"),
    (["plan", "--model", "tiny", "--seconds", "0.01"], "0.01 s at 4.0 fps is less than one frame"),
    (["demo", "--seed", "-1"], "argument --seed: '-1' is not an integer >= 0"),
    (["pretrain", "--out", "r", "--set", "omega=bogus"], "omega = bogus: must be one of uniform, contiguous, mixed"),
    (["pretrain", "--out", "r", "--set", "gradient_checkpointing=ture"], "'ture' is not bool"),
    (["pretrain", "--out", "r", "--set", "procedural_pool=1.5"], "'1.5' is not int or none"),
    (["pretrain", "--out", "r", "--set", "steps=0"], "steps = 0: must be positive"),
    (["finetune", "--memory-checkpoint", "m", "--out", "r", "--set", "t_shift=3"], "fine-tuning reads ar.t_shift"),
    (["finetune", "--memory-checkpoint", "m", "--out", "r", "--set", "ar.text_dropout=2"],
     "ar.text_dropout = 2.0: must be between 0 and 1"),
])
def test_bad_arguments_are_one_line_before_any_work(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_conflicting_sources_and_unwritable_outputs_are_one_line(tmp_path, capsys):
    assert main(["pretrain", "--data", "v", "--cache", "c", "--out", str(tmp_path / "run")]) == 2
    assert main(["plan", "--model", "tiny", "--json", str(tmp_path)]) == 2  # a folder, not a file
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "framemem: error: --data and --cache: give one source of training videos"
    assert err[-1] == f"framemem: error: {tmp_path} is a folder: name a file to write"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--times", "1,1,2.5"], "--times: 1 given more than once"),
    (["--times", "nan"], "time nan: not a finite number of seconds"),
    (["--times", "1", "--seed", str(2**63)], "too large (seeds go up to 2**63 - 1)"),
])
def test_retrieve_refuses_repeated_times_nan_and_huge_seeds(checkpoint, procedural_mp4, tmp_path, capsys, args, message):
    code, _, err = run(["retrieve", "--checkpoint", checkpoint, "--video", procedural_mp4(4.0), "--out", tmp_path / "o",
                        *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_the_largest_seed_runs(checkpoint, procedural_mp4, tmp_path, capsys):
    code, _, err = run(["retrieve", "--checkpoint", checkpoint, "--video", procedural_mp4(4.0), "--out", tmp_path / "o",
                        "--times", "1", "--steps", "1", "--seed", str(2**63 - 1)], capsys)
    assert code == 0, err
