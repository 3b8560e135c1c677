"""Train the sparsity recipe: ``python recipes/sparsity/train.py [key=value ...]``.

``stage=all`` (default) writes three run folders, each stage initialised from the one before:
``<name>-fp32``, ``<name>-int8``, ``<name>-pruned`` (weight sparsity; ``variant=block`` or
``variant=unit`` for the other structures, ``prune.target=0.95`` for another level). The baseline:
``stage=offline init_from=runs/sparsity/<name>-int8 prune.target=0.9``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.sparsity.module import build_stage  # noqa: E402
from sezoo.recipe import Recipe  # noqa: E402
from sezoo.zoo import Paper  # noqa: E402

RECIPE = Recipe(
    name="sparsity",
    paper=Paper(title="Weight, block or unit? Exploring sparsity tradeoffs for speech enhancement on tiny "
                      "neural accelerators",
                citation="M. Stamenovic, N. L. Westhausen, L.-C. Yang, C. Jensen, A. Pawlicki. Weight, Block or "
                         "Unit? Exploring Sparsity Tradeoffs for Speech Enhancement on Tiny Neural Accelerators. "
                         "NeurIPS 2021 ENLSP workshop. arXiv:2111.02351",
                url="https://arxiv.org/abs/2111.02351"),
    stages={"fp32": None, "int8": "fp32", "offline": "int8", "pruned": "int8"},
    build=build_stage,
)
main = RECIPE.main

if __name__ == "__main__":
    RECIPE.cli()
