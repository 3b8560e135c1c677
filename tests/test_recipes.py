"""Every recipe under recipes/ meets the contract (sezoo/recipe.py): a recipe gets these tests by
shipping ``smoke.yaml`` (its tiny overrides). The deep per-recipe tests live beside them."""
import json
import math
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from sezoo.export import load_exported
from sezoo.metrics.cost import count_params

from conftest import REPO, load_recipe

RECIPES = sorted(p.parent.name for p in (REPO / "recipes").glob("*/smoke.yaml"))
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "logger.wandb=false",
        "data.batch_size=2", "data.segment_seconds=0.5", "trainer.log_every_n_steps=1"]


def test_every_recipe_ships_its_smoke_overrides():
    with_train = sorted(p.parent.name for p in (REPO / "recipes").glob("*/train.py"))
    assert RECIPES == with_train and len(RECIPES) >= 3


def _smoke(name: str) -> list[str]:
    return list(OmegaConf.load(REPO / "recipes" / name / "smoke.yaml").overrides)


@pytest.mark.parametrize("name", RECIPES)
def test_stage_all_runs_the_chain(name, tiny_corpus, tmp_path):
    recipe = load_recipe(name).RECIPE
    recipe.main([*FAST, *_smoke(name), "stage=all", f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=s"])
    runs = {stage: tmp_path / name / f"s-{recipe.suffix(stage, recipe.config(['stage=all', *_smoke(name)]))}"
            for stage in recipe.chain}
    assert len(runs) >= 2
    previous = None
    for stage, run in runs.items():
        results = json.loads((run / "results.json").read_text())
        assert results["stage"] == stage and results["recipe"] == name
        assert results["paper"]["citation"] == recipe.paper.citation and results["licence"].startswith("weights ")
        assert all(math.isfinite(v) for v in results["metrics"].values())
        model = load_exported(run)
        assert count_params(model) == results["cost"]["params"]
        if previous is not None:  # each stage started from the run before it
            assert results["init_from"] == str(previous) and str(previous) not in results["command"]
        previous = run


@pytest.mark.parametrize("name", RECIPES)
def test_a_bad_override_is_one_error_line(name):
    done = subprocess.run([sys.executable, f"recipes/{name}/train.py", "trainer.max_epoch=1"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("error: ")
    assert "trainer.max_epoch" in done.stderr and "trainer.max_epochs" in done.stderr  # the key and the close match


def test_a_stage_without_its_start_and_weights_that_do_not_fit_are_named(tmp_path, tiny_corpus, trained):
    dyncp = load_recipe("dyncp").RECIPE
    assert len(dyncp.chain) == 2
    run_dir, _, _ = trained
    wrong = [*FAST, "stage=gated", f"init_from={run_dir}", "model.channels=8", f"data.root={tiny_corpus}",
             f"run.dir={tmp_path}"]
    from sezoo.recipe import run_cli
    import io
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli(dyncp.main, wrong) == 2
    message = err.getvalue()
    assert message.startswith("error: ") and "do not fit this convfsenet" in message
    assert "wrong shape" in message and "front.weight [16, 257, 1] in the weights, [8, 257, 1] here" in message
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert run_cli(dyncp.main, ["stage=gated"]) == 2
    assert "stage=gated starts from a dense run: set init_from" in err.getvalue()


SKELETON = ("## Run it", "## The method as implemented", "## Choices where the paper is silent", "## Results", "## Zoo")


@pytest.mark.parametrize("name", RECIPES)
def test_readme_has_the_shared_skeleton(name):
    headings = [line for line in (REPO / "recipes" / name / "README.md").read_text().splitlines() if line.startswith("## ")]
    positions = [next((i for i, h in enumerate(headings) if h.startswith(want)), -1) for want in SKELETON]
    assert -1 not in positions and positions == sorted(positions), headings
