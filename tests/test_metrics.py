"""LPIPS from local weight files: torchvision's AlexNet layout and the LPIPS release's
linear layers, written here with random values (no download)."""
import numpy as np
import pytest
import torch

from framemem.cli.main import main
from framemem.errors import FrameMemError
from framemem.metrics import ALEXNET_CHANNELS, LPIPS


def write_lpips_files(folder, seed=0, scale=1.0):
    """(backbone .pth, linear .pth) in the official key layouts, random weights."""
    torch.manual_seed(seed)
    backbone = {f"features.{k}": v for k, v in LPIPS().features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)  # the rest of torchvision's AlexNet is ignored
    linear = {f"lin{k}.model.1.weight": scale * torch.rand(1, c, 1, 1) for k, c in enumerate(ALEXNET_CHANNELS)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(backbone, folder / "alexnet.pth")
    torch.save(linear, folder / f"alex-{scale:g}.pth")
    return folder / "alexnet.pth", folder / f"alex-{scale:g}.pth"


def test_lpips_is_a_distance_weighted_by_the_linear_layers(tmp_path):
    backbone, linear = write_lpips_files(tmp_path)
    metric = LPIPS.from_files(backbone, linear)
    torch.manual_seed(1)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    d = metric(a, b)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(d, metric(b, a)) and metric(a, a).abs().max() < 1e-6
    assert metric(a, 0.9 * a + 0.1 * b).mean() < d.mean()  # closer images, smaller distance
    doubled = LPIPS.from_files(backbone, write_lpips_files(tmp_path, scale=2.0)[1])
    assert torch.allclose(doubled(a, b), 2 * d, rtol=1e-5)  # linear in the learned weights


def test_lpips_files_that_are_not_the_expected_ones_are_one_line_errors(tmp_path):
    backbone, linear = write_lpips_files(tmp_path)
    with pytest.raises(FrameMemError, match="not torchvision's AlexNet"):
        LPIPS.from_files(linear, linear)
    with pytest.raises(FrameMemError, match="lack lin0"):
        LPIPS.from_files(backbone, backbone)
    with pytest.raises(FrameMemError, match="not found"):
        LPIPS.from_files(tmp_path / "nope.pth", linear)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FrameMemError, match="cannot read"):
        LPIPS.from_files(tmp_path / "bad.pth", linear)


def test_bench_lpips_needs_both_files(tmp_path, capsys):
    backbone, _ = write_lpips_files(tmp_path)
    assert main(["bench", "retrieval", "--quick", "--lpips-backbone", str(backbone), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs both" in err and len(err.splitlines()) == 1


def test_continuity_is_one_without_a_cut_and_drops_with_one():
    from framemem.metrics import Continuity

    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (1, 16, 16, 3))
    drift = np.concatenate([np.clip(base + 4 * i, 0, 255) for i in range(8)]).astype(np.uint8)  # smooth motion
    smooth = Continuity()
    for first in range(0, 8, 4):
        smooth.add(drift[first : first + 4])
    assert smooth.summary()["ratio"] == pytest.approx(1.0, abs=0.05) and smooth.summary()["boundaries"] == 1
    cut = Continuity()
    cut.add(drift[:4])
    cut.add(drift[:4][:, ::-1].copy())  # a new section, as smooth inside, that starts from another picture
    assert cut.summary()["ratio"] < 0.7
    assert Continuity().summary() is None
