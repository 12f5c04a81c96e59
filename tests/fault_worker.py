"""Run by test_faults.py in a child process: stage-1 training of the small config (EMA on)
into RUN, resuming when it holds checkpoints, killed with SIGKILL at a chosen point:

    python fault_worker.py RUN none        train to the end
    python fault_worker.py RUN step:K      kill -9 in the K-th training step of this process
    python fault_worker.py RUN save:K      kill -9 inside the K-th checkpoint write, after
                                           model.safetensors and before the optimizer state
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import small_config  # noqa: E402

import framemem.training.checkpoints as checkpoints  # noqa: E402
import framemem.training.stage1_retrieval as stage1  # noqa: E402
from framemem.training.checkpoints import latest_checkpoint  # noqa: E402
from framemem.training.trainer import pretrain  # noqa: E402


def config():
    c = small_config()
    c.train.steps, c.train.ema_decay, c.train.checkpoint_every = 6, 0.9, 2
    return c


def kill_on_call(module, name: str, count: int) -> None:
    original, calls = getattr(module, name), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= count:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


if __name__ == "__main__":
    run, spec = Path(sys.argv[1]), sys.argv[2]
    kind, _, count = spec.partition(":")
    if kind == "step":
        kill_on_call(stage1, "retrieval_loss", int(count))
    elif kind == "save":
        kill_on_call(checkpoints, "save_file", 2 * int(count) - 1)  # optimizer, then EMA: once per save
    pretrain(config(), run, resume=latest_checkpoint(run) is not None)
