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

import torch
from torch import nn

from sezoo.metrics.cost import ledger_active, report_macs
from sezoo.models._base import SEModel
from sezoo.models._registry import register_model
from sezoo.nn.lstm import QuantLSTMLayer, SkipGate, round_straight_through  # noqa: F401 (re-exported)
from sezoo.nn.quant import QuantLinear, QuantSite
from sezoo.nn.stft import STFT
from sezoo.streaming import Framing


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

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_framing(self) -> Framing:
        return Framing(self.stft.n_fft, self.stft.hop, "stft_mask", centered=True, window="hann")

    def stream_state(self) -> dict[str, torch.Tensor]:
        return {name: t for k, layer in enumerate(self.layers) for name, t in layer.stream_state(f"layer{k}").items()}

    def stream_step(self, magnitude: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
        """``|STFT|`` of one frame ``[1, bins]`` and the state -> its mask and the new state."""
        h, new_state, at = self.input_quant((magnitude + 1e-12) ** self.compression), [], 0
        for layer in self.layers:
            size = 4 if layer.skip is not None else 2
            h, layer_state = layer.step(h, *state[at:at + size])
            new_state += layer_state
            at += size
        return (self.mask_quant(torch.sigmoid(self.mask_fc(h))), *new_state)

    def update_rates(self) -> list[torch.Tensor]:
        """Skip models: each layer's update gates [B, T] from the last forward."""
        return [layer.last_updates for layer in self.layers]

    # ------------------------------------------------------------------ pruning
    def pruning_penalty(self) -> torch.Tensor:
        return sum(layer.pruning.penalty() for layer in self.layers)

    @torch.no_grad()
    def kept_units(self) -> list[torch.Tensor]:
        """Each layer's surviving unit indices (see :meth:`QuantLSTMLayer.live_units`)."""
        return [layer.live_units() for layer in self.layers]

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
        inputs = [torch.arange(self.stft.n_bins), *kept[:-1]]  # a layer reads the units kept below it
        small.layers = nn.ModuleList(layer.select(units, feeding) for layer, units, feeding in zip(self.layers, kept, inputs))
        small.mask_fc.weight.copy_(self.mask_fc.weight[:, kept[-1]])
        small.mask_fc.bias.copy_(self.mask_fc.bias)
        return small.train(self.training)
