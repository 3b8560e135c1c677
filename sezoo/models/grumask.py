"""A GRU mask estimator whose every operator can be quantized at its own bit width (gruquant recipe).

``|STFT|^compression`` (512/256, 257 bins) -> input site -> GRU layers (:class:`~sezoo.nn.gru.QuantGRULayer`,
a site per operator of the step) -> FC -> sigmoid = a real mask on the complex noisy STFT -> iSTFT.
A frame costs ``sum_l 3 H_l (in_l + H_l) + H_L x 257`` MACs. The sites hold no state: the state dict is
the same quantized or not, and the bit plan and ranges travel in ``model.json`` (QAT's export metadata).
"""
from __future__ import annotations

import torch

from sezoo.models._base import SEModel
from sezoo.models._registry import register_model
from sezoo.nn.gru import QuantGRU
from sezoo.nn.quant import QuantLinear, QuantSite
from sezoo.nn.stft import STFT
from sezoo.streaming import Framing


@register_model("grumask")
class GRUMask(SEModel):
    """Args:
        n_fft: STFT size (hann window).
        hop: STFT hop in samples (one GRU step per hop).
        hidden: units per GRU layer.
        compression: the input is ``|STFT| ** compression`` (a bounded range a few bits resolve).
        sample_rate: the rate the model was trained at.
    """

    def __init__(self, n_fft: int = 512, hop: int = 256, hidden: tuple[int, ...] = (128, 128),
                 compression: float = 0.3, sample_rate: int = 16000):
        super().__init__()
        self.sample_rate, self.compression = sample_rate, compression
        self.stft = STFT(n_fft, hop, "hann")
        bins = self.stft.n_bins
        self.input_quant = QuantSite(signed=False)
        self.gru = QuantGRU(bins, list(hidden))
        self.head = QuantLinear(hidden[-1], bins)
        self.mask_quant = QuantSite(signed=False, fixed_max=1.0)

    def macs_per_frame(self) -> int:
        return self.gru.macs_per_step + self.head.weight.numel()

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """[B, frames, bins] features -> [B, frames, bins] mask."""
        return self.mask_quant(torch.sigmoid(self.head(self.gru(self.input_quant(features)))))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = self.stft(waveform)
        features = (spec.abs() + 1e-12) ** self.compression
        mask = self.mask(features.transpose(1, 2)).transpose(1, 2)
        return self.stft.inverse(spec * mask, waveform.shape[-1])

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_framing(self) -> Framing:
        return Framing(self.stft.n_fft, self.stft.hop, "stft_mask", centered=True, window="hann")

    def stream_state(self) -> dict[str, torch.Tensor]:
        return self.gru.stream_state()

    def stream_step(self, magnitude: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
        """``|STFT|`` of one frame ``[1, bins]`` and the GRU states -> its mask and the new states."""
        h, new_state = self.gru.step(self.input_quant((magnitude + 1e-12) ** self.compression), *state)
        return (self.mask_quant(torch.sigmoid(self.head(h))), *new_state)
