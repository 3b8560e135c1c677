"""Train adaptive slimming of DEMUCS: ``python recipes/dynslim/train.py [key=value ...]``.

Stages (``stage=``): ``static`` (the slimmable backbone; writes ``<run>/uf0.125`` ... ``<run>/uf1``,
one tested and exported operating point each), ``router`` (router pre-training on a frozen backbone,
``init_from=<static run>``), ``joint`` (router and backbone together, ``init_from=<static or router
run>``). ``stage=all`` runs static then joint (the paper's joint training). Overrides are OmegaConf
dotlists checked against config.yaml, e.g. ``utilization.target=0.1``, ``slimmable.rule=all``,
``data=vbdemand``; ``variant=joint|pretrain|finetune`` (``variants/``) sets the stage and its settings:
``variant=pretrain`` then ``variant=finetune init_from=<pretrain run>`` is router pre-training followed
by joint fine-tuning.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.dynslim.module import build_stage  # noqa: E402
from sezoo.recipe import Recipe  # noqa: E402
from sezoo.zoo import Paper  # noqa: E402

RECIPE = Recipe(
    name="dynslim",
    paper=Paper(title="Adaptive slimming of DEMUCS with a Gumbel-softmax router",
                citation="R. Miccini, M. Kim, C. Laroche, L. Pezzarossa, P. Smaragdis. Adaptive Slimming for Scalable "
                         "and Efficient Speech Enhancement. WASPAA 2025. arXiv:2507.04879",
                url="https://arxiv.org/abs/2507.04879"),
    # joint starts from a static run (joint training) or a router run (joint fine-tuning); stage=all
    # follows the declared chain, static -> joint.
    stages={"static": None, "router": "static", "joint": "static"},
    build=build_stage,
)
main = RECIPE.main

if __name__ == "__main__":
    RECIPE.cli()
