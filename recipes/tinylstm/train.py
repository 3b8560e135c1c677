"""Train TinyLSTMs: ``python recipes/tinylstm/train.py [key=value ...]``.

``stage=all`` (default) writes four run folders, each stage initialised from the one before:
``<name>-fp32``, ``<name>-pruned``, ``<name>-pruned-int8``, ``<name>-pruned-int8-skip``. A single stage:
``stage=int8 init_from=runs/tinylstm/<name>-pruned``. Overrides are OmegaConf dotlists checked
against config.yaml, e.g. ``prune.target_ops=0.5``, ``utilization.target=0.3``, ``data=vbdemand``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

from recipes.tinylstm.module import build_stage  # noqa: E402
from sezoo.recipe import Recipe  # noqa: E402
from sezoo.zoo import Paper  # noqa: E402

RECIPE = Recipe(
    name="tinylstm",
    paper=Paper(title="Pruned, int8-quantized LSTM with skip-RNN",
                citation="I. Fedorov et al. TinyLSTMs: Efficient Neural Speech Enhancement for Hearing Aids. "
                         "Interspeech 2020. arXiv:2005.11138",
                url="https://arxiv.org/abs/2005.11138"),
    stages={"fp32": None, "pruned": "fp32", "int8": "pruned", "skip": "int8"},
    build=build_stage,
    run_names={"int8": "pruned-int8", "skip": "pruned-int8-skip"},
)
main = RECIPE.main

if __name__ == "__main__":
    RECIPE.cli()
