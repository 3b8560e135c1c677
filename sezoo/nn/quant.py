"""Fake quantization with straight-through rounding, and the quantizer sites that QAT attaches to.

A :class:`QuantSite` is a parameter-free identity module that a model places wherever a tensor would
be integer on the target (a weight, a gate pre-activation, a cell state, a mask). It holds no buffers,
so a model's state dict is the same with or without quantization: a QAT checkpoint loads into the plain
model, which is exactly where Lightning's removed ``QuantizationAwareTraining`` callback failed (it
swapped modules through ``torch.ao.quantization.prepare_qat`` and the state dict changed with them).
:class:`sezoo.callbacks.QuantizationAwareTraining` attaches a :class:`Quantizer` to each site from a
bit-width plan; its ranges live in the callback's checkpoint state and in the exported ``model.json``.

The scheme is symmetric with the zero point fixed at 0 (signed ``[-(2^(b-1)-1), 2^(b-1)-1]`` or unsigned
``[0, 2^b-1]``), as CMSIS-NN's int8 kernels use on the microcontrollers these models target: integer
inference then needs no zero-point corrections. Weights take their range from the tensor itself;
activations from an exponential moving average of the batch maximum (Jacob et al. 2018), frozen on
request; sigmoid and tanh outputs have fixed ranges.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (half to even), in plain Python: the exporter's tracer
    turns NumPy arithmetic into tensor constants, which a ``torch.cond`` branch may not hold. Rounding a
    double quotient to float32 gives the float32 quotient (53 >= 2 x 24 + 2 bits)."""
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * 2 ** 24) / 2 ** 24, exponent)


class Quantizer:
    """One site's quantizer: ``bits``, signedness, and a range (``max_abs``), observed or fixed."""

    def __init__(self, bits: int, signed: bool = True, kind: str = "activation", fixed_max: float | None = None,
                 momentum: float = 0.01):
        if not 2 <= bits <= 16:
            raise ValueError(f"bit width {bits}: choose 2..16")
        if kind not in ("weight", "activation"):
            raise ValueError(f"quantizer kind {kind!r}: 'weight' or 'activation'")
        self.bits, self.signed, self.kind, self.momentum = int(bits), bool(signed), kind, float(momentum)
        self.fixed = fixed_max is not None
        self.max_abs: float | None = float(fixed_max) if self.fixed else None
        self.enabled = True
        self.observing = not self.fixed

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1

    @property
    def qmin(self) -> int:
        return -self.qmax if self.signed else 0

    def scale_for(self, x: torch.Tensor) -> float:
        """The step size: a weight's from its own largest magnitude, an activation's from its range."""
        if self.kind == "weight":
            return max(float(x.detach().abs().max()), 1e-8) / self.qmax
        return max(self.max_abs or 0.0, 1e-8) / self.qmax

    def observe(self, x: torch.Tensor) -> None:
        batch_max = float(x.detach().abs().max() if self.signed else x.detach().clamp_min(0).max())
        self.max_abs = batch_max if self.max_abs is None else (1 - self.momentum) * self.max_abs + self.momentum * batch_max

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.kind == "activation" and (self.max_abs is None or (self.observing and training)):
            self.observe(x)
        scale = self.scale_for(x)
        if torch.compiler.is_compiling():  # exporting (the branches of a torch.cond too)
            # ONNX's QuantizeLinear has no symmetric [-127, 127] range: the same arithmetic, spelled out,
            # with the fused op's float32 inverse scale (so that ties round alike) and rounding half to even.
            inverse = _float32(1.0 / _float32(scale))
            return torch.clamp(torch.round(x * inverse), self.qmin, self.qmax) * scale
        # PyTorch's fused op: round half to even, clamp, and a straight-through gradient that is zero
        # where the input was clipped.
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, self.qmin, self.qmax)

    # ------------------------------------------------------------------ state (checkpoints, exports)
    def state(self) -> dict:
        return {"bits": self.bits, "signed": self.signed, "kind": self.kind, "fixed": self.fixed,
                "max_abs": self.max_abs, "observing": self.observing, "momentum": self.momentum}

    @classmethod
    def from_state(cls, state: dict) -> Quantizer:
        q = cls(state["bits"], state["signed"], state["kind"], state["max_abs"] if state["fixed"] else None,
                state.get("momentum", 0.01))
        q.max_abs = state["max_abs"]
        q.observing = state["observing"] and not q.fixed
        return q


class QuantSite(nn.Module):
    """An identity until a :class:`Quantizer` is attached (``site.quantizer = ...``).

    ``signed`` / ``fixed_max`` describe the tensor (a sigmoid output is unsigned with max 1).
    ``param`` names the sibling parameter a weight site quantizes (e.g. ``"weight_ih"``), so that
    deployable-bytes accounting knows that parameter's bit width.
    """

    def __init__(self, signed: bool = True, fixed_max: float | None = None, param: str | None = None):
        super().__init__()
        self.signed, self.fixed_max, self.param = signed, fixed_max, param
        self.quantizer: Quantizer | None = None

    @property
    def kind(self) -> str:
        return "weight" if self.param else "activation"

    def make_quantizer(self, bits: int) -> Quantizer:
        return Quantizer(bits, self.signed, self.kind, self.fixed_max)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` without module hooks. Weight sites are called this way: FlopCounterMode's module
        tracker fails on a Parameter passed to a module call under ``no_grad`` (torch 2.11)."""
        return x if self.quantizer is None else self.quantizer(x, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)

    def extra_repr(self) -> str:
        q = self.quantizer
        return "off" if q is None else f"{q.bits} bit{'s' if q.bits > 1 else ''}, {'signed' if q.signed else 'unsigned'}"


class QuantLinear(nn.Linear):
    """``nn.Linear`` with a weight site and an output site (same state dict as ``nn.Linear``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, output_signed: bool = True):
        super().__init__(in_features, out_features, bias)
        self.weight_quant = QuantSite(param="weight")
        self.output_quant = QuantSite(signed=output_signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quant(nn.functional.linear(x, self.weight_quant.quantize(self.weight), self.bias))


def quant_sites(model: nn.Module) -> dict[str, QuantSite]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantSite)}


def quantization_state(model: nn.Module) -> dict[str, dict]:
    """Every attached quantizer's state by site name (what exports and checkpoints store)."""
    return {name: s.quantizer.state() for name, s in quant_sites(model).items() if s.quantizer is not None}


def apply_quantization(model: nn.Module, state: dict[str, dict]) -> None:
    """Attach quantizers from :func:`quantization_state` output (a checkpoint's or an export's)."""
    sites = quant_sites(model)
    unknown = sorted(set(state) - set(sites))
    if unknown:
        raise KeyError(f"quantization state names sites this model does not have: {unknown[:5]}")
    for name, site_state in state.items():
        sites[name].quantizer = Quantizer.from_state(site_state)


def weight_quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """State-dict parameter name -> its enabled weight quantizer."""
    quantizers = {}
    for name, site in quant_sites(model).items():
        if site.param and site.quantizer is not None and site.quantizer.enabled:
            owner = name.rpartition(".")[0]
            quantizers[f"{owner}.{site.param}" if owner else site.param] = site.quantizer
    return quantizers


def weight_bit_widths(model: nn.Module) -> dict[str, int]:
    """State-dict parameter name -> bits, for every parameter a quantized weight site covers."""
    return {name: quantizer.bits for name, quantizer in weight_quantizers(model).items()}


def add_module_sites(module: nn.Module) -> None:
    """Give a plain module with a ``weight`` (``nn.Linear``, ``nn.Conv1d``, ...) a weight site and an
    output site, through hooks: a user's model gets quantized per module without editing its code.

    Sites hold no state, so registering them as submodules leaves the state dict unchanged.
    """
    if isinstance(getattr(module, "weight_quant", None), QuantSite):
        return
    module.weight_quant = QuantSite(param="weight")
    module.output_quant = QuantSite()

    def swap_in_quantized_weight(mod, args):
        # The forward reads ``self.weight`` from ``_parameters``; point it at the fake-quantized
        # tensor for this call (gradients flow through it to the float parameter) and restore after.
        mod._float_weight = mod._parameters["weight"]
        mod._parameters["weight"] = mod.weight_quant.quantize(mod._float_weight)

    def restore_weight_and_quantize_output(mod, args, output):
        mod._parameters["weight"] = mod._float_weight
        del mod._float_weight
        return mod.output_quant(output)

    module.register_forward_pre_hook(swap_in_quantized_weight)
    module.register_forward_hook(restore_weight_and_quantize_output)
