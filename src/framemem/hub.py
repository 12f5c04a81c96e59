"""Loading diffusers weights from a local folder or a hub id, with a clear error offline."""
from __future__ import annotations

from pathlib import Path

from .errors import FrameMemError


def load_pretrained(model_cls, path_or_id: str, subfolder: str | None, **kwargs):
    """`model_cls.from_pretrained` from a local diffusers folder (the model folder itself or
    a pipeline folder holding `subfolder`) or a hub id; raises FrameMemError on failure."""
    local = Path(path_or_id).expanduser()
    if local.exists():
        if (local / "config.json").exists():
            target, sub = str(local), None
        elif subfolder and (local / subfolder / "config.json").exists():
            target, sub = str(local), subfolder
        else:
            raise FrameMemError(f"{path_or_id}: no diffusers config.json here (nor in '{subfolder}/')")
    else:
        target, sub = path_or_id, subfolder
    try:
        return model_cls.from_pretrained(target, subfolder=sub, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FrameMemError(
            f"cannot load {model_cls.__name__} from '{path_or_id}': not a usable local diffusers folder, "
            f"and the hub could not provide it (offline?): {first}"
        ) from None
