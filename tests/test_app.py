"""The app's callbacks without a browser: the same checks as the CLI, jobs, cancel, the queue."""
import json
import time
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from framemem.app import build_app, is_loopback
from framemem.app.catalog import Catalog
from framemem.app.generate_tab import GenerateTab, check_settings, storyboard_from_rows
from framemem.app.inspect_tab import InspectTab
from framemem.cli.main import main
from framemem.data.storyboard import Storyboard
from framemem.errors import FrameMemError
from framemem.generation import GenerationCancelled, partial_path, write_generation
from framemem.metrics import psnr
from framemem.pipelines.inputs import video_frames
from framemem.pipelines.pipeline_retrieval import nearby_frames

REQUEST = SimpleNamespace(session_hash="test-session")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return Catalog(work_dir=tmp_path_factory.mktemp("app"))


def file_message(tmp_path, text: str) -> str:
    """What Storyboard.load says of a YAML file holding `text` (the CLI's check)."""
    path = tmp_path / "storyboard"
    path.write_text(text)
    with pytest.raises(FrameMemError) as err:
        Storyboard.load(path)
    return str(err.value).replace(str(path), "storyboard")


@pytest.mark.parametrize("rows, yaml", [
    ([[2, "a"], [1, "b"]], "prompts:\n - {at: 2, prompt: a}\n - {at: 1, prompt: b}\n"),
    ([], "prompts: []\n"),
    ([[0, "a"], [1, "  "]], "prompts:\n - {at: 0, prompt: a}\n - {at: 1, prompt: ' '}\n"),
    ([[-1, "a"]], "prompts:\n - {at: -1, prompt: a}\n"),
    ([["soon", "a"]], "prompts:\n - {at: soon, prompt: a}\n"),
])
def test_the_editor_refuses_what_the_cli_refuses_with_the_same_line(rows, yaml, tmp_path):
    with pytest.raises(FrameMemError) as err:
        storyboard_from_rows(rows)
    assert str(err.value) == file_message(tmp_path, yaml)


def test_the_editor_drops_blank_rows_and_reads_typed_times():
    board = storyboard_from_rows([[0, "a clock"], [None, ""], ["2.5", "grass"], [float("nan"), None]])
    assert board.times == (0.0, 2.5) and board.prompts == ("a clock", "grass")


@pytest.mark.parametrize("settings, needle", [
    ((0, 2, 16, 0), "seconds"), ((float("nan"), 2, 16, 0), "seconds"), ((301, 2, 16, 0), "--allow-long"),
    ((2, float("inf"), 16, 0), "guidance"), ((2, 2, 0, 0), "steps"), ((2, 2, 2.5, 0), "steps"),
    ((2, 2, 16, -1), "seed"), ((2, 2, 16, str(2**63)), "below 2"), ((2, 2, None, 0), "steps"), ((2, 2, 16, "x"), "seed"),
])
def test_bad_settings_are_one_line(settings, needle):
    with pytest.raises(FrameMemError, match=needle):
        check_settings(*settings)


def test_settings_keep_every_digit_of_a_seed():
    assert check_settings(2, 2.0, 16.0, str(2**63 - 1)) == (2.0, 2.0, 16, 2**63 - 1)
    assert check_settings("2", "2", "4", " 7 ") == (2.0, 2.0, 4, 7)


def test_both_tabs_share_one_copy_of_a_checkpoints_weights(catalog):
    retrieval, generation = catalog.retrieval("tiny-ar"), catalog.generation("tiny-ar")
    assert generation.transformer is retrieval.transformer and generation.memory_encoder is retrieval.memory_encoder
    assert generation.scheduler is not retrieval.scheduler
    assert catalog.generators() == ["tiny-ar"]
    with pytest.raises(FrameMemError, match="stage-1"):
        catalog.generation("tiny")
    with pytest.raises(FrameMemError, match="not one of this app's"):
        catalog.retrieval("elsewhere")


def test_the_inspector_shows_the_pipelines_own_figures_and_encodes_a_history_once(catalog, monkeypatch):
    tab = InspectTab(catalog)
    clip = next(iter(catalog.clips().values()))
    pipe = catalog.retrieval("tiny")
    encodings = []
    encode = pipe.encode
    monkeypatch.setattr(pipe, "encode", lambda *args: encodings.append(1) or encode(*args))
    history, summary, rows, slider, original, retrieved, one_step, bicubic, line, strip = tab.choose("tiny", clip)
    frames = video_frames(clip, 64, 64, 4.0)
    counts = pipe.model.token_counts(len(frames), 64, 64)
    assert f"{counts['full_context']:,} full-context tokens → {counts['memory']:,} memory tokens" in summary
    assert rows[1][0] == "rate 4x4x2 (this checkpoint)" and rows[1][1] == counts["memory"]
    assert slider["maximum"] == (len(frames) - 1) / 4 and len(strip) == 8
    assert original.size == (256, 256)  # 64x64 frames shown 4x larger
    out = pipe(frames, [0.0], generator=torch.Generator().manual_seed(0), output_type="pil")  # from the video itself
    assert np.array_equal(np.asarray(out.frames[0].resize((256, 256), Image.NEAREST)), np.asarray(retrieved))
    assert f"retrieved {out.metrics['mean']['psnr']:.2f} dB" in line
    encodings.clear()
    later = tab.move(history, 10.0)
    assert "t = 10.00 s" in later[-1] and not np.array_equal(np.asarray(later[1]), np.asarray(retrieved))
    assert encodings == []  # the slider samples from the memory made when the clip was chosen


def test_the_inspector_turns_bad_input_into_the_clis_line(catalog, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    outputs = InspectTab(catalog).choose("tiny", notes)
    assert outputs[0] is None and outputs[1].startswith("framemem: error: notes.txt: not a readable video")
    assert InspectTab(catalog).move(None, 1.0)[-1].startswith("Choose")


def test_nearby_frames_are_those_1_to_3_seconds_away():
    video = torch.arange(20, dtype=torch.float32)[None, :, None, None].expand(3, 20, 2, 2)  # frame i holds i
    picked = nearby_frames(video, 10, fps=2.0)[:, 0, 0, 0].tolist()
    assert picked == [4, 5, 7, 8, 12, 13, 15, 16]  # 1 to 3 s at 2 fps (4-8, 12-16), 8 of those 10, evenly spread


def test_the_one_step_output_is_what_its_metric_scores():
    pipe = Catalog().retrieval("tiny")
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8))
    out = pipe(frames, [1.0, 2.0], output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.one_step.shape == out.frames.shape == (2, 3, 64, 64)
    assert not torch.equal(out.one_step, out.frames)
    for k in range(2):
        assert psnr(out.one_step[k] * 2 - 1, out.ground_truth[k] * 2 - 1) == \
            pytest.approx(out.metrics["per_frame"][k]["one_step_psnr"], abs=1e-3)


def drain(generator) -> list:
    return list(generator)


def test_a_job_streams_its_sections_and_offers_the_mp4_and_storyboard(catalog):
    tab = GenerateTab(catalog)
    updates = drain(tab.run("tiny-ar", [[0, "a clock"], [1, "grass"]], None, None, 2, 2.0, 2, 0, REQUEST))
    status = [u[0] for u in updates]
    assert status[0].startswith("2 sections, about") and status[1:3] == ["section 1 of 2 made", "section 2 of 2 made"]
    assert status[-1] == "done: 2 sections, 2.0 s of video (8 frames)"
    final_status, sections, video, files = updates[-1]
    assert len(sections) == 2 and sections[1][1] == "1.0 s: grass"
    assert sorted(p.rsplit("/", 1)[-1] for p in files) == ["generated.json", "generated.mp4", "storyboard.json"]
    record = json.loads(open(next(p for p in files if p.endswith("generated.json"))).read())
    assert record["continuity"] is None  # its one boundary is the storyboard's cut from clock to grass: not scored
    storyboard = json.loads(open(next(p for p in files if p.endswith("storyboard.json"))).read())
    assert Storyboard.from_dict(storyboard).prompts == ("a clock", "grass")  # `framemem generate --storyboard` reads it
    with av.open(video) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8


def test_bad_input_in_the_generate_tab_is_a_status_line_not_a_job(catalog, tmp_path):
    tab = GenerateTab(catalog)
    large = tmp_path / "start.png"
    Image.new("RGB", (100, 80)).save(large)
    (update,) = drain(tab.run("tiny-ar", [[0, "a"]], str(large), None, 2, 2.0, 2, 0, REQUEST))
    assert update[0] == "framemem: error: image: 100x80; this model starts from 64x64 images (resize or crop it first)"
    (update,) = drain(tab.run("tiny-ar", [[1, "a"], [0, "b"]], None, None, 2, 2.0, 2, 0, REQUEST))
    assert update[0] == "framemem: error: storyboard: prompt 2: times must increase (0 comes after 1.0)"


def test_cancel_stops_the_running_job_and_keeps_what_it_made(catalog):
    tab = GenerateTab(catalog)
    jobs = tab.run("tiny-ar", [[0, "a clock"]], None, None, 60, 2.0, 4, 0, REQUEST)
    assert next(jobs)[0].startswith("60 sections")  # the worker runs on without the page
    job = tab.jobs[REQUEST.session_hash]
    deadline = time.monotonic() + 60
    while not partial_path(job.video).exists() or job.updates.qsize() < 1:
        assert job.thread.is_alive() and time.monotonic() < deadline, "the job made no section"
        time.sleep(0.05)
    status, files = tab.cancel(REQUEST)
    assert not job.thread.is_alive()
    made = json.loads(job.video.with_suffix(".json").read_text())["sections"]
    assert 1 <= len(made) < 60 and status == f"cancelled after {len(made)} sections: they are kept in generated.partial.mp4"
    with av.open(str(partial_path(job.video))) as container:  # the fragments written so far play
        assert sum(1 for _ in container.decode(video=0)) == 4 * len(made)
    assert any(p.endswith("generated.partial.mp4") for p in files)
    assert tab.cancel(REQUEST)[0] == "nothing is running"


def test_should_stop_ends_a_generation_with_its_sections_on_disk(catalog, tmp_path):
    pipe = catalog.generation("tiny-ar")
    made = []
    with pytest.raises(GenerationCancelled, match="cancelled after 1 of 3 sections"):
        write_generation(pipe, storyboard_from_rows([[0, "a"]]), 3, tmp_path / "v.mp4", steps=2,
                         on_section=lambda *args: made.append(args[0]), should_stop=lambda: bool(made))
    assert made == [0] and partial_path(tmp_path / "v.mp4").exists() and not (tmp_path / "v.mp4").exists()


def test_one_generation_at_a_time_and_cancel_cancels_it(tmp_path):
    app = build_app(work_dir=tmp_path)
    fns = {index: d for index, d in app.fns.items()}
    (run_index, run), = [(i, d) for i, d in fns.items() if getattr(d.fn, "__name__", "") == "run"]
    (cancel,) = [d for d in fns.values() if getattr(d.fn, "__name__", "") == "cancel"]
    assert run.concurrency_limit == 1 and run.concurrency_id == "generate"  # a second request waits in the queue
    assert cancel.concurrency_limit is None  # Cancel never waits behind the job it cancels
    cancellers = [d for d in fns.values() if run_index in d.cancels]
    assert cancellers and all(d.targets == cancel.targets for d in cancellers)


def test_only_loopback_is_local():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_the_app_command_refuses_a_bad_checkpoint_before_serving(tmp_path, capsys):
    assert main(["app", "--checkpoint", str(tmp_path / "nowhere"), "--port", "7999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("framemem: error:") and "nowhere" in err and len(err.splitlines()) == 1


def test_generate_starts_from_an_image_of_the_models_size(tmp_path, capsys):
    start = tmp_path / "start.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(start)
    board = tmp_path / "story.yaml"
    board.write_text("prompts:\n - {at: 0, prompt: a clock}\n")
    assert main(["generate", "--storyboard", str(board), "--seconds", "1", "--init-image", str(start), "--steps", "2",
                 "--out", str(tmp_path / "v.mp4")]) == 0
    record = json.loads((tmp_path / "v.json").read_text())
    assert record["init_image"] == str(start) and record["frames"] == 4  # the image is memory, not video
    assert main(["generate", "--storyboard", str(board), "--seconds", "1", "--init-image", str(start),
                 "--init-video", str(start), "--out", str(tmp_path / "w.mp4")]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_port_in_use_is_one_line(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["app", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("framemem: error: Cannot find empty port")


def test_generation_reads_the_sliding_window_beside_the_memory(catalog):
    pipe = catalog.generation("tiny-ar")
    assert pipe.framemem_config.ar.window_frames == 2  # the shipped stage-2 model has a window
    windowed = pipe(prompt="a clock", seconds=2, num_inference_steps=1, output_type="np").sections
    pipe.framemem_config.ar.window_frames = 0
    try:
        plain = pipe(prompt="a clock", seconds=2, num_inference_steps=1, output_type="np").sections
    finally:
        pipe.framemem_config.ar.window_frames = 2
    assert plain[0]["memory_tokens"] == windowed[0]["memory_tokens"] == 0  # nothing before the first section
    assert windowed[1]["memory_tokens"] == plain[1]["memory_tokens"] + 2 * 8 * 8  # two 64x64 frames: 8x8 tokens each
