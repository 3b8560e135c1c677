"""``sezoo export --int8``: a QAT model's int8 graph keeps its trained ranges (mixed widths included) and
stores int8 weights; a float model is calibrated on streamed recordings; bad calibration input is refused."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import soundfile as sf
import torch

from sezoo.cli import main
from sezoo.export import export_model
from sezoo.models import create_model
from sezoo.nn.quant import quant_sites, weight_quantizers
from sezoo.onnx_int8 import export_int8, int8_bytes
from sezoo.streaming import open_streamer, stream_enhance

from conftest import SR, speech_like


@pytest.fixture(scope="module")
def waveform():
    rng = np.random.default_rng(0)
    clean = speech_like(rng, 0.5)
    return torch.from_numpy(clean + 0.02 * rng.standard_normal(clean.size).astype(np.float32))


def _qat(model, waveform, bits):
    """Quantizers from a plan (site name -> bits, default 8), activation ranges observed as QAT does."""
    for name, site in quant_sites(model).items():
        site.quantizer = site.make_quantizer(bits(name))
    with torch.no_grad():
        model.train()(waveform[None])
    return model.eval()


def _snr_db(estimate, reference):
    return 10 * np.log10(np.sum(reference ** 2) / np.sum((estimate - reference) ** 2))


def _quantize_scales(folder):
    """The scales of the graph's QuantizeLinear nodes (float32 values)."""
    graph = onnx.load(str(folder / "stream.onnx")).graph
    values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    return {float(values[node.input[1]]) for node in graph.node if node.op_type == "QuantizeLinear"}


def test_a_mixed_precision_qat_model_streams_in_int8_as_pytorch_computes(waveform, tmp_path):
    """Sites of 3..8 bits become QuantizeLinear/DequantizeLinear with the trained scales and their own
    clamps (not int8's): the streamed output is PyTorch's; the 12-bit site stays in float; every weight
    of at most 8 bits is stored as int8 codes."""
    torch.manual_seed(0)
    plan = {"layers.0.gates_quant": 4, "layers.0.cell_quant": 12, "layers.1.w_hh_quant": 3, "layers.0.w_ih_quant": 6}
    model = _qat(create_model("tinylstm", hidden=(24, 16)), waveform, lambda name: plan.get(name, 8))
    with torch.no_grad():
        offline = model(waveform[None])[0].numpy()
    folder = export_int8(model, tmp_path)
    record = json.loads((folder / "stream.json").read_text())["int8"]
    assert record["route"] == "qat" and record["float_sites"] == ["layers.0.cell_quant"]
    streamed = stream_enhance(open_streamer(folder, "onnx"), waveform.numpy(), 97)
    np.testing.assert_allclose(streamed, offline, atol=1e-5)

    weights = sum(model.state_dict()[name].numel() for name, q in weight_quantizers(model).items() if q.bits <= 8)
    assert int8_bytes(folder) == weights
    trained = {float(np.float32(s.quantizer.max_abs / s.quantizer.qmax))
               for s in quant_sites(model).values() if not s.param and s.quantizer.bits <= 8}
    assert _quantize_scales(folder) == trained  # one QuantizeLinear scale per activation site, as trained

    # The ranges are the trained ones: the same graph with one range doubled streams something else.
    model.layers[0].gates_quant.quantizer.max_abs *= 2
    other = stream_enhance(open_streamer(export_int8(model, tmp_path / "other"), "onnx"), waveform.numpy(), 97)
    assert np.abs(other - streamed).max() > 1e-4


def test_int8_dtln_qat_stays_within_integer_rounding_of_pytorch(waveform, tmp_path):
    """ONNX Runtime fuses the QDQ pairs into integer kernels whose requantization may round a tie the
    other way: a few codes differ, far below the signal."""
    torch.manual_seed(0)
    model = _qat(create_model("dtln", hidden1=(16, 16), hidden2=(16, 16), basis=32), waveform, lambda name: 8)
    with torch.no_grad():
        offline = model(waveform[None])[0].numpy()
    streamed = stream_enhance(open_streamer(export_int8(model, tmp_path), "onnx"), waveform.numpy(), 160)
    assert _snr_db(streamed, offline) > 40


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(3)
    for name in ("a.wav", "b.wav"):
        sf.write(folder / name, speech_like(rng, 1.0) + 0.01 * rng.standard_normal(SR).astype(np.float32), SR)
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_a_float_model_is_calibrated_on_streamed_recordings(waveform, recordings, tmp_path):
    torch.manual_seed(0)
    model = create_model("tinylstm", hidden=(24, 16)).eval()
    with torch.no_grad():
        offline = model(waveform[None])[0].numpy()
    folder = export_int8(model, tmp_path, calibration=recordings)
    record = json.loads((folder / "stream.json").read_text())["int8"]
    assert record["route"] == "calibrated" and record["calibration_files"] == ["a.wav", "b.wav"]
    assert record["calibration_steps"] == 2 * (1 + SR // 256)  # every hop of both streams, centred STFT
    weights = sum(p.numel() for name, p in model.named_parameters() if name.endswith(("weight_ih", "weight_hh")))
    assert int8_bytes(folder) >= weights  # every LSTM matrix in int8 (and the head's)
    streamed = stream_enhance(open_streamer(folder, "onnx"), waveform.numpy(), 97)
    assert 15 < _snr_db(streamed, offline) < 80  # quantized, and still the same enhancement


def test_calibration_without_audio_and_on_a_qat_model_is_refused(waveform, tmp_path):
    model = create_model("tinylstm", hidden=(8,)).eval()
    with pytest.raises(FileNotFoundError, match=f"no audio to calibrate the int8 ranges in {tmp_path}"):
        export_int8(model, tmp_path / "out", calibration=tmp_path)
    qat = _qat(create_model("tinylstm", hidden=(8,)), waveform, lambda name: 8)
    with pytest.raises(ValueError, match="keeps its trained ranges"):
        export_int8(qat, tmp_path / "out", calibration=tmp_path)


def test_cli_export_int8_says_how_it_got_its_ranges(recordings, tmp_path, capsys):
    export_model(create_model("tinylstm", hidden=(16,)).eval(), tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), "--int8", "--calibration", str(recordings),
                 "--out", str(tmp_path / "onnx")]) == 0
    assert "int8: ranges calibrated on 126 streamed steps of 2 files" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--calibration goes with --int8"):
        main(["export", str(tmp_path / "model"), "--calibration", str(recordings), "--out", str(tmp_path / "x")])
