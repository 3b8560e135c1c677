"""Cost: multiply-accumulates per second of audio, parameters, deployable bytes.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2 for the matmul and conv
kernels it counts). Work it cannot see, or work that a dynamic model skips at run time, is reported
through :func:`report_macs`: a module calls it inside ``forward`` with what it actually executed, and
:func:`count_macs` adds it in. A model that reports *all* of its work itself sets the attribute
``reports_own_macs = True`` and the counter then trusts its report alone.

The STFT/iSTFT framing is not counted (as in the papers): costs are the network's.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sezoo.nn.encoding import SCALE_BYTES, cheapest, encoding_sizes, weight_codes
from sezoo.nn.quant import weight_bit_widths

_ledger: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("sezoo_mac_ledger", default=None)
_upper_bound: contextvars.ContextVar[bool] = contextvars.ContextVar("sezoo_mac_upper_bound", default=False)


def counting_upper_bound() -> bool:
    """True inside ``count_macs(executed=False)``: a model whose eval path really skips work (a
    skip-RNN) then takes every path, so that the FLOP counter sees the bound."""
    return _upper_bound.get()


def ledger_active() -> bool:
    """Whether anyone is counting: lets a model skip tallying its executed MACs in plain training."""
    return _ledger.get() is not None


def report_macs(n: int) -> None:
    """Called by a module during forward to add MACs the FLOP counter does not see."""
    ledger = _ledger.get()
    if ledger is not None:
        ledger.append(int(n))


def open_ledger() -> tuple[list[int], contextvars.Token]:
    """Start collecting :func:`report_macs` calls; pass the token to :func:`close_ledger`."""
    ledger: list[int] = []
    return ledger, _ledger.set(ledger)


def close_ledger(token: contextvars.Token) -> None:
    _ledger.reset(token)


def count_macs(model: nn.Module, *inputs: torch.Tensor, executed: bool = True) -> int:
    """MACs of ``model(*inputs)`` (no grad, the model's current mode).

    ``executed=True``: what ran (a self-reporting model's own report). ``executed=False``: everything
    the FLOP counter sees, i.e. for a dynamic model the upper bound with every path open.
    """
    own = getattr(model, "reports_own_macs", False)
    ledger, token = open_ledger()
    bound_token = _upper_bound.set(not executed)
    try:
        with torch.no_grad():
            if own and executed:
                model(*inputs)
                return sum(ledger)
            with FlopCounterMode(display=False) as counter:
                model(*inputs)
        return counter.get_total_flops() // 2 + (0 if own else sum(ledger))
    finally:
        close_ledger(token)
        _upper_bound.reset(bound_token)


def static_macs_per_second(model: nn.Module, sample_rate: int, seconds: tuple[float, float] = (2.0, 4.0)) -> float:
    """MACs per second of audio for a model whose cost is affine in the input length.

    For a dynamic model this is the upper bound, every gate open (``count_macs(executed=False)``).

    The difference of two lengths cancels the fixed cost of edge frames, so a frame model with hop h
    gives exactly ``macs_per_frame * sample_rate / h``; lengths are rounded to whole hops (a model's
    ``hop_samples`` attribute) so that both contain a whole number of frames.
    """
    was_training = model.training
    model.eval()
    hop = getattr(model, "hop_samples", 1)
    # The probe lives where the model does: a model trained on a GPU is metered there.
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        n1, n2 = (round(s * sample_rate / hop) * hop for s in seconds)
        m1 = count_macs(model, torch.zeros(1, n1, device=device), executed=False)
        m2 = count_macs(model, torch.zeros(1, n2, device=device), executed=False)
    finally:
        model.train(was_training)
    return (m2 - m1) * sample_rate / (n2 - n1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class TensorBytes:
    name: str
    numel: int
    nonzero: int
    bits: int
    encoding: str
    bytes: int


@dataclass
class DeployableBytes:
    total: int
    tensors: list[TensorBytes] = field(default_factory=list)

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.encoding] = counts.get(t.encoding, 0) + 1
        return {"total": self.total, "encodings": counts}


def _tensor_bytes(name: str, tensor: torch.Tensor, bits: int, quantized: bool) -> TensorBytes:
    """The tensor in the cheapest encoding of ``sezoo.nn.encoding`` (the one an export writes). A quantized
    weight counts its integer codes (a weight that rounds to 0 is a zero) and its scale."""
    if quantized:
        codes, _ = weight_codes(tensor, bits)
        nonzero = codes != 0
    else:
        nonzero = (tensor != 0).reshape(-1).cpu().numpy()
    sizes = encoding_sizes(nonzero, bits)
    encoding = cheapest(sizes)
    return TensorBytes(name, tensor.numel(), int(nonzero.sum()), bits, encoding,
                       sizes[encoding] + (SCALE_BYTES if quantized else 0))


def model_bit_widths(model: nn.Module) -> dict[str, int]:
    """The bit width of each quantized parameter: from QAT's weight sites, or the model's own
    ``bit_widths()`` where it declares them."""
    return {**(getattr(model, "bit_widths", lambda: None)() or {}), **weight_bit_widths(model)}


def deployable_bytes(model: nn.Module, bit_widths: dict[str, int] | None = None, default_bits: int = 32) -> DeployableBytes:
    """Bytes to deploy the model: every tensor needed at inference at its bit width.

    ``bit_widths`` maps state-dict names to bits (QAT supplies it); others use ``default_bits``. Each
    tensor counts in its cheapest encoding (``sezoo.nn.encoding``: dense, bitmap, coordinates or relative
    indices), the one ``sezoo.export`` writes; a QAT weight as its integer codes plus its scale.
    Batch-norm statistics are counted (they are needed unless folded); step counters are not.
    """
    bit_widths = bit_widths or {}
    quantized = weight_bit_widths(model)
    report = DeployableBytes(total=0)
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked") or not tensor.is_floating_point():
            continue
        bits = bit_widths.get(name, quantized.get(name, default_bits))
        entry = _tensor_bytes(name, tensor.detach(), bits, quantized=name in quantized and bits == quantized[name])
        report.tensors.append(entry)
        report.total += entry.bytes
    return report
