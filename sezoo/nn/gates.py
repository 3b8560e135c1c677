"""Binary gates with surrogate gradients, and the protocol the utilization callback reads.

A *utilization source* is any module with a ``last_utilization`` attribute: after each forward it
holds a differentiable scalar tensor in [0, 1] (the fraction of the module's capacity that ran).
:class:`sezoo.callbacks.UtilizationLoss` finds every source in a model by that attribute alone, so
DynCP channel gates, slimming routers, skip-RNN update gates and early-exit policies plug in alike.
"""
from __future__ import annotations

import torch
from torch import nn


def straight_through_gate(logits: torch.Tensor) -> torch.Tensor:
    """Hard 0/1 forward (logit > 0); sigmoid gradient backward (straight-through estimator)."""
    soft = torch.sigmoid(logits)
    hard = (logits > 0).to(logits.dtype)
    return hard + (soft - soft.detach())  # exactly 0/1 forward: the bracket is 0 before it is added


def gumbel_sigmoid_gate(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hard 0/1 forward on logits plus logistic noise; backward through sigmoid(noisy logits / T)."""
    uniform = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
    noisy = logits + torch.log(uniform) - torch.log1p(-uniform)  # the difference of two Gumbels is logistic
    soft = torch.sigmoid(noisy / temperature)
    hard = (noisy > 0).to(logits.dtype)
    return hard + (soft - soft.detach())


class ChannelGate(nn.Module):
    """Per-frame binary gates for ``channels`` hidden channels, computed from the block input.

    A bottleneck of two 1x1 convolutions (``in_channels -> hidden -> channels``) keeps the gate's own
    cost small: ``in_channels * hidden + hidden * channels`` MACs per frame. ``estimator`` picks the
    training surrogate: ``ste`` (straight-through sigmoid) or ``gumbel`` (Gumbel-sigmoid, whose
    ``temperature`` the utilization callback can anneal). Evaluation is deterministic: logit > 0.
    """

    def __init__(self, in_channels: int, channels: int, hidden: int = 16, initial_bias: float = 1.0,
                 estimator: str = "ste", temperature: float = 1.0):
        super().__init__()
        if estimator not in ("ste", "gumbel"):
            raise ValueError(f"gate estimator {estimator!r}: choose 'ste' or 'gumbel'")
        self.squeeze = nn.Conv1d(in_channels, hidden, 1)
        self.expand = nn.Conv1d(hidden, channels, 1)
        nn.init.constant_(self.expand.bias, initial_bias)  # start (nearly) all open: the dense model
        self.estimator, self.temperature = estimator, temperature
        self.last_utilization: torch.Tensor | None = None

    @property
    def macs_per_frame(self) -> int:
        return self.squeeze.in_channels * self.squeeze.out_channels + self.expand.in_channels * self.expand.out_channels

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(torch.relu(self.squeeze(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, T] -> gates [B, channels, T] in {0, 1}."""
        logits = self.logits(x)
        if self.training and self.estimator == "gumbel":
            gates = gumbel_sigmoid_gate(logits, self.temperature)
        else:
            gates = straight_through_gate(logits)
        self.last_utilization = gates.mean()
        return gates
