"""A Gumbel-softmax router that picks one of several capacities (utilization factors) per frame.

Conv1d over the waveform (one router frame per ``frame`` samples) -> ReLU -> diagonal GRU (element-wise
recurrence, so the router stays tiny and causal) -> 1x1 conv -> logits over the choices. Training
samples a hard one-hot choice with PyTorch's straight-through ``gumbel_softmax`` at ``temperature``
(annealed by :class:`sezoo.callbacks.UtilizationLoss`); evaluation takes the argmax.

It is a utilization source: ``last_utilization`` is the mean chosen factor (differentiable through the
straight-through one-hot), and ``last_balance`` is the mixture-of-experts load-balancing term
``K * sum_k f_k * P_k`` (f_k: fraction of frames routed to choice k, P_k: mean probability of k; 1
when use is uniform), which the callback weights with its ``balance_weight``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DiagonalGRU(nn.Module):
    """A GRU whose recurrent matrices are diagonal: ``h`` feeds back element-wise. [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Conv1d(channels, 3 * channels, 1)
        self.recurrent = nn.Parameter(torch.zeros(3, channels))

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """From state ``h`` [B, C] (None: zeros); the last output step is the next state."""
        z_in, r_in, n_in = self.input(x).chunk(3, dim=1)
        u_z, u_r, u_n = self.recurrent
        h = x.new_zeros(x.shape[0], x.shape[1]) if h is None else h
        states = []
        # unbind, not z_in[..., t]: indexing's backward fills a full-size zero tensor per step
        for z_t, r_t, n_t in zip(z_in.unbind(-1), r_in.unbind(-1), n_in.unbind(-1)):
            z = torch.sigmoid(z_t + u_z * h)
            r = torch.sigmoid(r_t + u_r * h)
            n = torch.tanh(n_t + r * u_n * h)
            h = (1 - z) * n + z * h
            states.append(h)
        return torch.stack(states, dim=-1)


class GumbelRouter(nn.Module):
    def __init__(self, choices: tuple[float, ...], frame: int = 256, channels: int = 32, temperature: float = 1.0):
        super().__init__()
        self.frame = frame
        self.conv = nn.Conv1d(1, channels, frame, frame)
        self.gru = DiagonalGRU(channels)
        self.head = nn.Conv1d(channels, len(choices), 1)
        self.register_buffer("choices", torch.tensor(choices, dtype=torch.float32), persistent=False)
        self.temperature = temperature
        self.last_utilization: torch.Tensor | None = None
        self.last_balance: torch.Tensor | None = None
        self.last_choice: torch.Tensor | None = None

    @property
    def macs_per_frame(self) -> int:
        c = self.conv.out_channels
        return self.conv.weight.numel() + 3 * c * c + 3 * c + self.head.weight.numel()

    def logits(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T] -> [B, frames, K] with frames = ceil(T / frame)."""
        x = F.pad(waveform[:, None], (0, -waveform.shape[-1] % self.frame))
        return self.head(self.gru(F.relu(self.conv(x)))).transpose(1, 2)

    def decide(self, frames: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming: whole router frames [B, n * frame] -> (chosen indices [B, n], the GRU state)."""
        hidden = self.gru(F.relu(self.conv(frames[:, None])), state)
        return self.head(hidden).argmax(1), hidden[..., -1]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T] -> one-hot choices [B, frames, K] (straight-through when training)."""
        logits = self.logits(waveform)
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)
        else:
            onehot = F.one_hot(logits.argmax(-1), len(self.choices)).to(logits.dtype)
        probs = logits.softmax(-1)
        used = onehot.detach().flatten(0, 1).mean(0)
        self.last_balance = len(self.choices) * (used * probs.flatten(0, 1).mean(0)).sum()
        self.last_utilization = (onehot * self.choices).sum(-1).mean()
        self.last_choice = onehot
        return onehot
