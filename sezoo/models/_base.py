"""The model contract: what every sezoo model offers besides ``forward`` (noisy ``[B, T]`` -> enhanced ``[B, T]``).

A model subclasses :class:`SEModel` and registers its architecture name (``@register_model``). It
then gets, with no code of its own:

- ``kwargs``: its constructor arguments, recorded when it is built (every argument, defaults
  included, as JSON-ready values), so that an export or a zoo entry rebuilds the same network with
  ``create_model(arch, **model.kwargs)``. This is facebookresearch/denoiser's ``capture_init``, done
  once here so that no model or recipe writes its arguments out by hand.
- ``enhance(waveform, sample_rate)``: any rate in, the same rate out.

and overrides, where its defaults do not fit:

- ``min_samples``: the shortest input it accepts (readers refuse shorter files by name);
- ``hop_samples``: the input samples per frame; cost measurements use whole frames;
- ``latency_samples``: the algorithmic latency (how long after an input sample arrives its enhanced
  sample can leave, computation taking no time);
- ``reports_own_macs``: ``True`` when what runs depends on the input (gates, routers, skipped
  steps) and the model reports its executed MACs itself (see :mod:`sezoo.metrics.cost`);
- ``stream_framing`` / ``stream_state`` / ``stream_step`` (and ``stream_delay_frames`` with
  look-ahead): a frame-stepped streaming path, which :mod:`sezoo.streaming` runs in PyTorch or exports
  to ONNX; or ``streamer()`` where the model streams otherwise;
- ``set_operating_point(**point)``: switch among the operating points that one weight file
  serves (a utilization factor, say). Exports and zoo entries record the point and restore it.
"""
from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from sezoo.data.audio import resample


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class SEModel(nn.Module):
    """A waveform-to-waveform enhancement network at ``self.sample_rate``."""

    sample_rate: int = 16000
    kwargs: dict

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if type(self) is cls:  # the outermost class records: a subclass's arguments win
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                recorded = {}
                for name, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[name].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        recorded.update(value)
                    elif kind is not inspect.Parameter.VAR_POSITIONAL:
                        recorded[name] = value
                self.kwargs = _jsonable(recorded)

        cls.__init__ = recording_init

    @property
    def min_samples(self) -> int:
        """The shortest input, in samples at ``sample_rate``, that the model accepts (default: one
        STFT frame if the model has an ``stft``, else 1)."""
        stft = getattr(self, "stft", None)
        return int(getattr(stft, "n_fft", 1))

    @property
    def hop_samples(self) -> int:
        """Input samples per frame (default: the ``stft`` hop, else 1); costs are measured on whole hops."""
        stft = getattr(self, "stft", None)
        return int(getattr(stft, "hop", 1))

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency in samples at ``sample_rate`` (default: one STFT window, ``n_fft``: a frame is
        analysed once its last sample is in, and its first hop leaves, overlap-added, after that)."""
        stft = getattr(self, "stft", None)
        if stft is None:
            raise NotImplementedError(f"{type(self).__name__} has no STFT: state its latency_samples")
        return int(stft.n_fft)

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    @property
    def stream_delay_frames(self) -> int:
        """Frame-stepped streaming (:mod:`sezoo.streaming`): steps between a frame and its output (look-ahead)."""
        return 0

    @property
    def reports_own_macs(self) -> bool:
        """``True`` when the model reports the MACs it executed itself (its work depends on the input)."""
        return False

    def set_operating_point(self, **point) -> None:
        """Switch to one operating point of these weights. A model with only one accepts no arguments."""
        if point:
            raise ValueError(f"{type(self).__name__} has a single operating point; got {point}")

    @torch.no_grad()
    def enhance(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Enhance mono audio ``[T]`` or a batch ``[B, T]`` at any rate; returns it at that rate."""
        squeeze = waveform.dim() == 1
        x = waveform[None] if squeeze else waveform
        y = resample(self(resample(x.float(), sample_rate, self.sample_rate)), self.sample_rate, sample_rate)
        y = y[..., : x.shape[-1]]
        return y[0] if squeeze else y
