"""TinyLSTMs' LightningModule and the four stages' models and callbacks.

fp32: the 2 x 256 LSTM mask estimator trained on SI-SDR. pruned: the same with per-layer trainable
thresholds over unit weight groups and the group penalty; tested and exported as the compact model
without the pruned units. int8: the compact model under the shared QuantizationAwareTraining callback.
skip: the int8 model with Skip-RNN update gates under QAT (continuing the int8 ranges) and the shared
UtilizationLoss callback as the update budget.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from sezoo.callbacks import QuantizationAwareTraining, UtilizationLoss
from sezoo.inference import resolve_model
from sezoo.losses import NegativeSISDR
from sezoo.models import TinyLSTM
from sezoo.nn.quant import apply_quantization, quantization_state
from sezoo.recipe import StageBuild
from sezoo.training import SEModule
from sezoo.weights import load_weights


def load_previous_stage(cfg: DictConfig) -> TinyLSTM:
    """The previous stage's model as it was exported (its architecture may have shrunk: pruned units
    removed), from a run folder or a zoo entry."""
    model = resolve_model(str(cfg.init_from))
    if not isinstance(model, TinyLSTM):
        raise ValueError(f"init_from={cfg.init_from}: a {type(model).__name__}, not a TinyLSTM run")
    return model


def build_model(cfg: DictConfig) -> TinyLSTM:
    if cfg.stage == "fp32":
        return TinyLSTM(**OmegaConf.to_container(cfg.model, resolve=True), sample_rate=cfg.data.sample_rate)
    previous = load_previous_stage(cfg)
    if cfg.stage == "int8":
        return previous
    changes = {"pruned": {"prune": True, "prune_temperature": cfg.prune.temperature}, "skip": {"skip": True}}
    model = TinyLSTM(**{**previous.kwargs, **changes[cfg.stage]})
    load_weights(model, previous.state_dict(), new_keys=("*.pruning.*",) if cfg.stage == "pruned" else ("*.skip.*",))
    apply_quantization(model, quantization_state(previous))  # skip: continue from the int8 ranges
    if cfg.stage == "pruned":
        with torch.no_grad():
            for layer in model.layers:
                layer.pruning.threshold.fill_(cfg.prune.initial_threshold * float(layer.unit_norms().median()))
    return model


class TinyLSTMModule(SEModule):
    def __init__(self, cfg: DictConfig):
        super().__init__(build_model(cfg), NegativeSISDR(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, lr_decay=cfg.optim.lr_decay,
                         dnsmos=cfg.metrics.dnsmos)
        self.stage = cfg.stage
        self.prune_penalty, self.prune_target = cfg.prune.penalty, cfg.prune.target_ops
        self.threshold_lr_scale = cfg.prune.threshold_lr_scale
        self.dense_macs = self.model.macs_per_frame()

    def compute_loss(self, estimate, clean, noisy):
        loss = self.loss_fn(estimate, clean)
        if self.stage == "pruned" and self.training:
            kept_ops = self.model.compact_macs_per_frame() / self.dense_macs
            # Once the compact model is inside the budget the penalty rests, so that training spends
            # the remaining steps on quality rather than on shrinking past the target.
            active = self.prune_target is None or kept_ops > self.prune_target
            penalty = self.model.pruning_penalty()
            self.log_dict({"train/prune/kept_ops": kept_ops, "train/prune/penalty": penalty.detach(),
                           **{f"train/prune/threshold{k}": layer.pruning.threshold.detach()
                              for k, layer in enumerate(self.model.layers)}})
            if active:
                loss = loss + self.prune_penalty * penalty
        return loss

    def param_groups(self):
        # A threshold is one scalar that must travel the scale of the group norms (about 1 to 3), and
        # Adam moves a parameter about lr per step: thresholds get their own, larger step.
        thresholds = [p for n, p in self.model.named_parameters() if n.endswith("pruning.threshold")]
        others = [p for n, p in self.model.named_parameters() if not n.endswith("pruning.threshold")]
        groups = [{"params": others, "lr": self.lr}]
        if thresholds:
            groups.append({"params": thresholds, "lr": self.lr * self.threshold_lr_scale})
        return groups

    def on_validation_epoch_start(self):
        if self.stage == "pruned":
            kept = self.model.kept_units()
            self.log_dict({f"val/prune/units{k}": float(len(u)) for k, u in enumerate(kept)})

    def on_test_start(self):
        if self.stage == "pruned":  # pruned units really go: test and export the compact model
            self.model = self.model.compact().to(self.device)


def build_stage(cfg: DictConfig) -> StageBuild:
    if cfg.trainer.max_epochs is None:  # each stage its own length unless the command line sets one
        cfg.trainer.max_epochs = cfg.epochs[cfg.stage]
    callbacks = []
    if cfg.stage in ("int8", "skip"):
        callbacks.append(QuantizationAwareTraining(**cfg.qat))
    if cfg.stage == "skip":
        callbacks.append(UtilizationLoss(**cfg.utilization))
    return StageBuild(TinyLSTMModule(cfg), callbacks)
