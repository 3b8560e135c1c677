"""UtilizationLoss: pull the capacity a dynamic model uses toward a target.

Works on any LightningModule whose network contains *utilization sources* (modules with a
``last_utilization`` tensor, see :mod:`sezoo.nn.gates`): DynCP channel gates, a slimming router, a
skip-RNN update gate, an early-exit policy. The loss is ``weight * mean_k (u_k - target)^2`` over the
sources (``per_source=True``) or ``weight * (mean_k u_k - target)^2`` (global). The target can be
annealed linearly from ``start_target`` over ``anneal_steps``; sources with a ``temperature`` attribute
(Gumbel routers) get ``temperature`` annealed geometrically from its first to its second value over
``temperature_steps``. Sources that also expose ``last_balance`` (a router's load-balancing term) add
``balance_weight * mean(last_balance)``. Per-source and mean utilization are logged for train, val and test.

Lightning callbacks cannot add to the loss, so the callback wraps the module's ``training_step``
once, at setup, and adds its term to what the step returns. Its schedule is saved in the checkpoint
and restored on resume.
"""
from __future__ import annotations

import functools

import lightning as L
import torch


def utilization_sources(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules() if hasattr(m, "last_utilization")}


class UtilizationLoss(L.Callback):
    def __init__(self, target: float, weight: float = 1.0, per_source: bool = True,
                 start_target: float | None = None, anneal_steps: int = 0,
                 temperature: tuple[float, float] | None = None, temperature_steps: int = 0,
                 balance_weight: float = 0.0):
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"utilization target {target} is not in [0, 1]")
        self.target, self.weight, self.per_source = float(target), float(weight), per_source
        self.start_target = float(start_target) if start_target is not None else float(target)
        self.anneal_steps = int(anneal_steps)
        self.temperature = tuple(temperature) if temperature else None
        self.temperature_steps = int(temperature_steps)
        self.balance_weight = float(balance_weight)
        self._sums: dict[str, float] = {}
        self._count = 0

    # ------------------------------------------------------------------ schedules
    def target_at(self, step: int) -> float:
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

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage):
        if getattr(pl_module.training_step, "_utilization_wrapped", False):
            return
        original = pl_module.training_step

        @functools.wraps(original)
        def training_step(*args, **kwargs):
            output = original(*args, **kwargs)
            sources = utilization_sources(pl_module)
            if not sources or output is None:
                return output
            step = trainer.global_step
            target = self.target_at(step)
            term = self.loss(sources, target)
            util = torch.stack([m.last_utilization.detach() for m in sources.values()]).mean()
            pl_module.log_dict({"train/util/mean": util, "train/util/loss": term.detach(),
                                "train/util/target": target}, prog_bar=False)
            pl_module.log("train/util", util, prog_bar=True)
            if isinstance(output, dict):
                return {**output, "loss": output["loss"] + term}
            return output + term

        training_step._utilization_wrapped = True
        pl_module.training_step = training_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        temperature = self.temperature_at(trainer.global_step)
        if temperature is not None:
            for m in utilization_sources(pl_module).values():
                if hasattr(m, "temperature"):
                    m.temperature = temperature

    def _accumulate(self, pl_module):
        for name, m in utilization_sources(pl_module).items():
            if m.last_utilization is not None:
                self._sums[name] = self._sums.get(name, 0.0) + float(m.last_utilization)
        self._count += 1

    def _log_epoch(self, pl_module, prefix: str):
        if not self._count:
            return
        means = {name: total / self._count for name, total in self._sums.items()}
        logged = {f"{prefix}/util/{name}": value for name, value in means.items()}
        logged[f"{prefix}/util/mean"] = sum(means.values()) / len(means)
        pl_module.log_dict(logged, sync_dist=True)
        self._sums, self._count = {}, 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._accumulate(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._accumulate(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._log_epoch(pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._log_epoch(pl_module, "test")

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {"target": self.target, "weight": self.weight, "per_source": self.per_source,
                "start_target": self.start_target, "anneal_steps": self.anneal_steps,
                "temperature": self.temperature, "temperature_steps": self.temperature_steps,
                "balance_weight": self.balance_weight}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, tuple(value) if key == "temperature" and value else value)
