"""framemem: long, compact video memory for autoregressive video diffusion.

Implements *Pretraining Frame Preservation in Autoregressive Video Memory
Compression* (Zhang et al., 2025, arXiv:2512.23851).

    import framemem
    pipe = framemem.FrameMemPipeline.from_pretrained("tiny-ar")       # generation (stage 2)
    retrieval = framemem.FrameMemRetrievalPipeline.from_pretrained("tiny")  # retrieval (stage 1)
"""
__version__ = "0.1.0"

from .config import FrameMemConfig, ModelConfig, TrainConfig, get_preset  # noqa: E402
from .data.storyboard import Storyboard  # noqa: E402
from .errors import FrameMemError  # noqa: E402
from .hub import pretrained  # noqa: E402
from .pipelines import (  # noqa: E402
    FrameMemPipeline,
    FrameMemPipelineOutput,
    FrameMemRetrievalPipeline,
    FrameMemRetrievalPipelineOutput,
    MemoryState,
)

__all__ = ["FrameMemPipeline", "FrameMemPipelineOutput", "FrameMemRetrievalPipeline", "FrameMemRetrievalPipelineOutput",
           "MemoryState", "Storyboard", "pretrained", "FrameMemConfig", "ModelConfig", "TrainConfig", "get_preset",
           "FrameMemError", "__version__"]
