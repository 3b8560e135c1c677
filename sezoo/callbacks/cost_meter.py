"""CostMeter: logs MACs per second, parameters and deployable bytes at validation and test.

For a static model the MAC rate is its static count. For a dynamic model (``reports_own_macs``) it
is what actually ran on the validation / test audio: the meter collects the model's own MAC reports
over every batch and divides by the seconds of audio processed.
"""
from __future__ import annotations

import lightning as L

from sezoo.metrics.cost import (close_ledger, count_params, deployable_bytes, model_bit_widths, open_ledger,
                                 static_macs_per_second)


def model_cost(model, sample_rate: int) -> dict[str, float]:
    return {
        "macs_per_second": static_macs_per_second(model, sample_rate),
        "params": count_params(model),
        "model_bytes": deployable_bytes(model, model_bit_widths(model)).total,
    }


class CostMeter(L.Callback):
    """Works on any LightningModule whose ``model`` attribute is the deployed network."""

    def __init__(self, sample_rate: int = 16000, attribute: str = "model"):
        self.sample_rate, self.attribute = sample_rate, attribute
        self.last: dict[str, float] = {}
        self._token = None
        self._executed, self._seconds = 0, 0.0

    def _dynamic(self, pl_module) -> bool:
        return getattr(getattr(pl_module, self.attribute), "reports_own_macs", False)

    def _batch_start(self, pl_module):
        if self._dynamic(pl_module):
            self._ledger, self._token = open_ledger()

    def _batch_end(self, pl_module, batch):
        if self._token is not None:
            close_ledger(self._token)
            self._token = None
            self._executed += sum(self._ledger)
            self._seconds += batch[0].numel() / self.sample_rate

    def _log(self, pl_module: L.LightningModule, prefix: str) -> None:
        self.last = model_cost(getattr(pl_module, self.attribute), self.sample_rate)
        if self._seconds:
            self.last["max_macs_per_second"] = self.last["macs_per_second"]  # every gate open
            self.last["macs_per_second"] = self._executed / self._seconds
        self._executed, self._seconds = 0, 0.0
        pl_module.log_dict({f"{prefix}/cost/{k}": float(v) for k, v in self.last.items()}, sync_dist=True)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._batch_start(pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._batch_start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batch_end(pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batch_end(pl_module, batch)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            self._executed, self._seconds = 0, 0.0
        else:
            self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._log(pl_module, "test")
