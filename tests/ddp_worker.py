"""Run under torchrun by test_multiprocess.py: stage-1 training, then stage-2 fine-tuning of
its model, on every rank; each rank writes fingerprints of its weights (RUN/weights-rank-R.json)."""
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import small_config  # noqa: E402

from framemem.training.stage2_autoregressive import finetune  # noqa: E402
from framemem.training.trainer import pretrain  # noqa: E402


def fingerprint(module: torch.nn.Module) -> str:
    flat = torch.cat([p.detach().float().flatten() for p in module.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


if __name__ == "__main__":
    run = Path(sys.argv[1])
    config = small_config()
    config.train.steps = config.train.checkpoint_every = 2
    trainer = pretrain(config, run)
    rank = trainer.accelerator.process_index
    record = {"world": trainer.accelerator.num_processes, "weights": fingerprint(trainer.unwrapped),
              "stop_if_rank_1_would": trainer.any_rank(rank == 1), "stop_if_none_would": trainer.any_rank(False)}
    stage2 = finetune(config, run / "model", run / "stage2")
    record["stage2"] = fingerprint(stage2.unwrapped)
    (run / f"weights-rank-{rank}.json").write_text(json.dumps(record))
