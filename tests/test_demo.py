"""End to end on the shipped embedded default (the one slow test)."""
import json

from framemem.cli import DEFAULT_CHECKPOINT, main
from framemem.model import FrameMem


def test_shipped_checkpoint_loads_and_demo_writes_outputs(tmp_path, capsys):
    model = FrameMem.from_pretrained(DEFAULT_CHECKPOINT)
    assert model.config.preset == "tiny" and model.config.model.rate == (4, 4, 2)
    assert main(["demo", "--out", str(tmp_path), "--seed", "1", "--frames", "2", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "full context 5120 tokens -> memory 160 tokens" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tokens"]["memory"] == 160 and len(metrics["per_frame"]) == 2
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "history.mp4").stat().st_size > 0
    for record in metrics["per_frame"]:
        label = f"{record['time']:.2f}"
        assert (tmp_path / f"gt_{label}.png").exists() and (tmp_path / f"retrieved_{label}.png").exists()
