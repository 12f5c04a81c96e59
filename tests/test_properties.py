"""Seeded random cases (property tests): memory geometry over rates x shapes x positions,
storyboard parsing, and config overrides. Each draws its cases from a fixed seed, so a
failure names a case that can be rerun."""
import dataclasses
import json
import typing

import numpy as np
import pytest
import torch

from framemem.config import ARConfig, FrameMemConfig, TrainConfig
from framemem.data.storyboard import Storyboard
from framemem.errors import FrameMemError
from framemem.models.framemem import FrameMem
from framemem.pipelines.memory_state import MemoryState

RATES = [(1, 1, 2), (2, 2, 2), (2, 2, 4), (4, 4, 2), (2, 2, 8), (4, 4, 4), (8, 8, 2)]


@pytest.mark.parametrize("case", range(6))
def test_memory_geometry_over_rates_shapes_and_positions(config, case):
    rng = np.random.default_rng(100 + case)
    rate = RATES[rng.integers(len(RATES))]
    size = int(rng.choice([32, 48]))
    config.model.rate, config.model.height, config.model.width = rate, size, size
    model = FrameMem.build(config).eval()
    torch.nn.init.normal_(model.encoder.proj_out.weight, std=0.05)
    block = model.encoder.block_frames
    blocks = int(rng.integers(1, 4))
    frames = model.codec.pixel_frames(blocks * block)
    video = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(case)) * 2 - 1
    with torch.no_grad():
        latents, memory = model.encode_history(video)
        counts = model.token_counts(frames, size, size)
        assert memory.tokens.shape[1] == counts["memory"] == len(memory.positions), (rate, size, blocks)
        assert counts["memory"] < counts["full_context"]
        tm, hm, wm = memory.grid
        assert tm * hm * wm == counts["memory"]
        # every position lies inside the latent grid (post-patch units), times in order
        grid = np.array(latents.shape[2:]) // np.array(model.dit.patch_size)
        assert (memory.positions >= -0.5).all() and (memory.positions <= torch.tensor(grid) - 0.5).all()
        assert (memory.positions[:, 0].diff() >= 0).all()
        state = MemoryState(model)  # appending block by block is the same memory
        for b in range(blocks):
            part = video[:, :, model.codec.pixel_frames(b * block): model.codec.pixel_frames((b + 1) * block)]
            state.append(*model.history_latents(part))
        appended = state.memory()
    assert (appended.tokens - memory.tokens).abs().max() <= 1e-5
    assert torch.equal(appended.positions, memory.positions)


def _random_board(rng) -> dict:
    times = np.cumsum(rng.uniform(0.1, 5.0, int(rng.integers(1, 6)))) - 0.1
    return {"prompts": [{"at": round(float(t), 3), "prompt": f"shot {i} " + "x" * int(rng.integers(1, 9))}
                        for i, t in enumerate(times)]}


MUTATIONS = [
    lambda b: b["prompts"][-1].update(at=-1.0),
    lambda b: b["prompts"][-1].update(at=float("nan")),
    lambda b: b["prompts"][-1].update(at="soon"),
    lambda b: b["prompts"][-1].update(at=True),
    lambda b: b["prompts"][-1].update(prompt=42),
    lambda b: b["prompts"][-1].update(prompt="   "),
    lambda b: b["prompts"][-1].pop("prompt"),
    lambda b: b["prompts"][-1].update(extra=1),
    lambda b: b["prompts"].append(dict(b["prompts"][-1])),  # a repeated time
    lambda b: b.update(prompts=[]),
    lambda b: b.update(title="x"),
    lambda b: b["prompts"].append("not a mapping"),
]


@pytest.mark.parametrize("case", range(25))
def test_storyboards_round_trip_and_every_broken_one_is_a_one_line_error(case, tmp_path):
    import yaml

    rng = np.random.default_rng(200 + case)
    board = _random_board(rng)
    parsed = Storyboard.from_dict(json.loads(json.dumps(board)))
    assert Storyboard.from_dict(parsed.to_dict()) == parsed
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(board))
    (tmp_path / "s.json").write_text(json.dumps(board))
    assert Storyboard.load(tmp_path / "s.yaml") == Storyboard.load(tmp_path / "s.json") == parsed
    for t in rng.uniform(-1, 30, 5):  # the prompt at a time is the last one started by then
        started = [p for at, p in zip(parsed.times, parsed.prompts) if at <= t]
        assert parsed.prompt_at(float(t)) == (started[-1] if started else parsed.prompts[0])
    broken = json.loads(json.dumps(board))
    MUTATIONS[case % len(MUTATIONS)](broken)
    with pytest.raises(FrameMemError) as err:
        Storyboard.from_dict(broken, "s.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("s.yaml")


def _fields():
    for prefix, cls in (("", TrainConfig), ("ar.", ARConfig)):
        for field in dataclasses.fields(cls):
            yield prefix, field.name, typing.get_type_hints(cls)[field.name]


def _valid_text(kind, rng) -> tuple[str, object]:
    allowed = set(typing.get_args(kind)) or {kind}
    if bool in allowed:
        value = bool(rng.integers(2))
        return str(value).lower(), value
    if int in allowed:
        value = int(rng.integers(1, 50))
        return str(value), value
    if float in allowed:
        value = float(rng.uniform(0.01, 0.9))
        return repr(value), value
    return "none", None


@pytest.mark.parametrize("case", range(4))
def test_config_overrides_set_typed_values_and_refuse_the_rest_in_one_line(case):
    from framemem.config import get_preset

    rng = np.random.default_rng(300 + case)
    for prefix, name, kind in _fields():
        config = get_preset("tiny")
        section = config.ar if prefix else config.train
        text, value = _valid_text(kind, rng)
        if str in (set(typing.get_args(kind)) or {kind}):
            continue  # a string field takes any text
        config.override(f"{prefix}{name}={text}")
        assert getattr(section, name) == value, (name, text)
        garbage = ["", "=", "abc", "1.5.2", "[1]"][rng.integers(5)]
        try:
            config.override(f"{prefix}{name}={garbage}")
        except FrameMemError as err:
            assert "\n" not in str(err)
        else:  # accepted only as a value of the field's type
            allowed = tuple(t for t in (set(typing.get_args(kind)) or {kind}) if t is not type(None))
            assert garbage not in ("", "=") and isinstance(getattr(section, name), allowed), (name, garbage)
        try:
            config.validate()
        except FrameMemError as err:  # a value out of range is one line too
            assert "\n" not in str(err)
    with pytest.raises(FrameMemError, match="--set nosuch=1"):
        FrameMemConfig.override(get_preset("tiny"), "nosuch=1")
