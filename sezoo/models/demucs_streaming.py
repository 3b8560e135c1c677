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

from dataclasses import dataclass
from functools import partial

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


# ------------------------------------------------------------------------------ the frame-stepped step
# ``SlimStreamer`` above buffers whatever has arrived and computes what it can: its shapes change from
# call to call, so it runs in PyTorch only. The step below is the same computation with every shape
# fixed: one hop in, one hop out, the state a fixed set of tensors. It is what `sezoo export` writes as
# one ONNX graph (ONNX Runtime then streams it with NumPy alone) and what `open_streamer` runs eagerly.
#
# How the shapes stay fixed: every stage starts from a zero state, as if the input had been preceded
# by silence for ever, and each stage's output at step t is a fixed window of positions ``n*t - d``
# (its own delay d). Positions before the input's start (and after the end of its padding to a valid
# length) are where the offline forward has nothing or zero padding, so the step masks them: the
# decoder frames outside the offline frames contribute nothing, the resampled signals are zero there
# (the offline zero padding), and the bottleneck GRU keeps its state until the first real frame.
# An encoder frame before the start is never read by a real one (the strides align on position 0),
# so the encoder needs no mask.


@dataclass(frozen=True)
class _Window:
    """A stage's output at step t: ``n`` positions from ``n * t - d`` on; ``keep``: the input samples
    or frames it carries to the next step."""

    n: int
    d: int
    keep: int = 0

    def positions(self, t: torch.Tensor) -> torch.Tensor:
        return self.n * t - self.d + torch.arange(self.n, device=t.device)


def _floor_div(a: int, b: int) -> int:
    return a // b  # Python's // floors, negative numbers included


@dataclass(frozen=True)
class _StreamPlan:
    """Where every stage of the network stands at step t (pure integers, from the architecture)."""

    hop: int
    up: tuple[_Window, ...]        # each upsampler's output (keep: its input history)
    encoder: tuple[_Window, ...]   # each encoder block's output frames (keep: its input tail)
    decoder: tuple[_Window, ...]   # each decoder block's input frames, deepest first (keep: skip frames waiting)
    decoded: _Window               # the last decoder block's output (at the upsampled rate)
    down: tuple[_Window, ...]      # each downsampler's output (keep: its input history)
    taps: int                      # the sinc filter's length

    @staticmethod
    def of(model: SlimmableDemucs) -> _StreamPlan:
        taps, k, s = model.resample_kernel.shape[-1], model.kernel_size, model.stride
        half = taps // 2
        n, d, up = model.hop_samples, 0, []
        for _ in range(model.resample // 2):  # out[2i], out[2i+1] need in[i + half]
            n, d = 2 * n, 2 * (d + half)
            up.append(_Window(n, d, taps - 1))
        encoder = []
        for _ in range(model.depth):  # frame j reads [s*j, s*j + k): computed once its last sample is in
            first = _floor_div(-d - k, s) + 1
            encoder.append(_Window(n // s, -first, -d - s * first))
            n, d = n // s, -first
        decoder, e = [], encoder[-1].d
        for level in reversed(range(model.depth)):
            decoder.append(_Window(encoder[level].n, e, e - encoder[level].d))  # skips wait e - d frames
            e *= s  # a transposed convolution's samples are final once no later frame reaches them
        n, d, down = model.hop_samples * model.resample, e, []
        decoded = _Window(n, d)
        for _ in range(model.resample // 2):  # out[i] needs in[2i + taps - 1]; inputs kept from 2*first - taps
            first = _floor_div(-d - taps, 2) + 1
            down.append(_Window(n // 2, -first, -d - 2 * first + taps))
            n, d = n // 2, -first
        return _StreamPlan(model.hop_samples, tuple(up), tuple(encoder), tuple(decoder), decoded, tuple(down), taps)

    @property
    def out(self) -> _Window:
        """The enhanced output at the input's rate."""
        return self.down[-1] if self.down else self.decoded


def _ceil_div(a: torch.Tensor, b: int) -> torch.Tensor:
    """``ceil(a / b)`` for ``a >= 0``: integer division exports as one ONNX ``Div``, a floor as four nodes."""
    return torch.div(a + (b - 1), b, rounding_mode="trunc")


_NO_END = 2 ** 40  # the valid length while the input has not ended: beyond any position


def _reach(model: SlimmableDemucs, levels: int) -> int:
    """Resampled input positions that the first frame of ``levels`` strided convolutions reads:
    ``k + (k - 1)(s + s^2 + ... + s^(levels - 1))``."""
    k, s = model.kernel_size, model.stride
    return k + (k - 1) * sum(s ** j for j in range(1, levels))


def _valid_length(model: SlimmableDemucs, length: torch.Tensor) -> torch.Tensor:
    """``SlimmableDemucs.valid_length`` on an int64 tensor, in closed form: the encoder's nested
    ceilings of divisions by s are one ceiling of the division by s^depth (integers), so the graph
    computes it in a few nodes instead of a dozen per level (tested against the method)."""
    span, reach = model.stride ** model.depth, _reach(model, model.depth)
    size = _ceil_div((length * model.resample - reach).clamp(min=0), span) * span + reach
    return _ceil_div(size, model.resample)


class _Masks:
    """Every masked window's 0/1 mask at step t, computed together (a dozen graph nodes, not a dozen per
    window): window w's positions ``p`` lie in the offline signal when ``0 <= p`` and
    ``p < floor((end * a - c) / q) + e``, that is ``(p - e + 1) q + c <= end * a``, with ``end`` the
    input's valid length. The resampled signals and the decoded one end at ``end * a``; decoder level
    l's frames at ``floor((end * resample - reach(l + 1)) / s^(l + 1)) + 1``."""

    def __init__(self, model: SlimmableDemucs, plan: _StreamPlan):
        r, s = model.resample, model.stride
        bounds = [(w, 2 ** (i + 1), 0, 1, 0) for i, w in enumerate(plan.up)]
        bounds += [(w, r, _reach(model, level + 1), s ** (level + 1), 1)
                   for level, w in zip(reversed(range(model.depth)), plan.decoder)]
        bounds += [(plan.decoded, r, 0, 1, 0)] + [(w, r // 2 ** (i + 1), 0, 1, 0) for i, w in enumerate(plan.down)]
        self.sizes = [w.n for w, *_ in bounds]
        columns = {name: [] for name in ("n", "p0", "nq", "lhs0", "a")}
        for w, a, c, q, e in bounds:
            p0 = torch.arange(w.n) - w.d  # positions at t = 0
            columns["n"].append(torch.full((w.n,), w.n))
            columns["p0"].append(p0)
            columns["nq"].append(torch.full((w.n,), w.n * q))
            columns["lhs0"].append((p0 - e + 1) * q + c)
            columns["a"].append(torch.full((w.n,), a))
        self.columns = {name: torch.cat(parts)[None] for name, parts in columns.items()}

    def __call__(self, t: torch.Tensor, end: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        c = self.columns
        inside = (c["n"] * t + c["p0"] >= 0) & (c["nq"] * t + c["lhs0"] <= end * c["a"])
        return list(inside.to(dtype).split(self.sizes, dim=-1))


def _switch(index: torch.Tensor, run, operands: tuple, weights_of, count: int):
    """``run(*operands, *weights_of(index))``: a Python call eagerly; in an exported graph, a chain of
    nested ``torch.cond`` (ONNX ``If``) over the ``count`` choices, so that only the chosen width runs.

    Every choice's weights are prepared outside the branches and passed in: ONNX Runtime folds a
    constant expression (a slice or a stack of weights) once at load time in the main graph, but inside
    an ``If`` it would copy the weights again at every step. The operands are passed, not closed over:
    each branch becomes a self-contained ONNX subgraph."""
    if not torch.compiler.is_exporting():
        return run(*operands, *weights_of(int(index)))
    # Clones: the widths' weights are views of the same parameters, and torch.cond refuses aliased operands.
    weights = [tuple(w.clone() for w in weights_of(k)) for k in range(count)]
    starts = [len(operands) + sum(len(w) for w in weights[:k]) for k in range(count)]

    def branch(k: int):
        return lambda *ops: run(*ops[: len(operands)], *ops[starts[k]: starts[k] + len(weights[k])])

    def from_branch(k: int):
        if k == count - 1:
            return branch(k)
        return lambda *ops: torch.cond(index.reshape(()) == k, branch(k), from_branch(k + 1), ops)

    return from_branch(0)(*operands, *(t for w in weights for t in w))


def _groups(window: _Window) -> list[tuple[int, int, int]]:
    """The router frames the window's positions fall in: ``(first, stop, lag)`` runs of positions
    whose frames take the choice made ``lag`` steps ago (a window straddles at most two)."""
    lag, rest = -_floor_div(-window.d, window.n), -window.d % window.n
    split = window.n - rest
    return [(0, split, lag)] + ([(split, window.n, lag - 1)] if rest else [])


def _choice_lags(model: SlimmableDemucs, plan: _StreamPlan) -> int:
    """How many past choices the step keeps: the deepest levels use the oldest."""
    windows = list(plan.encoder) + list(plan.decoder)
    return max(lag for w in windows for _, _, lag in _groups(w))


def slim_stream_state(model: SlimmableDemucs) -> dict[str, torch.Tensor]:
    """The step's initial state: all zeros (silence before the input) but the clocks, the unknown end
    (-1) and the input scale (-1: the running RMS; a positive value fixes it)."""
    plan = _StreamPlan.of(model)
    k, s, zeros = model.kernel_size, model.stride, torch.zeros
    state = {"clock": zeros(1, dtype=torch.long), "received": zeros(1, dtype=torch.long),
             "length": torch.full((1,), -1, dtype=torch.long), "energy": zeros(1), "scale": torch.full((1,), -1.0)}
    state.update({f"up{i}": zeros(1, w.keep) for i, w in enumerate(plan.up)})
    state.update({f"encoder{level}": zeros(1, block.conv.in_channels, w.keep)
                  for level, (block, w) in enumerate(zip(model.encoder, plan.encoder))})
    state.update({f"skip{level}": zeros(1, model.encoder[level].hidden, w.keep)
                  for level, w in zip(reversed(range(model.depth)), plan.decoder) if w.keep})
    gru = model.bottleneck.grus[0]
    state["gru"] = zeros(len(model.bottleneck.grus), gru.num_layers, 1, gru.hidden_size)
    state.update({f"overlap{i}": zeros(1, block.deconv.out_channels, k - s) for i, block in enumerate(model.decoder)})
    state.update({f"down{i}": zeros(1, w.keep) for i, w in enumerate(plan.down)})
    if model.dynamic:
        state["choices"] = zeros(_choice_lags(model, plan), dtype=torch.long)
        state["router"] = zeros(1, model.router.head.in_channels)
    return state


def _encode(block, x: torch.Tensor, window: _Window, factors, choices: torch.Tensor | None, uf: float) -> torch.Tensor:
    """One encoder block on its input buffer: ``window.n`` frames, each run of them at its width."""
    if choices is None:
        return block(x, uf)
    k, s = block.conv.kernel_size[0], block.stride
    return torch.cat([_switch(choices[lag], block.apply_weights, (x[..., s * first: s * (stop - 1) + k],),
                              lambda i: block.weights(factors[i]), len(factors))
                      for first, stop, lag in _groups(window)], dim=-1)


def _deep_weights(model: SlimmableDemucs, factor: float) -> tuple[torch.Tensor, ...]:
    """The weights of the deepest encoder block and of every decoder block at one width."""
    return (*model.encoder[-1].weights(factor), *(w for block in model.decoder for w in block.weights(factor)))


def _deep(model: SlimmableDemucs, buffer: torch.Tensor, gru: torch.Tensor, *rest: torch.Tensor):
    """The deepest encoder block, the bottleneck and the whole decoder, for one step.

    ``rest``: the skip frames of the other levels (deepest first), each decoder block's overlap state
    and its keep mask, the bottleneck's stacked weights, then ``_deep_weights`` at the step's width.
    They share one router choice: the deepest encoder block makes one frame per step and every decoder
    window is one router frame (``_StreamPlan``), so routed, they are one ``If`` chain instead of one
    per block. Returns the decoded signal, the new GRU state and the new overlaps."""
    depth, k, s = model.depth, model.kernel_size, model.stride
    rest = iter(rest)
    skips, overlaps, keeps = ([next(rest) for _ in range(n)] for n in (depth - 1, depth, depth))
    gru_weights = [tuple(next(rest) for _ in range(4)) for _ in range(model.bottleneck.grus[0].num_layers)]
    deepest = model.encoder[-1].apply_weights(buffer, *(next(rest) for _ in range(4)))
    x, gru = model.bottleneck.step(deepest, gru, gru_weights)
    new_overlaps = []
    for index, block in enumerate(model.decoder):
        frames = x.shape[-1]
        x = x + (deepest if index == 0 else skips[index - 1])
        y = block.contributions(x, *(next(rest) for _ in range(3)), keep=keeps[index])
        y = torch.cat([y[..., : k - s] + overlaps[index], y[..., k - s:]], dim=-1)
        new_overlaps.append(y[..., s * frames:])
        x = block.finish(y[..., : s * frames])
    # torch.cond wants each output dense with the plain strides of its shape: not a slice, even of size 1.
    return tuple(t.clone(memory_format=torch.contiguous_format) for t in (x, gru, *new_overlaps))


def slim_stream_step(model: SlimmableDemucs, frame: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
    """One hop ``[1, hop]`` of input (``valid``: how many of its samples are input, 0 after the end) and
    the state -> the enhanced hop that lags it by ``_StreamPlan.out.d`` samples, and the new state."""
    plan = _StreamPlan.of(model)
    st = dict(zip(slim_stream_state_names(model), state))
    s, depth, taps = model.stride, model.depth, plan.taps
    half, kernel = taps // 2, model.resample_kernel
    t, count = st["clock"], valid.to(torch.long)
    received = st["received"] + count
    length = torch.where((st["length"] < 0) & (count < plan.hop), received, st["length"])
    end = torch.where(length < 0, torch.full_like(length, _NO_END), _valid_length(model, length))
    energy = st["energy"] + frame.pow(2).sum()
    if model.normalize:  # the running RMS of the input so far, unless the state fixes the scale
        rms = torch.sqrt(energy / received.clamp(min=1).to(frame.dtype))
        scale = torch.where(st["scale"] > 0, st["scale"], rms)
    else:
        scale = torch.ones_like(energy)
    x = frame / (model.floor + scale)
    new = {"clock": t + 1, "received": received, "length": length, "energy": energy, "scale": st["scale"]}
    choices = None
    if model.dynamic:
        chosen, new["router"] = model.router.decide(x, st["router"])
        choices = torch.cat([chosen[0], st["choices"]])  # [this step's, the previous step's, ...]
        new["choices"] = choices[: st["choices"].shape[0]]
    factors = model.utilization_factors
    masks = iter(_Masks(model, plan)(t, end, x.dtype))  # up, decoder (deepest first), decoded, down
    for i, window in enumerate(plan.up):
        buffer = torch.cat([st[f"up{i}"], x], dim=-1)
        between = F.conv1d(buffer[:, None], kernel)[:, 0]
        here = buffer[:, half - 1: half - 1 + between.shape[-1]]
        x = torch.stack([here, between], dim=-1).flatten(1) * next(masks)
        new[f"up{i}"] = buffer[:, -window.keep:]
    x, skips = x[:, None], []
    for level, (block, window) in enumerate(zip(model.encoder, plan.encoder[:-1])):
        buffer = torch.cat([st[f"encoder{level}"], x], dim=-1)
        new[f"encoder{level}"] = buffer[..., s * window.n:]
        x = _encode(block, buffer, window, factors, choices, model.uf)
        skips.append(x)
    buffer = torch.cat([st[f"encoder{depth - 1}"], x], dim=-1)
    new[f"encoder{depth - 1}"] = buffer[..., s * plan.encoder[-1].n:]
    waiting = []  # each level's skip frames that its decoder block adds this step (deepest first)
    for level, window in zip(reversed(range(depth - 1)), plan.decoder[1:]):
        frames = torch.cat([st[f"skip{level}"], skips[level]], dim=-1) if window.keep else skips[level]
        if window.keep:
            new[f"skip{level}"] = frames[..., window.n:]
        waiting.append(frames[..., : window.n])
    keeps = [next(masks).clone() for _ in range(depth)]  # views of one tensor: torch.cond refuses aliased operands
    gru_weights = [w for layer in model.bottleneck.stacked_weights() for w in layer]
    operands = (buffer, st["gru"], *waiting, *(st[f"overlap{i}"] for i in range(depth)), *keeps, *gru_weights)
    if choices is None:
        x, gru, *overlaps = _deep(model, *operands, *_deep_weights(model, model.uf))
    else:
        x, gru, *overlaps = _switch(choices[_deep_lag(plan)], partial(_deep, model), operands,
                                    lambda i: _deep_weights(model, factors[i]), len(factors))
    started = plan.encoder[-1].positions(t) >= 0  # the bottleneck's frame is the input's (not the silence before)
    new["gru"] = torch.where(started, gru, st["gru"])
    new.update({f"overlap{i}": overlap for i, overlap in enumerate(overlaps)})
    x = x[:, 0] * next(masks)
    for i, window in enumerate(plan.down):
        buffer = torch.cat([st[f"down{i}"], x], dim=-1)
        filtered = F.conv1d(buffer[:, 1::2][:, None], kernel)[:, 0]
        x = 0.5 * (buffer[:, 0::2][:, half: half + window.n] + filtered) * next(masks)
        new[f"down{i}"] = buffer[:, -window.keep:]
    return (x * scale, *(new[name] for name in slim_stream_state_names(model)))


def _deep_lag(plan: _StreamPlan) -> int:
    """The one router choice (steps ago) of the deepest encoder block's frame and every decoder window."""
    runs = [_groups(w) for w in (plan.encoder[-1], *plan.decoder)]
    lags = {lag for groups in runs for _, _, lag in groups}
    if any(len(groups) != 1 for groups in runs) or len(lags) != 1:
        raise AssertionError(f"the deep windows do not share one router frame: {runs}")
    return lags.pop()


def slim_stream_state_names(model: SlimmableDemucs) -> list[str]:
    return list(slim_stream_state(model))
