"""Train Dynamic nsNet2: ``python recipes/earlyexit/train.py [key=value ...]``.

``stage=all`` (default) writes ``<name>-joint`` (the exits trained jointly) and ``<name>-policy`` (the
adaptive exit policy on it). The other stages, one at a time::

    python recipes/earlyexit/train.py stage=baseline run.name=mini-baseline            # nsNet2, no exits
    python recipes/earlyexit/train.py stage=layer1 run.name=mini-layer1               # layer-wise ...
    python recipes/earlyexit/train.py stage=layer2 init_from=runs/earlyexit/mini-layer1 run.name=mini-layer2
    python recipes/earlyexit/train.py stage=layer3 init_from=runs/earlyexit/mini-layer2 run.name=mini-layer3
    python recipes/earlyexit/train.py stage=policy init_from=runs/earlyexit/mini-layer3 run.name=mini-layer3-policy

``model.topology=split1`` (or ``split2``) gives the exits their own copies of the decoder layers.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.earlyexit.module import build_stage  # noqa: E402
from sezoo.recipe import Recipe  # noqa: E402
from sezoo.zoo import Paper  # noqa: E402

PAPER = Paper(title="Early-exit nsNet2",
              citation="R. Miccini et al. Dynamic nsNet2: Efficient Deep Noise Suppression with Early Exiting. "
                       "IEEE MLSP 2023. arXiv:2308.16678",
              url="https://arxiv.org/abs/2308.16678")

RECIPE = Recipe(name="earlyexit", paper=PAPER,
                stages={"baseline": None, "layer1": None, "layer2": "layer1", "layer3": "layer2", "joint": None,
                        "policy": "joint"},
                build=build_stage)
main = RECIPE.main

if __name__ == "__main__":
    RECIPE.cli()
