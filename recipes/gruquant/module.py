"""The gruquant speech-enhancement stages: fp32 training, then QAT at a bit plan (uniform or searched)."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sezoo.callbacks import QuantizationAwareTraining
from sezoo.inference import resolve_model
from sezoo.losses import NegativeSISDR
from sezoo.models import GRUMask
from sezoo.recipe import StageBuild
from sezoo.training import SEModule


def read_plan(path: str | Path) -> dict[str, int]:
    """A plan file the search wrote: ``{"plan": {site: bits}, ...}``."""
    path = Path(path)
    try:
        plan = json.loads(path.read_text())["plan"]
    except FileNotFoundError:
        raise FileNotFoundError(f"plan_file={path}: no such file; write one with "
                                f"recipes/gruquant/search.py ... --export-plan") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"plan_file={path}: not a plan file (expected JSON with a 'plan' mapping of site to bits)") from None
    bad = {site: bits for site, bits in plan.items() if not isinstance(bits, int) or not 2 <= bits <= 16}
    if bad:
        raise ValueError(f"plan_file={path}: bit widths must be integers 2..16; got {bad}")
    return plan


def build_model(cfg: DictConfig) -> GRUMask:
    if cfg.stage == "fp32":
        return GRUMask(**OmegaConf.to_container(cfg.model, resolve=True), sample_rate=cfg.data.sample_rate)
    model = resolve_model(str(cfg.init_from))
    if not isinstance(model, GRUMask):
        raise ValueError(f"init_from={cfg.init_from}: a {type(model).__name__}, not a GRUMask (gruquant fp32) run")
    return model


def build_stage(cfg: DictConfig) -> StageBuild:
    if cfg.trainer.max_epochs is None:
        cfg.trainer.max_epochs = cfg.epochs[cfg.stage]
    module = SEModule(build_model(cfg), NegativeSISDR(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                      lr_decay=cfg.optim.lr_decay, dnsmos=cfg.metrics.dnsmos)
    callbacks = []
    if cfg.stage == "qat":
        qat = OmegaConf.to_container(cfg.qat, resolve=True)
        if cfg.plan_file:
            qat["plan"] = read_plan(cfg.plan_file)
        callbacks.append(QuantizationAwareTraining(**qat))
    return StageBuild(module, callbacks)
