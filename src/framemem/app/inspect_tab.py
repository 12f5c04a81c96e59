"""The "Inspect a memory" tab: what a checkpoint's memory of a video holds, frame by frame.

Every figure comes from `FrameMemRetrievalPipeline` (the retrieval the CLI's `retrieve`
runs) and from the planner (`framemem plan`); nothing here computes them a second way.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ..rates import format_rate
from ..errors import FrameMemError
from ..pipelines import EncodedHistory
from ..plan import PAPER_RATES, plan
from .catalog import Catalog

log = logging.getLogger("framemem")
STRIP_FRAMES = 8  # retrieved frames shown across the whole history
SHOWN_PIXELS = 256  # small frames are enlarged (nearest neighbour) to at least this size
RETRIEVAL_SEED = 0  # the same noise for every retrieval: moving the slider changes only the time
PLAN_HEADERS = ["context", "memory tokens", "full / memory", "attention TFLOPs per forward", "activation GB (train, bf16)"]


def error_line(err: Exception, path: str | Path | None = None) -> str:
    """The CLI's one line; an uploaded file is named by its name, not its temporary folder."""
    text = str(err)
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    return f"framemem: error: {text}"


def internal_error(err: Exception) -> str:
    return f"framemem: internal error: {type(err).__name__}: {err} (see the app's log)"


def enlarged(image: Image.Image) -> Image.Image:
    scale = max(1, -(-SHOWN_PIXELS // max(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


class InspectTab:
    """The tab's callbacks over a `Catalog`; a history is {"checkpoint", "path"} in the page's state."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._encoded = functools.lru_cache(maxsize=4)(self._encode)

    def _encode(self, checkpoint: str, path: str, mtime: float) -> EncodedHistory:
        return self.catalog.retrieval(checkpoint).encode(path, path)

    def encoded(self, history: dict) -> EncodedHistory:
        """The history compressed by the checkpoint, once: moving the slider only samples."""
        path = history["path"]
        return self._encoded(history["checkpoint"], path, Path(path).stat().st_mtime if Path(path).exists() else 0.0)

    # ---- a history is chosen ---------------------------------------------------------------
    def summary(self, history: dict) -> str:
        pipe, frames = self.catalog.retrieval(history["checkpoint"]), self.encoded(history).frames
        mc = pipe.framemem_config.model
        counts = pipe.model.token_counts(frames, mc.height, mc.width)
        return (f"**{history['name']}**: {frames} frames, {frames / mc.fps:.1f} s at {mc.fps:g} fps, "
                f"{mc.width}x{mc.height}  \n"
                f"**{counts['full_context']:,} full-context tokens → {counts['memory']:,} memory tokens** "
                f"({counts['full_context'] / counts['memory']:.0f}x shorter).  \n"
                f"Checkpoint `{history['checkpoint']}`: {self.catalog.describe(history['checkpoint'])}.")

    def plan_rows(self, history: dict) -> list[list]:
        """The planner's rows for this video at the checkpoint's frame size: its own rate first."""
        pipe, frames = self.catalog.retrieval(history["checkpoint"]), self.encoded(history).frames
        config = pipe.framemem_config
        mc = config.model
        rates = [tuple(mc.rate)] + [r for r in PAPER_RATES if tuple(r) != tuple(mc.rate)]
        result = plan(config, mc.height, mc.width, mc.fps, frames / mc.fps, rates, config.ar.section_seconds)
        own = f"rate {format_rate(mc.rate)}"
        return [[r["name"] + (" (this checkpoint)" if r["name"].split(" + ")[0] == own else ""), r["memory_tokens"],
                 f"{r['ratio']:.1f}x", round(r["attention_tflops"], 4), round(r["activation_gb"], 3)]
                for r in result["rows"]]

    def retrieve(self, history: dict, times: list[float]):
        pipe = self.catalog.retrieval(history["checkpoint"])
        return pipe(self.encoded(history), times, generator=torch.Generator().manual_seed(RETRIEVAL_SEED),
                    output_type="pil")

    def at(self, history: dict, seconds: float):
        """(original, sampled retrieval, one-step estimate, bicubic reference, metrics line)."""
        out = self.retrieve(history, [seconds])
        m = out.metrics["per_frame"][0]
        line = (f"**t = {out.times[0]:.2f} s** (frame {out.frame_indices[0]}): retrieved {m['psnr']:.2f} dB PSNR, "
                f"SSIM {m['ssim']:.3f} · one-step {m['one_step_psnr']:.2f} dB, SSIM {m['one_step_ssim']:.3f} · "
                f"bicubic reference {m['bicubic_psnr']:.2f} dB, SSIM {m['bicubic_ssim']:.3f} · "
                f"the history's mean frame {m['mean_frame_psnr']:.2f} dB")
        if m.get("nearby_psnr") is not None:
            line += f" · the retrieved frame against the frames 1-3 s away: {m['nearby_psnr']:.2f} dB"
        images = (out.ground_truth[0], out.frames[0], out.one_step[0], out.bicubic[0])
        return (*(enlarged(image) for image in images), line)

    def strip(self, history: dict) -> list[tuple[Image.Image, str]]:
        """Retrieved frames at STRIP_FRAMES times spread over the whole history, with PSNRs."""
        frames = self.encoded(history).frames
        fps = self.catalog.retrieval(history["checkpoint"]).framemem_config.model.fps
        times = sorted({round(float(i) / fps, 2) for i in np.linspace(0, frames - 1, STRIP_FRAMES).round()})
        out = self.retrieve(history, times)
        return [(enlarged(image), f"{r['time']:.2f} s · {r['psnr']:.1f} dB")
                for image, r in zip(out.frames, out.metrics["per_frame"])]

    # ---- the page's events -------------------------------------------------------------------
    def choose(self, checkpoint: str, path, name: str | None = None):
        """A history chosen (a clip, an upload, or another checkpoint for the same one): every
        output of the tab. Bad input fills the status line and clears the rest."""
        if not path:
            return self._cleared("Choose a bundled clip or upload a video.")
        history = {"checkpoint": checkpoint, "path": str(path), "name": name or Path(path).name}
        try:
            summary, rows = self.summary(history), self.plan_rows(history)
            frames = self.encoded(history).frames
            fps = self.catalog.retrieval(checkpoint).framemem_config.model.fps
            shown = self.at(history, 0.0)
            strip = self.strip(history)
        except FrameMemError as err:
            return self._cleared(error_line(err, path))
        except Exception as err:  # a bug: one line in the page, the traceback in the log
            log.exception("inspecting %s failed", path)
            return self._cleared(internal_error(err))
        slider = gr.update(minimum=0, maximum=round((frames - 1) / fps, 3), step=round(1 / fps, 3), value=0,
                           interactive=True)
        return (history, summary, rows, slider, *shown, strip)

    def move(self, history: dict | None, seconds: float):
        """The time slider moved: the four frames and their metrics at `seconds`."""
        if not history:
            return (None, None, None, None, "Choose a bundled clip or upload a video first.")
        try:
            return self.at(history, float(seconds))
        except FrameMemError as err:
            return (None, None, None, None, error_line(err, history["path"]))
        except Exception as err:
            log.exception("retrieval at %s s failed", seconds)
            return (None, None, None, None, internal_error(err))

    @staticmethod
    def _cleared(message: str):
        return (None, message, [], gr.update(value=0, interactive=False), None, None, None, None, "", [])

    def build(self) -> None:
        """The tab's components and events (inside a `gr.Blocks`)."""
        labels = list(self.catalog.paths)
        clips = self.catalog.clips()
        gr.Markdown("Compress a video into a memory and read any moment back from the memory alone. "
                    "**Retrieved** is sampled from the memory; **one-step** is the model's single-step estimate "
                    "(the average of what the memory allows); **bicubic** is the frame shrunk by the memory's "
                    "spatial rate and enlarged again (what a low-resolution copy would hold).")
        with gr.Row():
            checkpoint = gr.Dropdown(labels, value=labels[0], label="Checkpoint", elem_id="inspect-checkpoint")
            clip = gr.Dropdown(list(clips), value=None, label="Bundled clip", elem_id="inspect-clip")
            upload = gr.File(label="…or upload a video", elem_id="inspect-upload")
        history = gr.State(None)
        summary = gr.Markdown("Choose a bundled clip or upload a video.", elem_id="inspect-summary")
        plan_table = gr.Dataframe(headers=PLAN_HEADERS, value=[], interactive=False, elem_id="inspect-plan",
                                  label="The planner's cost of one DiT forward with this video as history "
                                        "(a 1 s section beside the context)")
        time = gr.Slider(0, 1, value=0, step=0.25, label="Time in the history (seconds)", interactive=False,
                         elem_id="inspect-time")
        with gr.Row():
            shown = [gr.Image(label=name, type="pil", interactive=False, elem_id=f"inspect-{key}")
                     for key, name in (("original", "original frame"), ("retrieved", "retrieved (sampled)"),
                                       ("one-step", "one-step estimate"), ("bicubic", "bicubic reference"))]
        metrics = gr.Markdown(elem_id="inspect-metrics")
        strip = gr.Gallery(label="Retrieved across the whole history (time · PSNR)", columns=STRIP_FRAMES, rows=1,
                           height=220, object_fit="contain", fit_columns=False, allow_preview=False,
                           elem_id="inspect-strip")

        outputs = [history, summary, plan_table, time, *shown, metrics, strip]
        limits = {"concurrency_id": "inspect", "concurrency_limit": 1}
        clip.change(lambda c, name: self.choose(c, clips.get(name), name), [checkpoint, clip], outputs, **limits)
        upload.upload(lambda c, f: self.choose(c, f), [checkpoint, upload], outputs, **limits)
        checkpoint.change(lambda c, h: self.choose(c, h and h["path"], h and h["name"]), [checkpoint, history],
                          outputs, **limits)
        gr.on([time.release, time.input], self.move, [history, time], [*shown, metrics], trigger_mode="always_last",
              **limits)
