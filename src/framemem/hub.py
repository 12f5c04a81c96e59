"""Loading diffusers weights from a local folder or a hub id, with a clear error offline."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from .errors import FrameMemError

WEIGHTS = "diffusion_pytorch_model.safetensors"


def looks_local(path_or_id: str) -> bool:
    """A hub id is `org/name`; anything absolute, relative-dotted or deeper is a folder."""
    return path_or_id.startswith(("/", ".", "~")) or path_or_id.count("/") > 1


def missing_weights(folder: Path, weights: str = WEIGHTS) -> list[str]:
    """Weight files a model folder lacks: the single safetensors file `weights`, or the
    shards its index names ([] when complete, or when it holds legacy .bin weights)."""
    index = folder / f"{weights}.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise FrameMemError(f"{index} is not a weight index (no readable 'weight_map')") from None
        return [s for s in shards if not (folder / s).is_file()]
    if (folder / weights).is_file() or any(folder.glob("*.bin")):
        return []
    return [weights]


def load_pretrained(model_cls, path_or_id: str, subfolder: str | None, weights_name: str | None = WEIGHTS, **kwargs):
    """`model_cls.from_pretrained` (diffusers or transformers) from a local folder (the
    model folder itself or a pipeline folder holding `subfolder`) or a hub id; raises
    FrameMemError on failure, naming the missing files of a local folder. `weights_name`:
    the weight file to expect (None for weightless parts such as tokenizers)."""
    local = Path(path_or_id).expanduser()
    if local.exists():
        marker = "config.json" if weights_name else "tokenizer_config.json"
        if (local / marker).exists():
            target, sub, folder = str(local), None, local
        elif subfolder and (local / subfolder / marker).exists():
            target, sub, folder = str(local), subfolder, local / subfolder
        else:
            raise FrameMemError(f"{path_or_id}: no {marker} here (nor in '{subfolder}/')")
        missing = missing_weights(folder, weights_name) if weights_name else []
        if missing:
            raise FrameMemError(f"{folder}: missing weight files: {', '.join(missing)}")
    elif looks_local(path_or_id):
        raise FrameMemError(f"{path_or_id}: no such folder (give a local diffusers folder or a hub id like Wan-AI/...)")
    else:
        target, sub = path_or_id, subfolder
    try:
        with warnings.catch_warnings():  # diffusers still passes an argument huggingface_hub deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return model_cls.from_pretrained(target, subfolder=sub, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        why = ("its files do not load" if local.exists() else
               "not a local folder, and the hub could not provide it (offline?)")
        raise FrameMemError(f"cannot load {model_cls.__name__} from '{path_or_id}': {why}: {first}") from None


def checkpoint_folder(path_or_id: str | Path) -> Path:
    """A framemem checkpoint as a local folder: `path_or_id` when it is one (or names a path
    under an existing folder, e.g. a typo of one), else a hub repo id, downloaded once and
    then read from the hub cache."""
    local = Path(path_or_id).expanduser()
    text = str(path_or_id)
    if local.exists() or looks_local(text) or text.count("/") != 1 or local.parent.exists():
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text))
    except OSError as err:  # offline, unknown, gated: huggingface_hub's errors are all OSErrors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FrameMemError(f"{text}: no such folder, and the hub could not provide it (offline?): {first}") from None


SHIPPED_MODELS = {
    "tiny": "stage 1: the embedded default's retrieval model (memory encoder + DiT), 64x64 at 4 fps",
    "tiny-ar": "stage 2: the embedded default fine-tuned to generate video section by section from a storyboard",
}


def pretrained(name: str = "tiny") -> str:
    """The folder of a model shipped inside the package: "tiny" (stage 1, retrieval) or
    "tiny-ar" (stage 2, generation). Pipelines also take these names directly."""
    if name not in SHIPPED_MODELS:
        raise FrameMemError(f"no shipped model '{name}' (shipped: {', '.join(SHIPPED_MODELS)})")
    return str(Path(__file__).parent / "assets" / name)
