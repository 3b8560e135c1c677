"""``sezoo.npu``: the float twin a converter starts from, DTLN's host loop around its two networks, Vela's
report read back, and (with the optional ``npu`` extra) the int8 TFLite route end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sezoo.models import create_model
from sezoo.nn.quant import quant_sites, weight_quantizers
from sezoo.npu import HostLoop, Recording, float_twin, missing_extra, parse_vela

from conftest import speech_like

# One real row of Vela 5.2.0's summary CSV (columns trimmed to those read), for DTLN's magnitude stage
VELA_CSV = """network,accelerator_configuration,system_config,memory_mode,inference_time,sram_memory_used,off_chip_flash_memory_used,total_original_weights,total_npu_encoded_weights,nn_macs,cycles_npu,cycles_off_chip_flash_access,cycles_total
mag_int8,Ethos_U55_128,Ethos_U55_High_End_Embedded,Shared_Sram,0.000840804,2.25,398.734375,361632,383568,362882,65163,406560,420402
"""
VELA_STDOUT = """
CPU operators = 2 (5.7%)
   CPU: Passthrough = MagStep/InstantLayerNorm_norm;5 (outputs [1, 1, 1, 1])
   CPU: Div = MagStep/InstantLayerNorm_norm;6 (outputs [1, 1, 1, 257])
NPU operators = 33 (94.3%)
   NPU: FullyConnected = MagStep;17 (outputs [1, 1, 1, 512])
"""


def _tiny_qat_dtln(waveform: torch.Tensor, prune_encoder: float = 0.0):
    torch.manual_seed(0)
    model = create_model("dtln", hidden1=(16, 16), hidden2=(16, 16), basis=32)
    for name, site in quant_sites(model).items():
        site.quantizer = site.make_quantizer(16 if name.endswith(("mask_quant", "cell_quant")) else 8)
    with torch.no_grad():
        model.train()(waveform[None])
        if prune_encoder:
            w = model.encoder.weight
            w[w.abs() < w.abs().flatten().quantile(prune_encoder)] = 0
    return model.eval()


@pytest.fixture(scope="module")
def waveform():
    rng = np.random.default_rng(0)
    clean = speech_like(rng, 1.0)
    return torch.from_numpy(clean + 0.02 * rng.standard_normal(clean.size).astype(np.float32))


def test_float_twin_holds_the_quantized_weights_with_every_site_off(waveform):
    model = _tiny_qat_dtln(waveform, prune_encoder=0.9)
    twin = float_twin(model)
    quantizers = weight_quantizers(model)
    assert len(quantizers) == 12  # 4 LSTM layers x 2 matrices, 2 mask FCs, the basis and the synthesis
    for name, quantizer in quantizers.items():
        expected = quantizer(model.get_parameter(name), False)
        assert torch.equal(twin.get_parameter(name), expected), name
        assert not torch.equal(model.get_parameter(name), expected), f"{name}: the original changed"
    assert all(site.quantizer is None for site in quant_sites(twin).values())
    assert all(site.quantizer is not None for site in quant_sites(model).values())
    # a pruned weight stays exactly 0
    assert torch.equal(twin.encoder.weight == 0, model.encoder.weight == 0) and (twin.encoder.weight == 0).sum() >= 0.89 * 512 * 32


def test_host_loop_around_the_two_networks_is_the_offline_forward(waveform):
    """The split a microcontroller runs (transforms on the host, ``npu_steps`` on the NPU) computes
    what the whole model computes, and the recorded calls are the steps' real arguments."""
    model = _tiny_qat_dtln(waveform)
    twin = float_twin(model)
    recorders = [Recording(step, every=10) for step in twin.npu_steps()]
    looped = HostLoop(twin, recorders)(waveform[None])
    offline = twin(waveform[None])
    torch.testing.assert_close(looped, offline, atol=2e-6, rtol=0)
    frames = twin.frames(waveform[None]).shape[1]
    assert [len(r.calls) for r in recorders] == [-(-frames // 10)] * 2
    log_magnitude, *state = recorders[0].calls[3]
    assert log_magnitude.shape == (1, 257) and len(state) == 4 and state[0].abs().sum() > 0


def test_vela_report_is_read_with_its_cpu_operators(tmp_path):
    summary = tmp_path / "summary.csv"
    summary.write_text(VELA_CSV)
    estimate = parse_vela(summary, VELA_STDOUT, "ethos-u55-128")
    assert estimate.inference_time_s == pytest.approx(0.000840804)
    assert (estimate.cycles_total, estimate.cycles_off_chip_flash, estimate.nn_macs) == (420402, 406560, 362882)
    assert (estimate.original_weight_bytes, estimate.encoded_weight_bytes) == (361632, 383568)
    assert estimate.off_chip_flash_kib == pytest.approx(398.734375)
    assert estimate.npu_operators == 33 and estimate.cpu_operators == ["Passthrough", "Div"]
    summary.write_text(VELA_CSV.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="expected one summary row"):
        parse_vela(summary, VELA_STDOUT, "ethos-u55-128")


@pytest.mark.skipif(missing_extra() is not None, reason="the optional 'npu' extra is not installed (make npu)")
def test_int8_tflite_steps_track_pytorch_run_on_the_npu_and_store_pruned_weights_smaller(waveform, tmp_path):
    from sezoo.npu import TfliteStep, convert_int8, vela_estimate

    estimates = {}
    for prune in (0.0, 0.9):
        twin = float_twin(_tiny_qat_dtln(waveform, prune_encoder=prune))
        recorders = [Recording(step, every=2) for step in twin.npu_steps()]
        reference = HostLoop(twin, recorders)(waveform[None])
        paths = [convert_int8(step, r.calls, tmp_path / f"{prune}" / f"{k}.tflite")
                 for k, (step, r) in enumerate(zip(twin.npu_steps(), recorders))]
        converted = HostLoop(twin, [TfliteStep(p) for p in paths])(waveform[None])
        snr = 10 * torch.log10(reference.pow(2).sum() / (converted - reference).pow(2).sum())
        assert snr > 20, f"int8 TFLite output only {snr:.1f} dB from PyTorch's"
        estimates[prune] = vela_estimate(paths[1], "ethos-u55-128", tmp_path / f"{prune}" / "vela")
        assert estimates[prune].cpu_operators == [], estimates[prune].cpu_operators
        assert estimates[prune].inference_time_s > 0
    # the basis (512 x 32 encoder) is 90 % zeros: Vela's codec stores it in fewer bytes
    assert estimates[0.9].encoded_weight_bytes < 0.8 * estimates[0.0].encoded_weight_bytes
