"""`framemem bench retrieval --quick`: the table, the JSON and the plots are produced and
well-formed (who wins at two steps means nothing; that is not asserted)."""
import dataclasses
import json

from PIL import Image

from framemem.bench import QUICK, retrieval_table, run_config, train_run
from framemem.bench_report import pareto
from framemem.framepack import framepack_tokens


def test_quick_table_is_complete_and_well_formed(tmp_path):
    specs = [("proposed", "4x4x2"), ("framepack", "schedule")]
    budget = dataclasses.replace(QUICK, specs=specs)
    retrieval_table(budget, tmp_path / "runs", tmp_path / "table1")
    data = json.loads((tmp_path / "table1.json").read_text())
    assert [(r["variant"], r["rate"]) for r in data["records"]] == specs
    for r in data["records"]:
        assert r["seeds"] == [0, 1] and len(r["per_seed"]) == 2
        assert r["psnr_std"] >= 0 and 0 < r["psnr_mean"] < 60 and -1 <= r["ssim_mean"] <= 1
        assert r["lpips"] is None
    tokens = {r["variant"]: r["tokens"] for r in data["records"]}
    assert tokens == {"proposed": 8 * 2 * 2, "framepack": framepack_tokens((16, 8, 8))}  # 4 s histories
    assert data["records"][0]["paper"] == {"psnr": 17.41, "ssim": 0.596, "lpips": 0.171}
    table = (tmp_path / "table1.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 2 and "LPIPS: unavailable" in table
    grid = Image.open(tmp_path / "table1-grid.png")
    assert grid.height >= 3 * 64  # the truth row and one row per variant
    assert Image.open(tmp_path / "table1-tokens.png").size[0] > 0
    # an interrupted benchmark continues: a finished run is not trained again
    run = tmp_path / "runs" / "proposed-4x4x2-seed0"
    before = (run / "log.jsonl").read_text()
    config = run_config("4x4x2", 0, budget.steps, budget.seconds)
    assert train_run(config, "proposed", run, real=False) == run / "model"
    assert (run / "log.jsonl").read_text() == before


def test_pareto_front():
    records = [{"tokens": 10, "psnr_mean": 12.0}, {"tokens": 20, "psnr_mean": 11.0}, {"tokens": 40, "psnr_mean": 15.0}]
    assert pareto(records) == [records[0], records[2]]
