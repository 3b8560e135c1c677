"""The sparsity recipe beyond the shared contract: the offline baseline prunes the int8 model once to
the target, the unit variant exports the smaller dense model with its quantizer ranges, and the pruned
stage exports the checkpoint at the target sparsity."""
import json

import pytest
import torch

from sezoo.config import ConfigError
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


def _site_bits(recipe, *argv):
    from sezoo.callbacks import QuantizationAwareTraining
    from sezoo.models import DTLN

    plan = QuantizationAwareTraining(**recipe.config(list(argv)).qat)
    return {name: site.quantizer.bits for name, site in plan.attach(DTLN(hidden1=[16], hidden2=[16], basis=32)).items()}


def test_activation_bits_widen_every_activation_and_no_weight():
    recipe = load_recipe("sparsity").RECIPE
    a8, a16 = _site_bits(recipe), _site_bits(recipe, "activation_bits=16")
    assert a8.keys() == a16.keys()
    weights = {n for n in a8 if n.endswith(("w_ih_quant", "w_hh_quant", "weight_quant"))}
    assert len(weights) == 8 and all(a8[n] == a16[n] == 8 for n in weights)
    # 8 bits: the plan the published runs trained with, masks and cell states at 16 bits
    assert {n: b for n, b in a8.items() if b == 16} == {n: 16 for n in a8 if n.endswith(("mask_quant", "cell_quant"))}
    assert all(a16[n] == 16 for n in a16.keys() - weights)
    with pytest.raises(ConfigError, match="activation_bits=12"):
        recipe.main(["activation_bits=12", "stage=fp32"])


def test_a16_chain_keeps_its_widths_and_refuses_a_mismatched_stage(int8_run):
    recipe, runs, corpus = int8_run
    with pytest.raises(ConfigError, match="16 bits; set the int8 run's activation_bits"):
        recipe.main(_args(runs, corpus, "stage=pruned", "activation_bits=16", "run.name=mismatch"))
    a16 = [*FAST, *_smoke("sparsity"), f"data.root={corpus}", f"run.dir={runs}", "activation_bits=16"]
    recipe.main([*a16, "stage=int8", f"init_from={runs}/sparsity/s-fp32", "run.name=a16-int8"])
    recipe.main([*a16, "stage=pruned", f"init_from={runs}/sparsity/a16-int8", "run.name=a16-pruned"])
    state = quantization_state(load_exported(runs / "sparsity" / "a16-pruned"))
    assert state["basis_stage.layers.0.hidden_quant"]["bits"] == 16 and state["encoder.output_quant"]["bits"] == 16
    assert state["decoder.weight_quant"]["bits"] == 8
    recipe.main([*FAST, *_smoke("sparsity"), f"data.root={corpus}", f"run.dir={runs}", "stage=fp32", "run.name=other-fp32"])
    report = load_recipe("sparsity", "report")
    out = runs / "report-a16"
    names = ("s-fp32", "other-fp32", "s-int8", "s-pruned", "a16-int8", "a16-pruned")  # two fp32 runs, the other last
    report.main([str(runs / "sparsity" / n) for n in names] + ["--out", str(out)])
    written = json.loads((out / "results.json").read_text())
    rows = {r["run"]: r for r in written["runs"]}
    assert [rows[n]["activation_bits"] for n in names] == [None, None, 8, 8, 16, 16]
    claims = {c["run"]: c for c in written["claims"]}
    assert claims["a16-pruned"]["fp32"] == "s-fp32"  # each claim against the fp32 run its chain starts from
    assert claims["a16-pruned"]["sdr_change"] == pytest.approx(rows["a16-pruned"]["sdr"] - rows["s-fp32"]["sdr"])
