"""Conv-FSENet: the fully convolutional STFT-masking network that DynCP prunes, with optional gates.

|STFT| (optionally power-compressed) -> 1x1 conv 257->C + ReLU -> residual blocks -> 1x1 conv C->257
+ sigmoid = a real mask on the complex noisy STFT -> iSTFT. Each residual block (3 stacks of dilations
1, 2, 4 by default): 1x1 conv C->H, PReLU, BatchNorm, depthwise conv k=3 dilated, PReLU, BatchNorm,
1x1 conv H->C, plus the input. With C=128, H=256 a frame costs 662,528 MACs (41.4 MMAC/s at hop 256).
The causal variant pads the depthwise convolution on the left only.

DynCP (``gate_hidden > 0``): each block has a :class:`~sezoo.nn.gates.ChannelGate` that switches its H
hidden channels on or off per frame from the block input. A channel that is off at frame t costs
nothing there: its row of the first 1x1 conv, its depthwise filter and its column of the last 1x1 conv
are not touched. The training path applies the gates as masks; :meth:`ConvFSENet.stream_mask` runs
frame by frame and computes only the open channels; both give the same output.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sezoo.metrics.cost import report_macs
from sezoo.models._registry import register_model
from sezoo.nn.gates import ChannelGate
from sezoo.nn.stft import STFT


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel_size: int, dilation: int, causal: bool, gate_hidden: int = 0):
        super().__init__()
        self.expand = nn.Conv1d(channels, hidden, 1)
        self.act1 = nn.PReLU()
        self.norm1 = nn.BatchNorm1d(hidden)
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, dilation=dilation, groups=hidden)
        self.act2 = nn.PReLU()
        self.norm2 = nn.BatchNorm1d(hidden)
        self.project = nn.Conv1d(hidden, channels, 1)
        self.gate = ChannelGate(channels, hidden, gate_hidden) if gate_hidden else None
        self.kernel_size, self.dilation, self.causal = kernel_size, dilation, causal
        span = dilation * (kernel_size - 1)
        self.padding = (span, 0) if causal else (span // 2, span - span // 2)
        self.last_gates: torch.Tensor | None = None

    @property
    def macs_per_open_channel(self) -> int:
        """A hidden channel's cost per frame: its expand row, its depthwise filter, its project column."""
        return self.expand.in_channels + self.kernel_size + self.project.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gate(x) if self.gate is not None else None
        self.last_gates = gates
        e = self.expand(x)
        if gates is not None:
            # A closed channel's expand output is never computed: it enters the rest as 0, which
            # PReLU and BatchNorm map to a constant, exactly what the streaming path uses.
            e = e * gates
        h = self.norm2(self.act2(self.depthwise(F.pad(self.norm1(self.act1(e)), self.padding))))
        if gates is not None:
            h = h * gates
        return x + self.project(h)


def _batchnorm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    return (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps) * norm.weight + norm.bias


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
        gate_hidden: int = 0,
        sample_rate: int = 16000,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.compression = compression
        self.causal = causal
        self.stft = STFT(n_fft, hop, "hann")
        bins = self.stft.n_bins
        self.front = nn.Conv1d(bins, channels, 1)
        self.blocks = nn.ModuleList(
            ResidualBlock(channels, hidden, kernel_size, d, causal, gate_hidden) for _ in range(stacks) for d in dilations
        )
        self.back = nn.Conv1d(channels, bins, 1)

    @property
    def gated(self) -> bool:
        return self.blocks[0].gate is not None

    @property
    def reports_own_macs(self) -> bool:
        # Gated: the executed count depends on the gates, which the FLOP counter cannot see.
        return self.gated

    @property
    def hop_samples(self) -> int:
        return self.stft.hop

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        mag = spec.abs()
        return mag if self.compression == 1.0 else (mag + 1e-12) ** self.compression

    def _fixed_macs_per_frame(self) -> int:
        gates = sum(b.gate.macs_per_frame for b in self.blocks if b.gate is not None)
        return self.front.in_channels * self.front.out_channels + self.back.in_channels * self.back.out_channels + gates

    def executed_macs(self, frames: int, open_channels: list[int]) -> int:
        """MACs of ``frames`` frames in which block k kept ``open_channels[k]`` channel-frames open."""
        return frames * self._fixed_macs_per_frame() + sum(
            n * b.macs_per_open_channel for n, b in zip(open_channels, self.blocks))

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """[B, bins, frames] features -> [B, bins, frames] mask in (0, 1)."""
        h = F.relu(self.front(features))
        for block in self.blocks:
            h = block(h)
        if self.gated:
            open_channels = [int(b.last_gates.detach().sum()) for b in self.blocks]
            report_macs(self.executed_macs(features.shape[0] * features.shape[-1], open_channels))
        return torch.sigmoid(self.back(h))

    def block_gates(self) -> list[torch.Tensor]:
        """Each block's gates [B, H, frames] from the last forward (empty list when not gated)."""
        return [b.last_gates for b in self.blocks] if self.gated else []

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T] noisy waveform -> [B, T] enhanced waveform."""
        spec = self.stft(waveform)
        return self.stft.inverse(spec * self.mask(self.features(spec)), waveform.shape[-1])

    # ------------------------------------------------------------------ streaming inference
    @torch.no_grad()
    def stream_mask(self, features: torch.Tensor) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
        """Frame-by-frame mask of a causal model (batch 1) computing only the open channels.

        Returns the mask [1, bins, frames], the MACs actually executed (counted from the weight
        slices used) and each block's gates [H, frames]. Eval mode: batch norm uses its statistics.
        """
        if not self.causal:
            raise ValueError("stream_mask needs a causal model (model.causal=true): a non-causal block looks ahead")
        if features.shape[0] != 1:
            raise ValueError("stream_mask runs batch 1")
        frames = features.shape[-1]
        blocks = list(self.blocks)
        # Per block: the last (k-1)*d+1 post-norm1 hidden vectors, initialised to what the training
        # path's zero padding holds (zeros), since padding happens after norm1.
        history = [torch.zeros(b.depthwise.in_channels, (b.kernel_size - 1) * b.dilation + 1) for b in blocks]
        closed_value = [_batchnorm(b.norm1, b.act1(torch.zeros(b.depthwise.in_channels))) for b in blocks]
        gates_out = [torch.zeros(b.depthwise.in_channels, frames) for b in blocks]
        masks, macs = [], 0
        for t in range(frames):
            x = F.relu(self.front.weight[:, :, 0] @ features[0, :, t] + self.front.bias)
            macs += self.front.weight.numel()
            for k, b in enumerate(blocks):
                if b.gate is not None:
                    logits = b.gate.expand.weight[:, :, 0] @ F.relu(b.gate.squeeze.weight[:, :, 0] @ x + b.gate.squeeze.bias) \
                        + b.gate.expand.bias
                    macs += b.gate.macs_per_frame
                    open_idx = torch.nonzero(logits > 0).flatten()
                else:
                    open_idx = torch.arange(b.depthwise.in_channels)
                gates_out[k][open_idx, t] = 1.0
                w_expand = b.expand.weight[open_idx, :, 0]
                h1 = closed_value[k].clone()
                h1[open_idx] = _batchnorm_index(b.norm1, b.act1(w_expand @ x + b.expand.bias[open_idx]), open_idx)
                history[k] = torch.cat([history[k][:, 1:], h1[:, None]], dim=1)
                taps = history[k][open_idx][:, :: b.dilation]  # [open, kernel]: oldest tap first
                w_dw = b.depthwise.weight[open_idx, 0, :]
                dw = (w_dw * taps).sum(dim=1) + b.depthwise.bias[open_idx]
                h2 = _batchnorm_index(b.norm2, b.act2(dw), open_idx)
                w_project = b.project.weight[:, open_idx, 0]
                x = x + w_project @ h2 + b.project.bias
                macs += w_expand.numel() + w_dw.numel() + w_project.numel()
            masks.append(torch.sigmoid(self.back.weight[:, :, 0] @ x + self.back.bias))
            macs += self.back.weight.numel()
        return torch.stack(masks, dim=-1)[None], macs, gates_out


def _batchnorm_index(norm: nn.BatchNorm1d, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return (x - norm.running_mean[idx]) / torch.sqrt(norm.running_var[idx] + norm.eps) * norm.weight[idx] + norm.bias[idx]
