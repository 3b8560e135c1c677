"""The DEMUCS training loss (Defossez et al. 2020): L1 on the waveform plus a multi-resolution STFT
loss (spectral convergence + log magnitude at FFT 1024/2048/512, hops 120/240/50, windows 600/1200/240,
auraloss' defaults, which are DEMUCS' settings), each STFT term weighted by ``stft_weight`` (0.5 in
facebookresearch/denoiser)."""
from __future__ import annotations

import auraloss
import torch
from torch import nn
from torch.nn import functional as F


class DemucsLoss(nn.Module):
    def __init__(self, stft_weight: float = 0.5):
        super().__init__()
        self.stft = auraloss.freq.MultiResolutionSTFTLoss(w_sc=stft_weight, w_log_mag=stft_weight)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """[B, T] estimate and reference."""
        return F.l1_loss(estimate, reference) + self.stft(estimate[:, None], reference[:, None])
