"""DynCP's LightningModule: Conv-FSENet trained on the power-compressed spectral MSE."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from sezoo.losses import CompressedSpectralMSE
from sezoo.models import create_model
from sezoo.training import SEModule

ARCH = "convfsenet"


def model_kwargs(cfg: DictConfig) -> dict:
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs["dilations"] = tuple(kwargs["dilations"])
    return {**kwargs, "sample_rate": cfg.data.sample_rate}


class DynCPModule(SEModule):
    def __init__(self, cfg: DictConfig):
        model = create_model(ARCH, **model_kwargs(cfg))
        loss = CompressedSpectralMSE(cfg.model.n_fft, cfg.model.hop, cfg.loss.exponent, cfg.loss.complex_weight)
        super().__init__(model, loss, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
