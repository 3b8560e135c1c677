"""What every sezoo model offers a user besides ``forward``: ``enhance(waveform, sample_rate)``."""
from __future__ import annotations

import torch
from torch import nn

from sezoo.data.audio import resample


class SEModel(nn.Module):
    """A waveform-to-waveform enhancement network at ``self.sample_rate``."""

    sample_rate: int = 16000

    @torch.no_grad()
    def enhance(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Enhance mono audio ``[T]`` or a batch ``[B, T]`` at any rate; returns it at that rate."""
        squeeze = waveform.dim() == 1
        x = waveform[None] if squeeze else waveform
        y = resample(self(resample(x.float(), sample_rate, self.sample_rate)), self.sample_rate, sample_rate)
        y = y[..., : x.shape[-1]]
        return y[0] if squeeze else y
