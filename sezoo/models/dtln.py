"""DTLN (Westhausen & Meyer, Interspeech 2020): the dual-signal transformation LSTM network, the
DTLN-class model that ``recipes/sparsity`` prunes (paper 4 of PAPERS.md does not name its model; about
1 M parameters and 3.7 MB in fp32 match this one).

Frames of 512 samples every 128 (rectangular, as the authors frame them) pass two stages:

1. ``|rfft(frame)|`` -> log -> instant layer norm -> LSTM x2 -> FC -> sigmoid: a mask on the magnitude;
   with the noisy phase, ``irfft`` gives an estimated frame.
2. that frame -> a learned basis (512 -> 256, no bias) -> instant layer norm -> LSTM x2 -> FC -> sigmoid:
   a mask on the basis coefficients -> a learned synthesis (256 -> 512, no bias) -> overlap-add.

Our choices where the authors offer two: the normalised log-magnitude input of their ``DTLN_norm``
variant (the output then does not depend on the input level, which real recordings vary), and no
dropout inside the layers (the recipe's data are mixed afresh every epoch).

Per frame (one LSTM step per stage layer) a frame costs
``sum_l 4 H_l (in_l + H_l)`` for both stages' LSTMs, ``H1 x 257 + 512 x 256 + H2 x 256 + 256 x 512`` for the
masks, the basis and the synthesis: 983,680 MACs, 122.96 MMAC/s at 16 kHz for the 128-unit
default (987,267 parameters: 3.95 MB, 3.77 MiB in fp32).
The LSTM layers are :class:`~sezoo.nn.lstm.QuantLSTMLayer` s and the dense layers
:class:`~sezoo.nn.quant.QuantLinear` s, so QAT reaches every integer tensor, and unit pruning can remove
LSTM units (:meth:`compact`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from sezoo.models._base import SEModel
from sezoo.models._registry import register_model
from sezoo.nn.lstm import QuantLSTMLayer
from sezoo.nn.quant import QuantLinear, QuantSite
from sezoo.streaming import Framing


class InstantLayerNorm(nn.Module):
    """Layer norm over each frame's channels alone (no statistics across time: streamable)."""

    def __init__(self, channels: int, eps: float = 1e-7):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
        # a product with rsqrt, not a division by sqrt: integer NPUs (Ethos-U55) have RSQRT but no DIV,
        # and an int8 DIV fails outright on a denominator that rounds to 0
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gamma + self.beta


class MaskStage(nn.Module):
    """Instant layer norm -> LSTM layers -> FC -> sigmoid: ``[B, frames, size] -> [B, frames, size]`` mask."""

    def __init__(self, size: int, hidden: tuple[int, ...]):
        super().__init__()
        sizes = [size, *hidden]
        self.norm = InstantLayerNorm(size)
        self.norm_quant = QuantSite()
        self.layers = nn.ModuleList(QuantLSTMLayer(sizes[k], sizes[k + 1]) for k in range(len(hidden)))
        self.mask_fc = QuantLinear(hidden[-1], size)
        self.mask_quant = QuantSite(signed=False, fixed_max=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_quant(self.norm(x))
        for layer in self.layers:
            h = layer(h)
        return self.mask_quant(torch.sigmoid(self.mask_fc(h)))

    def stream_state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {n: t for k, layer in enumerate(self.layers) for n, t in layer.stream_state(f"{prefix}.layer{k}").items()}

    def step(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One frame ``[1, size]`` -> its mask, and the new state (two tensors per layer)."""
        h, new_state = self.norm_quant(self.norm(x)), []
        for k, layer in enumerate(self.layers):
            h, layer_state = layer.step(h, *state[2 * k:2 * k + 2])
            new_state += layer_state
        return self.mask_quant(torch.sigmoid(self.mask_fc(h))), new_state

    def macs_per_frame(self) -> int:
        return sum(layer.macs_per_update for layer in self.layers) + self.mask_fc.weight.numel()

    def kept_units(self) -> list[torch.Tensor]:
        return [layer.live_units() for layer in self.layers]

    @torch.no_grad()
    def compact_into(self, small: MaskStage, kept: list[torch.Tensor]) -> None:
        """Fill ``small`` (built with the kept sizes) with this stage's surviving units."""
        small.norm.load_state_dict(self.norm.state_dict())
        inputs = [torch.arange(self.norm.gamma.numel()), *kept[:-1]]
        small.layers = nn.ModuleList(layer.select(units, feeding) for layer, units, feeding in zip(self.layers, kept, inputs))
        small.mask_fc.weight.copy_(self.mask_fc.weight[:, kept[-1]])
        small.mask_fc.bias.copy_(self.mask_fc.bias)


class MagnitudeStep(nn.Module):
    """Stage 1 of one frame: the log-magnitude ``[1, bins]`` and the state (h, c per layer) -> the mask on
    the magnitude and the new state."""

    def __init__(self, stage: MaskStage):
        super().__init__()
        self.stage = stage

    def forward(self, log_magnitude: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask, new_state = self.stage.step(log_magnitude, *state)
        return (mask, *new_state)


class BasisStep(nn.Module):
    """Stage 2 of one frame: the estimated frame ``[1, frame]`` and the state -> the frame to overlap-add
    and the new state."""

    def __init__(self, encoder: QuantLinear, stage: MaskStage, decoder: QuantLinear):
        super().__init__()
        self.encoder, self.stage, self.decoder = encoder, stage, decoder

    def forward(self, estimate: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoded = self.encoder(estimate)
        mask, new_state = self.stage.step(encoded, *state)
        return (self.decoder(encoded * mask), *new_state)


@register_model("dtln")
class DTLN(SEModel):
    """Args:
        frame: frame length in samples (the rfft size).
        hop: frame shift in samples (one LSTM step per hop).
        hidden1, hidden2: units per LSTM layer of the magnitude stage and of the basis stage.
        basis: size of the learned basis of stage 2.
        sample_rate: the rate the model was trained at.
    """

    def __init__(self, frame: int = 512, hop: int = 128, hidden1: tuple[int, ...] = (128, 128),
                 hidden2: tuple[int, ...] = (128, 128), basis: int = 256, sample_rate: int = 16000):
        super().__init__()
        if frame % hop:
            raise ValueError(f"DTLN(frame={frame}, hop={hop}): the frame must be a whole number of hops")
        self.frame, self.hop, self.sample_rate = frame, hop, sample_rate
        self.bins = frame // 2 + 1
        self.magnitude_stage = MaskStage(self.bins, tuple(hidden1))
        self.encoder = QuantLinear(frame, basis, bias=False)
        self.basis_stage = MaskStage(basis, tuple(hidden2))
        self.decoder = QuantLinear(basis, frame, bias=False)

    @property
    def min_samples(self) -> int:
        return self.hop

    @property
    def hop_samples(self) -> int:
        return self.hop

    @property
    def latency_samples(self) -> int:
        """A frame is processed once its last sample is in; its first hop leaves, overlap-added, then."""
        return self.frame

    def macs_per_frame(self) -> int:
        """Closed form: both stages' LSTMs and masks, the basis and the synthesis."""
        return (self.magnitude_stage.macs_per_frame() + self.basis_stage.macs_per_frame()
                + self.encoder.weight.numel() + self.decoder.weight.numel())

    def frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, n, frame]``: the input with ``frame - hop`` zeros before it (so the first frame
        ends with the first hop) and zeros after it up to a whole hop."""
        length = waveform.shape[-1]
        padded = nn.functional.pad(waveform, (self.frame - self.hop, -length % self.hop))
        return padded.unfold(-1, self.frame, self.hop)

    def overlap_add(self, frames: torch.Tensor, length: int) -> torch.Tensor:
        """``[B, n, frame]`` -> ``[B, length]``, the inverse of :meth:`frames`' placement."""
        n = frames.shape[1]
        total = (n - 1) * self.hop + self.frame
        out = nn.functional.fold(frames.transpose(1, 2), (1, total), (1, self.frame), stride=(1, self.hop))
        return out[:, 0, 0, self.frame - self.hop:self.frame - self.hop + length]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        frames = self.frames(waveform)
        spectrum = torch.fft.rfft(frames, dim=-1)
        mask = self.magnitude_stage(self.log_magnitude(spectrum))
        estimate = torch.fft.irfft(spectrum * mask, n=self.frame, dim=-1)
        encoded = self.encoder(estimate)
        decoded = self.decoder(encoded * self.basis_stage(encoded))
        return self.overlap_add(decoded, waveform.shape[-1])

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_framing(self) -> Framing:
        return Framing(self.frame, self.hop, "waveform", centered=False, window=None)

    def stream_state(self) -> dict[str, torch.Tensor]:
        return {**self.magnitude_stage.stream_state("magnitude"), **self.basis_stage.stream_state("basis")}

    def stream_step(self, frame: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
        """One frame ``[1, frame]`` and the state -> the frame to overlap-add and the new state: the
        offline forward's arithmetic, one frame at a time, split as a microcontroller runs it (the
        transforms on the host core, the two networks on its accelerator: :meth:`npu_steps`)."""
        return self.host_step(frame, state, *self.npu_steps())

    def host_step(self, frame: torch.Tensor, state: Sequence[torch.Tensor], magnitude_step: Callable,
                  basis_step: Callable) -> tuple[torch.Tensor, ...]:
        """What the host core does for one frame around the two networks, given any implementation of
        them (these modules, or their int8 TFLite conversions: ``sezoo.npu``): ``(decoded, *state)``."""
        split = 2 * len(self.magnitude_stage.layers)
        spectrum = torch.fft.rfft(frame, dim=-1)
        mask, *state1 = magnitude_step(self.log_magnitude(spectrum), *state[:split])
        decoded, *state2 = basis_step(torch.fft.irfft(spectrum * mask, n=self.frame, dim=-1), *state[split:])
        return (decoded, *state1, *state2)

    @staticmethod
    def log_magnitude(spectrum: torch.Tensor) -> torch.Tensor:
        return torch.log(spectrum.abs() + 1e-7)

    def npu_steps(self) -> tuple[MagnitudeStep, BasisStep]:
        """The two networks of one frame, as the authors deploy DTLN in two TFLite models: the rfft, the
        log, the noisy phase and the irfft stay on the host core (CMSIS-DSP on a microcontroller), where
        an NPU such as Ethos-U has no FFT. They share this model's parameters."""
        return MagnitudeStep(self.magnitude_stage), BasisStep(self.encoder, self.basis_stage, self.decoder)

    # ------------------------------------------------------------------ unit pruning
    @torch.no_grad()
    def compact(self) -> DTLN:
        """The dense model without the LSTM units that unit pruning zeroed; it computes the same output."""
        kept1, kept2 = self.magnitude_stage.kept_units(), self.basis_stage.kept_units()
        empty = [f"{stage} layer {k}" for stage, kept in (("magnitude", kept1), ("basis", kept2))
                 for k, units in enumerate(kept) if units.numel() == 0]
        if empty:
            raise ValueError(f"DTLN.compact: {', '.join(empty)} lost every unit; prune less")
        small = DTLN(**{**self.kwargs, "hidden1": [len(k) for k in kept1], "hidden2": [len(k) for k in kept2]})
        self.magnitude_stage.compact_into(small.magnitude_stage, kept1)
        self.basis_stage.compact_into(small.basis_stage, kept2)
        small.encoder.load_state_dict(self.encoder.state_dict())
        small.decoder.load_state_dict(self.decoder.state_dict())
        return small.train(self.training)
