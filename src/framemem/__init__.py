"""framemem: long, compact video memory for autoregressive video diffusion.

Implements *Pretraining Frame Preservation in Autoregressive Video Memory
Compression* (Zhang et al., 2025, arXiv:2512.23851).
"""
from .config import FrameMemConfig, ModelConfig, TrainConfig, get_preset
from .errors import FrameMemError

__version__ = "0.1.0"
__all__ = ["FrameMemConfig", "ModelConfig", "TrainConfig", "get_preset", "FrameMemError", "__version__"]
