"""DynCP's LightningModule: Conv-FSENet (dense, or gated per frame and block) trained on the
power-compressed spectral MSE; the gated stage starts from the dense run and adds the shared
UtilizationLoss callback (``utilization:`` in config.yaml, spelled as its arguments)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from sezoo.callbacks import UtilizationLoss
from sezoo.losses import CompressedSpectralMSE
from sezoo.models import ConvFSENet
from sezoo.recipe import StageBuild
from sezoo.training import SEModule
from sezoo.weights import load_weights


def build_model(cfg: DictConfig) -> ConvFSENet:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    if cfg.stage != "gated":
        kwargs["gate_hidden"] = 0  # the dense backbone has no gate nets
    model = ConvFSENet(**kwargs, sample_rate=cfg.data.sample_rate)
    if cfg.stage == "gated":  # the dense run's weights; only the gate nets are new
        load_weights(model, cfg.init_from, new_keys=("*.gate.*",))
    return model


class DynCPModule(SEModule):
    def __init__(self, cfg: DictConfig):
        loss = CompressedSpectralMSE(cfg.model.n_fft, cfg.model.hop, cfg.loss.exponent, cfg.loss.complex_weight,
                                    cfg.loss.sisdr_weight)
        super().__init__(build_model(cfg), loss, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, lr_decay=cfg.optim.lr_decay,
                         dnsmos=cfg.metrics.dnsmos)
        self.gate_lr_scale = cfg.optim.gate_lr_scale

    def param_groups(self):
        # Each gate sees 1/N of the utilization gradient (N gates per block and frame) and Adam moves
        # a parameter about lr per step, so gates train on a faster clock than the backbone.
        gates = [p for n, p in self.model.named_parameters() if ".gate." in n]
        backbone = [p for n, p in self.model.named_parameters() if ".gate." not in n]
        groups = [{"params": backbone, "lr": self.lr}]
        if gates:
            groups.append({"params": gates, "lr": self.lr * self.gate_lr_scale})
        return groups


def build_stage(cfg: DictConfig) -> StageBuild:
    callbacks = [UtilizationLoss(**cfg.utilization)] if cfg.stage == "gated" else []
    return StageBuild(DynCPModule(cfg), callbacks)
