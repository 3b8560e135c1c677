"""Train DynCP: ``python recipes/dyncp/train.py [key=value ...]``.

Overrides are OmegaConf dotlists checked against config.yaml, e.g. ``trainer.max_epochs=3``,
``variant=keep50``, ``data=vbdemand``, ``data=folder data.noisy_dir=... data.clean_dir=...``.
``stage=all`` (default) writes two run folders: ``<name>-dense`` and ``<name>-keep<NN>``; a single
stage: ``stage=gated init_from=runs/dyncp/<name>-dense``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.dyncp.module import build_stage  # noqa: E402
from sezoo.recipe import Recipe  # noqa: E402
from sezoo.zoo import Paper  # noqa: E402

RECIPE = Recipe(
    name="dyncp",
    paper=Paper(title="Dynamic channel pruning of Conv-FSENet",
                citation="R. Miccini, C. Laroche, T. Piechowiak, L. Pezzarossa. Scalable Speech Enhancement with "
                         "Dynamic Channel Pruning. ICASSP 2025. arXiv:2412.17121",
                url="https://arxiv.org/abs/2412.17121"),
    stages={"dense": None, "gated": "dense"},
    build=build_stage,
    run_names=lambda stage, cfg: stage if stage == "dense" else f"keep{round(cfg.utilization.target * 100)}",
)
main = RECIPE.main

if __name__ == "__main__":
    RECIPE.cli()
