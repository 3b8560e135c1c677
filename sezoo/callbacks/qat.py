"""QuantizationAwareTraining: fake-quantize a model's weights and activations from a bit-width plan.

Works on any LightningModule whose ``model`` attribute (configurable) is the network. The plan maps
site or module name patterns (``fnmatch``, first match wins) to bits, e.g. ``{"*mask*": 16, "*": 8}``; a pattern
mapped to ``None`` (or 32) leaves matching sites in float. Sites are the model's
:class:`~sezoo.nn.quant.QuantSite` modules; a model without any gets a weight and an output site on
every module with a ``weight`` (Linear, Conv) whose name matches the plan, added through hooks.

Quantization starts at ``start_step`` (before it the model trains in float); activation ranges are
observed with a moving average until ``freeze_step`` and fixed after it. The model's state dict never
changes: the ranges live in this callback's checkpoint state (a resumed run continues with the same
ranges) and in the exported ``model.json``; testing a checkpoint uses that checkpoint's ranges.
"""
from __future__ import annotations

import fnmatch

import lightning as L
import torch

from sezoo.nn.quant import QuantSite, add_module_sites, apply_quantization, quant_sites, quantization_state


class QuantizationAwareTraining(L.Callback):
    def __init__(self, plan: dict[str, int | None], start_step: int = 0, freeze_step: int | None = None,
                 attribute: str = "model"):
        if not plan:
            raise ValueError("QAT plan is empty: map site-name patterns to bits, e.g. {'*': 8}")
        self.plan = dict(plan)
        self.start_step, self.freeze_step = int(start_step), (None if freeze_step is None else int(freeze_step))
        self.attribute = attribute
        self._restored: dict | None = None

    def bits_for(self, name: str) -> int | None:
        """A pattern covers a site by the site's name or the name of a module containing it, so a
        plan can name single sites (``layers.0.cell_quant``) or whole modules (``layers.0``)."""
        parts = name.split(".")
        names = [".".join(parts[:k]) for k in range(len(parts), 0, -1)]
        for pattern, bits in self.plan.items():
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                return None if bits in (None, 32) else int(bits)
        return None

    def _model(self, pl_module) -> torch.nn.Module:
        return getattr(pl_module, self.attribute)

    def attach(self, model: torch.nn.Module) -> dict[str, QuantSite]:
        """Put a quantizer on every site the plan covers; returns the covered sites by name."""
        if not quant_sites(model):
            for name, module in list(model.named_modules()):
                if isinstance(getattr(module, "weight", None), torch.nn.Parameter) and self.bits_for(name):
                    add_module_sites(module)
        covered = {}
        for name, site in quant_sites(model).items():
            bits = self.bits_for(name)
            if bits is None:
                site.quantizer = None
                continue
            if site.quantizer is None or site.quantizer.bits != bits:
                site.quantizer = site.make_quantizer(bits)
            covered[name] = site
        if not covered:
            raise ValueError(f"QAT plan {self.plan} matches no quantizer site of {type(model).__name__}")
        return covered

    def _set_phase(self, model: torch.nn.Module, step: int) -> None:
        started = step >= self.start_step
        frozen = self.freeze_step is not None and step >= self.freeze_step
        for site in quant_sites(model).values():
            if site.quantizer is not None:
                site.quantizer.enabled = started
                site.quantizer.observing = started and not frozen and not site.quantizer.fixed

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage):
        model = self._model(pl_module)
        self.attach(model)
        self._attached_to = model
        if self._restored:
            apply_quantization(model, self._restored)
        self._set_phase(model, trainer.global_step if stage == "fit" else max(self.start_step, trainer.global_step))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._set_phase(self._model(pl_module), trainer.global_step)

    def on_test_start(self, trainer, pl_module):
        # Lightning restores callback state only when fitting: load the tested checkpoint's ranges
        # so that its weights run with the ranges they were trained with.
        if trainer.ckpt_path:
            checkpoint = torch.load(trainer.ckpt_path, map_location="cpu", weights_only=True)
            state = checkpoint.get("callbacks", {}).get(self.state_key)
            if state and state.get("sites"):
                apply_quantization(self._model(pl_module), state["sites"])
        for site in quant_sites(self._model(pl_module)).values():
            if site.quantizer is not None:
                site.quantizer.enabled = True  # tested as deployed, whatever the schedule reached

    def export_metadata(self, pl_module) -> dict:
        """What ``export_model`` stores so that ``load_exported`` rebuilds the quantized model."""
        return {"quantization": quantization_state(self._model(pl_module))}

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        model = getattr(self, "_attached_to", None)
        return {"plan": self.plan, "start_step": self.start_step, "freeze_step": self.freeze_step,
                "sites": quantization_state(model) if model is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        self.start_step, self.freeze_step = state["start_step"], state["freeze_step"]
        self._restored = state.get("sites") or None
        model = getattr(self, "_attached_to", None)
        if model is not None and self._restored:  # Lightning restores callbacks after setup
            apply_quantization(model, self._restored)
