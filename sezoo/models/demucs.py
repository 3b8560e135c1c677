"""Slimmable causal DEMUCS (Miccini, Kim, Laroche, Pezzarossa, Smaragdis; WASPAA 2025).

Waveform DEMUCS (Defossez et al. 2020, facebookresearch/denoiser) with H=32, depth 5, kernel 8, stride
4, resample x4, and a bottleneck of grouped GRUs (8 groups of 64 channels, 2 layers) instead of the
LSTM. At a utilization factor UF only the leading ``ceil(h * UF)`` hidden filters of each encoder
block's strided convolution are computed (and only those columns of its 1x1 convolution), and only
the leading ``ceil(h * UF)`` rows of each GLU half of each decoder block's 1x1 convolution (and only
those input channels of its transposed convolution); block outputs stay full width, so skips and the
bottleneck never change shape.

Static MACs per input sample: encoder + decoder ``53,760 * UF``; x4 sinc resampling 672 (two 112-tap
filters each way); grouped-GRU bottleneck 1,536 (393,216 per bottleneck frame of 256 input samples).
Total ``53,760 * UF + 2,208``: 16 MACs per sample (0.03% at UF 1) less than the 2,224 derived from the
paper's table, whose bottleneck has 4,096 more MACs per frame than two grouped GRU layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sezoo.metrics.cost import counting_upper_bound, ledger_active, report_macs
from sezoo.models._base import SEModel
from sezoo.models._registry import register_model
from sezoo.nn.router import GumbelRouter

UTILIZATION_FACTORS = (0.125, 0.25, 0.5, 1.0)


# The x2 sinc resampling of facebookresearch/denoiser (resample.py, MIT licence), written out because
# the `denoiser` package pins old torch/torchaudio versions; julius, the maintained resampler, has
# no equivalent of these exact half-band filters, and the MAC budget above counts them.
def _sinc_kernel(zeros: int = 56) -> torch.Tensor:
    window = torch.hann_window(4 * zeros + 1, periodic=False)[1::2]
    t = torch.linspace(-zeros + 0.5, zeros - 0.5, 2 * zeros) * math.pi
    return (torch.sin(t) / t * window).view(1, 1, -1)


def upsample2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    *other, time = x.shape
    zeros = kernel.shape[-1] // 2
    between = F.conv1d(x.reshape(-1, 1, time), kernel, padding=zeros)[..., 1:].view(*other, time)
    return torch.stack([x, between], dim=-1).view(*other, -1)


def downsample2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1))
    even, odd = x[..., ::2], x[..., 1::2]
    *other, time = odd.shape
    zeros = kernel.shape[-1] // 2
    return (even + F.conv1d(odd.reshape(-1, 1, time), kernel, padding=zeros)[..., :-1].view(*other, time)) * 0.5


def _rescale_conv(conv: nn.Module, reference: float) -> None:
    """DEMUCS' initialisation (denoiser's ``rescale_conv``): divide weight and bias by
    sqrt(std(weight) / reference), so the untrained network starts near a small output and training
    converges in far fewer steps."""
    with torch.no_grad():
        scale = (conv.weight.std() / reference) ** 0.5
        conv.weight /= scale
        if conv.bias is not None:
            conv.bias /= scale


def slim_width(channels: int, uf: float) -> int:
    return math.ceil(channels * uf)


class WidthMask:
    """Per-frame widths for one block: block frame ``j`` takes the router's choice for the router frame
    that its first input sample falls in, ``j // frames_per_choice`` (causal and independent of the
    utterance's length, so a streaming executor makes the same choice). Training multiplies the
    full-width activations by the nested channel mask (``apply``; straight-through, so gradients reach
    the router); evaluation gives each frame's width (``widths``) to the blocks' ``routed`` executors,
    which compute only those filters."""

    def __init__(self, choice: torch.Tensor, factors: tuple[float, ...], hidden: int, frames: int,
                 frames_per_choice: int):
        self.hidden = hidden
        index = (torch.arange(frames, device=choice.device) // frames_per_choice).clamp(max=choice.shape[1] - 1)
        self.per_frame = choice[:, index].transpose(1, 2)  # [B, K, frames]
        self.table = torch.tensor([slim_width(hidden, f) for f in factors], device=choice.device)

    @property
    def widths(self) -> torch.Tensor:
        """[B, frames]: how many leading filters each frame computes."""
        return self.table[self.per_frame.argmax(1)]

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        keep = (torch.arange(self.hidden, device=h.device)[:, None] < self.table).to(h.dtype)  # [hidden, K]
        # A sum of K products rather than einsum: it is bookkeeping, and the FLOP counter must not count it.
        mask = (keep[None, :, :, None] * self.per_frame[:, None]).sum(2)  # [B, hidden, frames]
        return h * mask[..., : h.shape[-1]]


def _frames_by_width(widths: torch.Tensor):
    """(width, indices of the flattened [B * frames] positions that compute that many filters)."""
    flat = widths.reshape(-1)
    for width in flat.unique().tolist():
        yield width, (flat == width).nonzero().squeeze(1)


class EncoderBlock(nn.Module):
    """Conv(chin -> h, k, s) on the leading ceil(h*UF) filters, ReLU, 1x1 conv -> 2h, GLU -> h."""

    def __init__(self, chin: int, hidden: int, kernel_size: int, stride: int):
        super().__init__()
        self.hidden, self.stride = hidden, stride
        self.conv = nn.Conv1d(chin, hidden, kernel_size, stride)
        self.pointwise = nn.Conv1d(hidden, 2 * hidden, 1)

    @property
    def macs_per_channel(self) -> int:
        """An output frame's cost per computed hidden filter: its conv filter and 1x1 column."""
        return self.conv.in_channels * self.conv.kernel_size[0] + self.pointwise.out_channels

    def forward(self, x: torch.Tensor, uf: float = 1.0, widths: WidthMask | None = None) -> torch.Tensor:
        if widths is not None:  # dynamic training: full width, hidden filters beyond each frame's width zeroed
            h = widths.apply(F.relu(self.conv(x)))
            return F.glu(self.pointwise(h), dim=1)
        return self.apply_weights(x, *self.weights(uf))

    def weights(self, uf: float) -> tuple[torch.Tensor, ...]:
        """The weights that run at ``uf``: the leading filters of the conv, those columns of the 1x1."""
        n = slim_width(self.hidden, uf)
        return self.conv.weight[:n], self.conv.bias[:n], self.pointwise.weight[:, :n], self.pointwise.bias

    def apply_weights(self, x: torch.Tensor, conv_w, conv_b, point_w, point_b) -> torch.Tensor:
        """The block on ``x`` with the given (``weights(uf)``) weights."""
        h = F.relu(F.conv1d(x, conv_w, conv_b, self.stride))
        return F.glu(F.conv1d(h, point_w, point_b), dim=1)

    def routed(self, x: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Each output frame computes only its own ``widths[b, t]`` leading filters: the frames that
        share a width are gathered (their input windows) and run through the sliced weights together.
        Returns the output [B, hidden, frames] and the MACs of the matrix products that ran."""
        batch, frames = widths.shape
        windows = x.unfold(-1, self.conv.kernel_size[0], self.stride)[:, :, :frames]  # [B, chin, frames, k]
        windows = windows.permute(0, 2, 1, 3).reshape(batch * frames, -1)
        out = x.new_zeros(batch * frames, self.hidden)
        macs = 0
        for n, at in _frames_by_width(widths):
            h = F.relu(torch.addmm(self.conv.bias[:n], windows[at], self.conv.weight[:n].flatten(1).t()))
            out[at] = F.glu(torch.addmm(self.pointwise.bias, h, self.pointwise.weight[:, :n, 0].t()), dim=-1)
            macs += len(at) * n * (windows.shape[1] + self.pointwise.out_channels)
        return out.view(batch, frames, self.hidden).transpose(1, 2), macs


class DecoderBlock(nn.Module):
    """1x1 conv h -> 2h with each GLU half cut to its leading ceil(h*UF) rows, GLU, ConvTranspose
    (from the slimmed width -> chout, k, s), ReLU except after the last block."""

    def __init__(self, hidden: int, chout: int, kernel_size: int, stride: int, activate: bool):
        super().__init__()
        self.hidden, self.stride, self.activate = hidden, stride, activate
        self.pointwise = nn.Conv1d(hidden, 2 * hidden, 1)
        self.deconv = nn.ConvTranspose1d(hidden, chout, kernel_size, stride)

    @property
    def macs_per_channel(self) -> int:
        """An input frame's cost per kept GLU channel: two 1x1 rows and its transposed-conv filter."""
        return 2 * self.pointwise.in_channels + self.deconv.out_channels * self.deconv.kernel_size[0]

    def forward(self, x: torch.Tensor, uf: float = 1.0, widths: WidthMask | None = None) -> torch.Tensor:
        if widths is not None:
            y = self.deconv(widths.apply(F.glu(self.pointwise(x), dim=1)))
            return F.relu(y) if self.activate else y
        return self.finish(self.contributions(x, *self.weights(uf)))

    def weights(self, uf: float) -> tuple[torch.Tensor, ...]:
        """The weights that run at ``uf``: the leading rows of each GLU half of the 1x1 conv, and
        those input channels of the transposed conv."""
        n, h = slim_width(self.hidden, uf), self.hidden
        w, b = self.pointwise.weight, self.pointwise.bias
        return torch.cat([w[:n], w[h:h + n]]), torch.cat([b[:n], b[h:h + n]]), self.deconv.weight[:n]

    def contributions(self, x: torch.Tensor, point_w, point_b, deconv_w, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The transposed convolution's (overlapping) output with the given weights, before its bias;
        ``keep`` (0 or 1 per frame) silences frames."""
        gated = F.glu(F.conv1d(x, point_w, point_b), dim=1)
        return F.conv_transpose1d(gated if keep is None else gated * keep, deconv_w, None, self.stride)

    def routed(self, x: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Each input frame computes only its own ``widths[b, t]`` leading rows of each GLU half and
        their transposed-convolution filters; the frames' contributions are overlap-added (``fold``).
        Returns the output [B, chout, (frames - 1) * stride + k] and the MACs of the products that ran."""
        y, macs = self.routed_overlap(x, widths)
        return self.finish(y), macs

    def routed_overlap(self, x: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``routed`` before the bias and activation: a streaming executor overlap-adds these across calls."""
        batch, hidden, frames = x.shape
        chout, k = self.deconv.out_channels, self.deconv.kernel_size[0]
        inputs = x.transpose(1, 2).reshape(batch * frames, hidden)
        w, b = self.pointwise.weight[..., 0], self.pointwise.bias
        contributions = x.new_zeros(batch * frames, chout * k)
        macs = 0
        for n, at in _frames_by_width(widths):
            rows = torch.cat([torch.arange(n), torch.arange(hidden, hidden + n)]).to(x.device)
            gated = F.glu(torch.addmm(b[rows], inputs[at], w[rows].t()), dim=-1)  # [frames at n, n]
            contributions[at] = gated @ self.deconv.weight[:n].flatten(1)
            macs += len(at) * n * (2 * hidden + chout * k)
        contributions = contributions.view(batch, frames, chout * k).transpose(1, 2)
        y = F.fold(contributions, (1, (frames - 1) * self.stride + k), (1, k), stride=(1, self.stride))
        return y[:, :, 0], macs

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        y = y + self.deconv.bias[:, None]
        return F.relu(y) if self.activate else y


class GroupedGRU(nn.Module):
    """``groups`` independent GRUs, each over its own block of channels (causal, unidirectional)."""

    def __init__(self, channels: int, groups: int = 8, layers: int = 2):
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} bottleneck channels do not split into {groups} groups")
        self.width = channels // groups
        self.grus = nn.ModuleList(nn.GRU(self.width, self.width, layers, batch_first=True) for _ in range(groups))

    @property
    def macs_per_frame(self) -> int:
        return sum(3 * g.hidden_size * (g.input_size + g.hidden_size) * g.num_layers for g in self.grus)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor] | None = None) -> torch.Tensor:
        """[B, C, T] -> [B, C, T]. (FlopCounterMode sees a CPU GRU's matrix products, unlike the LSTM's.)"""
        return self.stream(x, state)[0]

    def stream(self, x: torch.Tensor, state: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Like ``forward``, from and to each group's hidden state (None: zeros)."""
        chunks = x.transpose(1, 2).split(self.width, dim=-1)
        states = state if state is not None else [None] * len(self.grus)
        outputs = [gru(c, h) for gru, c, h in zip(self.grus, chunks, states)]
        return torch.cat([y for y, _ in outputs], dim=-1).transpose(1, 2), [h for _, h in outputs]

    def stacked_weights(self) -> list[tuple[torch.Tensor, ...]]:
        """Per layer, the groups' weights stacked for :meth:`step`: ``W_ih^T``, ``W_hh^T`` ``[groups, width,
        3 width]`` and the biases ``[groups, 1, 3 width]``."""
        def stack(name: str, layer: int) -> torch.Tensor:
            return torch.stack([getattr(g, f"{name}_l{layer}") for g in self.grus])

        return [(stack("weight_ih", layer).transpose(1, 2), stack("weight_hh", layer).transpose(1, 2),
                 stack("bias_ih", layer)[:, None], stack("bias_hh", layer)[:, None])
                for layer in range(self.grus[0].num_layers)]

    def step(self, x: torch.Tensor, state: torch.Tensor, weights: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame ``[1, C, 1]`` from the stacked state ``[groups, layers, 1, width]`` -> the output
        ``[1, C, 1]`` and the new state: ``stream`` on one frame, with the groups as the batch of one
        matrix product per layer and gate. Why not ``stream``: exported, it is one ONNX ``GRU`` node per
        group and layer (16 here), and ONNX Runtime pays a fixed cost per node; this step runs the
        same arithmetic in less than half the time there (measured: 42 against 94 us, one thread).
        ``weights``: :meth:`stacked_weights`, when the caller has them already."""
        h_in, layers = x.reshape(len(self.grus), 1, self.width), []
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights or self.stacked_weights()):
            h = state[:, layer]  # [groups, 1, width]
            gi = torch.baddbmm(b_ih, h_in, w_ih)  # gates r, z, n as torch.nn.GRU
            gh = torch.baddbmm(b_hh, h, w_hh)
            r, z = torch.sigmoid(gi[..., :2 * self.width] + gh[..., :2 * self.width]).chunk(2, dim=-1)
            n = torch.tanh(gi[..., 2 * self.width:] + r * gh[..., 2 * self.width:])
            h_in = n + z * (h - n)  # (1 - z) * n + z * h
            layers.append(h_in)
        return h_in.reshape(1, -1, 1), torch.stack(layers, dim=1)


@register_model("slimdemucs")
class SlimmableDemucs(SEModel):
    """Causal DEMUCS whose blocks run at utilization factors (UF), optionally routed per frame.

    Args:
        hidden: channels of the first encoder block (DEMUCS' H).
        depth: encoder / decoder blocks.
        kernel_size: kernel of the strided convolutions.
        stride: stride of the strided convolutions.
        resample: input upsampling factor (1, 2 or 4), DEMUCS' sinc resampling.
        growth: channel growth per block.
        gru_groups: the bottleneck's grouped GRUs (groups of channels).
        gru_layers: GRU layers in the bottleneck.
        floor: added to the input's standard deviation when normalising.
        normalize: divide the input by its standard deviation (restored at the output).
        utilization_factors: the widths the blocks can run at (fractions of their filters).
        router: add the Gumbel-softmax router that picks the UF per frame.
        router_channels: the router's convolution width.
        rescale: DEMUCS' rescaled initialisation reference (0: none).
        sample_rate: the rate the model was trained at.
    """

    def __init__(self, hidden: int = 32, depth: int = 5, kernel_size: int = 8, stride: int = 4, resample: int = 4,
                 growth: int = 2, gru_groups: int = 8, gru_layers: int = 2, floor: float = 1e-3,
                 normalize: bool = True, utilization_factors: tuple[float, ...] = UTILIZATION_FACTORS,
                 router: bool = False, router_channels: int = 32, rescale: float = 0.1, sample_rate: int = 16000):
        super().__init__()
        if resample not in (1, 2, 4):
            raise ValueError(f"resample={resample}: choose 1, 2 or 4")
        self.sample_rate, self.depth, self.kernel_size, self.stride = sample_rate, depth, kernel_size, stride
        self.resample, self.floor, self.normalize = resample, floor, normalize
        self.utilization_factors = tuple(utilization_factors)
        self.uf = max(self.utilization_factors)
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        chin, width = 1, hidden
        for index in range(depth):
            self.encoder.append(EncoderBlock(chin, width, kernel_size, stride))
            self.decoder.insert(0, DecoderBlock(width, chin, kernel_size, stride, activate=index > 0))
            chin, width = width, width * growth
        self.bottleneck = GroupedGRU(chin, gru_groups, gru_layers)
        if rescale:
            for module in [*self.encoder.modules(), *self.decoder.modules()]:
                if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                    _rescale_conv(module, rescale)
        self.register_buffer("resample_kernel", _sinc_kernel(), persistent=False)
        # One router frame per bottleneck frame (256 input samples at the defaults).
        self.router = GumbelRouter(self.utilization_factors, self.hop_samples, router_channels) if router else None
        self.dynamic = router
        self.routed_inference = True  # False: evaluate with the training-time masks (for comparison)

    def set_operating_point(self, uf: float | None = None, dynamic: bool = False) -> None:
        """A static operating point (every block at ``uf``, one of the trained factors), or
        ``dynamic=True``: the router picks the factor per frame."""
        if dynamic:
            if self.router is None:
                raise ValueError("dynamic=True needs a model built with router=True")
            self.dynamic = True
            return
        if uf not in self.utilization_factors:
            raise ValueError(f"uf={uf}: this model was trained for {self.utilization_factors}")
        self.uf, self.dynamic = uf, False

    @property
    def reports_own_macs(self) -> bool:
        return self.dynamic  # what ran depends on the router: the model counts it itself

    @property
    def hop_samples(self) -> int:
        return self.stride ** self.depth // self.resample  # input samples per bottleneck frame

    def _frames_per_choice(self, level: int) -> int:
        """Frames of the encoder output at ``level`` (0 = first block) per router frame."""
        return self.stride ** (self.depth - 1 - level)

    def _run_dynamic(self, block: nn.Module, x: torch.Tensor, widths: WidthMask, macs: list[int]) -> torch.Tensor:
        """Training: the masked full-width block (differentiable). Evaluation (``routed_inference``):
        the routed executor, which computes only each frame's width. Both add the MACs of the widths
        that the frames were given. Counting the upper bound (``count_macs(executed=False)``) takes the
        masked path too, so that the FLOP counter sees every filter."""
        if self.training or not self.routed_inference or counting_upper_bound():
            if ledger_active():  # nobody counts in plain training: skip the tally
                macs.append(int(widths.widths.sum()) * block.macs_per_channel)
            return block(x, widths=widths)
        x, ran = block.routed(x, widths.widths)
        macs.append(ran)
        return x

    @property
    def min_samples(self) -> int:
        return self.valid_length(1)

    def streamer(self):
        """The batched PyTorch executor that counts the MACs that ran (:class:`SlimStreamer`); the
        deployable stream is the fixed-shape step (``stream_step``, which `open_streamer` and `sezoo
        export` use). Both scale by the running RMS of what has arrived (the offline forward divides by
        the whole file's standard deviation)."""
        from sezoo.models.demucs_streaming import SlimStreamer  # it imports this module

        return SlimStreamer(self)

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    # One hop in, one hop out, with fixed shapes (demucs_streaming.slim_stream_step): what `sezoo export`
    # writes as one ONNX graph and what `open_streamer` runs.
    def stream_framing(self):
        from sezoo.models.demucs_streaming import _StreamPlan
        from sezoo.streaming import Framing

        lag = _StreamPlan.of(self).out.d
        return Framing(self.hop_samples, self.hop_samples, "waveform", centered=False, window=None,
                       skip=lag % self.hop_samples, count_valid=True)

    @property
    def stream_delay_frames(self) -> int:
        from sezoo.models.demucs_streaming import _StreamPlan

        return _StreamPlan.of(self).out.d // self.hop_samples

    def stream_state(self) -> dict[str, torch.Tensor]:
        from sezoo.models.demucs_streaming import slim_stream_state

        return slim_stream_state(self)

    def stream_step(self, frame: torch.Tensor, valid: torch.Tensor, *state: torch.Tensor):
        from sezoo.models.demucs_streaming import slim_stream_step

        return slim_stream_step(self, frame, valid, *state)

    @property
    def latency_samples(self) -> int:
        """The longest wait of an input sample for its output, streamed: the step's output lags its
        input by ``d`` samples (the resamplers' look-ahead, the strided encoder's receptive field, the
        transposed convolutions' overlap: ``_StreamPlan``), and a sample waits for its whole hop (counted
        as the frame models count their frame: a hop's first sample, the hop's length)."""
        from sezoo.models.demucs_streaming import _StreamPlan

        return _StreamPlan.of(self).out.d + self.hop_samples

    def valid_length(self, length: int) -> int:
        """The nearest input length >= ``length`` that the strided convolutions cover exactly."""
        length = math.ceil(length * self.resample)
        for _ in range(self.depth):
            length = max(math.ceil((length - self.kernel_size) / self.stride) + 1, 1)
        for _ in range(self.depth):
            length = (length - 1) * self.stride + self.kernel_size
        return int(math.ceil(length / self.resample))

    def _prepare(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """[B, T] -> the normalised input padded to a valid length [B, 1, T'], and the scale."""
        x = waveform[:, None]
        std = x.std(dim=-1, keepdim=True) if self.normalize else 1.0
        x = x / (self.floor + std)
        return F.pad(x, (0, self.valid_length(x.shape[-1]) - x.shape[-1])), std

    def route(self, waveform: torch.Tensor) -> torch.Tensor:
        """The router's one-hot choices [B, frames, K] for ``waveform`` [B, T], without enhancing it
        (``router.last_utilization`` is then its mean UF): what capacity the model would spend."""
        if self.router is None:
            raise ValueError("route() needs a model built with router=True")
        return self.router(self._prepare(waveform)[0][:, 0])

    def forward(self, waveform: torch.Tensor, uf: float | None = None) -> torch.Tensor:
        """[B, T] noisy -> [B, T] enhanced: every block at ``uf`` (default: the operating point), or
        at the router's per-frame choice when the model is dynamic and ``uf`` is not given."""
        dynamic = self.dynamic and uf is None
        uf = self.uf if uf is None else uf
        x, std = self._prepare(waveform)
        length = waveform.shape[-1]
        choice = self.router(x[:, 0]) if dynamic else None
        macs = [self.router.macs_per_frame * choice.shape[0] * choice.shape[1]] if dynamic else []
        for _ in range(self.resample // 2):
            macs.append(x.shape[0] * (x.shape[-1] + 1) * self.resample_kernel.shape[-1])
            x = upsample2(x, self.resample_kernel)
        skips = []
        for level, block in enumerate(self.encoder):
            if dynamic:
                frames = (x.shape[-1] - self.kernel_size) // self.stride + 1
                widths = WidthMask(choice, self.utilization_factors, block.hidden, frames, self._frames_per_choice(level))
                x = self._run_dynamic(block, x, widths, macs)
            else:
                x = block(x, uf)
            skips.append(x)
        macs.append(x.shape[0] * x.shape[-1] * self.bottleneck.macs_per_frame)
        x = self.bottleneck(x)
        for level, block in zip(reversed(range(self.depth)), self.decoder):
            x = x + skips.pop()[..., : x.shape[-1]]
            if dynamic:
                widths = WidthMask(choice, self.utilization_factors, block.hidden, x.shape[-1], self._frames_per_choice(level))
                x = self._run_dynamic(block, x, widths, macs)
            else:
                x = block(x, uf)
        for _ in range(self.resample // 2):
            macs.append(x.shape[0] * (x.shape[-1] // 2 + x.shape[-1] % 2 + 1) * self.resample_kernel.shape[-1])
            x = downsample2(x, self.resample_kernel)
        if dynamic and ledger_active():
            report_macs(sum(macs))
        return (x[..., :length] * std)[:, 0]
