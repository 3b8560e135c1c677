"""Train adaptive slimming of DEMUCS: ``python recipes/dynslim/train.py [key=value ...]``.

Stages (``stage=``): ``static`` (the slimmable backbone; writes ``<run>/uf0.125`` ... ``<run>/uf1``,
one tested and exported operating point each), ``router`` (router pre-training on a frozen backbone,
``init_from=<static run>``), ``joint`` (router and backbone together, ``init_from=<static or router
run>``). Overrides are OmegaConf dotlists checked against config.yaml, e.g. ``router.target=0.1``,
``slimmable.rule=all``, ``data=vbdemand``; ``variant=joint|pretrain|finetune`` (``variants/``) sets the
stage and its settings: ``variant=pretrain`` then ``variant=finetune init_from=<pretrain run>`` is router
pre-training followed by joint fine-tuning.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.dynslim.module import ARCH, STAGES, DynSlimModule, callbacks, operating_points  # noqa: E402
from sezoo.config import ConfigError, load_config, load_presets  # noqa: E402
from sezoo.data.datamodule import DATA_PRESETS, SEDataModule  # noqa: E402
from sezoo.training import fit_and_test, recipe_command  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> dict:
    cfg = load_config(HERE / "config.yaml", argv,
                      presets={"data": DATA_PRESETS, "variant": load_presets(HERE / "variants")})
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage!r}: choose from {', '.join(STAGES)}")
    module = DynSlimModule(cfg)
    datamodule = SEDataModule(cfg.data, min_samples=module.model.valid_length(1))
    return fit_and_test(cfg, module, datamodule, "dynslim", ARCH, module.model.kwargs, callbacks(cfg),
                        command=recipe_command("dynslim", argv), operating_points=operating_points(cfg))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
