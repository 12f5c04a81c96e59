"""The shipped Accelerate config files parse with Accelerate's own loader and name real classes."""
from pathlib import Path

import diffusers.models.transformers.transformer_wan as wan
import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "accelerate").glob("*.yaml"))


def test_there_are_ddp_multinode_and_fsdp_configs():
    names = [p.stem for p in CONFIGS]
    assert any("ddp" in n and "nodes" in n for n in names) and any("fsdp" in n for n in names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path):
    config = load_config_from_file(str(path))
    assert config.distributed_type.value in ("MULTI_GPU", "FSDP")
    assert config.num_processes >= 8 and config.mixed_precision == "bf16"
    assert config.num_processes % config.num_machines == 0
    if config.fsdp_config:
        layer = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert hasattr(wan, layer), f"diffusers has no {layer} to wrap"
