"""The sparsity recipe beyond the shared contract: the offline baseline prunes the int8 model once to
the target, the unit variant exports the smaller dense model with its quantizer ranges, and the pruned
stage exports the checkpoint at the target sparsity."""
import json

import pytest
import torch

from sezoo.export import load_exported
from sezoo.nn.quant import quantization_state

from conftest import load_recipe
from test_recipes import FAST, _smoke


@pytest.fixture(scope="module")
def int8_run(tiny_corpus, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    recipe = load_recipe("sparsity").RECIPE
    recipe.main([*FAST, *_smoke("sparsity"), "stage=all", f"data.root={tiny_corpus}", f"run.dir={runs}", "run.name=s"])
    return recipe, runs, tiny_corpus


def _args(runs, corpus, *extra):
    return [*FAST, *_smoke("sparsity"), f"data.root={corpus}", f"run.dir={runs}", f"init_from={runs}/sparsity/s-int8", *extra]


def test_pruned_stage_exports_the_target_sparsity_with_int8_ranges(int8_run):
    _, runs, _ = int8_run
    meta = json.loads((runs / "sparsity" / "s-pruned" / "model.json").read_text())
    achieved = meta["sparsity"]["achieved"]
    assert meta["sparsity"]["structure"] == "weight" and len(achieved) == 8  # every weight matrix
    assert all(v == pytest.approx(0.9, abs=0.01) for v in achieved.values())
    model = load_exported(runs / "sparsity" / "s-pruned")
    weights = {n: p for n, p in model.named_parameters() if n in achieved}
    # stored as int8 codes: the pruned share is zero, and a few survivors may round to code 0 as well
    zeros = {n: float((p == 0).float().mean()) for n, p in weights.items()}
    assert all(achieved[n] - 1e-4 <= zeros[n] <= achieved[n] + 0.02 for n in weights), (zeros, achieved)
    assert quantization_state(model)["encoder.weight_quant"]["bits"] == 8
    assert meta["results"]["checkpoint"].endswith("last.ckpt")


def test_offline_baseline_prunes_the_int8_model_once(int8_run):
    recipe, runs, corpus = int8_run
    results = recipe.main(_args(runs, corpus, "stage=offline", "prune.target=0.5", "run.name=offline50"))
    int8 = load_exported(runs / "sparsity" / "s-int8")
    pruned = load_exported(runs / "sparsity" / "offline50")
    assert results["checkpoint"] is None  # nothing trained
    for (name, before), after in zip(int8.named_parameters(), pruned.parameters()):
        if before.dim() == 2:
            kept = after != 0
            assert float(kept.float().mean()) == pytest.approx(0.5, abs=0.01)
            assert torch.equal(after[kept], before[kept])  # survivors untouched: no retraining
            assert before.abs()[kept].min() >= before.abs()[~kept].max()  # by magnitude
        else:
            assert torch.equal(before, after)


def test_unit_variant_exports_the_compact_model_with_its_ranges(int8_run):
    recipe, runs, corpus = int8_run
    recipe.main(_args(runs, corpus, "stage=pruned", "variant=unit", "run.name=unit"))
    model = load_exported(runs / "sparsity" / "unit")
    assert model.kwargs["hidden1"] == [8] and model.kwargs["hidden2"] == [8]  # half of 16 units each
    state = quantization_state(model)
    assert state["magnitude_stage.layers.0.cell_quant"]["bits"] == 16 and state["decoder.weight_quant"]["bits"] == 8


def test_report_costs_each_structure_as_its_kernel_runs_it(int8_run, tmp_path):
    recipe, runs, corpus = int8_run
    recipe.main(_args(runs, corpus, "stage=pruned", "variant=block", "prune.block_shape=[4,4]", "prune.target=0.5",
                      "run.name=block50"))
    from sezoo.metrics.cost import model_bit_widths, static_macs_per_second
    from sezoo.nn.sparsity import skipped_block_elements

    report = load_recipe("sparsity", "report")
    folders = [runs / "sparsity" / name for name in ("s-fp32", "s-int8", "s-pruned", "block50")]
    report.main([*map(str, folders), str(runs / "sparsity" / "unfinished"), "--out", str(tmp_path)])
    rows = {r["run"]: r for r in json.loads((tmp_path / "results.json").read_text())["runs"]}
    assert rows["s-pruned"]["executed_macs"] == rows["s-pruned"]["macs"] == rows["s-int8"]["macs"]  # scattered zeros
    block = load_exported(runs / "sparsity" / "block50")
    skipped = sum(skipped_block_elements(block.get_parameter(n), (4, 4)) for n in model_bit_widths(block)
                  if block.get_parameter(n).dim() == 2)
    assert skipped > 0
    assert rows["block50"]["executed_macs"] == static_macs_per_second(block, 16000) - skipped * 16000 / block.hop_samples
    assert rows["s-fp32"]["bytes"] > 3 * rows["s-int8"]["bytes"] > 3 * rows["s-pruned"]["bytes"]
    (claim,) = [c for c in json.loads((tmp_path / "results.json").read_text())["claims"] if c["run"] == "s-pruned"]
    assert claim["ratio"] == rows["s-fp32"]["bytes"] / rows["s-pruned"]["bytes"]
    assert claim["sdr_change"] == pytest.approx(rows["s-pruned"]["sdr"] - rows["s-fp32"]["sdr"])
    assert "| s-pruned | weight | 0.9 |" in (tmp_path / "results.md").read_text()
    trained_steps = json.loads((runs / "sparsity" / "s-pruned" / "results.json").read_text())["selection"]["steps"]
    assert rows["s-pruned"]["steps"] == trained_steps > 0  # runs of one structure and length form one curve
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
