"""TinyLSTM (Fedorov et al., Interspeech 2020): an LSTM mask estimator sized for a hearing-aid MCU.

|STFT| (512/256, 257 bins, power-compressed) -> LSTM 256 -> LSTM 256 -> FC -> sigmoid = a real mask on
the complex noisy STFT -> iSTFT. A frame costs 4H(in + H) MACs per LSTM layer plus H x 257 for the FC:
1,115,392 MACs (2.23 MOps) for the 256 x 2 baseline.

Everything the compression stages need lives in the one model:
- ``prune=True``: each layer's hidden units are weight groups (a unit's four gate rows of W_ih and
  W_hh) under a trainable :class:`~sezoo.nn.pruning.GroupThreshold`; a pruned unit's rows and bias are
  zeroed, so its pre-activations are 0, its cell stays 0 and its output is exactly 0. :meth:`compact`
  removes the pruned units and returns the smaller dense model that computes the same function.
- :class:`~sezoo.nn.quant.QuantSite` s at every tensor that is integer on the target: the input
  features, W_ih, W_hh, the gate pre-activations, the sigmoid and tanh outputs, the cell state, tanh
  of the cell, the hidden state, the FC weight, the mask logits and the mask. They are identities until
  QAT attaches quantizers and hold no state, so the state dict is the same quantized or not.
- ``skip=True``: Skip-RNN (Campos et al., ICLR 2018) per layer. The binary update gate is the rounded
  accumulated update probability (straight-through); a frame with gate 0 copies (h, c) and costs no
  LSTM MACs. In eval mode the layer really skips: only the rows that update are computed, and the MACs
  that ran are reported to the cost ledger.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sezoo.metrics.cost import counting_upper_bound, ledger_active, report_macs
from sezoo.models._base import SEModel
from sezoo.models._registry import register_model
from sezoo.nn.pruning import GroupThreshold
from sezoo.nn.quant import QuantLinear, QuantSite
from sezoo.nn.stft import STFT


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
        for t in range(frames):
            h_new, c_new = self.cell(projected[:, t] + h @ w_hh.T, c)
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


@register_model("tinylstm")
class TinyLSTM(SEModel):
    """The TinyLSTMs mask estimator: ``|STFT|^compression`` -> LSTM layers -> FC -> sigmoid mask.

    Args:
        n_fft: STFT size (hann window).
        hop: STFT hop in samples (one LSTM step per hop).
        hidden: units per LSTM layer (pruning shrinks them; ``compact()`` rebuilds with the kept ones).
        compression: the input is ``|STFT| ** compression``.
        prune: give each layer a trainable threshold over its units' weight groups.
        prune_temperature: sigmoid relaxation of the keep decision, in units of group norm.
        skip: Skip-RNN update gates per layer (in eval only the updating rows are computed).
        sample_rate: the rate the model was trained at.
    """

    def __init__(self, n_fft: int = 512, hop: int = 256, hidden: tuple[int, ...] = (256, 256),
                 compression: float = 0.3, prune: bool = False, prune_temperature: float = 0.05,
                 skip: bool = False, sample_rate: int = 16000):
        super().__init__()
        self.sample_rate, self.compression = sample_rate, compression
        self.skip_updates = skip
        self.stft = STFT(n_fft, hop, "hann")
        bins = self.stft.n_bins
        sizes = [bins, *hidden]
        self.input_quant = QuantSite(signed=False)
        self.layers = nn.ModuleList(QuantLSTMLayer(sizes[k], sizes[k + 1], prune, skip, prune_temperature)
                                    for k in range(len(hidden)))
        self.mask_fc = QuantLinear(hidden[-1], bins)
        self.mask_quant = QuantSite(signed=False, fixed_max=1.0)

    @property
    def reports_own_macs(self) -> bool:
        return self.skip_updates  # skipped steps are invisible to the FLOP counter

    def macs_per_frame(self) -> int:
        """Closed form of a frame with every layer updating: sum_l 4 H_l (in_l + H_l) + H_L x bins."""
        return sum(layer.macs_per_update for layer in self.layers) + self.mask_fc.weight.numel()

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """[B, frames, bins] features -> [B, frames, bins] mask."""
        h = self.input_quant(features)
        for layer in self.layers:
            h = layer(h)
        if self.reports_own_macs and ledger_active():
            report_macs(h.shape[0] * h.shape[1] * self.mask_fc.weight.numel())
        return self.mask_quant(torch.sigmoid(self.mask_fc(h)))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = self.stft(waveform)
        features = (spec.abs() + 1e-12) ** self.compression
        mask = self.mask(features.transpose(1, 2)).transpose(1, 2)
        return self.stft.inverse(spec * mask, waveform.shape[-1])

    def update_rates(self) -> list[torch.Tensor]:
        """Skip models: each layer's update gates [B, T] from the last forward."""
        return [layer.last_updates for layer in self.layers]

    # ------------------------------------------------------------------ pruning
    def pruning_penalty(self) -> torch.Tensor:
        return sum(layer.pruning.penalty() for layer in self.layers)

    @torch.no_grad()
    def kept_units(self) -> list[torch.Tensor]:
        """Each layer's surviving unit indices: those its trainable threshold keeps, or, without one
        (e.g. pruned by :class:`~sezoo.callbacks.PruningSchedule` with ``structure="unit"``), those
        with any non-zero gate row or bias; a unit without either outputs exactly 0."""
        kept = []
        for layer in self.layers:
            if layer.pruning is not None:
                alive = layer.pruning.keep(layer.unit_norms())
            else:
                alive = (layer.unit_norms() > 0) | (layer.bias.view(4, -1) != 0).any(dim=0)
            kept.append(torch.nonzero(alive).flatten())
        return kept

    def compact_macs_per_frame(self) -> int:
        sizes = [self.stft.n_bins, *(len(k) for k in self.kept_units())]
        return sum(4 * h * (i + h) for i, h in zip(sizes[:-1], sizes[1:])) + sizes[-1] * self.stft.n_bins

    @torch.no_grad()
    def compact(self) -> TinyLSTM:
        """The dense model without the pruned units; it computes the same output as this one."""
        kept = self.kept_units()
        empty = [k for k, units in enumerate(kept) if units.numel() == 0]
        if empty:
            raise ValueError(f"layers {empty} lost every unit: lower the pruning penalty")
        small = TinyLSTM(**{**self.kwargs, "hidden": [len(k) for k in kept], "prune": False})
        previous = torch.arange(self.stft.n_bins)
        for layer, target, units in zip(self.layers, small.layers, kept):
            rows = torch.cat([g * layer.hidden_size + units for g in range(4)])
            target.weight_ih.copy_(layer.weight_ih[rows][:, previous])
            target.weight_hh.copy_(layer.weight_hh[rows][:, units])
            target.bias.copy_(layer.bias[rows])
            if layer.skip is not None:
                target.skip.load_state_dict(layer.skip.state_dict())
                target.skip.linear.weight.copy_(layer.skip.linear.weight[:, units])
            previous = units
        small.mask_fc.weight.copy_(self.mask_fc.weight[:, previous])
        small.mask_fc.bias.copy_(self.mask_fc.bias)
        return small.train(self.training)
