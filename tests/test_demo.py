"""End to end on the shipped embedded default (the one slow test)."""
import json

from PIL import Image

from framemem.cli.main import DEFAULT_CHECKPOINT, main
from framemem.models.framemem import FrameMem


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
        assert record["nearby_psnr"] > 0 and record["swapped_psnr"] > 0  # the demo's two memory checks
    mean = metrics["mean"]
    reading = next(line for line in out.splitlines() if line.startswith("reading: "))
    assert f"{mean['nearby_psnr']:.1f} dB against the frames 1-3 s away" in reading
    assert f"{mean['swapped_psnr']:.1f} dB when read from another video's memory" in reading
    with Image.open(tmp_path / "grid.png") as grid:  # truth, retrieved, one-step, bicubic, another video's memory
        assert grid.height == 18 + 5 * (64 * 4 + 4)


def test_demo_continues_the_video_with_the_shipped_stage2_model(tmp_path, capsys):
    from framemem.cli.main import DEFAULT_AR_CHECKPOINT
    from framemem.data.video import load_frames

    model = FrameMem.from_pretrained(DEFAULT_AR_CHECKPOINT)
    assert model.config.stage == 2 and model.text_encoder is not None
    assert main(["demo", "--out", str(tmp_path), "--seed", "2", "--frames", "1", "--steps", "2"]) == 0
    frames = load_frames(tmp_path / "generated.mp4", 4.0, 64, 64)
    assert len(frames) == (8 + 12) * 4  # the 8 s init video, then 12 one-second sections
    sections = json.loads((tmp_path / "generated.json").read_text())["sections"]
    window = model.config.ar.window_frames * 8 * 8  # the sliding window beside the memory: 8x8 tokens a latent frame
    assert window == 128 and len(sections) == 12 and sections[0]["memory_tokens"] == 64 + window  # 8 s at 4x4x2
    assert sections[-1]["memory_tokens"] == 19 * 8 + window  # 19 s of history before the last section
    assert (tmp_path / "generated.png").stat().st_size > 0
