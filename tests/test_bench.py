"""`framemem bench retrieval --quick`: the table, the JSON and the plots are produced and
well-formed (who wins at two steps means nothing; that is not asserted)."""
import dataclasses
import json

import pytest
from PIL import Image

from framemem.bench.budgets import QUICK, Budget
from framemem.bench.retrieval_table import retrieval_table, run_config, train_run
from framemem.bench.report import pareto, retrieval_command, training_time, write_markdown
from framemem.models.framepack import framepack_tokens
from test_metrics import write_lpips_files


def test_quick_table_is_complete_and_well_formed(tmp_path):
    specs = [("proposed", "4x4x2"), ("framepack", "schedule")]
    budget = dataclasses.replace(QUICK, specs=specs)
    retrieval_table(budget, tmp_path / "runs", tmp_path / "table1")
    data = json.loads((tmp_path / "table1.json").read_text())
    assert [(r["variant"], r["rate"]) for r in data["records"]] == specs
    for r in data["records"]:
        assert r["seeds"] == [0, 1] and len(r["per_seed"]) == 2
        assert r["psnr_std"] >= 0 and 0 < r["psnr_mean"] < 60 and -1 <= r["ssim_mean"] <= 1
        assert 0 < r["one_step_psnr"]["mean"] < 60 and r["one_step_psnr"]["std"] >= 0
        assert r["lpips"] is None
        assert all(s["train_seconds"] > 0 for s in r["per_seed"])
    tokens = {r["variant"]: r["tokens"] for r in data["records"]}
    assert tokens == {"proposed": 8 * 2 * 2, "framepack": framepack_tokens((16, 8, 8))}  # 4 s histories
    assert data["records"][0]["paper"] == {"psnr": 17.41, "ssim": 0.596, "lpips": 0.171}
    table = (tmp_path / "table1.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 2 + 2 and "LPIPS: unavailable" in table  # two variants, two references
    assert "Command: `framemem bench retrieval --quick` —" in table
    total = sum(s["train_seconds"] for r in data["records"] for s in r["per_seed"])
    assert f"Training time: {total / 60:.1f} min for the 4 runs" in table
    assert set(data["references"]) == {"bicubic 4×4", "mean_frame"}  # framepack keeps the preset's 4×4×2
    grid = Image.open(tmp_path / "table1-grid.png")
    assert grid.height >= 3 * 64  # the truth row and one row per variant
    assert Image.open(tmp_path / "table1-tokens.png").size[0] > 0
    # an interrupted benchmark continues: a finished run is not trained again
    run = tmp_path / "runs" / "proposed-4x4x2-seed0"
    before = (run / "log.jsonl").read_text()
    config = run_config("4x4x2", 0, budget.steps, budget.seconds)
    assert train_run(config, "proposed", run, real=False) == run / "model"
    assert (run / "log.jsonl").read_text() == before
    # with local LPIPS weights the same runs are evaluated again (not trained) with LPIPS; the
    # grid shows this evaluation's frames, not PNGs an earlier one left behind
    for folder in (tmp_path / "runs" / "eval").glob("*/*"):
        grid.save(folder / "gt_99.00.png")
    backbone, linear = write_lpips_files(tmp_path / "lpips")
    budget = dataclasses.replace(budget, lpips_backbone=str(backbone), lpips_linear=str(linear))
    data = retrieval_table(budget, tmp_path / "runs", tmp_path / "table1-lpips")
    assert (run / "log.jsonl").read_text() == before
    assert all(r["lpips"]["mean"] > 0 and r["lpips"]["std"] >= 0 for r in data["records"])
    assert data["references"]["bicubic 4×4"]["lpips"] >= 0
    assert "unavailable" not in (tmp_path / "table1-lpips.md").read_text()
    assert Image.open(tmp_path / "table1-lpips-grid.png").size == grid.size


def test_rows_join_an_earlier_table_of_the_same_budget_and_replace_one_of_another(tmp_path):
    budget = dataclasses.replace(QUICK, specs=[("proposed", "4x4x2")], seeds=(0,))
    first = retrieval_table(budget, tmp_path / "runs", tmp_path / "t")
    added = retrieval_table(dataclasses.replace(budget, specs=[("memory_once", "4x4x2")]), tmp_path / "runs", tmp_path / "t")
    assert [(r["variant"], r["rate"]) for r in added["records"]] == [("proposed", "4x4x2"), ("memory_once", "4x4x2")]
    assert added["records"][0] == json.loads(json.dumps(first["records"][0]))
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads(json.dumps(added))
    assert (tmp_path / "t-grid-added.png").is_file() and added["rows_run_later"] == [["memory_once", "4x4x2"]]
    assert "Rows run later with `--only`, at the same budget and on the same evaluation as the others (with the code " \
           "of that later run): Proposed, memory read once per section (4×4×2)." in (tmp_path / "t.md").read_text()
    again = retrieval_table(dataclasses.replace(budget, specs=[("memory_once", "4x4x2")]), tmp_path / "runs", tmp_path / "t")
    assert again["rows_run_later"] == [["memory_once", "4x4x2"]]  # a row run again is named once
    model = json.loads((tmp_path / "runs" / "memory_once-4x4x2-seed0" / "model" / "framemem.json").read_text())
    assert model["model"]["memory_attention"] == "memory_only"
    other = retrieval_table(dataclasses.replace(budget, specs=[("memory_once", "4x4x2")], sample_steps=3),
                            tmp_path / "runs", tmp_path / "t")
    assert [r["variant"] for r in other["records"]] == ["memory_once"]  # another budget: not mixed


def test_bench_only_names_rows_of_the_benchmark(capsys):
    from framemem.cli.main import main

    assert main(["bench", "retrieval", "--quick", "--only", "sliding_window"]) == 2
    assert capsys.readouterr().err.strip().startswith("framemem: error: --only sliding_window: not a row of this "
                                                      "benchmark (cross_attention, framepack, large_patchifier,")
    assert main(["bench", "consistency", "--quick", "--only", "framepack"]) == 2
    assert "--only framepack: not a row of this benchmark (proposed, only_lr" in capsys.readouterr().err


def test_the_report_names_the_command_that_reproduces_its_budget():
    budget = dataclasses.asdict(Budget())
    assert retrieval_command(budget) == "framemem bench retrieval"
    budget |= {"steps": 2000, "seeds": [0, 1, 2], "lpips_backbone": "/w/alexnet.pth", "lpips_linear": "/w/alex.pth"}
    assert retrieval_command(budget) == ("framemem bench retrieval --steps 2000 --seeds 0 1 2 "
                                         "--lpips-backbone alexnet.pth --lpips-linear alex.pth")


def test_the_table_has_a_bicubic_reference_per_spatial_rate(tmp_path):
    record = {"variant": "proposed", "rate": "2x2x2", "tokens": 640, "psnr_mean": 20.0, "psnr_std": 0.5, "ssim_mean": 0.3,
              "ssim_std": 0.02, "one_step_psnr": {"mean": 20.0, "std": 0.1}, "lpips": None, "seeds": [0, 1], "paper": None,
              "per_seed": [{"seed": 0, "train_seconds": 60.0}, {"seed": 1, "train_seconds": 90.0}]}
    refs = {"mean_frame": {"psnr": 15.0, "ssim": 0.1}, "bicubic 4×4": {"psnr": 25.0, "ssim": 0.6},
            "bicubic 2×2": {"psnr": 29.0, "ssim": 0.8}}
    write_markdown({"budget": dataclasses.asdict(Budget()), "records": [record], "references": refs}, tmp_path / "t.md")
    rows = [line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| *reference")]
    assert rows == ["| *reference: each frame down 2×2 and back up (bicubic)* | — | 29.00 | 0.800 | — | — | — | — | — |",
                    "| *reference: each frame down 4×4 and back up (bicubic)* | — | 25.00 | 0.600 | — | — | — | — | — |",
                    "| *reference: the history's mean frame* | — | 15.00 | 0.100 | — | — | — | — | — |"]
    assert ("Training time: 2.5 min for the 2 runs on the machine that trained them "
            "(evaluation excluded; slowest run Proposed (2×2×2), 1.5 min).") in (tmp_path / "t.md").read_text()


def test_runs_without_a_recorded_training_time_say_so():
    old = {"variant": "only_lr", "rate": "4x4x2", "per_seed": [{"seed": 0}]}
    assert training_time([old]) == "Training time: not recorded for these runs."
    timed = {"variant": "proposed", "rate": "4x4x2", "per_seed": [{"seed": 0, "train_seconds": 120.0}]}
    assert training_time([old, timed]).startswith("Training time: 2.0 min for the 1 run on")


def test_pareto_front():
    records = [{"tokens": 10, "psnr_mean": 12.0}, {"tokens": 20, "psnr_mean": 11.0}, {"tokens": 40, "psnr_mean": 15.0}]
    assert pareto(records) == [records[0], records[2]]


def test_quick_consistency_table_is_complete_and_well_formed(tmp_path):
    from framemem.bench.consistency import QUICK as QUICK_C
    from framemem.bench.consistency import VARIANTS, consistency_table

    result = consistency_table(QUICK_C, tmp_path / "runs", tmp_path / "consistency")
    data = json.loads((tmp_path / "consistency.json").read_text())
    assert data == json.loads(json.dumps(result))
    assert [r["variant"] for r in data["records"]] == list(VARIANTS)
    for r in data["records"]:
        assert len(r["per_seed"]) == 1 and 0 < r["psnr_mean"] < 60 and -1 <= r["feature_mean"] <= 1
        assert r["continuity_mean"] is None  # --quick makes one section per case: no boundary to score
    case = data["cases"][0]
    assert case["first"][1] <= case["return"][0]  # the scene came back after leaving
    assert set(data["references"]) == {"truth", "other_scene"}
    table = (tmp_path / "consistency.md").read_text()
    assert "Without Pretrain" in table and "Sliding window" in table and "the true return" in table
    assert "no unplanned boundary" in table and "no visible cut" in table
    assert Image.open(tmp_path / "consistency-grid.png").height >= (2 + len(VARIANTS)) * 64
    window = json.loads((tmp_path / "runs" / "stage2-sliding_window-seed0" / "model" / "framemem.json").read_text())
    assert window["model"]["rate"] == [1, 1, 1] and window["model"]["seconds"] == 0.5
    beside = json.loads((tmp_path / "runs" / "stage2-sliding_window_memory-seed0" / "model" / "framemem.json").read_text())
    assert beside["ar"]["window_frames"] == 2 and beside["model"]["rate"] == [4, 4, 2]  # the window beside the memory
    for stage in ("stage1-memory_once-seed0", "stage2-memory_once-seed0"):  # its own stage 1
        once = json.loads((tmp_path / "runs" / stage / "model" / "framemem.json").read_text())
        assert once["model"]["memory_attention"] == "memory_only"
    for stage in ("stage1-cross_attention-seed0", "stage2-cross_attention-seed0"):
        cross = json.loads((tmp_path / "runs" / stage / "model" / "framemem.json").read_text())
        assert cross["model"]["cross_attention"] is True
    # a given stage-2 checkpoint is scored on the same cases; nothing is trained again
    given = tmp_path / "runs" / "stage2-proposed-seed0" / "model"
    again = consistency_table(dataclasses.replace(QUICK_C, checkpoints=(str(given),)), tmp_path / "runs", tmp_path / "c2")
    assert again["records"][:-1] == data["records"]
    assert again["records"][-1]["variant"] == str(given)
    assert again["records"][-1]["psnr_mean"] == data["records"][0]["psnr_mean"]  # the same model, the same seed
    assert "checkpoint `model`" in (tmp_path / "c2.md").read_text()


def test_bench_consistency_refuses_a_stage1_checkpoint(capsys):
    from framemem.cli.main import DEFAULT_CHECKPOINT, main

    assert main(["bench", "consistency", "--quick", "--checkpoint", str(DEFAULT_CHECKPOINT)]) == 2
    err = capsys.readouterr().err.strip()
    assert "stage-1 checkpoint" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv", [["bench", "consistency", "--steps", "3"], ["bench", "retrieval", "--checkpoint", "x"]])
def test_an_option_of_the_other_benchmark_is_refused_not_ignored(argv, capsys):
    from framemem.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "framemem: error: unrecognized arguments" in err[0]


def test_a_finished_run_frees_its_training_data(tmp_path):
    """A benchmark trains many runs in one process: each run's cached videos must go with it."""
    import gc

    from framemem.data.histories import HistorySampler

    gc.collect()
    gc.disable()  # as when the cyclic collector happens not to run between two runs
    try:
        train_run(run_config("4x4x2", 0, 1, 4.0), "only_lr", tmp_path / "run", real=False)
        assert not [o for o in gc.get_objects() if type(o) is HistorySampler]  # type(): no attribute look-ups on torch proxies
    finally:
        gc.enable()


def test_bench_only_takes_one_row_of_a_variant(monkeypatch, tmp_path):
    import framemem.bench.retrieval_table as table
    from framemem.cli.main import main

    chosen = []
    monkeypatch.setattr(table, "retrieval_table", lambda budget, runs, out: chosen.append(budget.specs) or {"records": []})
    assert main(["bench", "retrieval", "--quick", "--only", "proposed:2x2x4", "multi_encoder",
                 "--out", str(tmp_path / "t")]) == 0
    assert chosen == [[("proposed", "2x2x4"), ("multi_encoder", "4x4x2+2x2x8")]]
    assert main(["bench", "retrieval", "--quick", "--only", "proposed:3x3x3"]) == 2


def test_bench_consistency_only_a_checkpoint_runs_its_row_alone(monkeypatch, tmp_path):
    import framemem.bench.consistency as consistency
    from framemem.cli.main import main
    from framemem.hub import pretrained

    chosen = []
    monkeypatch.setattr(consistency, "consistency_table",
                        lambda budget, runs, out: chosen.append((budget.variants, budget.checkpoints)) or {"records": []})
    shipped = str(pretrained("tiny-ar"))
    assert main(["bench", "consistency", "--quick", "--checkpoint", shipped, "--only", shipped + "/",
                 "--out", str(tmp_path / "c")]) == 0
    assert chosen == [((), (shipped,))]
