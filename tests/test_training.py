import json
import shutil

import numpy as np
import pytest
import torch
from conftest import fit_fixed_batch

from framemem.data.histories import HistorySampler, heldout_videos
from framemem.errors import FrameMemError
from framemem.files import read_jsonl
from framemem.models.framemem import FrameMem
from framemem.training.stage1_retrieval import memory_diagnostics, retrieval_loss, select_omega
from framemem.training.checkpoints import latest_checkpoint
from framemem.training.trainer import pretrain, step_generators


def test_omega_is_random_across_steps():
    sets = set()
    covered = set()
    for step in range(100):
        _, generator = step_generators(0, step)
        omega = select_omega("mixed", 20, 3, generator)
        assert len(set(omega.tolist())) == 3 and omega.max() < 20
        sets.add(tuple(omega.tolist()))
        covered.update(omega.tolist())
    assert len(sets) > 50  # never a fixed set of positions (contiguous spans may repeat)
    assert len(covered) == 20  # every frame of the history gets retrieved at some step
    _, g = step_generators(0, 1)
    span = select_omega("contiguous", 20, 4, g)
    assert (span.diff() == 1).all()


@pytest.mark.parametrize("prediction_type", ["velocity", "x0"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(config, prediction_type):
    config.model.prediction_type = prediction_type  # x0: the same velocity loss, through (x_t − x0) / t
    model = FrameMem.build(config)
    rng, _ = step_generators(0, 0)
    video = HistorySampler(config.model).batch(rng, 2)
    losses = fit_fixed_batch(model, lambda: model(retrieval_loss, video, config.train, torch.Generator().manual_seed(0)), 12)
    assert losses[-1] < 0.8 * losses[0]


def test_diagnostics_compute(config):
    model = FrameMem.build(config).eval()
    videos = [torch.rand(1, 3, 16, 32, 32) * 2 - 1 for _ in range(2)]
    result = memory_diagnostics(model, videos)
    assert set(result) == {"one_step_psnr", "loss_t1", "loss_t1_swapped", "memory_gap", "mean_frame_psnr", "bicubic_psnr"}
    assert np.isfinite(list(result.values())).all()
    assert result["memory_gap"] == result["loss_t1_swapped"] - result["loss_t1"]


def _losses(run):
    records = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len({r["step"] for r in records}) == len(records), "a step logged twice"
    return {r["step"]: r["loss"] for r in records}


def test_resume_continues_exactly(config, tmp_path):
    config.train.steps = 4
    pretrain(config, tmp_path / "straight")
    # the same run, after an attempt killed before its first checkpoint (its log lines must go) ...
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "log.jsonl").write_text('{"step": 1, "loss": 99.0}\n')
    # ... and killed while writing its step-4 checkpoint: resume must use step 2
    pretrain(config, tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-4")
    (tmp_path / "resumed" / "checkpoints" / "step-4").mkdir()  # incomplete: no trainer_state.json
    assert latest_checkpoint(tmp_path / "resumed").name == "step-2"
    with open(tmp_path / "resumed" / "log.jsonl", "a") as f:
        f.write('{"step": 4, "seco')  # ... and mid-append to its log
    with pytest.raises(FrameMemError, match="--resume"):
        pretrain(config, tmp_path / "resumed")
    with pytest.raises(FrameMemError, match="memory encoder proposed, not only_lr"):
        pretrain(config, tmp_path / "resumed", variant="only_lr", resume=True)
    (tmp_path / "resumed" / "checkpoints" / ".tmp-step-3").mkdir()  # a save killed mid-write
    pretrain(config, tmp_path / "resumed", resume=True)
    assert not list((tmp_path / "resumed" / "checkpoints").glob(".tmp-*"))
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]
    assert resumed == straight
    assert (tmp_path / "resumed" / "curves.png").exists()
    a = FrameMem.from_pretrained(tmp_path / "straight" / "model")
    b = FrameMem.from_pretrained(tmp_path / "resumed" / "model")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_stop_after_max_minutes_leaves_a_checkpoint(config, tmp_path):
    pretrain(config, tmp_path / "run", max_minutes=1e-9)
    assert latest_checkpoint(tmp_path / "run").name == "step-1"
    assert (tmp_path / "run" / "model" / "framemem.json").exists()


def test_max_minutes_counts_training_time_not_evaluation(config, tmp_path):
    """Evaluating every step takes most of the wall time; the budget is still trained in
    full, so a benchmark that continues a run to the same budget has nothing left to do."""
    config.train.steps, config.train.eval_every = 10_000, 1
    trainer = pretrain(config, tmp_path / "run", max_minutes=0.01, heldout_real=[])
    state = json.loads((latest_checkpoint(tmp_path / "run") / "trainer_state.json").read_text())
    assert trainer.elapsed >= 0.6 and state["elapsed_seconds"] == trainer.elapsed
    assert state["step"] < config.train.steps


def test_ema_weights_are_exported(config, tmp_path):
    config.train.steps, config.train.ema_decay, config.train.lr = 2, 0.5, 1e-2
    trainer = pretrain(config, tmp_path / "run")
    exported = FrameMem.from_pretrained(tmp_path / "run" / "model")
    live = trainer.unwrapped.state_dict()
    differs = [n for n, p in exported.dit.state_dict().items() if not torch.equal(p, live[f"dit.{n}"])]
    assert differs  # the export holds the EMA average, not the live weights
    logged = [r["eval"] for r in read_jsonl(tmp_path / "run" / "log.jsonl") if "eval" in r][-1]
    measured = memory_diagnostics(exported.eval(), heldout_videos(config.model, count=2))
    assert logged == pytest.approx(measured, rel=1e-4)  # the evaluation measured the exported weights


def test_gradient_checkpointing_gives_the_same_gradients(config):
    model = FrameMem.build(config)
    rng, _ = step_generators(0, 0)
    video = HistorySampler(config.model).batch(rng, 2)

    def grads():
        model.zero_grad()
        loss = model(retrieval_loss, video, config.train, torch.Generator().manual_seed(0))
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.dit.parameters() if p.grad is not None])

    plain = grads()
    model.dit.transformer.enable_gradient_checkpointing()
    assert model.dit.transformer.gradient_checkpointing
    checkpointed = grads()
    assert plain[0] == pytest.approx(checkpointed[0], abs=1e-6)
    assert torch.allclose(plain[1], checkpointed[1], atol=1e-5)
