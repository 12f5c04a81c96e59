"""Presets, `--set` overrides and saved configs: typed values, one-line errors."""
import json

import pytest

from framemem.config import FrameMemConfig, get_preset
from framemem.errors import FrameMemError


def test_override_converts_to_the_field_type():
    config = get_preset("tiny")
    for item in ("procedural_pool=100", "encoder_lr=1e-4", "train.ema_decay=0.99", "gradient_checkpointing=yes",
                 "ar.lora_rank=none", "ar.t_shift=3", "omega=uniform"):
        config.override(item)
    config.validate()
    assert config.train.procedural_pool == 100 and isinstance(config.train.procedural_pool, int)
    assert (config.train.encoder_lr, config.train.ema_decay, config.train.gradient_checkpointing) == (1e-4, 0.99, True)
    assert (config.ar.lora_rank, config.ar.t_shift, config.train.t_shift) == (None, 3.0, 1.0)
    assert config.train.omega == "uniform"
    for item in ("ar.nothing=1", "model.rate=2", "steps=", "seed=1.5"):
        with pytest.raises(FrameMemError):
            config.override(item)


def test_a_saved_config_drops_retired_fields_and_is_validated():
    data = json.loads(json.dumps(get_preset("tiny").to_dict()))
    data["model"]["text_tokens"] = 1  # written by older versions, read by nothing now
    assert FrameMemConfig.from_dict(data).model.rate == (4, 4, 2)
    data["model"]["lora_rank"] = 8  # a LoRA with no base DiT to load it over
    with pytest.raises(FrameMemError, match="lora_rank needs transformer_path"):
        FrameMemConfig.from_dict(data)
    data["model"]["lora_rank"], data["train"]["batch_size"] = None, 0
    with pytest.raises(FrameMemError, match="batch_size = 0: must be positive"):
        FrameMemConfig.from_dict(data)
