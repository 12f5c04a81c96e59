"""`device` and `dtype` for modules that may hold no weights at all (the pixel-space codec,
φ's `only_lr` variant): diffusers pipelines ask every component for them."""
from __future__ import annotations

import itertools

import torch


class Placement:
    """Mixin for an `nn.Module`: the device and dtype of its first weight or buffer (CPU and
    float32 when it has none)."""

    def _first_tensor(self):
        return next(itertools.chain(self.parameters(), self.buffers()), None)

    @property
    def device(self) -> torch.device:
        first = self._first_tensor()
        return first.device if first is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        first = self._first_tensor()
        return first.dtype if first is not None and first.is_floating_point() else torch.float32
