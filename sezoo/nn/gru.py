"""A one-layer GRU with one quantizer site per operator of its step, for mixed-precision search.

PyTorch's GRU (gate order r, z, n; state dict names ``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``), written out so that every tensor that is integer on the target has its own
:class:`~sezoo.nn.quant.QuantSite` and so its own bit width (Miccini et al., tinyML 2024)::

    gi  = ih_out(W_ih x + b_ih)          gh = hh_out(W_hh h + b_hh)           (both matrix-vector outputs)
    r   = r_sigmoid(sigmoid(r_pre(gi_r + gh_r)))                              (unsigned, range [0, 1])
    z   = z_sigmoid(sigmoid(z_pre(gi_z + gh_z)))
    n   = n_tanh(tanh(n_pre(gi_n + r_hn(r * gh_n))))                          (tanh input and output)
    h'  = state(new_part((1 - z) * n) + kept_part(z * h))                     (the new state feeds back)

The weights have sites ``w_ih`` and ``w_hh``. Every bounded tensor gets its bound as a fixed range
(sigmoid outputs [0, 1]; n, (1 - z) n, z h and the state h' are in [-1, 1] because h' is a convex
combination of n and h), so the fed-back state needs no observed range: its scale cannot drift
while the network runs. The others (the matrix-vector outputs, the pre-activations and r * gh_n) are
observed. Biases stay at the accumulator's width (int32), as on CMSIS-NN.

With no quantizer attached the layer runs PyTorch's fused GRU kernel, which computes the same function.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sezoo.nn.quant import QuantSite

#: The step's quantizer sites in the order the step computes them (the weights first).
GRU_SITES = ("w_ih", "w_hh", "ih_out", "hh_out", "r_pre", "z_pre", "r_sigmoid", "z_sigmoid", "r_hn", "n_pre",
             "n_tanh", "new_part", "kept_part", "state")


class QuantGRULayer(nn.Module):
    """One GRU layer (``[B, T, input_size] -> [B, T, hidden_size]``) with a site per operator."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1 / math.sqrt(hidden_size)  # PyTorch's nn.GRU initialisation
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size).uniform_(-bound, bound))
        self.w_ih = QuantSite(param="weight_ih")
        self.w_hh = QuantSite(param="weight_hh")
        self.ih_out = QuantSite()
        self.hh_out = QuantSite()
        self.r_pre = QuantSite()
        self.z_pre = QuantSite()
        self.r_sigmoid = QuantSite(signed=False, fixed_max=1.0)
        self.z_sigmoid = QuantSite(signed=False, fixed_max=1.0)
        self.r_hn = QuantSite()
        self.n_pre = QuantSite()
        self.n_tanh = QuantSite(fixed_max=1.0)
        self.new_part = QuantSite(fixed_max=1.0)
        self.kept_part = QuantSite(fixed_max=1.0)
        self.state = QuantSite(fixed_max=1.0)

    @property
    def quantized(self) -> bool:
        return any(getattr(self, name).quantizer is not None and getattr(self, name).quantizer.enabled
                   for name in GRU_SITES)

    @property
    def macs_per_step(self) -> int:
        """Both matrix-vector products: 3H (in + H). The element-wise products (4H) are not MACs of a
        matrix engine and are left out, as in every MAC count of this project."""
        return 3 * self.hidden_size * (self.input_size + self.hidden_size)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w_ih.quantize(self.weight_ih), self.w_hh.quantize(self.weight_hh)

    def cell(self, gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
        """One step from the (quantized) input projection ``gi`` and the state ``h``: the new state."""
        gh = self.hh_out(h @ w_hh.T + self.bias_hh)
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = self.r_sigmoid(torch.sigmoid(self.r_pre(i_r + h_r)))
        z = self.z_sigmoid(torch.sigmoid(self.z_pre(i_z + h_z)))
        n = self.n_tanh(torch.tanh(self.n_pre(i_n + self.r_hn(r * h_n))))
        return self.state(self.new_part((1 - z) * n) + self.kept_part(z * h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        w_ih, w_hh = self.weights()
        if not self.quantized:
            # Nothing inside the step to intercept: the fused kernel (same function, checked in the tests;
            # the FLOP counter sees its matrix products, unlike the fused LSTM's).
            zeros = x.new_zeros(1, batch, self.hidden_size)
            return torch.gru(x, zeros, [w_ih, w_hh, self.bias_ih, self.bias_hh], True, 1, 0.0, self.training,
                             False, True)[0]
        gi = self.ih_out(x @ w_ih.T + self.bias_ih)  # the input half of every step at once
        h = x.new_zeros(batch, self.hidden_size)
        outputs = []
        for gi_t in gi.unbind(1):  # not gi[:, t]: see QuantLSTMLayer.forward (quadratic backward)
            h = self.cell(gi_t, h, w_hh)
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.h": torch.zeros(1, self.hidden_size)}

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        """One frame ``[1, input_size]`` and the state -> the output and the new state."""
        w_ih, w_hh = self.weights()
        h = self.cell(self.ih_out(x @ w_ih.T + self.bias_ih), h, w_hh)
        return h, (h,)


class QuantGRU(nn.Module):
    """Stacked :class:`QuantGRULayer` s: ``[B, T, input_size] -> [B, T, hidden[-1]]``."""

    def __init__(self, input_size: int, hidden: tuple[int, ...] | list[int]):
        super().__init__()
        sizes = [input_size, *hidden]
        self.layers = nn.ModuleList(QuantGRULayer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def macs_per_step(self) -> int:
        return sum(layer.macs_per_step for layer in self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def stream_state(self) -> dict[str, torch.Tensor]:
        return {k: v for i, layer in enumerate(self.layers) for k, v in layer.stream_state(f"gru{i}").items()}

    def step(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        new_state = []
        for layer, h in zip(self.layers, state):
            x, (h,) = layer.step(x, h)
            new_state.append(h)
        return x, tuple(new_state)
