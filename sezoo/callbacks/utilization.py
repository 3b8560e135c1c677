"""UtilizationLoss: pull the capacity a dynamic model uses toward a target.

Works on any LightningModule whose network contains *utilization sources* (modules with a
``last_utilization`` tensor, see :mod:`sezoo.nn.gates`): DynCP channel gates, a slimming router, a
skip-RNN update gate, an early-exit policy. The loss is ``weight * mean_k (u_k - target)^2`` over the
sources (``per_source=True``) or ``weight * (mean_k u_k - target)^2`` (global). Sources that also
expose ``last_balance`` (a router's load-balancing term) add ``balance_weight * mean(last_balance)``.
Sources with a ``temperature`` attribute (Gumbel gates and routers) get it annealed geometrically.
Per-source and mean utilization are logged for train, val and test.

Lightning callbacks cannot add to the loss, so the callback wraps the module's ``training_step`` for
the length of one ``fit`` (from ``setup`` to ``teardown``) and adds its term to what the step returns.
A module fitted again (a two-phase curriculum) is wrapped anew by the callback of that fit.

The callback's settings are configuration: they come from its constructor, always. Its checkpoint
state records them only so that a resumed run whose settings differ says so (a warning), instead of
silently continuing with the old ones. The schedules' progress is the trainer's ``global_step``,
which Lightning restores.
"""
from __future__ import annotations

from typing import Callable

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

Schedule = Callable[[int], float]


def utilization_sources(module: torch.nn.Module, marker: str = "last_utilization") -> dict[str, torch.nn.Module]:
    """The submodules that report a utilization (have the ``marker`` attribute), by name."""
    return {name: m for name, m in module.named_modules() if hasattr(m, marker)}


class UtilizationLoss(L.Callback):
    """Add ``weight * (utilization - target)^2`` (and a router balance term) to the training loss.

    Args:
        target: the utilization to reach, in [0, 1]; or a schedule, a callable ``step -> target``.
        weight: weight of the utilization term (beta in adaptive slimming).
        per_source: ``True``: mean over sources of ``(u_k - target)^2``; ``False``: ``(mean_k u_k - target)^2``.
        start_target: with ``anneal_steps``, the target moves linearly from this value to ``target``
            (a float target only; a callable target is its own schedule).
        anneal_steps: steps of that linear anneal (0: constant target).
        temperature: ``(start, end)``, both > 0: the Gumbel temperature of the sources that have one,
            annealed geometrically over ``temperature_steps``; ``None`` leaves them alone.
        temperature_steps: steps of the temperature anneal.
        balance_weight: weight of the sources' ``last_balance`` term (gamma in adaptive slimming).
        attribute: the LightningModule attribute that holds the network (as in
            :class:`~sezoo.callbacks.QuantizationAwareTraining` and :class:`~sezoo.callbacks.CostMeter`);
            ``None`` searches the whole LightningModule.
    """

    def __init__(self, target: float | Schedule, weight: float = 1.0, per_source: bool = True,
                 start_target: float | None = None, anneal_steps: int = 0,
                 temperature: tuple[float, float] | None = None, temperature_steps: int = 0,
                 balance_weight: float = 0.0, attribute: str | None = "model"):
        if callable(target):
            if start_target is not None or anneal_steps:
                raise ValueError("UtilizationLoss: a callable target is its own schedule; "
                                 "start_target and anneal_steps apply to a constant target only")
        else:
            target = float(target)
            _check_fraction("target", target)
        if start_target is not None:
            _check_fraction("start_target", float(start_target))
        for name, value in (("weight", weight), ("balance_weight", balance_weight),
                            ("anneal_steps", anneal_steps), ("temperature_steps", temperature_steps)):
            if value < 0:
                raise ValueError(f"UtilizationLoss: {name}={value} must not be negative")
        if temperature is not None:
            temperature = tuple(float(t) for t in temperature)
            if len(temperature) != 2 or min(temperature) <= 0:
                raise ValueError(f"UtilizationLoss: temperature={temperature} must be (start, end) with both > 0 "
                                 "(a Gumbel-softmax at temperature 0 divides by zero)")
        self.target = target
        self.weight, self.per_source = float(weight), bool(per_source)
        self.start_target = None if callable(target) else float(target if start_target is None else start_target)
        self.anneal_steps = int(anneal_steps)
        self.temperature = temperature
        self.temperature_steps = int(temperature_steps)
        self.balance_weight = float(balance_weight)
        self.attribute = attribute
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._wrapped: tuple[L.LightningModule, Callable] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(attribute=self.attribute)

    # ------------------------------------------------------------------ schedules
    def target_at(self, step: int) -> float:
        if callable(self.target):
            value = float(self.target(step))
            _check_fraction(f"target({step})", value)
            return value
        if self.anneal_steps <= 0 or step >= self.anneal_steps:
            return self.target
        return self.start_target + (self.target - self.start_target) * step / self.anneal_steps

    def temperature_at(self, step: int) -> float | None:
        if self.temperature is None:
            return None
        start, end = self.temperature
        if self.temperature_steps <= 0 or step >= self.temperature_steps:
            return end
        return start * (end / start) ** (step / self.temperature_steps)

    def loss(self, sources: dict[str, torch.nn.Module], target: float) -> torch.Tensor:
        values = torch.stack([m.last_utilization for m in sources.values()])
        if self.per_source:
            term = self.weight * (values - target).pow(2).mean()
        else:
            term = self.weight * (values.mean() - target).pow(2)
        balances = [m.last_balance for m in sources.values() if getattr(m, "last_balance", None) is not None]
        if self.balance_weight and balances:
            term = term + self.balance_weight * torch.stack(balances).mean()
        return term

    def sources(self, pl_module: L.LightningModule) -> dict[str, torch.nn.Module]:
        network = pl_module if self.attribute is None else getattr(pl_module, self.attribute)
        return {name: m for name, m in utilization_sources(network).items() if m.last_utilization is not None}

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage):
        if self.attribute is not None and not hasattr(pl_module, self.attribute):
            raise AttributeError(f"UtilizationLoss(attribute={self.attribute!r}): {type(pl_module).__name__} has no "
                                 f"attribute {self.attribute!r}; name the attribute that holds your network, or pass "
                                 f"attribute=None to search the whole module")
        if stage != "fit":
            return
        original = pl_module.training_step

        def training_step(*args, **kwargs):
            output = original(*args, **kwargs)
            sources = self.sources(pl_module)
            if not sources or output is None:
                return output
            target = self.target_at(pl_module.trainer.global_step)
            term = self.loss(sources, target)
            util = torch.stack([m.last_utilization.detach() for m in sources.values()]).mean()
            pl_module.log_dict({"train/util/mean": util, "train/util/loss": term.detach(),
                                "train/util/target": target}, prog_bar=False)
            pl_module.log("train/util", util, prog_bar=True)
            if isinstance(output, dict):
                return {**output, "loss": output["loss"] + term}
            return output + term

        # An instance attribute shadows the class's method; teardown removes it again, so a module
        # fitted a second time is wrapped by that fit's callback, never by this one.
        self._wrapped = (pl_module, pl_module.__dict__.get("training_step"))
        pl_module.training_step = training_step

    def teardown(self, trainer, pl_module, stage):
        if self._wrapped is None or stage != "fit":
            return
        module, previous = self._wrapped
        if previous is None:
            module.__dict__.pop("training_step", None)
        else:
            module.training_step = previous
        self._wrapped = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        temperature = self.temperature_at(trainer.global_step)
        if temperature is not None:
            for m in self.sources_with_temperature(pl_module):
                m.temperature = temperature

    def sources_with_temperature(self, pl_module):
        network = pl_module if self.attribute is None else getattr(pl_module, self.attribute)
        return [m for m in utilization_sources(network).values() if hasattr(m, "temperature")]

    def _accumulate(self, pl_module):
        for name, m in self.sources(pl_module).items():
            self._sums[name] = self._sums.get(name, 0.0) + float(m.last_utilization)
            self._counts[name] = self._counts.get(name, 0) + 1

    def _log_epoch(self, pl_module, prefix: str):
        means = {name: total / self._counts[name] for name, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        if not means:  # no source reported in this epoch (e.g. a static model): nothing to log
            return
        logged = {f"{prefix}/util/{name}": value for name, value in means.items()}
        logged[f"{prefix}/util/mean"] = sum(means.values()) / len(means)
        pl_module.log_dict(logged, sync_dist=True)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._accumulate(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._accumulate(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._log_epoch(pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._log_epoch(pl_module, "test")

    # ------------------------------------------------------------------ checkpoint
    def settings(self) -> dict:
        target = self.target if not callable(self.target) else getattr(self.target, "__qualname__", repr(self.target))
        return {"target": target, "weight": self.weight, "per_source": self.per_source,
                "start_target": self.start_target, "anneal_steps": self.anneal_steps,
                "temperature": list(self.temperature) if self.temperature else None,
                "temperature_steps": self.temperature_steps, "balance_weight": self.balance_weight}

    def state_dict(self) -> dict:
        return {"settings": self.settings()}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("settings", state)  # checkpoints before sezoo 0.2 stored the settings flat
        now = self.settings()
        changed = {k: (saved[k], now[k]) for k in now if k in saved and _differs(saved[k], now[k])}
        if changed:
            described = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            rank_zero_warn(f"UtilizationLoss: resuming with settings that differ from the checkpoint's ({described}); "
                           f"the new settings apply from here on")


def _differs(old, new) -> bool:
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) != list(new)
    return old != new


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"UtilizationLoss: {name}={value} is not a utilization in [0, 1]")
