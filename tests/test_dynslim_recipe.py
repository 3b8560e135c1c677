"""The adaptive-slimming recipe end to end on tiny data: static backbone with every UF exported, then
joint router training with the utilization callback."""
import json

import pytest
import torch

from sezoo.config import ConfigError
from sezoo.export import load_exported

from conftest import load_recipe

TINY = ["model.hidden=4", "model.depth=3", "model.resample=1", "model.gru_groups=2", "model.router_channels=4",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
        "logger.wandb=false", "data.batch_size=2", "data.segment_seconds=0.5"]


def test_static_then_joint(tiny_corpus, tmp_path):
    recipe = load_recipe("dynslim")
    common = [*TINY, f"data.root={tiny_corpus}", f"run.dir={tmp_path}"]
    recipe.main([*common, "run.name=static", "stage=static", "slimmable.rule=all"])
    static = tmp_path / "dynslim" / "static"
    costs = {}
    for uf in ("0.125", "0.25", "0.5", "1"):
        results = json.loads((static / f"uf{uf}" / "results.json").read_text())
        assert results["operating_point"] == {"uf": float(uf)}
        costs[uf] = results["cost"]["macs_per_second"]
        assert load_exported(static / f"uf{uf}").uf == float(uf)
    assert costs["0.125"] < costs["0.25"] < costs["0.5"] < costs["1"]
    joint = recipe.main([*common, "run.name=joint", "stage=joint", f"init_from={static}", "utilization.target=0.1"])
    assert 0.125 <= joint["utilization"]["mean"] <= 1.0
    assert joint["cost"]["macs_per_second"] <= joint["cost"]["max_macs_per_second"] * 1.05
    # Router pre-training leaves the backbone as the static stage made it; joint fine-tuning follows it.
    recipe.main([*common, "run.name=pre", "variant=pretrain", f"init_from={static}"])
    before, after = load_exported(static).state_dict(), load_exported(tmp_path / "dynslim" / "pre").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(k.startswith("router.") for k in after)
    tuned = recipe.main([*common, "run.name=ft", "variant=finetune", f"init_from={tmp_path / 'dynslim' / 'pre'}"])
    assert "utilization" in tuned
    with pytest.raises(ConfigError, match="stage=router starts from a static run: set init_from"):
        recipe.main([*common, "stage=router"])
