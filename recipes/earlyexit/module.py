"""Dynamic nsNet2's LightningModule and its stages.

- ``baseline``: the original nsNet2 (``topology=none``), trained on its one output.
- ``layer1`` -> ``layer2`` -> ``layer3``: layer-wise training. Stage k trains what exit k adds to the
  model (exit 1: the input FC, GRU 1 and exit 1's branch; exit 2: GRU 2 and its branch; exit 3: the
  decoder) on exit k's loss, with everything before it frozen.
- ``joint``: every exit at once on ``sum_k w_k L_k`` (``joint.weights``); from scratch, or with
  ``init_from`` fine-tuning a trained exit model (a layer-wise run, or a joint run with other weights).
- ``policy``: the adaptive :class:`~sezoo.models.nsnet2.ExitPolicy` on a trained exit model, the
  backbone frozen: the enhanced output of the frames' chosen exits, plus the shared
  :class:`~sezoo.callbacks.UtilizationLoss` pulling the executed MACs to ``utilization.target``.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from sezoo.callbacks import UtilizationLoss
from sezoo.inference import resolve_model
from sezoo.losses import CompressedSpectralMSE
from sezoo.models import NsNet2
from sezoo.recipe import StageBuild
from sezoo.training import SEModule

LAYER_STAGES = {"layer1": 1, "layer2": 2, "layer3": 3}
# What each exit adds to the model: layer-wise stage k trains these parameters, the rest frozen.
ADDED_BY_EXIT = {1: ("encoder.", "gru1.", "exits.0."), 2: ("gru2.", "exits.1."), 3: ("decoder.",)}


def build_model(cfg: DictConfig) -> NsNet2:
    kwargs = {**OmegaConf.to_container(cfg.model, resolve=True), "sample_rate": cfg.data.sample_rate}
    if cfg.stage == "baseline":
        return NsNet2(**{**kwargs, "topology": "none"})
    if cfg.stage == "layer1" or (cfg.stage == "joint" and not cfg.get("init_from")):
        if kwargs["topology"] == "none":
            raise ValueError(f"stage={cfg.stage} trains exits: model.topology=none has none (plain, split1 or split2)")
        return NsNet2(**kwargs)
    # layer2, layer3, policy, and joint fine-tuning a trained exit model: the run's model, its own topology
    model = resolve_model(str(cfg.init_from))
    if not isinstance(model, NsNet2) or model.topology == "none":
        raise ValueError(f"init_from={cfg.init_from}: stage={cfg.stage} needs an nsNet2 with exits (a joint or layer "
                         f"stage run), got {type(model).__name__}{' without exits' if isinstance(model, NsNet2) else ''}")
    return model.train()  # an exported model loads in eval mode, and Lightning keeps modules' modes


def trainable(model: NsNet2, stage: str) -> None:
    """Freeze what the stage does not train."""
    if stage in LAYER_STAGES:
        prefixes = ADDED_BY_EXIT[LAYER_STAGES[stage]]
    elif stage == "policy":
        prefixes = ("policy.",)
    else:
        prefixes = ("",)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))


class EarlyExitModule(SEModule):
    def __init__(self, cfg: DictConfig):
        model = build_model(cfg)
        loss = CompressedSpectralMSE(exponent=cfg.loss.exponent, complex_weight=cfg.loss.complex_weight,
                                     sisdr_weight=cfg.loss.sisdr_weight)
        super().__init__(model, loss, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, lr_decay=cfg.optim.lr_decay,
                         dnsmos=cfg.metrics.dnsmos)
        self.stage = cfg.stage
        self.upto = LAYER_STAGES.get(cfg.stage)
        if cfg.stage == "joint":
            self.weights = [float(w) for w in cfg.joint.weights]
            if len(self.weights) != 3 or min(self.weights) < 0 or not sum(self.weights):
                raise ValueError(f"joint.weights={list(cfg.joint.weights)}: three weights >= 0 (exits 1, 2, 3), not all 0")
        elif self.upto:
            self.weights = [0.0] * (self.upto - 1) + [1.0]  # layer-wise: the new exit's loss alone
        else:
            self.weights = [1.0]  # baseline: its one output
        if cfg.stage == "policy":
            model.set_operating_point(policy="adaptive", threshold=cfg.policy.threshold)
        elif self.upto:
            model.set_operating_point(exit=self.upto)  # validation scores the exit being trained
        else:
            model.set_operating_point(exit=model.n_exits)
        trainable(model, cfg.stage)

    def exit_losses(self, noisy: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The weighted loss and each exit's loss, every exit computed on every frame."""
        spec, masks = self.model.exit_masks(noisy, self.upto)
        losses = [self.loss_fn(self.model.apply_mask(spec, mask, noisy.shape[-1]), clean) for mask in masks]
        return sum(w * loss for w, loss in zip(self.weights, losses)), losses

    def _log_exits(self, split: str, losses: list[torch.Tensor], batch_size: int) -> None:
        if len(losses) > 1:
            self.log_dict({f"{split}/loss/exit{k}": loss.detach() for k, loss in enumerate(losses, 1)}, batch_size=batch_size)

    def training_step(self, batch, batch_idx):
        noisy, clean, _ = batch
        if self.stage == "policy":  # the relaxed decisions' output; UtilizationLoss adds the cost term
            loss = self.loss_fn(self(noisy), clean)
        else:
            loss, losses = self.exit_losses(noisy, clean)
            self._log_exits("train", losses, noisy.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=noisy.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        noisy, clean, _ = batch
        estimate = self(noisy)  # the operating point: the exit being trained, or the policy
        if self.stage == "policy":
            loss = self.loss_fn(estimate, clean)
        else:
            loss, losses = self.exit_losses(noisy, clean)
            self._log_exits("val", losses, 1)
        self.log("val/loss", loss, prog_bar=True, batch_size=1, sync_dist=True)
        self._score("val", "output", estimate, clean)


def operating_points(cfg: DictConfig, model: NsNet2) -> dict[str, dict]:
    """What the stage tests and exports besides its default point (each a sub-folder of the run). The policy
    stage's backbone is frozen, so its file also serves the fixed exits and budgets: one file per topology
    holds every operating point, and the adaptive points are measured beside the fixed ones in one run."""
    if model.topology == "none" or cfg.stage in ("layer1", "layer2"):
        return {"exit1": {"exit": 1}} if cfg.stage == "layer2" else {}
    points = {"exit1": {"exit": 1}, "exit2": {"exit": 2}}
    full, lowest = model.exit_macs_per_second(3), model.exit_macs_per_second(1)
    for share in cfg.policy.budgets:
        if share * full >= lowest:  # a budget below exit 1's cost cannot be met
            points[f"budget{share:.2f}"] = {"policy": "budget", "macs_per_second": float(share * full)}
    if cfg.stage == "policy":
        points["exit3"] = {"exit": 3}  # the default point here is the adaptive policy
        points.update({f"adaptive-t{t:g}": {"policy": "adaptive", "threshold": float(t)}
                       for t in cfg.policy.thresholds})
    return points


def build_stage(cfg: DictConfig) -> StageBuild:
    if cfg.trainer.max_epochs is None:  # each stage its own length unless the command line sets one
        cfg.trainer.max_epochs = cfg.epochs[cfg.stage]
    module = EarlyExitModule(cfg)
    callbacks = []
    if cfg.stage == "policy":
        callbacks.append(UtilizationLoss(**OmegaConf.to_container(cfg.utilization, resolve=True)))
    # The policy stage trades quality for MACs: its best validation loss is its most expensive checkpoint,
    # so the last one (the budget reached) is tested and exported.
    return StageBuild(module, callbacks, operating_points(cfg, module.model),
                      checkpoint="last" if cfg.stage == "policy" else "best")
