"""CostMeter: logs MACs per second, parameters and deployable bytes at validation and test."""
from __future__ import annotations

import lightning as L

from sezoo.metrics.cost import count_params, deployable_bytes, static_macs_per_second


def model_cost(model, sample_rate: int) -> dict[str, float]:
    """Static cost of a model: what a dynamic model reports of what ran is measured by ``sezoo evaluate``."""
    bit_widths = getattr(model, "bit_widths", lambda: None)()
    return {
        "macs_per_second": static_macs_per_second(model, sample_rate),
        "params": count_params(model),
        "model_bytes": deployable_bytes(model, bit_widths).total,
    }


class CostMeter(L.Callback):
    """Works on any LightningModule whose ``model`` attribute is the deployed network."""

    def __init__(self, sample_rate: int = 16000, attribute: str = "model"):
        self.sample_rate, self.attribute = sample_rate, attribute
        self.last: dict[str, float] = {}

    def _log(self, pl_module: L.LightningModule, prefix: str) -> None:
        self.last = model_cost(getattr(pl_module, self.attribute), self.sample_rate)
        pl_module.log_dict({f"{prefix}/cost/{k}": float(v) for k, v in self.last.items()}, sync_dist=True)

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._log(pl_module, "test")
