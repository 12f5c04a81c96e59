"""The diffusers pipelines: loading and saving, schedulers, callbacks, outputs, the memory
object and bad input, on the shipped models (small and fast: 2 steps, a few seconds)."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from diffusers import FlowMatchHeunDiscreteScheduler
from PIL import Image

import framemem
from framemem import FrameMemError, FrameMemPipeline, FrameMemRetrievalPipeline

BOARD = [(0.0, "a clock, the camera pans left"), (1.0, "a patch of grass, the camera zooms in")]


@pytest.fixture(scope="module")
def pipe():
    return FrameMemPipeline.from_pretrained("tiny-ar")


@pytest.fixture(scope="module")
def retrieval():
    return FrameMemRetrievalPipeline.from_pretrained("tiny")


def generate(pipe, **kwargs):
    kwargs = {"seconds": 2, "num_inference_steps": 2, "generator": torch.Generator().manual_seed(0),
              "output_type": "pt", **kwargs}
    return pipe(kwargs.pop("storyboard", BOARD), **kwargs)


def test_a_diffusers_users_six_lines_write_a_video(tmp_path):
    from diffusers.utils import export_to_video
    pipe = FrameMemPipeline.from_pretrained(framemem.pretrained("tiny-ar"))
    video = pipe(prompt="a clock, the camera pans left", seconds=2, num_inference_steps=4).frames[0]
    export_to_video(video, str(tmp_path / "clock.mp4"), fps=4)
    with av.open(str(tmp_path / "clock.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8


def test_save_then_load_gives_the_same_video_for_the_same_generator(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    assert {"model_index.json", "framemem.json", "scheduler", "transformer", "memory_encoder", "text_encoder"} \
        <= {p.name for p in (tmp_path / "saved").iterdir()}
    again = FrameMemPipeline.from_pretrained(tmp_path / "saved")
    assert torch.equal(generate(pipe).frames, generate(again).frames)


def test_the_scheduler_swaps_for_heun_and_is_saved_with_the_pipeline(tmp_path):
    pipe = FrameMemPipeline.from_pretrained("tiny-ar")
    euler = generate(pipe).frames
    pipe.scheduler = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    heun = generate(pipe).frames
    assert heun.shape == euler.shape and not torch.equal(heun, euler)
    pipe.save_pretrained(tmp_path / "heun")
    again = FrameMemPipeline.from_pretrained(tmp_path / "heun")
    assert isinstance(again.scheduler, FlowMatchHeunDiscreteScheduler)
    assert torch.equal(generate(again).frames, heun)


def window_tokens(pipe) -> int:
    """The shipped stage-2 model's sliding window beside its memory: full-resolution 8x8 tokens a latent frame."""
    return pipe.framemem_config.ar.window_frames * 8 * 8


def test_output_types_and_tuple_return(pipe):
    pil = generate(pipe, output_type="pil").frames
    assert len(pil) == 1 and len(pil[0]) == 8 and isinstance(pil[0][0], Image.Image) and pil[0][0].size == (64, 64)
    arr = generate(pipe, output_type="np").frames
    assert arr.shape == (1, 8, 64, 64, 3) and 0 <= arr.min() and arr.max() <= 1
    pt = generate(pipe).frames
    assert pt.shape == (1, 8, 3, 64, 64)
    assert np.allclose(arr, pt.permute(0, 1, 3, 4, 2).numpy(), atol=1e-6)
    latents = generate(pipe, output_type="latent").frames
    assert latents.shape == (1, 48, 8, 16, 16)
    frames, sections, memory = generate(pipe, return_dict=False)
    assert torch.equal(frames, pt) and [s["prompt"] for s in sections] == [b for _, b in BOARD]
    window = window_tokens(pipe)
    assert window == 128 and [s["memory_tokens"] for s in sections] == [0, 8 + window] and memory.tokens == 16 + window


def test_step_callback_sees_every_step_and_can_change_the_latents(pipe):
    seen = []

    def record(p, step, timestep, kwargs):
        seen.append((p.section_index, step, tuple(kwargs["latents"].shape), tuple(kwargs["prompt_embeds"].shape)))
        return kwargs

    plain = generate(pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    assert [(s, i) for s, i, _, _ in seen] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert seen[0][2] == (1, 48, 4, 16, 16) and seen[0][3][0] == 2  # the prompt and the empty one
    zeroed = generate(pipe, callback_on_step_end=lambda p, i, t, kw: {"latents": torch.zeros_like(kw["latents"])})
    assert not torch.equal(zeroed.frames, plain.frames)
    with pytest.raises(FrameMemError, match="not available"):
        generate(pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise_pred"])


def test_interrupt_stops_after_the_current_section(pipe):
    def stop(p, step, timestep, kwargs):
        p._interrupt = True
        return kwargs

    out = generate(pipe, seconds=3, callback_on_step_end=stop)
    assert len(out.sections) == 1 and out.frames.shape[1] == 4


def test_a_saved_memory_continues_exactly_like_the_video_it_came_from(pipe, tmp_path):
    history = generate(pipe, seconds=2, output_type="np").frames[0]  # (8, 64, 64, 3) in [0, 1]
    memory = pipe.encode_memory(history)
    assert memory.tokens == 16 + window_tokens(pipe) and memory.seconds == 2.0
    memory.save(tmp_path / "memory.safetensors")
    loaded = pipe.load_memory(tmp_path / "memory.safetensors")
    from_video = generate(pipe, video=history).frames
    from_memory = generate(pipe, memory=memory).frames
    from_file = generate(pipe, memory=loaded).frames
    assert torch.equal(from_video, from_memory) and torch.equal(from_memory, from_file)
    assert memory.tokens == 16 + window_tokens(pipe)  # continuing does not change the memory it was given
    other = FrameMemRetrievalPipeline.from_pretrained("tiny")  # another φ: its memory is not this one's
    with pytest.raises(FrameMemError):
        other_pipe = FrameMemPipeline(**{**pipe.components, "memory_encoder": _other_rate_encoder(other)})
        other_pipe.load_memory(tmp_path / "memory.safetensors")


def _other_rate_encoder(retrieval):
    from framemem.models.framemem import build_memory_encoder

    config = retrieval.framemem_config.model
    config = type(config)(**{**config.__dict__, "rate": (2, 2, 2)})
    return build_memory_encoder(config, retrieval.codec.channels, 256, (1, 2, 2))


def test_a_start_image_and_video_inputs_of_every_kind(pipe, retrieval):
    image = Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8))
    out = generate(pipe, image=image)
    assert out.sections[0]["memory_tokens"] == 4 + window_tokens(pipe) and out.sections[0]["start_seconds"] == 0.5
    frames = torch.randint(0, 256, (12, 64, 64, 3), dtype=torch.uint8)
    as_uint8 = retrieval(frames, times=[1.0], generator=torch.Generator().manual_seed(1), output_type="pt")
    for same in (frames.numpy(), frames.permute(3, 0, 1, 2).float() / 127.5 - 1,
                 [Image.fromarray(f) for f in frames.numpy()], frames.numpy().astype(np.float32) / 255):
        again = retrieval(same, times=[1.0], generator=torch.Generator().manual_seed(1), output_type="pt")
        assert torch.allclose(again.frames, as_uint8.frames, atol=1e-5)


def test_retrieval_output_holds_frames_truth_references_and_metrics(retrieval):
    frames = torch.from_numpy(framemem.data.procedural.procedural_video(5, 40, 64, 64, 4.0)[0])
    out = retrieval(frames, times=[0.0, 4.5, 9.75], num_inference_steps=4, output_type="pt")
    assert out.frames.shape == out.ground_truth.shape == out.bicubic.shape == (3, 3, 64, 64)
    assert out.frame_indices == [0, 18, 39] and out.memory_tokens == 80 and out.full_context_tokens == 40 * 64
    assert torch.allclose(out.ground_truth[1], frames[18].permute(2, 0, 1).float() / 255, atol=1e-6)
    mean = out.metrics["mean"]
    assert len(out.metrics["per_frame"]) == 3 and 0 < mean["psnr"] < 60 and mean["bicubic_psnr"] > mean["mean_frame_psnr"]
    assert len(retrieval(frames, times=[2.0]).frames) == 1  # "pil": one image per time


@pytest.mark.parametrize("call, message", [
    (lambda p, r: r(torch.zeros(40, 64, 64, 3, dtype=torch.uint8), times=[10.0]), "time 10s is outside the video"),
    (lambda p, r: r(torch.zeros(40, 64, 64, 3, dtype=torch.uint8), times=[float("nan")]), "not a finite number of seconds"),
    (lambda p, r: r(torch.zeros(40, 32, 32, 3, dtype=torch.uint8), times=[1.0]), "frames are 32x32; this model needs 64x64"),
    (lambda p, r: r(torch.zeros(1, 64, 64, 3, dtype=torch.uint8), times=[0.0]), "too short"),
    (lambda p, r: r("no-such-clip.mp4", times=[1.0]), "no such file"),
    (lambda p, r: r(torch.zeros(40, 64, 64, 3, dtype=torch.uint8), times=[1.0], output_type="gif"), "output_type"),
    (lambda p, r: p({"prompts": []}, seconds=2), "non-empty list"),
    (lambda p, r: p([(2.0, "b"), (1.0, "a")], seconds=2), "times must increase"),
    (lambda p, r: p(prompt="a clock", seconds=0), "seconds must be a positive number"),
    (lambda p, r: p(prompt="a clock", seconds=2, guidance_scale=float("nan")), "guidance_scale must be a finite"),
    (lambda p, r: p(prompt="a clock", seconds=2, image=np.zeros((32, 32, 3), np.uint8)), "image: 32x32; this model starts from 64x64 images"),
    (lambda p, r: p(prompt="a clock", seconds=2, memory="m.safetensors"), "expected a MemoryState"),
    (lambda p, r: FrameMemPipeline.from_pretrained("tiny"), "a stage-1 checkpoint (retrieval only) cannot generate"),
    (lambda p, r: FrameMemPipeline.from_pretrained("/no/such/checkpoint"), "no such folder"),
])
def test_bad_input_raises_one_line(pipe, retrieval, call, message):
    with pytest.raises(FrameMemError) as error:
        call(pipe, retrieval)
    assert message in str(error.value) and "\n" not in str(error.value)
