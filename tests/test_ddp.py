"""Multi-device training is Lightning's: two CPU processes over gloo, launched by the recipe itself."""
import json
import os
import subprocess
import sys

from conftest import FAST_TRAINER, REPO, TINY_MODEL


def test_dense_recipe_trains_with_ddp_on_two_cpu_processes(tiny_corpus, tmp_path):
    cmd = [sys.executable, str(REPO / "recipes" / "dyncp" / "train.py"), *TINY_MODEL, *FAST_TRAINER,
           f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=ddp",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    results = json.loads((tmp_path / "dyncp" / "ddp" / "results.json").read_text())
    assert results["n_test_files"] == 2 and results["metrics"]["si_sdr"] == results["metrics"]["si_sdr"]  # not NaN
