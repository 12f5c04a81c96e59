"""`framemem app`: a Gradio app over the pipelines, with two tabs.

* Inspect a memory: a video's full-context vs memory tokens and the planner's cost; scrub
  a time and compare the original frame with the retrieved one (sampled and one-step) and
  the bicubic reference; a strip of retrieved frames across the whole history.
* Generate: a storyboard editor, an optional start image or video to continue; sections
  appear as they are made; the result plays in the page and downloads as MP4 with its
  storyboard. One job at a time, the next ones wait in the queue; a job can be cancelled.

    from framemem.app import build_app
    build_app(["runs/my-stage2/model"]).launch()   # or: framemem app --checkpoint runs/my-stage2/model

Needs the `app` extra (`pip install 'framemem[app]'`).
"""
from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path

from ..errors import FrameMemError

LOOPBACK_HOSTS = ("localhost",)


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline machine
    try:
        import gradio as gr
    except ImportError:
        raise FrameMemError("the app needs gradio: pip install 'framemem[app]'") from None
    return gr


def theme():
    """Gradio's default look with the system's fonts (its own are fetched from the web)."""
    gr = _gradio()
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def build_app(checkpoints=(), work_dir: str | Path | None = None, load_now: bool = False):
    """The app as a `gr.Blocks` (call `.launch()`), over the shipped models plus `checkpoints`
    (folders or hub ids). Clips and generated videos go under `work_dir` (default: a new
    temporary folder). With `load_now`, every checkpoint is loaded before this returns, so a
    bad one is a FrameMemError here rather than in the page."""
    gr = _gradio()
    from .catalog import Catalog
    from .generate_tab import GenerateTab
    from .inspect_tab import InspectTab

    work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="framemem-app-"))
    catalog = Catalog(checkpoints, work_dir)
    if load_now:
        catalog.load_all()
    with gr.Blocks(title="framemem", analytics_enabled=False) as app:
        gr.Markdown("# framemem\nA long video compressed into a short memory: check what it remembers, "
                    "then generate with it.")
        with gr.Tabs():
            with gr.Tab("Inspect a memory", id="inspect", elem_id="tab-inspect"):
                InspectTab(catalog).build()
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                GenerateTab(catalog).build()
    app.queue(default_concurrency_limit=1, max_size=32)
    app.framemem_work_dir = work_dir
    return app


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(checkpoints=(), host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """What `framemem app` runs: build (loading every checkpoint first), then serve until
    interrupted. Only loopback unless `host` says otherwise or `share` asks for a public link."""
    app = build_app(checkpoints, load_now=True)
    print(f"framemem app: clips and generated videos go to {app.framemem_work_dir}")
    if not is_loopback(host):
        print(f"framemem app: serving on {host}: anyone who can reach this machine on port {port} can use it")
    if share:
        print("framemem app: --share asks Gradio for a public link; anyone with the link can use the app")
    app.launch(server_name=host, server_port=port, share=share, ssr_mode=False, theme=theme(),
               allowed_paths=[str(app.framemem_work_dir)], footer_links=[], quiet=False)
