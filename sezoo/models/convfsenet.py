"""Conv-FSENet: the fully convolutional STFT-masking network that DynCP prunes.

|STFT| (optionally power-compressed) -> 1x1 conv 257->C + ReLU -> residual blocks -> 1x1 conv C->257
+ sigmoid = a real mask on the complex noisy STFT -> iSTFT. Each residual block (3 stacks of dilations
1, 2, 4 by default): 1x1 conv C->H, PReLU, BatchNorm, depthwise conv k=3 dilated, PReLU, BatchNorm,
1x1 conv H->C, plus the input. With C=128, H=256 a frame costs 662,528 MACs (41.4 MMAC/s at hop 256).
The causal variant pads the depthwise convolution on the left only.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sezoo.models._registry import register_model
from sezoo.nn.stft import STFT


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel_size: int, dilation: int, causal: bool):
        super().__init__()
        self.expand = nn.Conv1d(channels, hidden, 1)
        self.act1 = nn.PReLU()
        self.norm1 = nn.BatchNorm1d(hidden)
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, dilation=dilation, groups=hidden)
        self.act2 = nn.PReLU()
        self.norm2 = nn.BatchNorm1d(hidden)
        self.project = nn.Conv1d(hidden, channels, 1)
        span = dilation * (kernel_size - 1)
        self.padding = (span, 0) if causal else (span // 2, span - span // 2)

    def hidden_pre_depthwise(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm1(self.act1(self.expand(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden_pre_depthwise(x)
        h = self.norm2(self.act2(self.depthwise(F.pad(h, self.padding))))
        return x + self.project(h)


@register_model("convfsenet")
class ConvFSENet(nn.Module):
    def __init__(
        self,
        n_fft: int = 512,
        hop: int = 256,
        channels: int = 128,
        hidden: int = 256,
        stacks: int = 3,
        dilations: tuple[int, ...] = (1, 2, 4),
        kernel_size: int = 3,
        causal: bool = False,
        compression: float = 1.0,
        sample_rate: int = 16000,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.compression = compression
        self.stft = STFT(n_fft, hop, "hann")
        bins = self.stft.n_bins
        self.front = nn.Conv1d(bins, channels, 1)
        self.blocks = nn.ModuleList(
            ResidualBlock(channels, hidden, kernel_size, d, causal) for _ in range(stacks) for d in dilations
        )
        self.back = nn.Conv1d(channels, bins, 1)

    @property
    def hop_samples(self) -> int:
        return self.stft.hop

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        mag = spec.abs()
        return mag if self.compression == 1.0 else (mag + 1e-12) ** self.compression

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """[B, bins, frames] features -> [B, bins, frames] mask in (0, 1)."""
        h = F.relu(self.front(features))
        for block in self.blocks:
            h = block(h)
        return torch.sigmoid(self.back(h))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T] noisy waveform -> [B, T] enhanced waveform."""
        spec = self.stft(waveform)
        return self.stft.inverse(spec * self.mask(self.features(spec)), waveform.shape[-1])
