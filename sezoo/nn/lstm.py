"""A one-layer LSTM with quantizer sites, optional unit pruning and optional Skip-RNN update gates.

The recurrent building block of TinyLSTM and the DTLN-class model: PyTorch's gate order (i, f, g, o)
and state dict names (``weight_ih``, ``weight_hh``, one ``bias``), the fused ``torch.lstm`` kernel when
nothing inside the step needs intercepting, and a step loop when quantizers or skip gates are on.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sezoo.metrics.cost import counting_upper_bound, ledger_active, report_macs
from sezoo.nn.pruning import GroupThreshold
from sezoo.nn.quant import QuantSite


def round_straight_through(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class SkipGate(nn.Module):
    """Update probability from the cell state: ``sigmoid(w . c + b)``; a utilization source."""

    def __init__(self, hidden_size: int, initial_bias: float = 2.0):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.constant_(self.linear.bias, initial_bias)  # start updating (nearly) every frame
        self.last_utilization: torch.Tensor | None = None

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(c))


class QuantLSTMLayer(nn.Module):
    """One LSTM layer (PyTorch gate order i, f, g, o; one bias) with quantizer sites, optional unit
    pruning and optional state-update skipping. ``[B, T, input_size] -> [B, T, hidden_size]``."""

    def __init__(self, input_size: int, hidden_size: int, prune: bool = False, skip: bool = False,
                 prune_temperature: float = 0.05):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1 / math.sqrt(hidden_size)  # PyTorch's nn.LSTM initialisation
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))
        self.w_ih_quant = QuantSite(param="weight_ih")
        self.w_hh_quant = QuantSite(param="weight_hh")
        self.gates_quant = QuantSite()
        self.sigmoid_quant = QuantSite(signed=False, fixed_max=1.0)
        self.tanh_quant = QuantSite(fixed_max=1.0)
        self.cell_quant = QuantSite()
        self.cell_tanh_quant = QuantSite(fixed_max=1.0)
        self.hidden_quant = QuantSite(fixed_max=1.0)
        self.pruning = GroupThreshold(hidden_size, 0.0, prune_temperature) if prune else None
        self.skip = SkipGate(hidden_size) if skip else None
        self.last_updates: torch.Tensor | None = None

    @property
    def quantized(self) -> bool:
        return any(m.quantizer is not None and m.quantizer.enabled for m in self.modules() if isinstance(m, QuantSite))

    @property
    def macs_per_update(self) -> int:
        """An executed step: both matrix-vector products (and the skip gate's dot product)."""
        return 4 * self.hidden_size * (self.input_size + self.hidden_size) + (self.hidden_size if self.skip else 0)

    def unit_norms(self) -> torch.Tensor:
        """L2 norm of each hidden unit's weight group: its four gate rows of W_ih and W_hh."""
        rows = torch.cat([self.weight_ih, self.weight_hh], dim=1).view(4, self.hidden_size, -1)
        return rows.pow(2).sum(dim=(0, 2)).sqrt()

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w_ih, w_hh, bias = self.weight_ih, self.weight_hh, self.bias
        if self.pruning is not None:
            rows = self.pruning(self.unit_norms()).repeat(4)  # the unit's i, f, g, o rows
            w_ih, w_hh, bias = w_ih * rows[:, None], w_hh * rows[:, None], bias * rows
        return self.w_ih_quant.quantize(w_ih), self.w_hh_quant.quantize(w_hh), bias

    def cell(self, pre: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate pre-activations ``W_ih x + W_hh h + b`` and the cell state -> new (h, c)."""
        i, f, g, o = self.gates_quant(pre).chunk(4, dim=-1)
        i, f, o = (self.sigmoid_quant(torch.sigmoid(v)) for v in (i, f, o))
        c = self.cell_quant(f * c + i * self.tanh_quant(torch.tanh(g)))
        h = self.hidden_quant(o * self.cell_tanh_quant(torch.tanh(c)))
        return h, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_ih, w_hh, bias = self.weights()
        if self.skip is not None and not self.training and not counting_upper_bound():
            return self._forward_skipping(x, w_ih, w_hh, bias)
        batch, frames, _ = x.shape
        if self.skip is None and not self.quantized:
            # Nothing inside the step to intercept: PyTorch's fused LSTM computes the same function
            # (checked in the tests) about 6x faster than the step loop below on a CPU.
            zeros = x.new_zeros(1, batch, self.hidden_size)
            if ledger_active():  # the FLOP counter does not see the fused kernel
                report_macs(batch * frames * self.macs_per_update)
            return torch.lstm(x, (zeros, zeros), [w_ih, w_hh, bias, torch.zeros_like(bias)],
                              True, 1, 0.0, self.training, False, True)[0]
        projected = x @ w_ih.T + bias  # the input half of every step at once; the recurrence below
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size)
        update_prob = x.new_ones(batch, 1)
        outputs, updates = [], []
        # unbind, not projected[:, t]: indexing's backward writes each step's gradient into its own
        # full-size zero tensor (quadratic in the frames; most of a QAT step's time), unbind's stacks once.
        for projected_t in projected.unbind(1):
            h_new, c_new = self.cell(projected_t + h @ w_hh.T, c)
            if self.skip is None:
                h, c = h_new, c_new
            else:
                u = round_straight_through(update_prob)
                h, c = u * h_new + (1 - u) * h, u * c_new + (1 - u) * c
                delta = self.skip(c)
                update_prob = u * delta + (1 - u) * (update_prob + torch.minimum(delta, 1 - update_prob))
                updates.append(u)
            outputs.append(h)
        if self.skip is not None:
            self.last_updates = torch.cat(updates, dim=1)  # [B, T]
            self.skip.last_utilization = self.last_updates.mean()
        return torch.stack(outputs, dim=1)

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The state one step carries: h and c, and a skip layer's update probability and last delta."""
        state = {f"{prefix}.h": torch.zeros(1, self.hidden_size), f"{prefix}.c": torch.zeros(1, self.hidden_size)}
        if self.skip is not None:
            state.update({f"{prefix}.update_prob": torch.ones(1, 1), f"{prefix}.delta": torch.ones(1, 1)})
        return state

    def step(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame ``[1, input_size]`` -> ``[1, hidden_size]`` and the new state (the order of
        :meth:`stream_state`), as the eval forward computes it. A skip layer runs the step only when its
        gate updates: a ``torch.cond``, which exports to an ONNX ``If``, so a skipped step costs its time
        too, not only its MACs."""
        w_ih, w_hh, bias = self.weights()
        h, c = state[0], state[1]
        if self.skip is None:
            h, c = self.cell(x @ w_ih.T + bias + h @ w_hh.T, c)
            return h, (h, c)
        update_prob, delta = state[2], state[3]

        def update(x, h, c, delta, w_ih, w_hh, bias):
            h, c = self.cell(x @ w_ih.T + bias + h @ w_hh.T, c)
            return h, c, self.skip(c)

        def copy(x, h, c, delta, w_ih, w_hh, bias):
            return h.clone(), c.clone(), delta.clone()

        u = torch.round(update_prob)
        h, c, delta = torch.cond(u[0, 0] > 0, update, copy, (x, h, c, delta, w_ih, w_hh, bias))
        update_prob = u * delta + (1 - u) * (update_prob + torch.minimum(delta, 1 - update_prob))
        return h, (h, c, update_prob, delta)

    @torch.no_grad()
    def live_units(self) -> torch.Tensor:
        """Indices of the units the layer keeps: those its threshold keeps, or, without one, those with
        any non-zero gate row or bias (a unit with neither has pre-activations 0, so its cell stays 0 and
        its output is exactly 0: unit pruning by :class:`~sezoo.callbacks.PruningSchedule` leaves that)."""
        if self.pruning is not None:
            alive = self.pruning.keep(self.unit_norms())
        else:
            alive = (self.unit_norms() > 0) | (self.bias.view(4, -1) != 0).any(dim=0)
        return torch.nonzero(alive).flatten()

    @torch.no_grad()
    def select(self, units: torch.Tensor, inputs: torch.Tensor) -> QuantLSTMLayer:
        """A dense layer of only ``units`` (hidden indices) reading only ``inputs`` (input indices): what
        remains of this layer once pruned units and the inputs that feed nothing are removed. Without a
        pruning threshold: the kept units compute exactly what they computed here, given the kept inputs."""
        small = QuantLSTMLayer(len(inputs), len(units), prune=False, skip=self.skip is not None)
        rows = torch.cat([g * self.hidden_size + units for g in range(4)])
        small.weight_ih.copy_(self.weight_ih[rows][:, inputs])
        small.weight_hh.copy_(self.weight_hh[rows][:, units])
        small.bias.copy_(self.bias[rows])
        if self.skip is not None:
            small.skip.load_state_dict({"linear.weight": self.skip.linear.weight[:, units],
                                        "linear.bias": self.skip.linear.bias})
        return small

    def _forward_skipping(self, x, w_ih, w_hh, bias) -> torch.Tensor:
        """Eval: compute a step only for the rows whose update gate is 1; the others copy (h, c)."""
        batch, frames, _ = x.shape
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size)
        update_prob = x.new_ones(batch, 1)
        delta = x.new_ones(batch, 1)
        outputs, updates, executed = [], [], 0
        for t in range(frames):
            u = torch.round(update_prob)
            rows = torch.nonzero(u[:, 0] > 0).flatten()
            if rows.numel():
                h_rows, c_rows = self.cell(x[rows, t] @ w_ih.T + bias + h[rows] @ w_hh.T, c[rows])
                h, c = h.index_copy(0, rows, h_rows), c.index_copy(0, rows, c_rows)
                delta = delta.index_copy(0, rows, self.skip(c_rows))
                executed += rows.numel()
            update_prob = u * delta + (1 - u) * (update_prob + torch.minimum(delta, 1 - update_prob))
            updates.append(u)
            outputs.append(h)
        self.last_updates = torch.cat(updates, dim=1)
        self.skip.last_utilization = self.last_updates.mean()
        if ledger_active():
            report_macs(executed * self.macs_per_update)
        return torch.stack(outputs, dim=1)
