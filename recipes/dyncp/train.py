"""Train DynCP's Conv-FSENet: ``python recipes/dyncp/train.py [key=value ...]``.

Overrides are OmegaConf dotlists checked against config.yaml, e.g. ``trainer.max_epochs=3``,
``data=vbdemand``, ``data=folder data.noisy_dir=... data.clean_dir=...``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.dyncp.module import ARCH, DynCPModule, model_kwargs  # noqa: E402

from sezoo.config import ConfigError, load_config  # noqa: E402
from sezoo.data.datamodule import DATA_PRESETS, SEDataModule  # noqa: E402
from sezoo.training import fit_and_test  # noqa: E402

STAGES = ("dense",)


def main(argv: list[str]) -> dict:
    cfg = load_config(Path(__file__).with_name("config.yaml"), argv, presets={"data": DATA_PRESETS})
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage!r}: choose from {', '.join(STAGES)}")
    module = DynCPModule(cfg)
    datamodule = SEDataModule(cfg.data, min_samples=cfg.model.n_fft)
    return fit_and_test(cfg, module, datamodule, "dyncp", ARCH, model_kwargs(cfg))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
