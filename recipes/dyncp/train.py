"""Train DynCP: ``python recipes/dyncp/train.py [key=value ...]``.

Overrides are OmegaConf dotlists checked against config.yaml, e.g. ``trainer.max_epochs=3``,
``variant=keep50``, ``data=vbdemand``, ``data=folder data.noisy_dir=... data.clean_dir=...``.
``stage=all`` (default) writes two run folders: ``<name>-dense`` and ``<name>-keep<NN>``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from omegaconf import DictConfig  # noqa: E402

from recipes.dyncp.module import ARCH, DynCPModule, callbacks, model_kwargs  # noqa: E402
from sezoo.config import ConfigError, load_config, load_presets  # noqa: E402
from sezoo.data.datamodule import DATA_PRESETS, SEDataModule  # noqa: E402
from sezoo.training import fit_and_test, recipe_command, run_folder  # noqa: E402

HERE = Path(__file__).resolve().parent
STAGES = ("dense", "gated", "all")


def run_stage(cfg: DictConfig, command: str) -> dict:
    if cfg.stage == "gated" and not cfg.init_from:
        raise ConfigError("stage=gated needs init_from=<dense run folder> (or use stage=all)")
    datamodule = SEDataModule(cfg.data, min_samples=cfg.model.n_fft)
    return fit_and_test(cfg, DynCPModule(cfg), datamodule, "dyncp", ARCH, model_kwargs(cfg), callbacks(cfg),
                        command=command)


def main(argv: list[str]) -> dict:
    cfg = load_config(HERE / "config.yaml", argv,
                      presets={"data": DATA_PRESETS, "variant": load_presets(HERE / "variants")})
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage!r}: choose from {', '.join(STAGES)}")
    command = recipe_command("dyncp", argv)
    if cfg.stage != "all":
        return run_stage(cfg, command)
    base = cfg.run.name or time.strftime("%Y%m%d-%H%M%S")
    dense = cfg.copy()
    dense.stage, dense.run.name = "dense", f"{base}-dense"
    run_stage(dense, command)
    gated = cfg.copy()
    gated.stage, gated.run.name = "gated", f"{base}-keep{round(cfg.model.keep * 100)}"
    gated.init_from = str(run_folder(dense, "dyncp"))
    return run_stage(gated, command)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
