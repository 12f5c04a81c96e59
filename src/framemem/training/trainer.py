"""The Accelerate training loop shared by both stages, with atomic, resumable checkpoints.

Every step draws its data, Ω, t and ε from generators seeded by (seed, step, rank), so
a resumed run continues exactly as an uninterrupted one (model, optimizer, scheduler
and EMA states come back from the checkpoint).

Run folder:
    checkpoints/step-N/   safetensors + trainer_state.json (see checkpoints.py; no pickles)
    model/                exported FrameMem (framemem.json, safetensors, LoRA)
    log.jsonl             one line per log/eval event; curves.png plots the evals
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..config import FrameMemConfig
from ..data.cache import to_device
from ..errors import FrameMemError
from ..files import default_permissions, read_jsonl, write_text
from ..models.framemem import FrameMem
from .checkpoints import (DamagedCheckpoint, apply_checkpoint, complete_checkpoints, prepare_run_folder,
                          read_checkpoint, write_checkpoint)

log = logging.getLogger("framemem")


def step_generators(seed: int, step: int, rank: int = 0) -> tuple[np.random.Generator, torch.Generator]:
    """Independent, reproducible randomness for one step on one rank."""
    rng = np.random.default_rng([seed, step, rank])
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, generator


class Trainer:
    """Owns model, optimizer, schedule, EMA, checkpoints and logs for one run.

    `objective(model, batch, generator) -> loss` and `make_batch(rng) -> batch` define the
    stage; `evaluate(model) -> dict` is called every `eval_every` steps.
    """

    def __init__(
        self,
        config: FrameMemConfig,
        run_dir: str | Path,
        model: FrameMem,
        objective: Callable,
        make_batch: Callable,
        evaluate: Callable | None = None,
        stage: str = "pretrain",
        find_unused_parameters: bool = False,
    ):
        self.config, self.tc = config, config.train
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        mp = self.tc.mixed_precision
        if mp == "fp16" and not torch.cuda.is_available():  # fp16 autocast needs a GPU
            mp = "no"
        from accelerate.utils import DistributedDataParallelKwargs

        # Parameters a step may leave unused (φ when a batch has no history) need DDP told.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)
        self.accelerator = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
        if self.accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
            # a checkpoint is written whole by one process (safetensors, no pickles); sharded
            # parameters and optimizer states would need gathering, which is not built yet
            raise FrameMemError(f"{self.accelerator.distributed_type.value}: framemem's checkpoints are written by one "
                                "process from unsharded states; train with DDP (configs/accelerate/ddp-*.yaml)")
        self.stage = stage
        self.objective, self.make_batch, self.evaluate = objective, make_batch, evaluate

        groups = self._param_groups(model)
        self.trainable = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.AdamW(groups, weight_decay=self.tc.weight_decay, betas=(0.9, 0.99))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.scheduler = self._scheduler(0)
        # the EMA is saved by `write_checkpoint`, not registered with Accelerate (which pickles it)
        self.ema = EMAModel(self.trainable, decay=self.tc.ema_decay) if self.tc.ema_decay else None
        self.step, self.elapsed = 0, 0.0

    def _scheduler(self, step: int):
        """Warm-up then cosine decay, positioned at optimizer step `step`. Not handed to
        Accelerate, which would step it once per process and tie the schedule (and every
        checkpoint) to the number of processes; it is rebuilt from the step on resume."""
        return get_scheduler("cosine", self.optimizer, num_warmup_steps=self.tc.warmup_steps,
                             num_training_steps=self.tc.steps, last_epoch=step - 1)

    def _param_groups(self, model: FrameMem) -> list[dict]:
        """DiT, its query/key norm gains (no decay, own lr scale) and φ (own lr)."""
        tc = self.tc
        dit = [(n, p) for n, p in model.dit.named_parameters() if p.requires_grad]
        qk = [p for n, p in dit if ".norm_q." in n or ".norm_k." in n]
        groups = [
            {"params": [p for n, p in dit if not (".norm_q." in n or ".norm_k." in n)], "lr": tc.lr},
            {"params": qk, "lr": tc.lr * tc.qk_norm_lr_scale, "weight_decay": 0.0},
            {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": tc.encoder_lr or tc.lr},
        ]
        if model.text_encoder is not None:
            groups.append({"params": [p for p in model.text_encoder.parameters() if p.requires_grad], "lr": tc.lr})
        return [g for g in groups if g["params"]]

    @property
    def unwrapped(self) -> FrameMem:
        return self.accelerator.unwrap_model(self.model)

    # ---- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        folder = self.run_dir / "checkpoints"
        final, tmp = folder / f"step-{self.step}", folder / f".tmp-step-{self.step}"
        if self.accelerator.is_main_process:  # and what a killed save left behind
            for stale in folder.glob(".tmp-step-*"):
                shutil.rmtree(stale, ignore_errors=True)
            state = {"step": self.step, "elapsed_seconds": self.elapsed, "config": self.config.to_dict(),
                     "encoder": self._encoder_config()}
            write_checkpoint(tmp, self.unwrapped, self.optimizer, self.ema, self.accelerator.scaler, state)
            default_permissions(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in complete_checkpoints(self.run_dir)[self.tc.keep_checkpoints:]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def resume(self) -> bool:
        """Continue from the newest checkpoint that reads back whole; a damaged one (a
        truncated file, broken JSON) is reported and the one before it is used."""
        found = complete_checkpoints(self.run_dir)
        damaged = []
        for ckpt in found:
            try:
                payload = read_checkpoint(ckpt, with_ema=self.ema is not None)
            except DamagedCheckpoint as err:
                damaged.append(str(err))
                log.warning("framemem: warning: %s; trying the checkpoint before it", err)
                continue
            self._check_same_model(ckpt, payload["state"])
            wanted = [{"lr": g["initial_lr"], "weight_decay": g["weight_decay"], "betas": g["betas"]}
                      for g in self.optimizer.param_groups]
            apply_checkpoint(payload, self.unwrapped, self.optimizer, self.ema, self.accelerator.scaler)
            for group, settings in zip(self.optimizer.param_groups, wanted):  # as `prepare_run_folder` settled them
                group.update(settings, initial_lr=settings["lr"])
            state = payload["state"]
            self.step, self.elapsed = state["step"], state["elapsed_seconds"]
            self.scheduler = self._scheduler(self.step)
            self._trim_log()
            log.info("resumed from %s (step %d)", ckpt, self.step)
            return True
        if damaged:
            raise FrameMemError(f"{self.run_dir}: no checkpoint reads back whole ({damaged[-1]})")
        return False

    def _check_same_model(self, ckpt: Path, state: dict) -> None:
        def model_numbers(config: FrameMemConfig) -> dict:  # fields added since then take their defaults
            return json.loads(json.dumps(config.to_dict()["model"]))

        if model_numbers(FrameMemConfig.from_dict(state["config"])) != model_numbers(self.config):
            raise FrameMemError(f"{ckpt}: was trained with another model config; start a new run folder")
        saved = state.get("encoder", self._encoder_config())
        if saved != self._encoder_config():
            raise FrameMemError(f"{ckpt}: was trained with the memory encoder {saved.get('variant', saved)}, not "
                                f"{self._encoder_config().get('variant')}; pass the same --variant, or start a new run folder")

    def _encoder_config(self) -> dict:
        """φ's config (variant, rate, widths) as JSON numbers, to match a checkpoint against."""
        config = {k: v for k, v in self.unwrapped.encoder.config.items() if not k.startswith("_")}
        return json.loads(json.dumps(config))

    def _trim_log(self) -> None:
        """Drop log lines written after the checkpoint we resume from, and a last line torn
        by a kill mid-append."""
        path = self.run_dir / "log.jsonl"
        if path.exists() and self.accelerator.is_main_process:
            keep = [r for r in read_jsonl(path) if r["step"] <= self.step]
            write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    @contextlib.contextmanager
    def ema_weights(self):
        """Within the block the trainable weights are the EMA average (when EMA is on): what
        `export` writes is what the evaluation measures."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.trainable)
        self.ema.copy_to(self.trainable)
        try:
            yield
        finally:
            self.ema.restore(self.trainable)

    def export(self, path: str | Path | None = None, dtype: torch.dtype | None = None) -> Path:
        """Write the model folder (EMA weights when EMA is on)."""
        path = Path(path or self.run_dir / "model")
        if self.accelerator.is_main_process:
            with self.ema_weights():
                self.unwrapped.save_pretrained(path, dtype=dtype)
        self.accelerator.wait_for_everyone()
        return path

    def fit(self, resume: bool = False, max_minutes: float | None = None, export_dtype: torch.dtype | None = None) -> "Trainer":
        """A whole run: resume if asked, train, export `run_dir/model`, plot `curves.png`."""
        if not (resume and self.resume()) and self.accelerator.is_main_process:
            # a fresh start: lines of an attempt killed before its first checkpoint would
            # otherwise stay at the top of the new run's log
            (self.run_dir / "log.jsonl").unlink(missing_ok=True)
        self.config.save(self.run_dir / "framemem.json")
        self.train(max_minutes=max_minutes)
        self.export(dtype=export_dtype)
        if self.accelerator.is_main_process and (self.run_dir / "log.jsonl").exists():  # a run shorter than log_every has none
            from ..plots import plot_curves

            plot_curves(self.run_dir / "log.jsonl", self.run_dir / "curves.png")
        return self

    # ---- loop -------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def run_eval(self) -> dict:
        model = self.unwrapped
        model.eval()
        with self.ema_weights():
            result = self.evaluate(model) if self.evaluate else {}
        model.train()
        record = {"step": self.step, "seconds": round(self.elapsed, 1), "eval": result}
        self._log(record)
        return result

    def any_rank(self, flag: bool) -> bool:
        """True on every process if `flag` is true on any: each rank keeps its own clock, and
        ranks that left the loop at different steps would wait forever on each other."""
        if self.accelerator.num_processes == 1:
            return flag
        flags = self.accelerator.gather(torch.tensor([float(flag)], device=self.accelerator.device))
        return bool(flags.max() > 0)

    def train(self, max_minutes: float | None = None) -> None:
        """Train up to the config's steps or for `max_minutes` more of training
        time — the clock of the logged `seconds`, evaluation and checkpoints excluded, so a
        budget given in minutes is the same whether a run stops once or is resumed; checkpoints
        every `checkpoint_every` steps and at the end."""
        total = self.tc.steps
        budget = self.elapsed + 60 * max_minutes if max_minutes else None
        rank = self.accelerator.process_index
        self.model.train()
        if self.step == 0 and self.evaluate:
            self.run_eval()
        bar = tqdm(total=total, initial=self.step, desc=self.stage, disable=not self.accelerator.is_main_process)
        running, last = [], time.monotonic()
        while self.step < total:
            rng, generator = step_generators(self.tc.seed, self.step, rank)
            batch = self.make_batch(rng)
            with self.accelerator.autocast():
                loss = self.model(self.objective, batch, generator)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients and self.tc.grad_clip:
                self.accelerator.clip_grad_norm_(self.trainable, self.tc.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(self.trainable)
            self.step += 1
            now = time.monotonic()
            self.elapsed += now - last
            last = now
            running.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
            if self.step % self.tc.log_every == 0:
                lr = self.scheduler.get_last_lr()[0]
                self._log({"step": self.step, "seconds": round(self.elapsed, 1), "loss": float(np.mean(running)), "lr": lr})
                running = []
            stop = budget is not None and self.any_rank(self.elapsed >= budget)
            if self.evaluate and (self.step % self.tc.eval_every == 0 or self.step == total or stop):
                result = self.run_eval()
                bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
                last = time.monotonic()  # evaluation time is not training time
            if self.step % self.tc.checkpoint_every == 0 or self.step == total or stop:
                self.save_checkpoint()
                last = time.monotonic()
            if stop:
                break
        bar.close()


def history_lengths(model: FrameMem, full: int, minimum: float | None) -> list[int]:
    """Pixel-frame lengths a training history may take: whole temporal blocks of φ from
    `minimum` frames up to `full` (only `full` when `minimum` is None)."""
    if not minimum:
        return [full]
    block = model.encoder.block_frames
    latent_full = model.codec.latent_frames(full)
    lengths = [model.codec.pixel_frames(n) for n in range(block, latent_full + 1, block)]
    return [n for n in lengths if n >= minimum] or [full]


def build_run_model(config: FrameMemConfig, run_dir: str | Path, resume: bool, variant: str,
                    accept_changes: bool = False) -> FrameMem:
    """The seeded model a run starts from (after `prepare_run_folder`)."""
    prepare_run_folder(config, run_dir, resume, accept_changes)
    torch.manual_seed(config.train.seed)
    model = FrameMem.build(config, variant)
    if config.train.gradient_checkpointing:
        model.dit.transformer.enable_gradient_checkpointing()
    return model


def history_sampler(config: FrameMemConfig, data=None):
    """Training videos: the procedural generator, mixed with the videos of `data` when given."""
    from ..data.histories import HistorySampler
    from ..data.video import MIN_VIDEO_SECONDS, VideoDataset

    mc, tc = config.model, config.train
    dataset = None if data is None else VideoDataset(data, mc.fps, mc.height, mc.width, min_frames=int(mc.fps * MIN_VIDEO_SECONDS))
    return HistorySampler(mc, dataset, tc.procedural_fraction, tc.procedural_pool)


def pretrain(
    config: FrameMemConfig,
    run_dir: str | Path,
    data: str | Path | None = None,
    heldout_real: list[str | Path] = (),
    variant: str = "proposed",
    resume: bool = False,
    max_minutes: float | None = None,
    export_dtype: torch.dtype | None = None,
    cache: str | Path | None = None,
    accept_changes: bool = False,
) -> Trainer:
    """Stage-1 retrieval pretraining; returns the trainer after exporting `run_dir/model`.

    Histories come from `cache` (a `framemem cache` folder: latents, no decoding) when
    given; otherwise from the procedural generator mixed with the videos of `data`."""
    from ..data.cache import CachedHistories
    from ..data.histories import heldout_videos
    from .stage1_retrieval import memory_diagnostics, retrieval_loss

    mc, tc = config.model, config.train
    model = build_run_model(config, run_dir, resume, variant, accept_changes)
    sampler = history_sampler(config, data)
    heldout = heldout_videos(mc, count=2, real=heldout_real)
    lengths = history_lengths(model, mc.history_frames, tc.history_seconds_min and tc.history_seconds_min * mc.fps)
    cached = CachedHistories(cache, config, model.encoder.block_frames) if cache is not None else None

    def make_batch(rng):
        frames = lengths[rng.integers(len(lengths))]
        if cached is not None:
            return cached.batch(rng, tc.batch_size, model.codec.latent_frames(frames))
        return sampler.batch(rng, tc.batch_size, frames)

    def objective(m, history, generator):
        device = next(m.parameters()).device
        history = to_device(history, device)
        return retrieval_loss(m, history, tc, generator)

    def evaluate(m):
        return memory_diagnostics(m, [v.to(next(m.parameters()).device) for v in heldout])

    trainer = Trainer(config, run_dir, model, objective, make_batch, evaluate)
    return trainer.fit(resume, max_minutes, export_dtype)
