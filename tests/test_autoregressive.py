"""Stage 2: storyboards, text encoders, incremental memory, fine-tuning and generation."""
import json

import pytest
import torch
from conftest import fit_fixed_batch

from framemem.models.framemem import section_latent_frames
from framemem.pipelines.memory_state import MemoryState
from framemem.training.stage2_autoregressive import ar_loss, draw_batch
from framemem.cli.main import main
from framemem.data.histories import HistorySampler
from framemem.errors import FrameMemError
from framemem.models.framemem import FrameMem
from framemem.data.storyboard import Storyboard
from framemem.models.text_encoders import HashedTextEncoder
from framemem.training.trainer import pretrain, step_generators

GOOD = {"prompts": [{"at": 0, "prompt": "a ginger cat"}, {"at": 4.5, "prompt": "a brick wall"}]}


def test_storyboard_yaml_json_and_prompt_at(tmp_path):
    (tmp_path / "s.yaml").write_text("prompts:\n  - at: 0\n    prompt: a ginger cat\n  - at: 4.5\n    prompt: a brick wall\n")
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    for name in ("s.yaml", "s.json"):
        board = Storyboard.load(tmp_path / name)
        assert board.times == (0.0, 4.5) and board.prompts == ("a ginger cat", "a brick wall")
    assert [board.prompt_at(t) for t in (0.0, 4.4, 4.5, 60)] == ["a ginger cat", "a ginger cat", "a brick wall", "a brick wall"]


@pytest.mark.parametrize("data, message", [
    ({"prompts": [{"at": 3, "prompt": "a"}, {"at": 1, "prompt": "b"}]}, "times must increase"),
    ({"prompts": [{"at": -1, "prompt": "a"}]}, "finite, non-negative number of seconds, not -1"),
    ({"prompts": [{"at": float("nan"), "prompt": "a"}]}, "finite, non-negative"),
    ({"prompts": [], 1: "x"}, "unknown: 1"),
    ({"prompts": [{"at": 0, "prompt": "  "}]}, "empty prompt"),
    ({"prompts": [{"at": 0, "prompt": "a", "camera": "pan"}]}, "unknown key"),
    ({"prompts": [], "fps": 4}, "unknown: fps"),
    ({"prompts": [{"at": "soon", "prompt": "a"}]}, "must be a number"),
    ({"prompts": []}, "non-empty list"),
])
def test_storyboard_errors(data, message):
    with pytest.raises(FrameMemError, match=message):
        Storyboard.from_dict(data)


def test_hashed_text_encoder():
    enc = HashedTextEncoder(text_dim=8, buckets=64, max_tokens=4)
    out = enc(["A red circle moves left", ""])
    assert out.shape == (2, 4, 8)
    assert out[1].abs().max() == 0  # the empty prompt is the unconditional input
    assert torch.equal(enc(["a red circle moves"]), out[:1])  # case and punctuation do not matter
    assert not torch.equal(enc(["a blue circle"]), enc(["a red circle"]))


def test_umt5_text_encoder_from_a_local_folder(tmp_path):
    from conftest import write_tiny_umt5

    from framemem.models.text_encoders import UMT5TextEncoder

    write_tiny_umt5(tmp_path / "wan")
    enc = UMT5TextEncoder(str(tmp_path / "wan"), max_tokens=6)
    out = enc(["a ginger cat", "brick wall"])
    assert out.shape == (2, 6, 16) and out[0, :3].abs().sum() > 0
    assert out[0, 3:].abs().max() == 0 and out[1, 2:].abs().max() == 0  # padding zeroed
    (tmp_path / "wan" / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(FrameMemError, match="missing weight files: model.safetensors"):
        UMT5TextEncoder(str(tmp_path / "wan"))


def test_appending_sections_equals_encoding_the_whole_history(config):
    model = FrameMem.build(config).eval()
    torch.nn.init.normal_(model.encoder.proj_out.weight, std=0.05)  # the HR branch counts
    video = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        _, whole = model.encode_history(video)
        state = MemoryState(model)
        for start in range(0, 16, 4):  # four sections of two memory blocks
            state.append(*model.history_latents(video[:, :, start : start + 4]))
        appended = state.memory()
        assert (appended.tokens - whole.tokens).abs().max() <= 1e-5
        assert torch.equal(appended.positions, whole.positions)
        window = MemoryState(model, max_blocks=3)  # older blocks leave the memory
        for start in range(0, 16, 4):
            window.append(*model.history_latents(video[:, :, start : start + 4]))
    per_block = whole.tokens.shape[1] // 8
    assert torch.allclose(window.memory().tokens, whole.tokens[:, -3 * per_block :], atol=1e-5)
    assert torch.equal(window.memory().positions, whole.positions[-3 * per_block :])


def test_a_sliding_window_appends_equal_encoding_the_whole_history(config, tmp_path):
    config.ar.window_frames = 3  # latent frames at full resolution beside the memory
    model = FrameMem.build(config).eval()
    torch.nn.init.normal_(model.encoder.proj_out.weight, std=0.05)
    video = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        latents, whole = model.encode_history(video)
        expected = model.context(whole, latents, latents.shape[2])
        state = MemoryState(model)
        for start in range(0, 16, 2):  # one memory block (2 latent frames) at a time: the window spans appends
            state.append(*model.history_latents(video[:, :, start : start + 2]))
        appended = state.memory()
    per_frame = 4 * 4  # a 32x32 frame: 8x8 latents, 2x2 patches
    assert appended.tokens.shape[1] == whole.tokens.shape[1] + 3 * per_frame == state.tokens
    assert (appended.tokens - expected.tokens).abs().max() <= 1e-5
    assert torch.equal(appended.positions, expected.positions)
    assert appended.positions[-1].tolist() == [latents.shape[2] - 1, 3.0, 3.0]  # the last frame, at its true place
    last = model.dit.patch_embedding(latents[:, :, -1:]).flatten(2).transpose(1, 2)
    assert torch.allclose(appended.tokens[:, -per_frame:], last, atol=1e-5)
    state.save(tmp_path / "m.safetensors")  # the window is part of a saved memory
    assert torch.equal(MemoryState.load(tmp_path / "m.safetensors", model).memory().tokens, appended.tokens)
    counts = plan_rows(config, window_frames=3)
    assert counts == state.tokens


def plan_rows(config, window_frames):
    from framemem.plan import plan

    result = plan(config, 32, 32, config.model.fps, 16 / config.model.fps, [config.model.rate], window_frames=window_frames)
    return result["rows"][1]["memory_tokens"]


def test_a_window_longer_than_the_history_window_is_one_line(config, tmp_path, capsys):
    config.ar.window_frames = 10_000
    with pytest.raises(FrameMemError, match="ar.window_frames = 10000: longer than the history window"):
        FrameMem.build(config)
    stage1 = tmp_path / "stage1"
    config.ar.window_frames = 0
    FrameMem.build(config).save_pretrained(stage1)
    code = main(["finetune", "--memory-checkpoint", str(stage1), "--out", str(tmp_path / "ar"), "--steps", "1",
                 "--set", "ar.window_frames=10000"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("framemem: error: ar.window_frames = 10000: longer") and "\n" not in err


@pytest.mark.parametrize("window_frames", [0, 2])
def test_stage2_steps_lower_the_loss(config, window_frames):
    from framemem.models.text_encoders import build_text_encoder

    config.ar.window_frames = window_frames  # with a sliding window, its tokens join the memory in training
    model = FrameMem.build(config)
    model.text_encoder = build_text_encoder(config.ar, model.dit.text_dim, None)
    frames = config.model.history_frames + 4
    sampler = HistorySampler(config.model, render_frames=frames)
    rng, _ = step_generators(0, 3)
    batch = draw_batch(sampler, model, rng, 2)
    assert batch.clips.shape[2] == batch.history + section_latent_frames(model) and all(batch.prompts)
    seen, forward = [], model.dit.forward
    model.dit.forward = lambda *a, **k: (seen.append(0 if a[3] is None else a[3].tokens.shape[1]), forward(*a, **k))[1]
    from framemem.training.stage2_autoregressive import split_memory

    with torch.no_grad():
        memory = split_memory(model, *model.history_latents(batch.clips), batch.history)
    window = window_frames * 4 * 4  # the config's 32x32 frames: 8x8 latents, 2x2 patches
    losses = fit_fixed_batch(model, lambda: ar_loss(model, batch, config.ar, torch.Generator().manual_seed(0)), 10)
    assert losses[-1] < 0.8 * losses[0]
    assert set(seen) - {0} == {memory.tokens.shape[1] + window}  # what the DiT read: memory + window (0: dropped)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    from conftest import small_config

    config = small_config()
    config.train.steps = 2
    out = tmp_path_factory.mktemp("stage1")
    pretrain(config, out)
    return out / "model"


def test_finetune_then_generate_end_to_end(stage1, tmp_path, capsys):
    run = tmp_path / "ar"
    assert main(["finetune", "--memory-checkpoint", str(stage1), "--out", str(run), "--steps", "2", "--batch-size", "2"]) == 0
    ckpt = run / "model"
    assert (ckpt / "text_encoder").is_dir() and (ckpt / "transformer").is_dir()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"one_step_psnr", "memory_gap"} <= set(log[-1]["eval"])
    (tmp_path / "story.yaml").write_text("prompts:\n  - at: 0\n    prompt: a ginger cat\n  - at: 1\n    prompt: a brick wall\n")
    out = tmp_path / "gen.mp4"
    assert main(["generate", "--checkpoint", str(ckpt), "--storyboard", str(tmp_path / "story.yaml"),
                 "--seconds", "2.5", "--steps", "2", "--out", str(out)]) == 0
    from framemem.data.video import load_frames

    frames = load_frames(out, 4.0, 32, 32)
    assert len(frames) == 10  # 2.5 s at 4 fps: three 1-s sections, the last one cut to length
    sections = json.loads(out.with_suffix(".json").read_text())["sections"]
    assert [s["prompt"] for s in sections] == ["a ginger cat", "a brick wall", "a brick wall"]
    model = FrameMem.from_pretrained(ckpt)
    per_section = model.encoder.token_count((4, 8, 8))  # 1 s at 4 fps, 8x8 latents
    assert [s["memory_tokens"] for s in sections] == [0, per_section, 2 * per_section]  # each sees all before it
    assert out.with_suffix(".png").is_file()
    # continue the generated video: it becomes the init video (same fps and size)
    again = tmp_path / "more.mp4"
    assert main(["generate", "--checkpoint", str(ckpt), "--storyboard", str(tmp_path / "story.yaml"),
                 "--seconds", "2", "--steps", "2", "--init-video", str(out), "--out", str(again)]) == 0
    assert len(load_frames(again, 4.0, 32, 32)) == 10 + 8  # the init video, then 2 s
    assert json.loads(again.with_suffix(".json").read_text())["sections"][0]["memory_tokens"] == \
        model.encoder.token_count((10, 8, 8))  # the memory of the whole init video


def test_generate_bad_input(stage1, tmp_path, capsys):
    good = tmp_path / "story.json"
    good.write_text(json.dumps(GOOD))
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts:\n  - at: 5\n    prompt: b\n  - at: 1\n    prompt: a\n")
    cases = [
        (["--storyboard", str(bad), "--seconds", "2"], "times must increase"),
        (["--storyboard", str(good), "--seconds", "0"], "argument --seconds: must be > 0, not 0"),
        (["--storyboard", str(good), "--seconds", "inf"], "argument --seconds: must be > 0, not inf"),
        (["--storyboard", str(good), "--seconds", "2", "--out", str(tmp_path / "story")], "name an .mp4"),
        (["--storyboard", str(good), "--seconds", "2"], "a stage-1 checkpoint (retrieval only)"),
        (["--storyboard", str(good), "--seconds", "2", "--out", str(tmp_path / "story.mp4")],
         "would overwrite --storyboard"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["generate", "--checkpoint", str(stage1), "--out", str(tmp_path / "x.mp4"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)


def test_finetune_refuses_a_checkpoint_of_another_preset(tmp_path, capsys):
    from conftest import small_config

    config = small_config()
    config.preset = "wan2.2-ti2v-5b"  # the same small numbers, labelled as another preset
    config.train.steps = 1
    pretrain(config, tmp_path / "s1")
    capsys.readouterr()
    code = main(["finetune", "--memory-checkpoint", str(tmp_path / "s1" / "model"), "--out", str(tmp_path / "ar")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "preset 'wan2.2-ti2v-5b', not 'tiny'" in err[0]


def test_a_section_is_captioned_at_its_middle_frame_for_both_time_axes():
    from test_codecs import CausalMeanCodec

    from framemem.training.stage2_autoregressive import section_middle
    from framemem.models.codecs import SpaceToDepthCodec

    assert section_middle(SpaceToDepthCodec(4), 8, 4) == 10  # section = pixel frames 8..11
    assert section_middle(SpaceToDepthCodec(4), 0, 4) == 2
    assert section_middle(CausalMeanCodec(), 8, 2) == 33  # latents 8, 9 = pixel frames 29..36
    assert section_middle(CausalMeanCodec(), 0, 2) == 2  # latents 0, 1 = pixel frames 0..4
