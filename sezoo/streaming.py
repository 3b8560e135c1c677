"""One streaming interface for every architecture, in PyTorch or in ONNX Runtime.

A :class:`Streamer` is fed chunks of any size (``push``) and returns the enhanced samples that became
final; ``flush`` marks the end of the input and returns the rest. Concatenated, the outputs are the
offline ``model(x)`` (tested per architecture); ``latency_samples`` is the algorithmic latency.

Most models are *frame-stepped*: the model offers

- ``stream_framing()``: a :class:`Framing`, how the host cuts the input into frames and puts the
  output back (the STFT with ``torch.stft(center=True)``'s reflect padding and ``torch.istft``'s window
  normalisation, or plain frames with overlap-add);
- ``stream_state()``: its initial state, named tensors at batch 1 (LSTM cells, convolution histories);
- ``stream_step(frame, valid, *state) -> (out, *state)``: one frame, a pure tensor function, so the
  same code runs eagerly and exports to one ONNX graph with the state as inputs and outputs (as the
  peers' streaming exports do);
- ``stream_delay_frames``: how many steps a frame's output comes after the frame (look-ahead). At the
  end the host runs that many more steps with ``valid = 0``: the zero padding the offline network sees.

The host side (framing, FFTs, overlap-add) is NumPy, so an ONNX export streams with ONNX Runtime and
NumPy alone (:func:`open_streamer` on an export folder). The slimmable DEMUCS, which resamples and
convolves in time, is frame-stepped too: its frame is one hop of raw samples, its step the whole
network at fixed shapes (:mod:`sezoo.models.demucs_streaming`).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.fft
import torch
from safetensors.torch import save_file
from torch import nn

ONNX_FILE, ONNX_META, ONNX_STATE = "stream.onnx", "stream.json", "stream_state.safetensors"
ONNX_OPSET = 18  # the torch 2.11 exporter's lowest working opset


def _fast_real_ffts():
    """``(rfft, irfft)`` of one float32 frame with as little Python around pocketfft as possible.

    The host pays two FFTs every hop of every model. ``numpy.fft`` and ``scipy.fft`` run the same
    pocketfft, but their argument handling and backend dispatch cost 5 to 6 us a call here, against
    2 us for the transform itself (512 points, measured): at a 10 ms hop that is a tenth of a small
    model's step. So the host calls scipy's compiled pocketfft module directly. It is not public API:
    its signature is checked on a probe frame at import, and any difference falls back to ``scipy.fft``."""
    try:
        from scipy.fft._pocketfft import pypocketfft

        probe = np.random.default_rng(0).standard_normal(16).astype(np.float32)
        spectrum = pypocketfft.r2c(probe, (0,), True, 0, None, 1)
        back = pypocketfft.c2r(spectrum, (0,), 16, False, 2, None, 1)
        if not (np.allclose(spectrum, scipy.fft.rfft(probe), atol=1e-5) and np.allclose(back, probe, atol=1e-5)):
            raise ValueError("pypocketfft disagrees with scipy.fft")
    except Exception:  # noqa: BLE001 (any change of the private module: use the public one)
        return (lambda frame: scipy.fft.rfft(frame)), (lambda spectrum, n: scipy.fft.irfft(spectrum, n))
    return ((lambda frame: pypocketfft.r2c(frame, (0,), True, 0, None, 1)),
            (lambda spectrum, n: pypocketfft.c2r(spectrum, (0,), n, False, 2, None, 1)))


fast_rfft, fast_irfft = _fast_real_ffts()


class Streamer(Protocol):
    latency_samples: int

    def push(self, samples: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Framing:
    """How the host frames a frame-stepped model's input and reassembles its output.

    Args:
        frame: samples per frame (the FFT size).
        hop: samples between frames.
        kind: ``"stft_mask"``: the step gets ``|rfft(window * frame)|`` ``[1, bins]`` and returns a real
            mask for that spectrum, inverted and windowed again by the host; ``"waveform"``: the step
            gets the raw frame ``[1, frame]`` and returns the frame to overlap-add.
        centered: ``torch.stft(center=True)``'s framing: ``frame // 2`` reflected samples on each side,
            and the overlap-added output divided by the summed squared windows (``torch.istft``).
            Otherwise ``frame - hop`` zeros before the input, zeros after it to a whole hop, and a plain
            overlap-add.
        window: ``"hann"``, ``"sqrt_hann"`` (periodic) or ``None`` (rectangular, no synthesis window).
        skip: output positions dropped at the start beyond ``lead``: a step whose output lags its input
            by a delay that is not a whole number of hops (the slimmable DEMUCS) says the remainder here
            and the whole hops in ``stream_delay_frames``.
        count_valid: ``valid`` is the number of input samples in the frame's newest hop (``hop`` for a
            whole one, fewer for the zero-padded last one, 0 after the end) instead of 1 or 0: a step
            that must know where the input ends to the sample (the DEMUCS's padding to a valid length).
    """

    frame: int
    hop: int
    kind: str
    centered: bool
    window: str | None
    skip: int = 0
    count_valid: bool = False

    def __post_init__(self):
        if self.kind not in ("stft_mask", "waveform"):
            raise ValueError(f"Framing.kind={self.kind!r}: 'stft_mask' or 'waveform'")
        if self.centered and self.hop > self.frame // 2:
            raise ValueError(f"Framing: centered frames need hop <= frame // 2, got hop={self.hop}, frame={self.frame}")

    def window_array(self) -> np.ndarray:
        if self.window is None:
            return np.ones(self.frame, np.float32)
        w = torch.hann_window(self.frame, periodic=True)  # the very window the offline STFT uses
        return (w.sqrt() if self.window == "sqrt_hann" else w).numpy()

    @property
    def lead(self) -> int:
        """Padded samples before the first input sample."""
        return self.frame // 2 if self.centered else self.frame - self.hop


class FrameStreamer:
    """The host loop of a frame-stepped model: ``step`` is a :class:`TorchStep` or an :class:`OnnxStep`."""

    def __init__(self, framing: Framing, step, delay_frames: int = 0, latency_samples: int | None = None):
        self.framing, self.step, self.delay = framing, step, int(delay_frames)
        self.latency_samples = int(latency_samples if latency_samples is not None
                                   else framing.frame + self.delay * framing.hop)
        self._window = framing.window_array()
        self._window_sq = self._window ** 2
        self.reset()

    def reset(self) -> None:
        f = self.framing
        self.step.reset()
        self._received = 0
        self._head = np.zeros(0, np.float32)   # centered: input kept until the start can be reflected
        self._tail = np.zeros(0, np.float32)   # centered: the newest frame // 2 + 1 inputs, for the end
        self._pending = None if f.centered else np.zeros(f.lead, np.float32)  # padded input not yet framed
        self._spectra: list[np.ndarray] = []   # stft_mask: spectra awaiting their delayed mask
        self._steps = 0
        self._numerator = np.zeros(f.frame, np.float32)
        self._envelope = np.zeros(f.frame, np.float32)
        self._overlaps = 0                     # centered: frames overlap-added into the envelope so far
        self._steady_envelope = None           # centered: the envelope once every hop sees the same one
        self._to_skip = f.lead + f.skip        # padded positions before the first input sample, the model's own lag
        self._framed = 0                       # frames stepped with input in them
        self._emitted = 0
        self._flushed = False

    # -- the public interface ----------------------------------------------------------------------
    def push(self, samples) -> np.ndarray:
        if self._flushed:
            raise RuntimeError("push after flush: call reset() to start a new stream")
        x = np.asarray(samples, np.float32).reshape(-1)
        self._received += x.size
        f = self.framing
        if f.centered:
            self._tail = np.concatenate([self._tail, x])[-(f.frame // 2 + 1):]
            if self._pending is None:
                self._head = np.concatenate([self._head, x])
                if self._head.size <= f.frame // 2:
                    return np.zeros(0, np.float32)
                x, self._head = self._head, None
                self._pending = x[f.frame // 2:0:-1].copy()  # torch.stft's reflect padding at the start
        self._pending = np.concatenate([self._pending, x])
        return self._run_frames()

    def flush(self) -> np.ndarray:
        f = self.framing
        if self._flushed:
            return np.zeros(0, np.float32)
        if f.centered:
            if self._pending is None:
                raise ValueError(f"the stream ended after {self._received} samples; this model needs at least "
                                 f"{f.frame // 2 + 1} (its STFT reflects half a frame at each end)")
            end = self._tail[-2::-1][: f.frame // 2]  # the reflect padding at the end
        else:
            end = np.zeros(-self._received % f.hop, np.float32)
        self._pending = np.concatenate([self._pending, end])
        due = self._received - self._emitted  # the output still owed, one sample per input sample
        out = [self._run_frames()]
        for _ in range(self.delay + -(-f.skip // f.hop)):  # the zero padding after the end, inside the network
            out.append(self._process(np.zeros(f.frame, np.float32), valid=False))
        out.append(self._emit(self._numerator.size, final=True))
        self._flushed = True
        out = np.concatenate(out)[:due]  # a step's lag in part of a hop (skip) computes past the end
        self._emitted = self._received - due + out.size
        return out

    # -- the loop ------------------------------------------------------------------------------------
    def _run_frames(self) -> np.ndarray:
        f, out = self.framing, []
        while self._pending.size >= f.frame:
            out.append(self._process(self._pending[: f.frame], valid=self._valid_in_frame()))
            self._pending = self._pending[f.hop:]
            self._framed += 1
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _valid_in_frame(self) -> bool | int:
        """``valid`` for the next frame: True, or with ``count_valid`` the input samples in its newest hop."""
        f = self.framing
        if not f.count_valid:
            return True
        newest = self._framed * f.hop + f.frame - f.hop - f.lead  # input index of the newest hop's first sample
        return min(max(self._received - newest, 0), f.hop)

    def _process(self, frame: np.ndarray, valid: bool | int) -> np.ndarray:
        f = self.framing
        if f.kind == "stft_mask":
            spectrum = fast_rfft(frame * self._window)  # float32 in, complex64 out (_fast_real_ffts)
            self._spectra.append(spectrum)
            mask = self.step(np.abs(spectrum)[None], valid)
            self._steps += 1
            if self._steps <= self.delay:  # the mask of a frame before the first
                return np.zeros(0, np.float32)
            spectrum = self._spectra.pop(0)
            spectrum *= mask[0]
            out = fast_irfft(spectrum, f.frame)
            out *= self._window
        else:
            out = self.step(frame[None], valid)[0]
            self._steps += 1
            if self._steps <= self.delay:
                return np.zeros(0, np.float32)
        self._numerator += out
        if f.centered and self._steady_envelope is None:
            self._envelope += self._window_sq
            self._overlaps += 1
        return self._emit(f.hop, final=False)

    def _emit(self, count: int, final: bool) -> np.ndarray:
        """Release the first ``count`` overlap-added positions (final once no later frame reaches them)."""
        num = _shift_out(self._numerator, count)
        if self.framing.centered and self._steady_envelope is not None and not final:
            num *= self._steady_reciprocal  # every frame that reaches these positions has been added
        elif self.framing.centered:
            if self._steady_envelope is not None:  # the end: the envelope as the steady hops left it
                self._envelope, self._steady_envelope = self._steady_envelope.copy(), None
            env = _shift_out(self._envelope, count)
            num = num / np.where(env > 1e-11, env, 1.0)
            if not final and self._overlaps > -(-self.framing.frame // self.framing.hop):
                # From here on each hop adds one window and shifts one hop out: the envelope repeats, so
                # its reciprocal is kept instead of recomputed every hop (3 us a hop of host time here).
                self._steady_envelope = self._envelope.copy()
                head = self._envelope[:count] + self._window_sq[:count]
                self._steady_reciprocal = (1.0 / np.where(head > 1e-11, head, 1.0)).astype(np.float32)
        skip = min(self._to_skip, num.size)
        self._to_skip -= skip
        num = num[skip:]
        if final:
            owed = max(self._received - self._emitted, 0)
            num = np.concatenate([num[:owed], np.zeros(owed - min(num.size, owed), np.float32)])
        self._emitted += num.size
        return num.astype(np.float32)


def _shift_out(buffer: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` values of ``buffer``; the rest move to its front, zeros fill its end (in place)."""
    head = buffer[:count].copy()
    buffer[: buffer.size - count] = buffer[count:]
    buffer[buffer.size - count:] = 0.0
    return head


class TorchStep:
    """A model's ``stream_step`` called eagerly, its state kept between calls."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    def reset(self) -> None:
        self.state = list(self.model.stream_state().values())

    @torch.inference_mode()
    def __call__(self, frame: np.ndarray, valid: bool) -> np.ndarray:
        out, *self.state = self.model.stream_step(torch.from_numpy(frame), torch.tensor([float(valid)]), *self.state)
        return out.numpy()


class OnnxStep:
    """The exported step graph in ONNX Runtime, run through I/O bindings: the frame, ``valid``, the output
    and two sets of state buffers are bound once, and each step writes the new state into the set the
    previous step read from (ping-pong), so a call is one copy of the frame and one ``run_with_iobinding``.
    Measured against feeding ``session.run`` a dict every hop (one thread, one process, the two step
    classes streaming 6 s of noise in turn, median of 5 passes; the outputs equal bit for bit):
    4 to 12 % less real-time factor (TinyLSTM int8 0.00514 -> 0.00454, nsNet2 exit 3 0.01919 -> 0.01773,
    DynCP dense 0.01151 -> 0.01020, DTLN unit 50 % 0.02129 -> 0.01872)."""

    def __init__(self, folder: str | Path, threads: int = 1):
        import onnxruntime as ort

        folder = Path(folder)
        self.meta = json.loads((folder / ONNX_META).read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Errors only: ORT warns about initializers that a branch folded at export no longer uses.
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.state_names = [s["name"] for s in self.meta["state"]]
        graph_inputs = {i.name for i in self.session.get_inputs()}  # an unused `valid` or state is pruned
        self._takes_valid = "valid" in graph_inputs
        self._state_fed = [name in graph_inputs for name in self.state_names]
        self._valid = {True: np.ones(1, np.float32), False: np.zeros(1, np.float32)}
        self._count_valid = bool(self.meta["framing"].get("count_valid", False))

        from safetensors.numpy import load_file

        initial = load_file(str(folder / ONNX_STATE))
        self.initial_state = [np.ascontiguousarray(initial[name]) for name in self.state_names]
        self._bind()

    def _bind(self) -> None:
        """Buffers for every input and output, and one binding per parity. The buffers are never
        reallocated (the bindings hold their addresses): reset and calls write into them."""
        framing = self.meta["framing"]
        width = framing["frame"] // 2 + 1 if framing["kind"] == "stft_mask" else framing["frame"]
        self._frame = np.zeros((1, width), np.float32)
        self._valid_buffer = np.zeros(1, np.float32)
        feed = {name: value for name, value, fed in zip(self.state_names, self.initial_state, self._state_fed) if fed}
        feed["frame"] = self._frame
        if self._takes_valid:
            feed["valid"] = self._valid_buffer
        out = self.session.run(None, feed)[0]  # a probe step: the output's shape and type
        self._out = np.zeros_like(out)
        self._buffers = [[np.zeros_like(s) for s in self.initial_state] for _ in range(2)]
        outputs = [o.name for o in self.session.get_outputs()]

        def bind(io, name, array, output):
            method = io.bind_output if output else io.bind_input
            method(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

        self._bindings = []
        for parity in range(2):
            io = self.session.io_binding()
            for name, buffer, fed in zip(self.state_names, self._buffers[parity], self._state_fed):
                if fed:
                    bind(io, name, buffer, output=False)
            bind(io, "frame", self._frame, output=False)
            if self._takes_valid:
                bind(io, "valid", self._valid_buffer, output=False)
            bind(io, outputs[0], self._out, output=True)
            for name, buffer in zip(outputs[1:], self._buffers[1 - parity]):
                bind(io, name, buffer, output=True)
            self._bindings.append(io)
        self.reset()

    @property
    def state(self) -> list[np.ndarray]:
        """The state the next step reads (copies)."""
        return [b.copy() for b in self._buffers[self._parity]]

    def reset(self) -> None:
        self._parity = 0
        for buffer, value in zip(self._buffers[0], self.initial_state):
            buffer[...] = value

    def __call__(self, frame: np.ndarray, valid: bool) -> np.ndarray:
        self._frame[...] = frame
        self._valid_buffer[0] = float(valid)  # 1/0, or the valid sample count (count_valid)
        self.session.run_with_iobinding(self._bindings[self._parity])
        self._parity ^= 1
        return self._out.copy()

    def valid_feed(self, valid: bool | int) -> np.ndarray:
        if self._count_valid:
            return np.full(1, float(valid), np.float32)
        return self._valid[bool(valid)]


def is_frame_stepped(model: nn.Module) -> bool:
    return callable(getattr(model, "stream_step", None))


def has_compiled_step(model: nn.Module) -> bool:
    """Whether the model has a compiled streaming step (``compiled_stream_step()``, runtime="compiled")."""
    return callable(getattr(model, "compiled_stream_step", None))


def open_streamer(source, runtime: str = "torch", threads: int = 1) -> Streamer:
    """A streamer for a model (``runtime="torch"``, or ``"compiled"`` for a model with a compiled step,
    e.g. a causal Conv-FSENet: ``sezoo.models.convfsenet_compiled``) or an ONNX export folder
    (``runtime="onnx"``)."""
    if runtime == "onnx":
        step = OnnxStep(source, threads)
        meta = step.meta
        return FrameStreamer(Framing(**meta["framing"]), step, meta["delay_frames"], meta["latency_samples"])
    if runtime not in ("torch", "compiled"):
        raise ValueError(f"runtime={runtime!r}: 'torch', 'compiled' or 'onnx'")
    model = source
    if runtime == "compiled":
        if not has_compiled_step(model):
            raise ValueError(f"{type(model).__name__} has no compiled streaming step: stream it with runtime='onnx' "
                             "or 'torch'")
        step = model.compiled_stream_step()
    elif is_frame_stepped(model):
        step = TorchStep(model)
    else:
        raise NotImplementedError(f"{type(model).__name__} has no streaming path (no stream_step)")
    return FrameStreamer(model.stream_framing(), step, model.stream_delay_frames, model.latency_samples)


def stream_enhance(streamer: Streamer, waveform, chunk: int) -> np.ndarray:
    """Feed ``waveform`` ``[T]`` in chunks of ``chunk`` samples, then flush; the enhanced ``[T]``."""
    x = np.asarray(waveform, np.float32).reshape(-1)
    pieces = [streamer.push(x[start:start + chunk]) for start in range(0, x.size, chunk)]
    pieces.append(streamer.flush())
    return np.concatenate(pieces)


# ---------------------------------------------------------------------------------------- ONNX export
class _StepGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frame, valid, *state):
        return self.model.stream_step(frame, valid, *state)


def _with_quantized_weights(model: nn.Module) -> nn.Module:
    """A copy whose QAT weights hold their quantized values, with the weight quantizers removed: the
    graph then carries constant weights instead of recomputing each one's scale every step."""
    from sezoo.nn.quant import Quantizer, quant_sites, weight_quantizers

    # Fake quantizers only: an int8 export's QuantizeLinear/DequantizeLinear sites stay in the graph.
    quantizers = {name: q for name, q in weight_quantizers(model).items() if isinstance(q, Quantizer)}
    if not quantizers:
        return model
    model = copy.deepcopy(model)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, quantizer in quantizers.items():
            parameters[name].copy_(quantizer(parameters[name], training=False))
    for site in quant_sites(model).values():
        if site.param and isinstance(site.quantizer, Quantizer):
            site.quantizer = None
    return model


def export_onnx(model: nn.Module, folder: str | Path) -> Path:
    """Write ``stream.onnx`` (one step: frame, valid and state in; output and state out),
    ``stream.json`` (framing, state names and shapes, delay, latency) and ``stream_state.safetensors``
    (the initial state) to ``folder``."""
    if not is_frame_stepped(model):
        raise NotImplementedError(f"{type(model).__name__} has no stream_step: no single-step ONNX graph")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _with_quantized_weights(model.eval())
    framing = model.stream_framing()
    state = model.stream_state()
    width = framing.frame // 2 + 1 if framing.kind == "stft_mask" else framing.frame
    args = (torch.rand(1, width), torch.ones(1), *state.values())
    names = list(state)
    # The exporter narrates each phase on stdout and warns about torchvision ops no model here uses:
    # keep that out of the user's output unless the export fails.
    narration = io.StringIO()
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    # torch.export logs "always_classified is unsupported" for a torch.cond graph on the way to the
    # strategy that exports it; a real failure still raises, with the narration.
    logging.getLogger("torch.export._trace").setLevel(logging.CRITICAL)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(narration), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations, nothing to act on
            # nn.GRU re-assigns its flattened weights while it is traced; the exported graph reads the
            # registered parameters all the same (the streamed output is tested equal to PyTorch's).
            warnings.filterwarnings("ignore", message=".*were assigned during export", category=UserWarning)
            torch.onnx.export(_StepGraph(model).eval(), args, str(folder / ONNX_FILE), dynamo=True, opset_version=ONNX_OPSET,
                              input_names=["frame", "valid", *names], output_names=["out", *(f"{n}.out" for n in names)],
                              verbose=False, external_data=False)
    except Exception:
        print(narration.getvalue(), file=sys.stderr)
        raise
    _strip_node_metadata(folder / ONNX_FILE)
    meta = {"format": 1, "framing": asdict(framing), "delay_frames": model.stream_delay_frames,
            "latency_samples": model.latency_samples, "sample_rate": model.sample_rate,
            "state": [{"name": n, "shape": list(t.shape)} for n, t in state.items()],
            "inputs": ["frame", "valid", *names], "outputs": ["out", *(f"{n}.out" for n in names)]}
    (folder / ONNX_META).write_text(json.dumps(meta, indent=1))
    save_file({n: t.contiguous() for n, t in state.items()}, str(folder / ONNX_STATE))  # not all zeros (skip gates)
    return folder


def _strip_node_metadata(path: Path) -> None:
    """Drop the exporter's per-node provenance (FX node, class hierarchy, stack trace with this machine's
    paths): a quarter of a small model's file, and nothing a runtime reads."""
    import onnx

    def strip(graph) -> None:
        for node in graph.node:
            del node.metadata_props[:]
            for attribute in node.attribute:  # the branches of an If
                if attribute.type == onnx.AttributeProto.GRAPH:
                    strip(attribute.g)

    proto = onnx.load(str(path))
    strip(proto.graph)
    onnx.save(proto, str(path))
