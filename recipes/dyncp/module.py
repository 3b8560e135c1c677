"""DynCP's LightningModule: Conv-FSENet (dense, or gated per frame and block) trained on the
power-compressed spectral MSE; the gated stage adds the shared UtilizationLoss callback."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from sezoo.callbacks import UtilizationLoss
from sezoo.export import WEIGHTS
from sezoo.losses import CompressedSpectralMSE
from sezoo.models import create_model
from sezoo.training import SEModule

ARCH = "convfsenet"


def model_kwargs(cfg: DictConfig) -> dict:
    """Architecture kwargs for the stage: the training-only `keep` is not one of them."""
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs.pop("keep")
    kwargs["dilations"] = tuple(kwargs["dilations"])
    if cfg.stage != "gated":
        kwargs["gate_hidden"] = 0
    return {**kwargs, "sample_rate": cfg.data.sample_rate}


def load_backbone(model, run_folder: str | Path) -> None:
    """Start the gated model from the dense run's weights; only the gate nets may be new."""
    weights = Path(run_folder) / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"init_from={run_folder}: no {WEIGHTS} there. Point it at a finished dense run "
                                f"folder, or run stage=all.")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    not_gates = [k for k in missing if ".gate." not in k]
    if not_gates or unexpected:
        raise ValueError(f"{weights} does not fit this Conv-FSENet (model.* must match the dense run): "
                         f"missing {not_gates[:4]}, unexpected {unexpected[:4]}")


class DynCPModule(SEModule):
    def __init__(self, cfg: DictConfig):
        model = create_model(ARCH, **model_kwargs(cfg))
        if cfg.stage == "gated":
            load_backbone(model, cfg.init_from)
        loss = CompressedSpectralMSE(cfg.model.n_fft, cfg.model.hop, cfg.loss.exponent, cfg.loss.complex_weight)
        super().__init__(model, loss, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, dnsmos=cfg.metrics.dnsmos)
        self.gate_lr_scale = cfg.optim.gate_lr_scale

    def configure_optimizers(self):
        # Each gate sees 1/N of the utilization gradient (N gates per block and frame) and Adam moves
        # a parameter about lr per step, so gates train on a faster clock than the backbone.
        gates = [p for n, p in self.model.named_parameters() if ".gate." in n]
        backbone = [p for n, p in self.model.named_parameters() if ".gate." not in n]
        groups = [{"params": backbone, "lr": self.lr}]
        if gates:
            groups.append({"params": gates, "lr": self.lr * self.gate_lr_scale})
        return torch.optim.Adam(groups, weight_decay=self.weight_decay)


def callbacks(cfg: DictConfig) -> list:
    if cfg.stage != "gated":
        return []
    u = cfg.utilization
    temperature = tuple(u.temperature) if cfg.model.gate_estimator == "gumbel" else None
    return [UtilizationLoss(target=cfg.model.keep, weight=u.weight, per_source=u.per_block,
                            start_target=u.start, anneal_steps=u.anneal_steps,
                            temperature=temperature, temperature_steps=u.temperature_steps)]
