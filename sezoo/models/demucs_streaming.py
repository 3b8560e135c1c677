"""Streaming inference for the slimmable DEMUCS: the input arrives one hop (one router frame, 256
samples at the defaults) at a time, the router decides that hop's utilization factor, and every block
computes, frame by frame, only the filters of the width its router frame chose (the blocks' ``routed``
executors), so a frame routed to UF u costs what UF u costs.

Each stage keeps only the state it needs: the sinc resamplers their filter history, the strided
convolutions the tail of an unfinished window, the GRUs their hidden states, the transposed
convolutions their unfinished overlap, and each level its skip frames until the decoder uses them.
Fed hop by hop and flushed, the stream gives the offline routed forward's output (tested) with a fixed
input scale; the output lags the input by the resamplers' look-ahead and the framing. ``macs`` counts
the multiply-accumulates that ran, router included.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from sezoo.models.demucs import SlimmableDemucs, slim_width


class _Upsample2:
    """``upsample2`` on a stream: keeps x[c - half + 1 ...] where c is the next sample to interpolate."""

    def __init__(self, kernel: torch.Tensor, batch: int):
        self.kernel, self.half = kernel, kernel.shape[-1] // 2
        self.history = kernel.new_zeros(batch, self.half - 1)  # the offline zero padding before the start
        self.macs = 0

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self.history = torch.cat([self.history, x], dim=-1)
        ready = self.history.shape[-1] - self.kernel.shape[-1] + 1  # samples whose look-ahead has arrived
        if ready <= 0:
            return x[:, :0]
        between = F.conv1d(self.history[:, None, : ready + self.kernel.shape[-1] - 1], self.kernel)[:, 0]
        here = self.history[:, self.half - 1 : self.half - 1 + ready]
        self.history = self.history[:, ready:]
        self.macs += between.numel() * self.kernel.shape[-1]
        return torch.stack([here, between], dim=-1).flatten(1)

    def flush(self) -> torch.Tensor:
        return self.push(self.history.new_zeros(self.history.shape[0], self.half))  # the zeros after the end


class _Downsample2:
    """``downsample2`` on a stream: pairs (even, odd); keeps odd[c - half ...] and the evens from c."""

    def __init__(self, kernel: torch.Tensor, batch: int):
        self.kernel, self.half = kernel, kernel.shape[-1] // 2
        self.odd = kernel.new_zeros(batch, self.half)
        self.even = kernel.new_zeros(batch, 0)
        self.carry = kernel.new_zeros(batch, 0)  # an unpaired last sample
        self.macs = 0

    def push(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.carry, x], dim=-1)
        paired = x.shape[-1] - x.shape[-1] % 2
        self.carry = x[:, paired:]
        self.even = torch.cat([self.even, x[:, 0:paired:2]], dim=-1)
        self.odd = torch.cat([self.odd, x[:, 1:paired:2]], dim=-1)
        return self._ready()

    def _ready(self) -> torch.Tensor:
        ready = min(self.odd.shape[-1] - self.kernel.shape[-1] + 1, self.even.shape[-1])
        if ready <= 0:
            return self.even[:, :0]
        filtered = F.conv1d(self.odd[:, None, : ready + self.kernel.shape[-1] - 1], self.kernel)[:, 0]
        out = (self.even[:, :ready] + filtered) * 0.5
        self.even, self.odd = self.even[:, ready:], self.odd[:, ready:]
        self.macs += filtered.numel() * self.kernel.shape[-1]
        return out

    def flush(self) -> torch.Tensor:
        if self.carry.shape[-1]:  # an odd length: the offline path pads one zero
            self.push(self.carry.new_zeros(self.carry.shape[0], 1))
        self.odd = torch.cat([self.odd, self.odd.new_zeros(self.odd.shape[0], self.half - 1)], dim=-1)
        return self._ready()


class SlimStreamer:
    """Feed ``push(samples)`` any number of samples at a time (they are processed in whole hops), then
    ``flush()`` once; each returns the enhanced samples that became final. A dynamic model routes each
    hop; a static one runs every hop at its operating point.

    ``scale``: the input level the model normalises by (the offline forward uses the utterance's
    standard deviation, which a stream does not know). None with a normalising model: the running
    root mean square of the hops so far, as the denoiser's streamer does."""

    def __init__(self, model: SlimmableDemucs, batch: int = 1, scale: float | torch.Tensor | None = None):
        self.model, self.batch = model.eval(), batch
        self.hop, self.depth = model.hop_samples, model.depth
        kernel = model.resample_kernel
        self.upsamplers = [_Upsample2(kernel, batch) for _ in range(model.resample // 2)]
        self.downsamplers = [_Downsample2(kernel, batch) for _ in range(model.resample // 2)]
        zeros = kernel.new_zeros
        self.encoder_inputs = [zeros(batch, block.conv.in_channels, 0) for block in model.encoder]
        self.encoder_frames = [0] * self.depth
        self.skips = [zeros(batch, block.hidden, 0) for block in model.encoder]
        self.decoder_frames = [0] * self.depth
        self.overlaps = [zeros(batch, b.deconv.out_channels, b.deconv.kernel_size[0] - b.stride) for b in model.decoder]
        self.gru_state, self.router_state = None, None
        self.choices = torch.zeros(batch, 0, dtype=torch.long)
        self.widths = [torch.tensor([slim_width(block.hidden, f) for f in model.utilization_factors])
                       for block in model.encoder]
        self.pending = zeros(batch, 0)  # input samples short of a whole hop
        self.fixed_scale = scale
        self.square_sum, self.samples_in, self.samples_out = 0.0, 0, 0
        self.macs = 0

    # -- the scale -------------------------------------------------------------------------------
    def _scale(self, hop: torch.Tensor) -> torch.Tensor | float:
        if not self.model.normalize:
            return 1.0
        if self.fixed_scale is not None:
            return self.fixed_scale
        self.square_sum += float(hop.pow(2).sum()) / self.batch
        return (self.square_sum / max(self.samples_in, 1)) ** 0.5

    # -- one stage at a time -------------------------------------------------------------------
    def _route(self, normalized_hops: torch.Tensor) -> None:
        if self.model.dynamic:
            chosen, self.router_state = self.model.router.decide(normalized_hops, self.router_state)
            self.macs += self.batch * chosen.shape[1] * self.model.router.macs_per_frame
        else:
            index = self.model.utilization_factors.index(self.model.uf)
            chosen = torch.full((self.batch, normalized_hops.shape[-1] // self.hop), index, dtype=torch.long)
        self.choices = torch.cat([self.choices, chosen], dim=1)

    def _frame_widths(self, level: int, first: int, count: int) -> torch.Tensor:
        index = torch.arange(first, first + count) // self.model._frames_per_choice(level)
        return self.widths[level][self.choices[:, index.clamp(max=self.choices.shape[1] - 1)]]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        for level, block in enumerate(self.model.encoder):
            buffer = torch.cat([self.encoder_inputs[level], x], dim=-1)
            k, s = block.conv.kernel_size[0], block.stride
            frames = (buffer.shape[-1] - k) // s + 1 if buffer.shape[-1] >= k else 0
            if frames == 0:
                self.encoder_inputs[level] = buffer
                return buffer.new_zeros(self.batch, self.model.encoder[-1].hidden, 0)
            x, macs = block.routed(buffer, self._frame_widths(level, self.encoder_frames[level], frames))
            self.macs += macs
            self.encoder_inputs[level] = buffer[..., frames * s :]
            self.encoder_frames[level] += frames
            self.skips[level] = torch.cat([self.skips[level], x], dim=-1)
        return x

    def _decode(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        if x.shape[-1]:
            self.macs += self.batch * x.shape[-1] * self.model.bottleneck.macs_per_frame
            x, self.gru_state = self.model.bottleneck.stream(x, self.gru_state)
        for index, (level, block) in enumerate(zip(reversed(range(self.depth)), self.model.decoder)):
            frames = x.shape[-1]
            x = x + self.skips[level][..., :frames]
            self.skips[level] = self.skips[level][..., frames:]
            ready = []
            if frames:
                y, macs = block.routed_overlap(x, self._frame_widths(level, self.decoder_frames[level], frames))
                self.macs += macs
                y[..., : self.overlaps[index].shape[-1]] += self.overlaps[index]
                ready.append(y[..., : frames * block.stride])
                self.overlaps[index] = y[..., frames * block.stride :]
                self.decoder_frames[level] += frames
            if final:
                ready.append(self.overlaps[index])
            x = block.finish(torch.cat(ready, dim=-1)) if ready else x.new_zeros(self.batch, block.deconv.out_channels, 0)
        return x[:, 0]

    def _run(self, x: torch.Tensor, final: bool) -> torch.Tensor:
        for upsampler in self.upsamplers:
            x = torch.cat([upsampler.push(x), upsampler.flush()], dim=-1) if final else upsampler.push(x)
        x = self._decode(self._encode(x[:, None]), final)
        for downsampler in self.downsamplers:
            x = torch.cat([downsampler.push(x), downsampler.flush()], dim=-1) if final else downsampler.push(x)
        return x

    # -- the public interface ------------------------------------------------------------------
    @torch.no_grad()
    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """[B, n] (or [n] with batch 1) input samples -> the enhanced samples that became final."""
        samples = samples.reshape(self.batch, -1)
        self.pending = torch.cat([self.pending, samples], dim=-1)
        whole = self.pending.shape[-1] // self.hop * self.hop
        hops, self.pending = self.pending[:, :whole], self.pending[:, whole:]
        if not whole:
            return hops
        self.samples_in += whole
        scale = self._scale(hops)
        normalized = hops / (self.model.floor + scale)
        self._route(normalized)
        return self._emit(self._run(normalized, final=False), scale)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """The end of the input: the rest of the output (zeros stand in for the samples after the end,
        as the offline forward pads to a valid length)."""
        length = self.samples_in + self.pending.shape[-1]
        tail = self.model.valid_length(length) - self.samples_in  # the rest of the padded input
        self.samples_in += self.pending.shape[-1]
        scale = self._scale(self.pending)
        rest = F.pad(self.pending, (0, tail - self.pending.shape[-1])) / (self.model.floor + scale)
        self._route(F.pad(rest, (0, -rest.shape[-1] % self.hop)))
        out = self._run(rest, final=True)
        self.pending = rest[:, :0]
        out = self._emit(out, scale)
        return out[:, : max(length - (self.samples_out - out.shape[-1]), 0)]

    def _emit(self, out: torch.Tensor, scale) -> torch.Tensor:
        self.samples_out += out.shape[-1]
        return out * scale

    @property
    def total_macs(self) -> int:
        """The multiply-accumulates that ran so far, router and resamplers included."""
        return self.macs + sum(r.macs for r in self.upsamplers + self.downsamplers)

    @property
    def mean_utilization(self) -> float:
        """The mean UF of the hops so far (what the router chose, or the static operating point)."""
        factors = torch.tensor(self.model.utilization_factors)
        return float(factors[self.choices].mean()) if self.choices.numel() else float("nan")


def stream_enhance(model: SlimmableDemucs, waveform: torch.Tensor, chunk: int | None = None,
                   scale: float | torch.Tensor | None = None) -> tuple[torch.Tensor, SlimStreamer]:
    """Enhance [B, T] by streaming it ``chunk`` samples at a time (default: one hop); returns the
    enhanced [B, T] and the streamer (``total_macs``, ``mean_utilization``)."""
    streamer = SlimStreamer(model, waveform.shape[0], scale)
    chunk = chunk or model.hop_samples
    pieces = [streamer.push(waveform[:, start : start + chunk]) for start in range(0, waveform.shape[-1], chunk)]
    pieces.append(streamer.flush())
    return torch.cat(pieces, dim=-1), streamer
