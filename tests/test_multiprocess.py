"""Two gloo processes on CPU (torchrun, which `accelerate launch` wraps on GPUs)."""
import json
import subprocess
import sys
from pathlib import Path

from ddp_worker import fingerprint

from framemem.models.framemem import FrameMem
from framemem.training.checkpoints import latest_checkpoint
from framemem.training.trainer import pretrain


def test_two_processes_train_both_stages_in_sync_and_resume_on_one(tmp_path, config):
    run = tmp_path / "run"
    worker = Path(__file__).parent / "ddp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(worker), str(run)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((run / f"weights-rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # a time budget stops every rank at the same step, even if only one rank's clock ran out
    assert [(r["stop_if_rank_1_would"], r["stop_if_none_would"]) for r in ranks] == [(True, False)] * 2
    # ranks drew different histories (data is seeded by rank) yet hold identical weights:
    # the gradients were averaged
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["stage2"] == ranks[1]["stage2"]  # stage 2 too (LoRA and text encoder)
    fresh = FrameMem.build(config)
    assert fingerprint(fresh) != ranks[0]["weights"]  # and training did change them

    assert latest_checkpoint(run).name == "step-2"
    config.train.steps = config.train.checkpoint_every = 2
    resumed = pretrain(config, run, resume=True)  # one process reads the 2-process checkpoint
    assert fingerprint(resumed.unwrapped) == ranks[0]["weights"]
    config.train.steps = 3  # a longer run: a changed setting, applied on request
    resumed = pretrain(config, run, resume=True, accept_changes=True)
    assert resumed.step == 3 and fingerprint(resumed.unwrapped) != ranks[0]["weights"]
