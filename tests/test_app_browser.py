"""`framemem app` end to end: the real command on a free local port, driven in Debian's
headless chromium by Playwright (pointed at /usr/bin/chromium; no browser download).

Each test saves a screenshot under results/browser/ (not committed). With
FRAMEMEM_DOCS_SCREENSHOTS=docs/images (`make screenshots`) the tab screenshots in the docs
are re-taken from the page.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "results" / "browser"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps dialling Google's hosts, which this closed network refuses.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
CLIP = "procedural video 1 (never seen in training)"
WAIT_MS = 90_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`framemem app` as a user starts it, on a free port; its log goes to the test's folder."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "framemem.cli", "app", "--port", str(port)], stdout=out,
                                  stderr=subprocess.STDOUT, env=env, cwd=tmp_path_factory.getbasetemp())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"framemem app did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        system = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
        assert chromium.version in system  # the browser under test is Debian's, not a downloaded one
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url, request):
    """A fresh page on the app; its screenshot is saved whatever the test's outcome."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app_url)
    page.get_by_role("tab", name="Inspect a memory").wait_for()
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def docs_screenshot(page, name: str) -> None:
    folder = os.environ.get("FRAMEMEM_DOCS_SCREENSHOTS")
    if folder:
        page.wait_for_timeout(1000)  # images fade in
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector: str, needle: str, absent: str | None = None) -> str:
    """Wait until the element's text holds `needle` (and no longer holds `absent`)."""
    page.wait_for_function(
        "([s, n, a]) => { const t = document.querySelector(s)?.innerText || '';"
        " return t.includes(n) && (a === null || !t.includes(a)); }", arg=[selector, needle, absent])
    return text(page, selector)


def choose_clip(page) -> None:
    page.locator("#inspect-clip input").click()
    page.get_by_role("option", name=CLIP).click()
    wait_text(page, "#inspect-metrics", "PSNR")


def test_the_page_loads_with_both_tabs(page):
    assert page.title() == "framemem"
    assert page.get_by_role("tab", name="Generate").is_visible()
    assert "Choose a bundled clip" in text(page, "#inspect-summary")


def test_a_bundled_clip_shows_its_tokens_and_moving_the_slider_changes_the_retrieved_frame(page):
    choose_clip(page)
    summary = text(page, "#inspect-summary")
    assert "5,120 full-context tokens → 160 memory tokens" in summary
    assert "rate 4x4x2 (this checkpoint)" in text(page, "#inspect-plan")
    first = wait_text(page, "#inspect-metrics", "t = 0.00 s")
    image = page.locator("#inspect-retrieved img").get_attribute("src")
    assert page.locator("#inspect-strip img").count() == 8
    docs_screenshot(page, "app-inspect.png")

    page.locator("#inspect-time input[type=range]").press("End")  # the keyboard moves it to the last frame
    moved = wait_text(page, "#inspect-metrics", "PSNR", absent="t = 0.00 s")
    assert moved != first and "t = 19.75 s" in moved
    assert page.locator("#inspect-retrieved img").get_attribute("src") != image
    psnr = [line.split(" dB")[0].split()[-1] for line in (first, moved)]
    assert psnr[0] != psnr[1]


def test_a_two_row_storyboard_generates_2_s_that_download_as_an_mp4(page, tmp_path):
    page.get_by_role("tab", name="Generate").click()
    cells = page.locator("#generate-storyboard [role=gridcell]")
    assert [cells.nth(i).inner_text().split("\n")[0] for i in (0, 2)] == ["0", "1"]  # two rows, 0 s and 1 s
    page.locator("#generate-seconds input").fill("2")
    page.locator("#generate-run").click()
    status = wait_text(page, "#generate-status", "done")
    assert "2 sections, 2.0 s of video (8 frames)" in status
    assert page.locator("#generate-sections img").count() == 2
    assert page.locator("#generate-result video").get_attribute("src")
    links = [a.get_attribute("href") for a in page.locator("#generate-downloads a").all()]
    assert sorted(h.rsplit("/", 1)[-1] for h in links) == ["generated.json", "generated.mp4", "storyboard.json"]
    href = next(h for h in links if h.endswith("/generated.mp4"))
    video = tmp_path / "downloaded.mp4"
    with urllib.request.urlopen(href if href.startswith("http") else page.url.rstrip("/") + href) as response:
        video.write_bytes(response.read())
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3)
    docs_screenshot(page, "app-generate.png")


def test_bad_input_shows_the_clis_line_and_the_app_keeps_answering(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    page.locator("#inspect-upload input[type=file]").set_input_files(str(notes))
    error = wait_text(page, "#inspect-summary", "framemem: error:")
    assert error.startswith("framemem: error: notes.txt: not a readable video")
    cli = subprocess.run([sys.executable, "-m", "framemem.cli", "retrieve", "--video", "notes.txt", "--times", "1",
                          "--out", str(tmp_path / "r")], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.strip() == error.strip()

    page.get_by_role("tab", name="Generate").click()  # an unsorted storyboard, made in the editor
    cell = page.locator("#generate-storyboard [role=gridcell]").first
    cell.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type("5")
    page.keyboard.press("Enter")
    page.locator("#generate-run").click()
    assert wait_text(page, "#generate-status", "error") == \
        "framemem: error: storyboard: prompt 2: times must increase (1 comes after 5.0)"

    page.get_by_role("tab", name="Inspect a memory").click()  # still answering
    choose_clip(page)
    assert "memory tokens" in text(page, "#inspect-summary")



def test_a_second_request_waits_in_the_queue_and_cancel_keeps_what_was_made(browser, app_url, page):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#generate-seconds input").fill("60")
    page.locator("#generate-run").click()
    wait_text(page, "#generate-status", "section 1 of 60 made")

    other = browser.new_page(viewport={"width": 1400, "height": 1600})  # another person, same app
    other.set_default_timeout(WAIT_MS)
    other.goto(app_url)
    other.get_by_role("tab", name="Generate").click()
    other.locator("#generate-seconds input").fill("2")
    other.locator("#generate-run").click()
    assert wait_text(other, "#generate-status", "queue: 1/1").startswith("queue")  # waiting, not started

    page.locator("#generate-cancel").click()
    cancelled = wait_text(page, "#generate-status", "cancelled after")
    assert "sections: they are kept in generated.partial.mp4" in cancelled
    links = [a.get_attribute("href") for a in page.locator("#generate-downloads a").all()]
    assert any(h.endswith("/generated.partial.mp4") for h in links)
    assert "done: 2 sections" in wait_text(other, "#generate-status", "done")  # the queue moved on
    other.screenshot(path=str(ARTIFACTS / "queued_request_done.png"), full_page=True)
    other.close()
