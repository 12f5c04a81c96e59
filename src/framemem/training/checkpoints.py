"""Training checkpoints as safetensors and JSON only: nothing in a run folder is unpickled.

A run folder is input like any other (people share them), so a checkpoint holds no
pickle: Accelerate's `save_state` writes the optimizer, the RNG states and custom objects
(the EMA) with `torch.save` and reads them back with `torch.load(weights_only=False)`,
which runs whatever code a planted file carries. Instead a checkpoint is

    step-N/model.safetensors       the model's state dict
    step-N/optimizer.safetensors   optimizer tensors; its param groups and scalars in the metadata
    step-N/ema.safetensors         EMA shadow weights and counters (when EMA is on)
    step-N/trainer_state.json      step, training time, config, grad-scaler state; written
                                   last, so a folder without it is an unfinished save

RNG states are not saved: every step draws its randomness from (seed, step, rank).
Reading a checkpoint loads every file into memory before anything is applied, so a
damaged one (a truncated file, broken JSON) is refused whole and the one before it is used.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file, save_model

from ..config import FrameMemConfig
from ..errors import FrameMemError

log = logging.getLogger("framemem")

STATE_FILE = "trainer_state.json"
FORMAT = "framemem-checkpoint/2"
PICKLED = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl", "scaler.pt")


class DamagedCheckpoint(FrameMemError):
    """A checkpoint folder that cannot be read back whole."""


def step_of(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints whose save finished (trainer_state.json written), newest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    done = [p for p in folder.glob("step-*") if p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(done, key=step_of, reverse=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (it may still be damaged: see `read_checkpoint`)."""
    found = complete_checkpoints(run_dir)
    return found[0] if found else None


def read_state(folder: Path) -> dict:
    """trainer_state.json of a checkpoint; DamagedCheckpoint when it is not one we wrote."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedCheckpoint(f"{folder}: {STATE_FILE} is unreadable ({type(err).__name__})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "config" not in state:
        raise DamagedCheckpoint(f"{folder}: {STATE_FILE} is not a framemem training state")
    if state.get("format") != FORMAT:
        old = [name for name in PICKLED if (folder / name).exists()]
        detail = f" (it holds pickled {', '.join(old)}, which framemem does not load)" if old else ""
        raise DamagedCheckpoint(f"{folder}: written by an older framemem{detail}; start a new run folder")
    return state


def write_checkpoint(folder: Path, model: torch.nn.Module, optimizer, ema, scaler, state: dict) -> None:
    """Fill `folder` (a fresh temporary one); trainer_state.json last."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))
    optim = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in optim["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    meta = {"param_groups": json.dumps(optim["param_groups"]), "scalars": json.dumps(scalars)}
    save_file(tensors, str(folder / "optimizer.safetensors"), metadata=meta)
    if ema is not None:
        ema_state = ema.state_dict()
        shadow = {f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema_state.pop("shadow_params"))}
        save_file(shadow, str(folder / "ema.safetensors"), metadata={"state": json.dumps(ema_state)})
    state = {**state, "format": FORMAT, "scaler": scaler.state_dict() if scaler is not None else None}
    (folder / STATE_FILE).write_text(json.dumps(state))


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise DamagedCheckpoint(f"{path.parent}: {path.name} is missing")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as err:
        raise DamagedCheckpoint(f"{path.parent}: {path.name} is damaged ({str(err).splitlines()[0][:120]})") from None


def read_checkpoint(folder: Path, with_ema: bool) -> dict:
    """Everything a resume needs, read into memory; DamagedCheckpoint if any part is not whole."""
    state = read_state(folder)
    model, _ = _read_safetensors(folder / "model.safetensors")
    optim, meta = _read_safetensors(folder / "optimizer.safetensors")
    try:
        groups, scalars = json.loads(meta["param_groups"]), json.loads(meta["scalars"])
        per_param: dict[int, dict] = {}
        for key, value in [*optim.items(), *scalars.items()]:
            index, _, name = key.partition(".")
            per_param.setdefault(int(index), {})[name] = value
        ema = None
        if with_ema:
            shadow, ema_meta = _read_safetensors(folder / "ema.safetensors")
            ema = {**json.loads(ema_meta["state"]), "shadow_params": [shadow[f"shadow.{i}"] for i in range(len(shadow))]}
    except (KeyError, ValueError) as err:
        raise DamagedCheckpoint(f"{folder}: optimizer or EMA state is incomplete ({err})") from None
    return {"state": state, "model": model, "optimizer": {"state": per_param, "param_groups": groups}, "ema": ema}


def apply_checkpoint(payload: dict, model: torch.nn.Module, optimizer, ema, scaler) -> None:
    """Put what `read_checkpoint` read into the live objects (all shapes and names must match)."""
    try:
        missing, unexpected = model.load_state_dict(payload["model"], strict=False)
        shared = {name for name in missing if name in _aliases(model)}
        if set(missing) - shared or unexpected:
            first = sorted((set(missing) - shared) | set(unexpected))[0]
            raise DamagedCheckpoint(f"model weights do not match this model ({first})")
        optimizer.load_state_dict(payload["optimizer"])
        if ema is not None:
            device = ema.shadow_params[0].device if ema.shadow_params else "cpu"
            ema.load_state_dict(payload["ema"])
            ema.to(device)
        if scaler is not None and payload["state"].get("scaler"):
            scaler.load_state_dict(payload["state"]["scaler"])
    except (RuntimeError, ValueError, KeyError, IndexError) as err:
        raise DamagedCheckpoint(f"state does not fit this run ({str(err).splitlines()[0][:160]})") from None


def _aliases(model: torch.nn.Module) -> set[str]:
    """Names of tensors that share storage with another (save_model writes each once)."""
    seen, aliases = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape) if tensor.numel() else None
        if key is not None and key in seen:
            aliases.add(name)
        elif key is not None:
            seen[key] = name
    return aliases


def prepare_run_folder(config: FrameMemConfig, run_dir: str | Path, resume: bool, accept_changes: bool = False) -> None:
    """Check a run folder before anything is built, and settle the settings a resume trains
    with: the run's recorded ones (train and ar), unless `accept_changes`; either way the
    differences are named. A fresh run never replaces the model or log of another."""
    run_dir = Path(run_dir)
    found = complete_checkpoints(run_dir)
    if not resume:
        if found:
            raise FrameMemError(f"{run_dir} already holds checkpoints: pass --resume, or choose a new folder")
        if (run_dir / "model" / "framemem.json").is_file():
            raise FrameMemError(f"{run_dir} holds a trained model/ (and its log) but no checkpoints to resume: "
                                "choose a new folder, or delete that one first")
        return
    for ckpt in found:
        try:
            recorded = FrameMemConfig.from_dict(read_state(ckpt)["config"])
            break
        except FrameMemError:  # damaged: `Trainer.resume` reports it and falls back
            continue
    else:
        return
    changed = []
    for part in ("train", "ar"):
        old, new = getattr(recorded, part), getattr(config, part)
        for name in (f.name for f in dataclasses.fields(old)):
            before, after = getattr(old, name), getattr(new, name)
            if json.dumps(before) != json.dumps(after):
                changed.append(f"{'ar.' if part == 'ar' else ''}{name} {before} -> {after}")
                if not accept_changes:
                    setattr(new, name, before)
    if changed and accept_changes:
        log.warning("framemem: warning: resuming %s with changed settings: %s", run_dir, ", ".join(changed))
    elif changed:
        log.warning("framemem: warning: --resume keeps the settings %s was trained with; not applied: %s "
                    "(pass --accept-changes to train on with them)", run_dir, ", ".join(changed))
