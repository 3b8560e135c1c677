"""The adaptive-slimming LightningModule: a slimmable DEMUCS trained at every utilization factor
(static stage), then with its Gumbel-softmax router (router pre-training or joint training)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from sezoo.callbacks import UtilizationLoss
from sezoo.losses import DemucsLoss
from sezoo.metrics.quality import pesq_wb
from sezoo.models import SlimmableDemucs
from sezoo.recipe import StageBuild
from sezoo.training import SEModule
from sezoo.weights import load_weights

RULES = ("all", "sandwich", "random")


def build_model(cfg: DictConfig) -> SlimmableDemucs:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    model = SlimmableDemucs(**kwargs, router=cfg.stage != "static", sample_rate=cfg.data.sample_rate)
    if cfg.stage != "static":  # a static run's backbone (the router is new) or a router run (nothing is)
        load_weights(model, cfg.init_from, new_keys=("router.*",))
    return model


class DynSlimModule(SEModule):
    def __init__(self, cfg: DictConfig):
        if cfg.slimmable.rule not in RULES:
            raise ValueError(f"slimmable.rule={cfg.slimmable.rule!r}: choose from {', '.join(RULES)}")
        super().__init__(build_model(cfg), DemucsLoss(cfg.loss.stft_weight), lr=cfg.optim.lr, lr_decay=cfg.optim.lr_decay, dnsmos=cfg.metrics.dnsmos)
        self.stage, self.rule = cfg.stage, cfg.slimmable.rule
        self.factors = sorted(self.model.utilization_factors)

    def training_factors(self) -> list[float]:
        """The UFs one static-stage step trains, by the configured rule (torch's seeded RNG)."""
        pick = lambda options: options[int(torch.randint(len(options), ()))]  # noqa: E731
        if self.rule == "all":
            return self.factors
        if self.rule == "random":
            return [pick(self.factors)]
        middle = self.factors[1:-1]
        return [self.factors[-1], self.factors[0], *([pick(middle)] if middle else [])]

    def training_step(self, batch, batch_idx):
        noisy, clean, _ = batch
        if self.stage == "static":
            loss = torch.stack([self.loss_fn(self.model(noisy, uf=uf), clean) for uf in self.training_factors()]).mean()
        else:
            loss = self.loss_fn(self.model(noisy), clean)
        self.log("train/loss", loss, prog_bar=True, batch_size=noisy.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        """Static stage: every UF is validated, ``val/loss`` (the checkpoint's monitor) is their mean,
        and ``val/<metric>_uf<UF>`` compare the slimming rules; ``val/<metric>`` stays the full width."""
        if self.stage != "static":
            return super().validation_step(batch, batch_idx)
        noisy, clean, _ = batch
        losses = []
        for uf in self.factors:
            estimate = self.model(noisy, uf=uf)
            losses.append(self.compute_loss(estimate, clean, noisy))
            if uf == self.factors[-1]:
                self._score("val", "output", estimate, clean)
            estimate, reference = estimate[0].detach().cpu(), clean[0].cpu()
            self.log(f"val/pesq_wb_uf{uf:g}", pesq_wb(estimate, reference, self.sample_rate), batch_size=1)
            self.log(f"val/si_sdr_uf{uf:g}", scale_invariant_signal_distortion_ratio(estimate, reference), batch_size=1)
        self.log("val/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=1)

    def param_groups(self):
        # Router pre-training: the backbone stays as the static stage left it.
        params = self.model.router.parameters() if self.stage == "router" else self.model.parameters()
        return [{"params": list(params), "lr": self.lr}]


def build_stage(cfg: DictConfig) -> StageBuild:
    if cfg.stage == "static":  # every UF tested and exported: one weight file serves them all
        points = {f"uf{uf:g}": {"uf": uf} for uf in cfg.model.utilization_factors}
        return StageBuild(DynSlimModule(cfg), [], points)
    return StageBuild(DynSlimModule(cfg), [UtilizationLoss(**cfg.utilization)])
