"""diffusers pipelines over a framemem checkpoint: generation and frame retrieval."""
from .memory_state import MemoryState
from .pipeline_framemem import FrameMemPipeline, FrameMemPipelineOutput
from .pipeline_retrieval import EncodedHistory, FrameMemRetrievalPipeline, FrameMemRetrievalPipelineOutput

__all__ = ["FrameMemPipeline", "FrameMemPipelineOutput", "FrameMemRetrievalPipeline",
           "FrameMemRetrievalPipelineOutput", "MemoryState", "EncodedHistory"]
