"""Convergence checks (`make test-slow`): training must actually enhance, not only run."""
import pytest

from conftest import load_recipe

pytestmark = pytest.mark.slow


def test_dense_convfsenet_learns_to_enhance(tiny_corpus, tmp_path):
    results = load_recipe("dyncp").main([
        "stage=dense", "model.channels=32", "model.hidden=64", "model.stacks=1", "trainer.max_epochs=40",
        "trainer.enable_progress_bar=false", "logger.wandb=false", "data.batch_size=4", "data.segment_seconds=1.0",
        "optim.lr=0.003", f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=slow"])
    assert results["metrics"]["si_sdr"] > results["input_metrics"]["si_sdr"] + 1.0


def test_gates_reach_their_target(tiny_corpus, tmp_path):
    results = load_recipe("dyncp").main([
        "stage=all", "model.channels=32", "model.hidden=64", "model.stacks=1", "model.gate_hidden=8",
        "trainer.max_epochs=30", "trainer.enable_progress_bar=false", "logger.wandb=false", "data.batch_size=4",
        "data.segment_seconds=1.0", "variant=keep50", f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=g"])
    assert results["utilization"]["mean"] == pytest.approx(0.5, abs=0.15)
