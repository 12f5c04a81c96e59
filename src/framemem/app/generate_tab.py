"""The "Generate" tab: a long video from a storyboard, section by section, as `framemem generate` makes it.

A job runs `generation.write_generation` (the CLI's code) in a worker thread; the page's
generator shows each section as it is made. One job runs at a time (Gradio's queue holds
the next ones); Cancel stops the running job after its current denoising step and offers
what was made.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image

from ..data.storyboard import Storyboard
from ..errors import FrameMemError
from ..files import write_json
from ..generation import MAX_SECONDS, GenerationCancelled, check_start, duration_text, partial_path, write_generation
from ..pipelines.inputs import SEED_LIMIT, as_storyboard, image_frame
from .catalog import Catalog
from .inspect_tab import enlarged, error_line, internal_error

log = logging.getLogger("framemem")
EXAMPLE_STORYBOARD = [[0.0, "a clock, the camera pans left"], [1.0, "a patch of grass, the camera zooms in"]]


def storyboard_from_rows(rows) -> Storyboard:
    """The editor's rows [[at, prompt], ...] -> a Storyboard, checked as the CLI checks a file.
    Blank rows are dropped; a time typed as text is read as a number when it is one."""
    pairs = []
    for row in rows or []:
        at, prompt = (list(row) + [None, None])[:2]
        if _blank(at) and _blank(prompt):
            continue
        if isinstance(at, str):
            try:
                at = float(at)
            except ValueError:
                pass
        elif isinstance(at, float) and math.isnan(at):
            at = None
        pairs.append((at, "" if prompt is None else prompt))
    return as_storyboard(pairs)  # the pipelines' own reading of (seconds, prompt) pairs


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value))


def check_settings(seconds, guidance, steps, seed) -> tuple[float, float, int, int]:
    """The numbers of a request, refused as the CLI's argument types refuse them. The seed
    comes as text (a browser's numbers lose digits past 2**53)."""
    def number(value, what):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise FrameMemError(f"{what}: '{value}' is not a number") from None
        if not math.isfinite(value):
            raise FrameMemError(f"{what}: '{value}' is not a finite number")
        return value

    def integer(value, what, least):
        text = str(value).strip()
        if isinstance(value, float) and value.is_integer():
            text = str(int(value))
        if not text.lstrip("-").isdigit() or int(text) < least:
            raise FrameMemError(f"{what}: '{value}' is not an integer >= {least}")
        return int(text)

    seconds, guidance = number(seconds, "seconds"), number(guidance, "guidance")
    steps, seed = integer(steps, "steps", 1), integer(seed, "seed", 0)
    if seconds <= 0:
        raise FrameMemError(f"seconds: '{seconds:g}' is not a number > 0")
    if seconds > MAX_SECONDS:
        raise FrameMemError(f"seconds: {seconds:g}: the app makes at most {MAX_SECONDS:g} s; "
                            "use `framemem generate --allow-long` for longer videos")
    if seed >= SEED_LIMIT:
        raise FrameMemError(f"seed: '{seed}' must be below 2**63")
    return seconds, guidance, steps, seed


@dataclass
class Job:
    """One generation of one page: its folder, cancel flag and worker thread."""

    folder: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    updates: queue.Queue = field(default_factory=queue.Queue)

    @property
    def video(self) -> Path:
        return self.folder / "generated.mp4"

    def made(self) -> list[str]:
        """What can be downloaded now: the video (or its partial), the record and the storyboard."""
        names = (self.video, partial_path(self.video), self.video.with_suffix(".json"), self.folder / "storyboard.json")
        return [str(p) for p in names if p.is_file()]


class GenerateTab:
    """The tab's callbacks over a `Catalog`; jobs are keyed by the page's session."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.jobs: dict[str, Job] = {}

    def _new_job(self, session: str) -> Job:
        jobs = self.catalog.work_dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-", dir=jobs))  # one folder a job
        job = self.jobs[session] = Job(folder)
        return job

    def run(self, checkpoint, rows, image, video, seconds, guidance, steps, seed, request: gr.Request,
            progress=gr.Progress()):
        """Yields (status, sections gallery, result video, downloads) as the job goes; the
        progress bar counts sections."""
        try:
            storyboard = storyboard_from_rows(rows)
            seconds, guidance, steps, seed = check_settings(seconds, guidance, steps, seed)
            check_start(video or None, image or None)
            pipe = self.catalog.generation(checkpoint)
            if image:
                mc = pipe.framemem_config.model
                image_frame(image, mc.height, mc.width)  # a wrong size is refused before a job exists
        except FrameMemError as err:
            yield error_line(err, image or video), [], None, []
            return
        job = self._new_job(request.session_hash or "local")
        write_json(job.folder / "storyboard.json", storyboard.to_dict())

        def work():
            try:
                with self.catalog.using(checkpoint):  # a cancelled job still finishing its step goes first
                    record = write_generation(
                        pipe, storyboard, seconds, job.video, init_video=video or None, init_image=image or None,
                        cfg=guidance, seed=seed, steps=steps, checkpoint=checkpoint,
                        on_start=lambda count, estimate: job.updates.put(("start", count, estimate)),
                        on_section=lambda index, count, frames, rec: job.updates.put(("section", index, count, frames, rec)),
                        should_stop=job.cancel.is_set)
                job.updates.put(("done", record))
            except GenerationCancelled:
                job.updates.put(("cancelled",))
            except FrameMemError as err:
                job.updates.put(("error", error_line(err, image or video)))
            except Exception as err:  # a bug: the page says so in one line, the log has the traceback
                log.exception("generation failed")
                job.updates.put(("error", internal_error(err)))

        job.thread = threading.Thread(target=work, name="framemem-generate", daemon=True)
        job.thread.start()
        try:
            yield from self._follow(job, pipe, progress)
        finally:  # the page went away or Cancel was pressed: the worker stops after its current step
            job.cancel.set()

    def _follow(self, job: Job, pipe, progress):
        sections: list[tuple[Image.Image, str]] = []
        while True:
            try:
                kind, *rest = job.updates.get(timeout=0.5)
            except queue.Empty:
                if job.cancel.is_set() or (not job.thread.is_alive() and job.updates.empty()):
                    return
                continue
            if kind == "start":
                count, estimate = rest
                progress((0, count), desc="sections", unit="sections")
                yield (f"{count} sections, about {duration_text(estimate)} on this machine (denoising alone)…",
                       sections, None, gr.update())
            elif kind == "section":
                index, count, frames, record = rest
                progress((index + 1, count), desc="sections", unit="sections")
                sections.append((enlarged(Image.fromarray(frames[len(frames) // 2].numpy())),
                                 f"{record['start_seconds']:.1f} s: {record['prompt']}"))
                yield f"section {index + 1} of {count} made", sections, None, gr.update()  # files come at the end
            elif kind == "done":
                record = rest[0]
                fps = pipe.framemem_config.model.fps
                yield (f"done: {len(record['sections'])} sections, {record['frames'] / fps:.1f} s of video "
                       f"({record['frames']} frames)", sections, str(job.video), job.made())
                return
            elif kind == "cancelled":
                status, files = self.cancelled(job)
                yield status, sections, None, files
                return
            else:
                yield rest[0], sections, None, job.made()
                return

    def cancel(self, request: gr.Request):
        """Stop this page's running job (after its current step) and offer what it made."""
        job = self.jobs.get(request.session_hash or "local")
        if job is None or job.thread is None or not job.thread.is_alive():
            return "nothing is running", gr.update()
        job.cancel.set()
        job.thread.join(timeout=60)
        return self.cancelled(job)

    @staticmethod
    def cancelled(job: Job):
        """(status, downloads) of a job stopped by Cancel: the page's generator and the Cancel
        button both show it, whichever answers last."""
        if job.video.exists():
            return "finished before Cancel arrived: the whole video is ready", job.made()
        partial = partial_path(job.video)
        if not partial.exists():
            return "cancelled before the first section", job.made()
        record = job.video.with_suffix(".json")
        made = json.loads(record.read_text())["sections"] if record.exists() else []
        return f"cancelled after {len(made)} sections: they are kept in {partial.name}", job.made()

    def defaults(self, checkpoint: str):
        """Guidance and steps of a checkpoint (its preset's)."""
        ar = self.catalog.retrieval(checkpoint).framemem_config.ar
        return ar.cfg, ar.sample_steps

    def build(self) -> None:
        labels = self.catalog.generators()
        if not labels:
            gr.Markdown("None of this app's checkpoints generates (stage 2): pass one with `--checkpoint`.")
            return
        cfg, steps_default = self.defaults(labels[0])
        gr.Markdown("Write a storyboard (each prompt holds from its time on, in seconds of the whole video), "
                    "optionally give a start image or a video to continue, and generate. Each section appears as "
                    "it is made; the result plays here and downloads as MP4 with its storyboard.")
        checkpoint = gr.Dropdown(labels, value=labels[0], label="Checkpoint (stage 2)", elem_id="generate-checkpoint")
        rows = gr.Dataframe(value=EXAMPLE_STORYBOARD, headers=["at (seconds)", "prompt"], datatype=["number", "str"],
                            type="array", interactive=True, column_count=2,
                            label="Storyboard (add or delete rows from a cell's ⋮ menu)",
                            elem_id="generate-storyboard")
        with gr.Row():
            image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Start image (optional)",
                             elem_id="generate-image")
            video = gr.File(label="Video to continue (optional)", elem_id="generate-video-in")
        with gr.Row():
            # no minimum/maximum/precision: out-of-range values get the app's one line, not Gradio's toast
            seconds = gr.Number(6, label="Seconds of new video", elem_id="generate-seconds")
            guidance = gr.Number(cfg, label="Guidance scale", elem_id="generate-guidance")
            steps = gr.Number(steps_default, label="Steps per section", elem_id="generate-steps")
            seed = gr.Textbox("0", label="Seed", elem_id="generate-seed")
        with gr.Row():
            start = gr.Button("Generate", variant="primary", elem_id="generate-run")
            stop = gr.Button("Cancel", elem_id="generate-cancel")
        status = gr.Markdown(elem_id="generate-status")
        sections = gr.Gallery(label="Sections as they are made (the middle frame of each)", columns=8, height=240,
                              object_fit="contain", fit_columns=False,
                              elem_id="generate-sections")
        result = gr.Video(label="Result", height=320, elem_id="generate-result")
        downloads = gr.File(label="Downloads: the MP4, its record (JSON) and the storyboard (JSON)",
                            file_count="multiple", elem_id="generate-downloads")
        checkpoint.change(self.defaults, [checkpoint], [guidance, steps])
        job = start.click(self.run, [checkpoint, rows, image, video, seconds, guidance, steps, seed],
                          [status, sections, result, downloads], concurrency_id="generate", concurrency_limit=1)
        stop.click(self.cancel, None, [status, downloads], cancels=[job], concurrency_limit=None)
