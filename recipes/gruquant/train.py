"""Train the gruquant speech-enhancement GRU: ``python recipes/gruquant/train.py [key=value ...]``.

``stage=all`` (default) writes ``<name>-fp32`` and ``<name>-qat`` (uniform 8-bit unless ``qat.plan``
says otherwise). A plan the search chose: ``stage=qat init_from=runs/gruquant/<name>-fp32
plan_file=runs/gruquant/search/se/plan.json run.name=<name>-mixed``. The search over bit plans is
``recipes/gruquant/search.py``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.gruquant.module import build_stage  # noqa: E402
from sezoo.recipe import Recipe  # noqa: E402
from sezoo.zoo import Paper  # noqa: E402

PAPER = Paper(title="Mixed-precision GRU quantization searched by NSGA-II",
              citation="D. Miccini et al. A Genetic Algorithm-Based Approach for Automated Optimization of "
                       "Quantized Recurrent Neural Networks (mixed-precision GRU). tinyML Research Symposium 2024. "
                       "arXiv:2402.12263",
              url="https://arxiv.org/abs/2402.12263")

RECIPE = Recipe(name="gruquant", paper=PAPER, stages={"fp32": None, "qat": "fp32"}, build=build_stage)
main = RECIPE.main

if __name__ == "__main__":
    RECIPE.cli()
