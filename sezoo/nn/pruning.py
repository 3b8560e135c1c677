"""Structured pruning with a trainable threshold (the TinyLSTMs scheme).

Weights are split into groups (for an LSTM: all the weights that feed one hidden unit). A group is
kept while its L2 norm is at least the layer's threshold ``tau``: the forward mask is exactly 0/1, so a
pruned group contributes nothing and can be removed from the deployed model; the backward pass uses a
sigmoid relaxation ``sigmoid((norm - tau) / temperature)`` so that both the weights and ``tau`` get
gradients. The group penalty ``sum_g soft_g * norm_g`` shrinks groups the task does not need and, via
``soft_g``, rewards raising ``tau`` past them.
"""
from __future__ import annotations

import torch
from torch import nn


class GroupThreshold(nn.Module):
    """A trainable threshold over ``n_groups`` group norms; ``forward(norms)`` -> a 0/1 keep mask."""

    def __init__(self, n_groups: int, initial_threshold: float = 0.0, temperature: float = 0.05):
        super().__init__()
        self.n_groups, self.temperature = n_groups, temperature
        self.threshold = nn.Parameter(torch.tensor(float(initial_threshold)))
        self.last_soft: torch.Tensor | None = None
        self.last_norms: torch.Tensor | None = None

    def forward(self, norms: torch.Tensor) -> torch.Tensor:
        soft = torch.sigmoid((norms - self.threshold) / self.temperature)
        hard = (norms >= self.threshold).to(norms.dtype)
        self.last_soft, self.last_norms = soft, norms
        return hard + (soft - soft.detach())

    def penalty(self) -> torch.Tensor:
        """``sum_g soft_g * ||w_g||`` of the last forward (a group lasso that also moves ``tau``)."""
        if self.last_soft is None:
            raise RuntimeError("GroupThreshold.penalty() before any forward")
        return (self.last_soft * self.last_norms).sum()

    @torch.no_grad()
    def keep(self, norms: torch.Tensor) -> torch.Tensor:
        """The boolean keep mask for deployment."""
        return norms >= self.threshold
