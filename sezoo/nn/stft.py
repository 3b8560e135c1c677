"""STFT front end shared by the spectral-masking models and the spectral losses."""
from __future__ import annotations

import torch
from torch import nn


class STFT(nn.Module):
    """Complex STFT/iSTFT pair with a fixed window (``hann`` or ``sqrt_hann``).

    Frames are centred (``torch.stft(center=True)``), so ``inverse(forward(x), len(x))`` returns ``x``
    to float precision; the window is a buffer so it follows the module across devices.
    """

    def __init__(self, n_fft: int = 512, hop: int = 256, window: str = "hann"):
        super().__init__()
        if window not in ("hann", "sqrt_hann"):
            raise ValueError(f"window={window!r}: choose 'hann' or 'sqrt_hann'")
        self.n_fft, self.hop = n_fft, hop
        w = torch.hann_window(n_fft, periodic=True)
        self.register_buffer("window", w.sqrt() if window == "sqrt_hann" else w, persistent=False)

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T] -> complex [B, n_bins, frames]."""
        return torch.stft(waveform, self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True)

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=length)
