"""TinyLSTMs: MACs against the closed form, pruning that really removes units, the shared QAT callback,
skip-RNN that really skips, the integer reference, and the four-stage recipe end to end."""
import json
import sys

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from sezoo.callbacks import QuantizationAwareTraining, UtilizationLoss
from sezoo.export import load_exported
from sezoo.metrics.cost import count_macs, deployable_bytes, model_bit_widths, static_macs_per_second
from sezoo.models import TinyLSTM
from sezoo.models.tinylstm import QuantLSTMLayer
from sezoo.nn.quant import QuantSite, quantization_state

from conftest import REPO, load_recipe

sys.path.insert(0, str(REPO))
from recipes.tinylstm.integer_check import compare  # noqa: E402
from recipes.tinylstm.report import table  # noqa: E402

PLAN = {"mask_fc.output_quant": 16, "mask_quant": 16, "*": 8}


def _quantized(hidden=(48, 40), seed=0):
    torch.manual_seed(seed)
    model = TinyLSTM(hidden=hidden)
    QuantizationAwareTraining(PLAN).attach(model)
    model.train()
    with torch.no_grad():  # observe activation ranges on some input
        for _ in range(3):
            model(0.1 * torch.randn(2, 8000))
    return model.eval()


def test_macs_per_frame_match_the_closed_form():
    model = TinyLSTM()
    assert model.macs_per_frame() == 4 * 256 * (257 + 256) + 4 * 256 * (256 + 256) + 256 * 257 == 1_115_392
    assert static_macs_per_second(model, 16000) == pytest.approx(1_115_392 * 16000 / 256)
    small = TinyLSTM(hidden=(100, 60))
    assert static_macs_per_second(small, 16000) * 256 / 16000 == pytest.approx(
        4 * 100 * 357 + 4 * 60 * 160 + 60 * 257)


def test_step_loop_equals_the_fused_lstm(monkeypatch):
    torch.manual_seed(0)
    layer = QuantLSTMLayer(20, 16)
    x = torch.randn(3, 30, 20)
    fused = layer(x)
    monkeypatch.setattr(QuantLSTMLayer, "quantized", property(lambda self: True))  # force the step loop
    assert torch.allclose(layer(x), fused, atol=1e-5)
    reference = nn.LSTM(20, 16, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(layer.weight_ih)
        reference.weight_hh_l0.copy_(layer.weight_hh)
        reference.bias_ih_l0.copy_(layer.bias)
        reference.bias_hh_l0.zero_()
    assert torch.allclose(reference(x)[0], fused, atol=1e-5)


def test_pruned_units_really_go():
    torch.manual_seed(0)
    model = TinyLSTM(hidden=(32, 24), prune=True).eval()
    with torch.no_grad():
        for layer, quantile in zip(model.layers, (0.5, 0.25)):
            layer.pruning.threshold.fill_(float(layer.unit_norms().quantile(quantile)) + 1e-6)
    small = model.compact().eval()
    assert small.kwargs["hidden"] == [16, 18] and not small.kwargs["prune"]
    x = 0.1 * torch.randn(2, 4000)
    assert torch.allclose(model(x), small(x), atol=1e-5)
    assert model.compact_macs_per_frame() == small.macs_per_frame() == 4 * 16 * (257 + 16) + 4 * 18 * 34 + 18 * 257


def test_group_penalty_trains_the_threshold_up_and_the_norms_down():
    torch.manual_seed(0)
    model = TinyLSTM(hidden=(16, 16), prune=True, prune_temperature=0.5)
    model(0.1 * torch.randn(1, 2000))
    model.pruning_penalty().backward()
    layer = model.layers[0]
    assert layer.pruning.threshold.grad < 0  # raising the threshold lowers the penalty
    assert (layer.weight_ih.grad * layer.weight_ih).sum() > 0  # the penalty shrinks the weights


def test_qat_keeps_the_state_dict_and_puts_values_on_the_grid():
    model = _quantized()
    plain = TinyLSTM(hidden=(48, 40))
    assert set(model.state_dict()) == set(plain.state_dict())
    plain.load_state_dict(model.state_dict(), strict=True)
    layer = model.layers[0]
    w = layer.w_ih_quant.quantize(layer.weight_ih)
    step = layer.w_ih_quant.quantizer.scale_for(layer.weight_ih)
    assert torch.allclose(w / step, torch.round(w / step), atol=1e-4) and len(torch.unique(w)) <= 255
    assert layer.sigmoid_quant.quantizer.bits == 8 and not layer.sigmoid_quant.quantizer.signed
    assert model.mask_quant.quantizer.bits == 16
    widths = model_bit_widths(model)
    assert widths["layers.0.weight_ih"] == 8 and widths["mask_fc.weight"] == 8
    assert "layers.0.bias" not in widths
    bytes_int8 = deployable_bytes(model, widths).total
    weights = sum(p.numel() for n, p in model.named_parameters() if n in widths)
    # int8 codes (one byte each) and a float32 scale per weight; everything else float32
    assert bytes_int8 == weights + 4 * len(widths) + 4 * (sum(p.numel() for p in model.parameters()) - weights)


def test_qat_callback_works_per_module_on_a_plain_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    keys = set(model.state_dict())
    QuantizationAwareTraining({"2": 4, "*": None}).attach(model)
    assert set(model.state_dict()) == keys
    model.train()
    y = model(torch.randn(32, 8))
    step = model[2].output_quant.quantizer.scale_for(y)
    assert torch.allclose(y / step, torch.round(y / step), atol=1e-4)
    y.sum().backward()
    assert model[2].weight.grad is not None and model[0].weight.grad is not None
    assert model_bit_widths(model) == {"2.weight": 4}


def test_qat_ranges_survive_a_resumed_run(tmp_path):
    torch.manual_seed(0)

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = TinyLSTM(hidden=(8, 8))

        def training_step(self, batch, _):
            return self.model(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(0.1 * torch.randn(8, 2000)), batch_size=4)
    trainer_args = dict(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False)
    first = Tiny()
    L.Trainer(max_epochs=2, callbacks=[QuantizationAwareTraining(PLAN, freeze_step=2)], **trainer_args).fit(first, data)
    saved = quantization_state(first.model)
    assert saved["layers.0.cell_quant"]["max_abs"] > 0 and not saved["layers.0.cell_quant"]["observing"]
    resumed = Tiny()
    callback = QuantizationAwareTraining(PLAN, freeze_step=2)
    L.Trainer(max_epochs=2, callbacks=[callback], **trainer_args).fit(
        resumed, data, ckpt_path=str(next(tmp_path.rglob("*.ckpt"))))
    assert quantization_state(resumed.model) == saved


def test_skip_rnn_really_skips_and_counts_what_ran():
    torch.manual_seed(0)
    model = TinyLSTM(hidden=(24, 16), skip=True)
    with torch.no_grad():
        for layer in model.layers:
            layer.skip.linear.bias.fill_(-0.3)  # update probability ~0.43: about every other frame
    x = 0.1 * torch.randn(2, 8000)
    model.train()
    trained_path = model(x)
    model.eval()
    macs = count_macs(model, x)
    assert torch.allclose(model(x), trained_path, atol=1e-5)  # the skipping path computes the same
    updates = [u.sum().item() for u in model.update_rates()]
    frames = model.update_rates()[0].numel()
    assert 0 < updates[0] < frames
    assert macs == sum(n * layer.macs_per_update for n, layer in zip(updates, model.layers)) + frames * 16 * 257
    assert macs < count_macs(model, x, executed=False)
    assert 0 < float(model.layers[0].skip.last_utilization) < 1


def test_utilization_loss_drives_the_update_budget():
    torch.manual_seed(0)
    model = TinyLSTM(hidden=(16, 16), skip=True).train()
    model(0.1 * torch.randn(2, 4000))
    callback = UtilizationLoss(target=0.3, weight=1.0)
    from sezoo.callbacks import utilization_sources
    sources = utilization_sources(model)
    assert set(sources) == {"layers.0.skip", "layers.1.skip"}
    callback.loss(sources, 0.3).backward()
    assert model.layers[0].skip.linear.bias.grad > 0  # lowering the update probability lowers the loss


def test_integer_reference_matches_the_fake_quantized_model(tmp_path):
    model = _quantized()
    report = compare(model, 0.1 * torch.randn(16000), tmp_path)
    assert report["step_within_one"] and report["frames"] == 63
    assert all(layer["step_exact_fraction"] > 0.99 for layer in report["layers"])
    assert all(layer["free_running_max_difference"] <= 2 for layer in report["layers"])
    assert report["output_snr_db"] > 30
    assert (tmp_path / "integer.safetensors").exists()
    with pytest.raises(ValueError, match="not quantized"):
        compare(TinyLSTM(hidden=(8, 8)), torch.randn(4000))


def test_recipe_stages_end_to_end(tiny_corpus, tmp_path):
    args = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
            "logger.wandb=false", "data.batch_size=4", "data.segment_seconds=0.5", "model.hidden=[32,32]",
            f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=t", "prune.initial_threshold=1.0", "prune.threshold_lr_scale=0",
            "prune.target_ops=0.7", "qat.freeze_step=1", "utilization.target=0.5"]
    load_recipe("tinylstm").main(args)
    folders = {s: tmp_path / "tinylstm" / f"t-{s}" for s in ("fp32", "pruned", "pruned-int8", "pruned-int8-skip")}
    results = {s: json.loads((f / "results.json").read_text()) for s, f in folders.items()}
    pruned = load_exported(folders["pruned"])
    assert pruned.kwargs["hidden"] != [32, 32] and not pruned.kwargs["prune"]  # units removed for real
    assert results["pruned"]["cost"]["params"] == sum(p.numel() for p in pruned.parameters())
    int8 = load_exported(folders["pruned-int8"])
    assert int8.kwargs["hidden"] == pruned.kwargs["hidden"]
    assert int8.layers[0].cell_quant.quantizer.bits == 8 and int8.mask_quant.quantizer.bits == 16
    assert results["pruned-int8"]["cost"]["model_bytes"] < results["pruned"]["cost"]["model_bytes"] / 3
    assert "utilization" in results["pruned-int8-skip"]
    skip_cost, frames_per_second = results["pruned-int8-skip"]["cost"], 16000 / 256
    gate_macs = sum(int8.kwargs["hidden"]) * frames_per_second  # one dot product per layer and frame
    assert skip_cost["max_macs_per_second"] == pytest.approx(results["pruned-int8"]["cost"]["macs_per_second"] + gate_macs)
    assert skip_cost["macs_per_second"] <= 1.02 * skip_cost["max_macs_per_second"]  # + each file's edge frame
    for r in results.values():
        assert np.isfinite(r["metrics"]["sdr"])
    text = table(list(folders.values()))
    assert len([line for line in text.splitlines() if line.startswith("| t-")]) == 4 and "Commands:" in text
    fp32_row = next(line for line in text.splitlines() if line.startswith("| t-fp32 "))
    assert "| 1.0x | 1.00x | +0.00 dB |" in fp32_row
    with pytest.raises(ValueError, match="stage=int8 starts from a pruned run: set init_from"):
        load_recipe("tinylstm").main([*args, "stage=int8"])
    assert isinstance(int8.layers[0].gates_quant, QuantSite)
