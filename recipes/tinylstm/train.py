"""Train TinyLSTMs: ``python recipes/tinylstm/train.py [key=value ...]``.

``stage=all`` (default) writes four run folders, each stage initialised from the one before:
``<name>-fp32``, ``<name>-pruned``, ``<name>-pruned-int8``, ``<name>-pruned-int8-skip``. A single stage:
``stage=int8 init_from=runs/tinylstm/<name>-pruned``. Overrides are OmegaConf dotlists checked
against config.yaml, e.g. ``prune.target_ops=0.5``, ``skip.target=0.3``, ``data=vbdemand``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from omegaconf import DictConfig  # noqa: E402

from recipes.tinylstm.module import ARCH, STAGES, TinyLSTMModule, callbacks  # noqa: E402
from sezoo.config import ConfigError, load_config  # noqa: E402
from sezoo.data.datamodule import DATA_PRESETS, SEDataModule  # noqa: E402
from sezoo.training import fit_and_test, recipe_command, run_folder  # noqa: E402

HERE = Path(__file__).resolve().parent
SUFFIX = {"fp32": "fp32", "pruned": "pruned", "int8": "pruned-int8", "skip": "pruned-int8-skip"}


def run_stage(cfg: DictConfig, command: str) -> dict:
    if cfg.trainer.max_epochs is None:
        cfg.trainer.max_epochs = cfg.epochs[cfg.stage]
    module = TinyLSTMModule(cfg)
    datamodule = SEDataModule(cfg.data, min_samples=cfg.model.n_fft)
    return fit_and_test(cfg, module, datamodule, "tinylstm", ARCH, module.model.kwargs, callbacks(cfg),
                        command=command)


def main(argv: list[str]) -> dict:
    cfg = load_config(HERE / "config.yaml", argv, presets={"data": DATA_PRESETS})
    if cfg.stage not in (*STAGES, "all"):
        raise ConfigError(f"stage={cfg.stage!r}: choose from {', '.join(STAGES)}, all")
    command = recipe_command("tinylstm", argv)
    if cfg.stage != "all":
        return run_stage(cfg, command)
    base = cfg.run.name or time.strftime("%Y%m%d-%H%M%S")
    previous, results = cfg.init_from, {}
    for stage in STAGES:
        staged = cfg.copy()
        staged.stage, staged.run.name, staged.init_from = stage, f"{base}-{SUFFIX[stage]}", previous
        results = run_stage(staged, command)
        previous = str(run_folder(staged, "tinylstm"))
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
