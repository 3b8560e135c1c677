"""Conv-FSENet's streaming step compiled with Numba: a gated (DynCP) frame computes only its open channels.

Why by hand: ONNX Runtime has no operator that skips the closed channels of a 1x1 convolution without
more graph nodes than the skipped arithmetic costs. Measured on ``dyncp/mini2-causal-keep25`` (one thread,
per hop): its exported step computes every channel and masks the closed ones, 191 us against the dense
model's 156 us, and gathering the open rows would add about six nodes a block to save about 2.5 us of
arithmetic a block. Here the step is plain loops that Numba (LLVM) compiles: a closed channel's expand
row, depthwise filter and project column are never read, so a frame's time follows the MACs it executes
(``ConvFSENet.executed_macs``), which is what DynCP promises.

The arithmetic is :meth:`ResidualBlock.step`'s, in float32, with BatchNorm folded into a scale and a shift
(inference: running statistics) and each block's depthwise history in a ring buffer. A closed channel's
expand output is 0 (the training path's ``e * gates``), so its history entry is BatchNorm's shift of
PReLU(0) = 0, written without any MAC, exactly what the masked path keeps. Causal models only: a block
with look-ahead waits for future frames, which the ONNX step handles (``sezoo export``).
"""
from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # a core dependency (pyproject.toml); the message says what to do if it is missing
    numba = None


def _prelu_weight(act: torch.nn.PReLU, channels: int) -> np.ndarray:
    w = act.weight.detach().float().numpy().reshape(-1)
    return np.broadcast_to(w, (channels,)).astype(np.float32).copy()


def _fold_norm(norm: torch.nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias.detach() - norm.running_mean * scale
    return scale.float().numpy(), shift.float().numpy()


class CompiledConvFSENetStep:
    """A :class:`~sezoo.streaming.FrameStreamer` step (``reset()``; ``step(magnitude [1, bins], valid)``
    -> mask ``[1, bins]``) for a causal :class:`~sezoo.models.convfsenet.ConvFSENet`, gated or dense.

    ``open_channels`` counts, per block, the channel-frames computed since ``reset()``: with
    ``executed_macs`` they give the MACs this step really ran."""

    def __init__(self, model):
        if numba is None:
            raise RuntimeError("the compiled Conv-FSENet step needs numba: pip install numba")
        if model.lookahead_frames:
            raise ValueError(f"the compiled step runs causal Conv-FSENet models; this one waits "
                             f"{model.lookahead_frames} frames ahead: stream its ONNX step (runtime='onnx')")
        blocks = model.blocks
        first = blocks[0]
        self.blocks, self.hidden = len(blocks), first.expand.out_channels
        self.kernel = first.kernel_size
        if any(b.kernel_size != self.kernel or b.expand.out_channels != self.hidden for b in blocks):
            raise ValueError("the compiled step needs every block to share one kernel size and hidden width")
        self.gated = model.gated
        self.compression = float(model.compression)

        def stack(get):
            return np.ascontiguousarray(np.stack([np.asarray(get(b), np.float32) for b in blocks]))

        w = lambda t: t.detach().float().numpy()  # noqa: E731
        self.front_w, self.front_b = w(model.front.weight[:, :, 0]).copy(), w(model.front.bias).copy()
        self.back_w, self.back_b = w(model.back.weight[:, :, 0]).copy(), w(model.back.bias).copy()
        self.expand_w = stack(lambda b: w(b.expand.weight[:, :, 0]))                  # [K, H, C]
        self.expand_b = stack(lambda b: w(b.expand.bias))
        self.act1 = stack(lambda b: _prelu_weight(b.act1, self.hidden))
        self.scale1 = stack(lambda b: _fold_norm(b.norm1)[0])
        self.shift1 = stack(lambda b: _fold_norm(b.norm1)[1])
        # taps in time order oldest -> newest, as the PyTorch step's history[..., ::dilation]
        self.depth_w = stack(lambda b: w(b.depthwise.weight[:, 0, :]))                # [K, H, k]
        self.depth_b = stack(lambda b: w(b.depthwise.bias))
        self.act2 = stack(lambda b: _prelu_weight(b.act2, self.hidden))
        self.scale2 = stack(lambda b: _fold_norm(b.norm2)[0])
        self.shift2 = stack(lambda b: _fold_norm(b.norm2)[1])
        self.project_t = stack(lambda b: w(b.project.weight[:, :, 0]).T)               # [K, H, C]: a column per row
        self.project_b = stack(lambda b: w(b.project.bias))
        self.dilations = np.array([b.dilation for b in blocks], np.int64)
        if self.gated:
            self.gate_sq_w = stack(lambda b: w(b.gate.squeeze.weight[:, :, 0]))       # [K, G, C]
            self.gate_sq_b = stack(lambda b: w(b.gate.squeeze.bias))
            self.gate_ex_w = stack(lambda b: w(b.gate.expand.weight[:, :, 0]))        # [K, H, G]
            self.gate_ex_b = stack(lambda b: w(b.gate.expand.bias))
        else:  # empty gate nets: every channel open
            channels = self.expand_w.shape[2]
            self.gate_sq_w = np.zeros((self.blocks, 0, channels), np.float32)
            self.gate_sq_b = np.zeros((self.blocks, 0), np.float32)
            self.gate_ex_w = np.zeros((self.blocks, self.hidden, 0), np.float32)
            self.gate_ex_b = np.zeros((self.blocks, self.hidden), np.float32)
        # a ring of the last `span + 1` post-norm1 frames per block; one length for all blocks
        self.ring = int(max(b.dilation * (b.kernel_size - 1) for b in blocks)) + 1
        self.reset()

    def reset(self) -> None:
        self.history = np.zeros((self.blocks, self.hidden, self.ring), np.float32)
        self.frame = 0
        self.open_channels = np.zeros(self.blocks, np.int64)

    def __call__(self, magnitude: np.ndarray, valid) -> np.ndarray:
        mask = np.empty((1, self.back_w.shape[0]), np.float32)
        _step(np.ascontiguousarray(magnitude[0], np.float32), np.float32(float(valid)), self.compression,
              self.gated, self.front_w, self.front_b, self.gate_sq_w, self.gate_sq_b, self.gate_ex_w,
              self.gate_ex_b, self.expand_w, self.expand_b, self.act1, self.scale1, self.shift1, self.depth_w,
              self.depth_b, self.act2, self.scale2, self.shift2, self.project_t, self.project_b, self.dilations,
              self.history, self.frame % self.ring, self.open_channels, self.back_w, self.back_b, mask[0])
        self.frame += 1
        return mask


def _step_py(magnitude, valid, compression, gated, front_w, front_b, gate_sq_w, gate_sq_b, gate_ex_w, gate_ex_b,
             expand_w, expand_b, act1, scale1, shift1, depth_w, depth_b, act2, scale2, shift2, project_t,
             project_b, dilations, history, now, open_channels, back_w, back_b, mask):
    """One frame (module docstring); ``history`` and ``open_channels`` are updated in place."""
    bins, channels = front_w.shape[1], front_w.shape[0]
    blocks, hidden, ring = history.shape
    kernel = depth_w.shape[2]
    gate_width = gate_sq_w.shape[1]
    features = np.empty(bins, np.float32)
    for f in range(bins):
        features[f] = magnitude[f] if compression == 1.0 else (magnitude[f] + np.float32(1e-12)) ** compression
    x = np.empty(channels, np.float32)
    for c in range(channels):
        acc = front_b[c]
        for f in range(bins):
            acc += front_w[c, f] * features[f]
        x[c] = max(acc, np.float32(0.0))
    squeezed = np.empty(gate_width, np.float32)
    opened = np.empty(hidden, np.int64)
    h2 = np.empty(hidden, np.float32)
    for k in range(blocks):
        count = 0
        if gated:
            for g in range(gate_width):
                acc = gate_sq_b[k, g]
                for c in range(channels):
                    acc += gate_sq_w[k, g, c] * x[c]
                squeezed[g] = max(acc, np.float32(0.0))
            for j in range(hidden):
                acc = gate_ex_b[k, j]
                for g in range(gate_width):
                    acc += gate_ex_w[k, j, g] * squeezed[g]
                if acc > 0.0:
                    opened[count] = j
                    count += 1
                else:  # closed: expand output 0 -> PReLU 0 -> BatchNorm's shift, no MAC
                    history[k, j, now] = shift1[k, j] * valid
        else:
            for j in range(hidden):
                opened[j] = j
            count = hidden
        open_channels[k] += count
        dilation = dilations[k]
        for i in range(count):
            j = opened[i]
            acc = expand_b[k, j]
            for c in range(channels):
                acc += expand_w[k, j, c] * x[c]
            if acc < 0.0:
                acc = acc * act1[k, j]
            history[k, j, now] = (acc * scale1[k, j] + shift1[k, j]) * valid
            acc = depth_b[k, j]
            for t in range(kernel):  # tap t is (kernel - 1 - t) * dilation frames back
                acc += depth_w[k, j, t] * history[k, j, (now - (kernel - 1 - t) * dilation) % ring]
            if acc < 0.0:
                acc = acc * act2[k, j]
            h2[i] = acc * scale2[k, j] + shift2[k, j]
        y = x.copy()
        for c in range(channels):
            y[c] += project_b[k, c]
        for i in range(count):
            j, value = opened[i], h2[i]
            for c in range(channels):
                y[c] += value * project_t[k, j, c]
        x = y
    for f in range(bins):
        acc = back_b[f]
        for c in range(channels):
            acc += back_w[f, c] * x[c]
        mask[f] = np.float32(1.0) / (np.float32(1.0) + np.exp(-acc))


# Compiled once per process and cached on disk (numba's cache); fastmath lets LLVM vectorize the sums.
_step = numba.njit(cache=True, fastmath=True, nogil=True)(_step_py) if numba is not None else _step_py
