"""`framemem bench scale`: token counts, the fit check, one part at tiny size, the report."""
import json

import pytest

from framemem.bench import scale
from framemem.cli.main import main
from framemem.config import get_preset
from framemem.errors import FrameMemError
from framemem.plan import plan


@pytest.mark.parametrize("preset", ["tiny", "wan2.2-ti2v-5b"])
def test_context_tokens_are_the_planners(preset):
    config = get_preset(preset)
    mc = config.model
    for seconds in (20.0, 60.0):
        rows = {r["name"]: r["memory_tokens"] for r in plan(config, mc.height, mc.width, mc.fps, seconds, [mc.rate])["rows"]}
        assert scale.context_tokens(config, "full_context", seconds) == rows["full context"]
        assert scale.context_tokens(config, "framepack", seconds) == rows["FramePack schedule (1 + 2 frames, then 4x)"]
    window = plan(config, mc.height, mc.width, mc.fps, mc.seconds, [mc.rate])["rows"][1]["memory_tokens"]
    assert scale.context_tokens(config, "framemem", 60.0) == scale.context_tokens(config, "framemem", 20.0) == window


def test_a_preset_too_large_for_the_device_is_one_line_before_allocating(monkeypatch):
    monkeypatch.setattr(scale, "_device_memory_gb", lambda device: 8.0)
    with pytest.raises(FrameMemError) as err:
        scale.check_fits(get_preset("wan-14b"), 40, "cpu")
    message = str(err.value)
    assert message.startswith("preset wan-14b at 40 layers needs about") and "8 GB are free" in message
    assert "\n" not in message
    assert scale.check_fits(get_preset("tiny"), 4, "cpu") < 1  # tiny fits anywhere


def test_parameters_are_counted_without_weights():
    config = get_preset("wan2.2-ti2v-5b")
    per_layer = scale.parameter_count(config, 1) - scale.parameter_count(config, 0)
    assert 150e6 < per_layer < 180e6  # a 3072-wide Wan block (attention, cross-attention, 14336 feed-forward)
    assert 4.5e9 < scale.parameter_count(config, 30) < 5.5e9  # TI2V-5B


def test_one_section_part_runs_at_tiny_size():
    config = get_preset("tiny")
    result = scale.part_section(config, 1, "cpu", "framemem", 20.0)
    assert result["tokens"] == scale.context_tokens(config, "framemem", 20.0) + 4 * 8 * 8 and result["seconds"] > 0
    assert result["once_seconds"] == 0
    once = scale.part_section(config, 1, "cpu", "framemem_once", 20.0)
    assert once["tokens"] == result["tokens"] and once["once_seconds"] > 0 and once["seconds"] > 0
    cross = scale.part_section(config, 1, "cpu", "framemem_cross", 20.0)  # φ's features read by every block
    assert cross["tokens"] == result["tokens"] and cross["once_seconds"] == 0 and cross["seconds"] > 0
    assert scale.part_section(config, 0, "cpu", "framemem_cross", 20.0)["seconds"] > 0  # no block: nothing reads them


def test_the_report_labels_extrapolation_and_planner_rows(tmp_path):
    result = {"preset": "wan-14b", "device": "cpu", "layers": 1, "depth": 40, "dtype": "fp32", "lora_rank": 128,
              "gradient_checkpointing": True, "resolution": "832x480", "fps": 16.0, "rows": [
                  {"part": "section", "method": "framemem", "history_seconds": 20.0, "measured": True, "tokens": 100,
                   "layers": 1, "seconds": 2.0, "peak_gb": 3.0, "seconds_full_depth": 41.0, "peak_gb_full_depth": 50.0,
                   "sample_steps": 30, "section_seconds_full_depth": 1230.0},
                  {"part": "section", "method": "framemem_once", "history_seconds": 20.0, "measured": True, "tokens": 100,
                   "layers": 1, "seconds": 1.0, "peak_gb": 3.0, "seconds_full_depth": 21.0, "peak_gb_full_depth": 50.0,
                   "sample_steps": 30, "once_seconds": 0.5, "once_seconds_full_depth": 10.0,
                   "section_seconds_full_depth": 640.0},
                  {"part": "section", "method": "full_context", "history_seconds": 60.0, "measured": False,
                   "tokens": 99_999, "planner_tflops_per_forward": 1234.5}]}
    scale.write_scale_markdown(result, tmp_path / "s.md")
    text = (tmp_path / "s.md").read_text()
    assert "full depth s (extrapolated)" in text and "1 of 40 DiT layers measured" in text
    assert "| framemem | 20 s | 100 | 2.00 | 3.0 | 41.0 | 50.0 | 1230.0 (30 steps × 1 guided evaluation) |" in text
    assert "not run: the planner's 1.23e+03 attention TFLOPs per forward" in text
    assert "| 640.0 (10.0 once + 30 steps × 1 guided evaluation) |" in text
    assert "20 s of history: 0.52× framemem's seconds per section at full depth (640.0 s against 1230.0 s" in text


@pytest.mark.parametrize("args, needle", [(["--layers", "999"], "the preset's DiT has 1 to 30 layers"),
                                          (["--device", "cuda"], "no CUDA device here")])
def test_bad_bench_scale_arguments_are_one_line(args, needle, tmp_path, capsys):
    assert main(["bench", "scale", "--preset", "wan2.2-ti2v-5b", *args, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("framemem: error:") and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def test_the_report_json_is_what_the_table_shows(tmp_path, monkeypatch):
    """The whole table on tiny, with each part stubbed to a known figure (the parts are tested above)."""
    figures = {"1": {"seconds": 3.0, "once_seconds": 0.5, "peak_gb": 2.0, "tokens": 10},
               "0": {"seconds": 1.0, "once_seconds": 0.0, "peak_gb": 1.0, "tokens": 10}}
    calls = []
    monkeypatch.setattr(scale, "_run_part", lambda args: calls.append(args) or figures[args[args.index("--layers") + 1]])
    result = scale.scale_table("tiny", 1, "cpu", tmp_path / "scale-wan2.2-x", max_tokens=6000)  # a dot in the name
    measured = [r for r in result["rows"] if r["measured"]]
    assert all(r["seconds_full_depth"] == 1.0 + 2.0 * 4 for r in measured)  # t(0) + (t(1) − t(0))·4 layers
    sections = [r for r in measured if r["part"] == "section"]
    assert all(r["section_seconds_full_depth"] == 0.5 * 4 + 9.0 * r["sample_steps"] for r in sections)
    assert [r["method"] for r in result["rows"] if not r["measured"]] == ["full_context"]  # 60 s: 15,616 tokens
    copied = [r for r in result["rows"] if "same_as_seconds" in r]  # the memory keeps 20 s: nothing new at 60 s
    assert [(r["method"], r["history_seconds"]) for r in copied] == [("framemem", 60.0), ("framemem_once", 60.0),
                                                                          ("framemem_cross", 60.0)]
    assert not any(args[args.index("--method") + 1].startswith("framemem") and "60.0" in args
                   for args in calls if "--method" in args)
    planned = [r for r in result["rows"] if not r["measured"]]
    assert len(calls) == 2 * (len(result["rows"]) - len(planned) - len(copied))  # at N and at 0 layers, once each
    assert "the 20 s row's figures: its memory keeps 20 s" in (tmp_path / "scale-wan2.2-x.md").read_text()
    assert json.loads((tmp_path / "scale-wan2.2-x.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "scale-wan2.2-x.md").is_file()


def test_short_evaluations_are_timed_over_more_rounds():
    assert not scale.more_rounds([40.0])  # one 40 s round: enough
    assert scale.more_rounds([12.0, 12.0]) and not scale.more_rounds([12.0] * 3)  # 3 rounds within 30 s
    assert scale.more_rounds([0.1] * 40) and not scale.more_rounds([0.1] * 60)  # short ones: 5 s of rounds
    assert not scale.more_rounds([0.01] * 100)  # at most 100
