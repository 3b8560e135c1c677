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
frame by frame (with each block's look-ahead when non-causal) and computes only the open channels;
both give the same output.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sezoo.metrics.cost import ledger_active, report_macs
from sezoo.models._base import SEModel
from sezoo.models._registry import register_model
from sezoo.nn.gates import ChannelGate
from sezoo.nn.stft import STFT
from sezoo.streaming import Framing


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel_size: int, dilation: int, causal: bool, gate_hidden: int = 0,
                 gate_estimator: str = "ste"):
        super().__init__()
        self.expand = nn.Conv1d(channels, hidden, 1)
        self.act1 = nn.PReLU()
        self.norm1 = nn.BatchNorm1d(hidden)
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, dilation=dilation, groups=hidden)
        self.act2 = nn.PReLU()
        self.norm2 = nn.BatchNorm1d(hidden)
        self.project = nn.Conv1d(hidden, channels, 1)
        self.gate = ChannelGate(channels, hidden, gate_hidden, estimator=gate_estimator) if gate_hidden else None
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


    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The depthwise convolution's history of post-norm1 frames, and, with look-ahead, the block
        inputs, gates and validity of the frames still waiting for their future frames."""
        hidden, channels, wait = self.expand.out_channels, self.expand.in_channels, self.padding[1]
        state = {f"{prefix}.history": torch.zeros(1, hidden, self.dilation * (self.kernel_size - 1) + 1)}
        if wait:
            state.update({f"{prefix}.waiting_inputs": torch.zeros(1, channels, wait),
                          f"{prefix}.waiting_gates": torch.zeros(1, hidden, wait),
                          f"{prefix}.waiting_valid": torch.zeros(1, 1, wait)})
        return state

    def step(self, x: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
        """One frame ``[1, C]`` -> the output of the frame ``padding[1]`` frames back, its validity and
        the new state. A frame that is not valid (before the start, after the end) enters the depthwise
        history as 0: the zero padding of the offline convolution."""
        gates = (self.gate.logits(x[..., None])[..., 0] > 0).to(x.dtype) if self.gate is not None else None
        e = F.linear(x, self.expand.weight[:, :, 0], self.expand.bias)
        if gates is not None:
            e = e * gates
        h1 = self.norm1(self.act1(e)) * valid[:, None]
        history = torch.cat([state[0][:, :, 1:], h1[:, :, None]], dim=-1)
        if self.padding[1]:  # the output is the oldest waiting frame's
            inputs = torch.cat([state[1], x[:, :, None]], dim=-1)
            gate_queue = torch.cat([state[2], (gates if gates is not None else torch.ones_like(e))[:, :, None]], dim=-1)
            valid_queue = torch.cat([state[3], valid.reshape(1, 1, 1)], dim=-1)
            x, gates, valid = inputs[:, :, 0], gate_queue[:, :, 0] if gates is not None else None, valid_queue[:, 0, :1]
            waiting = (inputs[:, :, 1:], gate_queue[:, :, 1:], valid_queue[:, :, 1:])
        else:
            valid, waiting = valid.reshape(1, 1), ()
        taps = history[:, :, :: self.dilation]
        h2 = self.norm2(self.act2((taps * self.depthwise.weight[:, 0, :]).sum(-1) + self.depthwise.bias))
        if gates is not None:
            h2 = h2 * gates
        return x + F.linear(h2, self.project.weight[:, :, 0], self.project.bias), valid.reshape(1), (history, *waiting)

@register_model("convfsenet")
class ConvFSENet(SEModel):
    """Conv-FSENet (module docstring: the network and its gates).

    Args:
        n_fft: STFT size (hann window); 512 at 16 kHz is 32 ms.
        hop: STFT hop in samples; the frame rate the MAC count is per.
        channels: C, the width between residual blocks.
        hidden: H, each block's hidden width (the channels DynCP gates).
        stacks: how many times the dilation pattern repeats.
        dilations: the depthwise convolutions' dilations within a stack.
        kernel_size: the depthwise convolutions' kernel.
        causal: pad the depthwise convolutions on the left only (streamable, no look-ahead).
        compression: the input is ``|STFT| ** compression``.
        gate_hidden: width of each block's gate net; 0: no gates (the dense model).
        gate_estimator: ``ste`` (straight-through sigmoid) or ``gumbel`` (Gumbel-sigmoid).
        sample_rate: the rate the model was trained at.
    """

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
        gate_estimator: str = "ste",
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
            ResidualBlock(channels, hidden, kernel_size, d, causal, gate_hidden, gate_estimator)
            for _ in range(stacks) for d in dilations
        )
        self.back = nn.Conv1d(channels, bins, 1)

    @property
    def gated(self) -> bool:
        return self.blocks[0].gate is not None

    @property
    def lookahead_frames(self) -> int:
        """Future frames each output frame waits for: the blocks' right paddings add up (0 when causal)."""
        return sum(block.padding[1] for block in self.blocks)

    @property
    def latency_samples(self) -> int:
        return self.stft.n_fft + self.lookahead_frames * self.stft.hop

    @property
    def reports_own_macs(self) -> bool:
        # Gated: the executed count depends on the gates, which the FLOP counter cannot see.
        return self.gated

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
        if self.gated and ledger_active():
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

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_framing(self) -> Framing:
        return Framing(self.stft.n_fft, self.stft.hop, "stft_mask", centered=True, window="hann")

    @property
    def stream_delay_frames(self) -> int:
        return self.lookahead_frames

    def _block_state_sizes(self) -> list[int]:
        return [len(b.stream_state("")) for b in self.blocks]

    def stream_state(self) -> dict[str, torch.Tensor]:
        return {n: t for k, b in enumerate(self.blocks) for n, t in b.stream_state(f"block{k}").items()}

    def stream_step(self, magnitude: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
        """``|STFT|`` of one frame ``[1, bins]`` and the state -> the mask of the frame
        ``stream_delay_frames`` back and the new state. Every channel is computed and closed ones are
        masked, as the training path does (:meth:`stream_mask` computes only the open ones)."""
        features = magnitude if self.compression == 1.0 else (magnitude + 1e-12) ** self.compression
        h = F.relu(F.linear(features, self.front.weight[:, :, 0], self.front.bias))
        new_state, at = [], 0
        for block, size in zip(self.blocks, self._block_state_sizes()):
            h, valid, block_state = block.step(h, valid, *state[at:at + size])
            new_state += block_state
            at += size
        return (torch.sigmoid(F.linear(h, self.back.weight[:, :, 0], self.back.bias)), *new_state)

    def compiled_stream_step(self):
        """The same step compiled with Numba, computing only the open channels of a gated frame (causal
        models: :mod:`sezoo.models.convfsenet_compiled`); ``open_streamer(model, "compiled")`` runs it."""
        from sezoo.models.convfsenet_compiled import CompiledConvFSENetStep

        return CompiledConvFSENetStep(self.eval())

    # ------------------------------------------------------------------ streaming inference
    @torch.no_grad()
    def stream_mask(self, features: torch.Tensor) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
        """Frame-by-frame mask (batch 1, eval mode) that computes only the open channels.

        Frames enter one at a time; a causal model returns each mask frame at once, a non-causal one
        after each block's look-ahead (its right padding, 21 frames for dilations 1, 2, 4 x 3).
        Returns the mask [1, bins, frames], the MACs executed (counted from the weight slices used)
        and each block's gates [H, frames].
        """
        if features.shape[0] != 1:
            raise ValueError("stream_mask runs batch 1")
        streams = [_BlockStream(b) for b in self.blocks]
        masks, macs = [], [0]

        def emit(k: int, x: torch.Tensor) -> None:  # block k's output frame goes on down the network
            if k == len(streams):
                masks.append(torch.sigmoid(self.back.weight[:, :, 0] @ x + self.back.bias))
                macs[0] += self.back.weight.numel()
                return
            out = streams[k].push(x)
            macs[0] += streams[k].pop_macs()
            if out is not None:
                emit(k + 1, out)

        for t in range(features.shape[-1]):
            emit(0, F.relu(self.front.weight[:, :, 0] @ features[0, :, t] + self.front.bias))
            macs[0] += self.front.weight.numel()
        for k, stream in enumerate(streams):  # end of input: drain each block's look-ahead in order
            for out in stream.drain():
                macs[0] += stream.pop_macs()
                emit(k + 1, out)
        return torch.stack(masks, dim=-1)[None], macs[0], [torch.stack(s.gates, dim=1) for s in streams]


class _BlockStream:
    """One residual block fed a frame at a time; keeps the (k-1)*d+1 newest post-norm1 frames."""

    def __init__(self, block: ResidualBlock):
        self.b = block
        hidden = block.depthwise.in_channels
        self.window = torch.zeros(hidden, (block.kernel_size - 1) * block.dilation + 1)  # left zero padding
        self.lookahead = block.padding[1]
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (block input, open channels) awaiting output
        # A closed channel's expand output is 0 and becomes this constant after PReLU and BatchNorm.
        self.closed = _batchnorm_index(block.norm1, block.act1(torch.zeros(hidden)), torch.arange(hidden))
        self.gates: list[torch.Tensor] = []
        self._macs = 0

    def pop_macs(self) -> int:
        macs, self._macs = self._macs, 0
        return macs

    def push(self, x: torch.Tensor) -> torch.Tensor | None:
        b = self.b
        hidden = self.window.shape[0]
        if b.gate is not None:
            g = b.gate
            logits = g.expand.weight[:, :, 0] @ F.relu(g.squeeze.weight[:, :, 0] @ x + g.squeeze.bias) + g.expand.bias
            self._macs += g.macs_per_frame
            open_idx = torch.nonzero(logits > 0).flatten()
        else:
            open_idx = torch.arange(hidden)
        gate = torch.zeros(hidden)
        gate[open_idx] = 1.0
        self.gates.append(gate)
        w_expand = b.expand.weight[open_idx, :, 0]
        h1 = self.closed.clone()
        h1[open_idx] = _batchnorm_index(b.norm1, b.act1(w_expand @ x + b.expand.bias[open_idx]), open_idx)
        self._macs += w_expand.numel()
        return self._advance(h1, (x, open_idx))

    def drain(self):
        while self.pending:  # right zero padding, as F.pad gives the training path
            yield self._advance(torch.zeros(self.window.shape[0]), None)

    def _advance(self, h1: torch.Tensor, item) -> torch.Tensor | None:
        self.window = torch.cat([self.window[:, 1:], h1[:, None]], dim=1)
        if item is not None:
            self.pending.append(item)
        if len(self.pending) <= self.lookahead and item is not None:
            return None
        x, open_idx = self.pending.pop(0)
        b = self.b
        w_dw = b.depthwise.weight[open_idx, 0, :]
        taps = self.window[open_idx][:, :: b.dilation]  # oldest first, as the convolution reads them
        h2 = _batchnorm_index(b.norm2, b.act2((w_dw * taps).sum(dim=1) + b.depthwise.bias[open_idx]), open_idx)
        w_project = b.project.weight[:, open_idx, 0]
        self._macs += w_dw.numel() + w_project.numel()
        return x + w_project @ h2 + b.project.bias


def _batchnorm_index(norm: nn.BatchNorm1d, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return (x - norm.running_mean[idx]) / torch.sqrt(norm.running_var[idx] + norm.eps) * norm.weight[idx] + norm.bias[idx]
