"""One streaming interface for every architecture: streamed equals offline (PyTorch and ONNX Runtime),
the stated latency holds, the CLI streams, exports and benchmarks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sezoo.cli import main
from sezoo.export import export_model
from sezoo.models import create_model
from sezoo.nn.quant import quant_sites
from sezoo.streaming import export_onnx, open_streamer, stream_enhance

from conftest import SR, speech_like


def _randomize_norms(model):
    """Trained-looking BatchNorm statistics, so that a misplaced normalisation shows."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)


def _skipping_tinylstm():
    model = create_model("tinylstm", hidden=(24, 16), skip=True)
    for layer in model.layers:  # gates that update on some frames only
        torch.nn.init.normal_(layer.skip.linear.weight, std=0.5)
        torch.nn.init.constant_(layer.skip.linear.bias, -1.0)
    return model


def _quantized(model, waveform):
    for site in quant_sites(model).values():
        site.quantizer = site.make_quantizer(8)
    with torch.no_grad():
        model.train()(waveform[None])  # observe activation ranges, as QAT does
    return model.eval()


def _gated_convfsenet(causal):
    model = create_model("convfsenet", channels=16, hidden=24, stacks=1, dilations=(1, 2, 4), causal=causal,
                         gate_hidden=8, compression=0.5)
    _randomize_norms(model)
    for block in model.blocks:
        torch.nn.init.constant_(block.gate.expand.bias, 0.0)  # about half the channels open
    return model


ARCHITECTURES = {
    "tinylstm": lambda x: create_model("tinylstm", hidden=(24, 16)),
    "tinylstm-skip": lambda x: _skipping_tinylstm(),
    "tinylstm-qat-skip": lambda x: _quantized(_skipping_tinylstm(), x),
    "dtln": lambda x: create_model("dtln", hidden1=(16, 16), hidden2=(16, 16), basis=32),
    "dtln-qat": lambda x: _quantized(create_model("dtln", hidden1=(16, 16), hidden2=(16, 16), basis=32), x),
    "convfsenet-causal-gated": lambda x: _gated_convfsenet(True),
    "convfsenet-lookahead-gated": lambda x: _gated_convfsenet(False),
    "slimdemucs-uf0.5": lambda x: _static_slimdemucs(),
    "slimdemucs-routed": lambda x: _routed_slimdemucs(),
}


def _static_slimdemucs():
    model = create_model("slimdemucs", hidden=8, depth=3, normalize=False)
    model.set_operating_point(uf=0.5)
    return model


def _routed_slimdemucs():
    """A router that changes its choice within the utterance (the input is not normalised, so that the
    offline forward's whole-file scale and the stream's running one agree)."""
    torch.manual_seed(0)
    model = create_model("slimdemucs", hidden=8, depth=3, normalize=False, router=True)
    with torch.no_grad():
        model.router.conv.weight.mul_(30.0)  # the speech-like input's level is about 1/30
        model.router.head.weight.normal_(0.0, 3.0)
    return model


@pytest.fixture(scope="module")
def waveform():
    rng = np.random.default_rng(0)
    clean = speech_like(rng, 0.5)
    return torch.from_numpy(clean + 0.02 * rng.standard_normal(clean.size).astype(np.float32))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_streamed_output_equals_offline_for_any_chunk_size(arch, waveform):
    torch.manual_seed(0)
    model = ARCHITECTURES[arch](waveform).eval()
    with torch.no_grad():
        offline = model(waveform[None])[0].numpy()
    if arch.startswith("tinylstm-") and "skip" in arch:
        rates = [float(r.mean()) for r in model.update_rates()]
        assert all(0.1 < r < 0.9 for r in rates), rates  # the gates really skip some frames
    for chunk in (1, 97, 256, waveform.numel() + 5):
        streamed = stream_enhance(open_streamer(model), waveform.numpy(), chunk)
        assert streamed.shape == offline.shape
        np.testing.assert_allclose(streamed, offline, atol=1e-5, err_msg=f"chunk {chunk}")


@pytest.mark.parametrize("arch", ["tinylstm", "dtln", "convfsenet-causal-gated", "convfsenet-lookahead-gated",
                                  "slimdemucs-routed"])
def test_every_sample_leaves_within_the_stated_latency(arch, waveform):
    torch.manual_seed(0)
    model = ARCHITECTURES[arch](waveform).eval()
    streamer = open_streamer(model)
    received = emitted = 0
    for start in range(0, waveform.numel(), 40):
        chunk = waveform[start:start + 40].numpy()
        received += chunk.size
        emitted += streamer.push(chunk).size
        assert emitted >= received - streamer.latency_samples
    assert emitted + streamer.flush().size == waveform.numel()


@pytest.mark.parametrize("arch", ["tinylstm-skip", "dtln", "convfsenet-causal-gated", "convfsenet-lookahead-gated",
                                  "slimdemucs-uf0.5", "slimdemucs-routed"])
def test_onnx_runtime_streams_what_pytorch_computes(arch, waveform, tmp_path):
    torch.manual_seed(0)
    model = ARCHITECTURES[arch](waveform).eval()
    with torch.no_grad():
        offline = model(waveform[None])[0].numpy()
    folder = export_onnx(model, tmp_path)
    meta = json.loads((folder / "stream.json").read_text())
    assert [s["name"] for s in meta["state"]] == list(model.stream_state())
    streamed = stream_enhance(open_streamer(folder, "onnx"), waveform.numpy(), 97)
    np.testing.assert_allclose(streamed, offline, atol=1e-5)


@pytest.mark.parametrize("arch", ["tinylstm-qat-skip", "dtln-qat"])
def test_onnx_export_of_a_qat_model_keeps_its_ranges(arch, waveform, tmp_path):
    """The graph quantizes where the model does, with the trained ranges (no recalibration), and rounds
    exactly as PyTorch's fused fake quantization; without the quantizers the output is another one."""
    torch.manual_seed(0)
    model = ARCHITECTURES[arch](waveform).eval()
    with torch.no_grad():
        offline = model(waveform[None])[0].numpy()
    streamed = stream_enhance(open_streamer(export_onnx(model, tmp_path), "onnx"), waveform.numpy(), 160)
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    for site in quant_sites(model).values():
        site.quantizer = None
    with torch.no_grad():
        assert np.abs(model(waveform[None])[0].numpy() - offline).max() > 1e-4  # ten times the tolerance


def test_a_stream_too_short_to_frame_is_refused_by_length():
    streamer = open_streamer(create_model("tinylstm", hidden=(8,)).eval())
    streamer.push(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="after 100 samples; this model needs at least 257"):
        streamer.flush()


def test_pushing_after_the_end_is_refused():
    streamer = open_streamer(create_model("tinylstm", hidden=(8,)).eval())
    streamer.push(np.zeros(600, np.float32))
    assert streamer.flush().size + 0 <= 600
    with pytest.raises(RuntimeError, match="push after flush"):
        streamer.push(np.zeros(1, np.float32))


def test_a_routed_demucs_graph_runs_only_the_width_its_router_chose(waveform, tmp_path):
    """Each run of encoder frames that shares a router choice is one ONNX ``If`` chain, and so is the
    deep part (the deepest encoder block, the bottleneck, the whole decoder: one router frame); their
    branches hold the four widths' convolutions, so a frame at UF 0.125 does not pay for UF 1."""
    import onnx

    from sezoo.models.demucs_streaming import _groups, _StreamPlan

    model = _routed_slimdemucs().eval()
    choices = model.router(waveform[None]).argmax(-1)
    assert len(choices.unique()) == 4  # the router really switches widths in this utterance
    graph = onnx.load(str(export_onnx(model, tmp_path) / "stream.onnx")).graph
    plan = _StreamPlan.of(model)
    runs = sum(len(_groups(w)) for w in plan.encoder[:-1]) + 1
    assert runs == 2 * (model.depth - 1) + 1  # the shallower encoder windows straddle two router frames
    assert sum(node.op_type == "If" for node in graph.node) == runs
    convolving = [node for node in graph.node if node.op_type in ("Conv", "ConvTranspose")]
    # Outside the branches only the resamplers' sinc filters and the router convolve.
    assert len(convolving) == 2 * (model.resample // 2) + 3
    assert not [name for node in convolving for name in node.input if "coder" in name]


@pytest.fixture(scope="module")
def exported_tinylstm(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tinylstm")
    export_model(create_model("tinylstm", hidden=(24, 16)).eval(), folder)
    rng = np.random.default_rng(1)
    sf.write(folder / "noisy.wav", speech_like(rng, 1.0) + 0.01 * rng.standard_normal(SR).astype(np.float32), SR,
             subtype="FLOAT")
    return folder


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_cli_enhance_stream_writes_the_offline_output(exported_tinylstm, tmp_path, runtime):
    noisy = exported_tinylstm / "noisy.wav"
    assert main(["enhance", "--model", str(exported_tinylstm), str(noisy), str(tmp_path / "offline.wav")]) == 0
    assert main(["enhance", "--model", str(exported_tinylstm), "--stream", "--chunk", "100", "--runtime", runtime,
                 str(noisy), str(tmp_path / "streamed.wav")]) == 0
    offline, _ = sf.read(tmp_path / "offline.wav", dtype="float32")
    streamed, _ = sf.read(tmp_path / "streamed.wav", dtype="float32")
    assert np.abs(offline).max() > 1e-3
    np.testing.assert_allclose(streamed, offline, atol=1e-4)


def test_cli_enhance_stream_compiled_writes_the_offline_output(exported_tinylstm, tmp_path):
    """``--runtime compiled``: a gated causal Conv-FSENet (DynCP) streams through its compiled step."""
    torch.manual_seed(0)
    folder = tmp_path / "dyncp"
    export_model(_gated_convfsenet(True).eval(), folder)
    noisy = exported_tinylstm / "noisy.wav"
    assert main(["enhance", "--model", str(folder), str(noisy), str(tmp_path / "offline.wav")]) == 0
    assert main(["enhance", "--model", str(folder), "--stream", "--chunk", "100", "--runtime", "compiled",
                 str(noisy), str(tmp_path / "streamed.wav")]) == 0
    offline, _ = sf.read(tmp_path / "offline.wav", dtype="float32")
    streamed, _ = sf.read(tmp_path / "streamed.wav", dtype="float32")
    assert np.abs(offline).max() > 1e-3
    np.testing.assert_allclose(streamed, offline, atol=1e-4)


def test_cli_export_and_bench(exported_tinylstm, tmp_path, capsys):
    assert main(["export", str(exported_tinylstm), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    meta = json.loads((tmp_path / "onnx" / "stream.json").read_text())
    assert b"stack_trace" not in (tmp_path / "onnx" / "stream.onnx").read_bytes()  # no exporter provenance
    assert meta["framing"] == {"frame": 512, "hop": 256, "kind": "stft_mask", "centered": True, "window": "hann",
                               "skip": 0, "count_valid": False}
    assert meta["latency_samples"] == 512
    assert main(["bench", str(exported_tinylstm), "--wav", str(exported_tinylstm / "noisy.wav"), "--repeats", "1",
                 "--json", str(tmp_path / "bench.json")]) == 0
    (row,) = json.loads((tmp_path / "bench.json").read_text())
    frame_macs = 4 * 24 * (257 + 24) + 4 * 16 * (24 + 16) + 16 * 257
    assert row["macs_per_second"] == pytest.approx(frame_macs * (1 + SR // 256) / 1.0)
    assert row["runtime"] == "onnx" and row["hops"] == -(-SR // 256) and row["threads"] == 1
    assert 0 < row["ms_per_hop"] <= row["p99_ms"] and row["rtf"] > 0
    assert "| " + str(exported_tinylstm) in capsys.readouterr().out


def test_bench_auto_runs_a_compiled_step_where_a_model_has_one(exported_tinylstm, tmp_path):
    """``runtime="auto"`` (sezoo bench's default): a causal Conv-FSENet streams its compiled step, a model
    without one its ONNX step, and ``runtime="compiled"`` on the latter says what to use instead."""
    from sezoo.bench import prepare_model

    torch.manual_seed(0)
    dyncp = tmp_path / "dyncp"
    export_model(create_model("convfsenet", channels=16, hidden=24, stacks=1, causal=True, gate_hidden=8).eval(), dyncp)
    wav = str(exported_tinylstm / "noisy.wav")
    row, stream = prepare_model(str(dyncp), wav, "auto")
    assert row["runtime"] == "compiled"
    assert type(stream.make().step).__name__ == "CompiledConvFSENetStep"
    assert prepare_model(str(exported_tinylstm), wav, "auto")[0]["runtime"] == "onnx"
    with pytest.raises(ValueError, match="no compiled streaming step; use runtime 'onnx'"):
        prepare_model(str(exported_tinylstm), wav, "compiled")


def test_bench_interleaves_the_passes_of_the_models_it_compares():
    """Models compared in one run take their timed passes in turn (A B A B ..., after one warm-up pass
    each), so a slow spell of the machine lands on all of them alike, not on one model's block."""
    from sezoo.bench import Stream, time_streams

    order = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def push(self, chunk):
            order.append(self.name)
            return chunk

        def flush(self):
            return np.zeros(0, np.float32)

    waveform = np.zeros(4 * 100, np.float32)
    rows = time_streams([Stream(lambda: Recorder("a"), waveform, 100, 1000),
                         Stream(lambda: Recorder("b"), waveform, 100, 1000)], repeats=2)
    passes = [order[i] for i in range(0, len(order), 4)]  # 4 hops per pass
    assert passes == ["a", "b", "a", "b", "a", "b"]
    assert [r["hops"] for r in rows] == [4, 4]
    assert all(0 < r["ms_per_hop"] <= r["p99_ms"] and r["rtf"] > 0 for r in rows)


def test_host_ffts_are_numpys_in_float32():
    """The host's FFTs (scipy's pocketfft called directly, sezoo.streaming._fast_real_ffts) give numpy's
    transforms, in float32, and invert each other, for the frame sizes the models use."""
    from sezoo.streaming import fast_irfft, fast_rfft

    rng = np.random.default_rng(0)
    for n in (320, 512):
        frame = rng.standard_normal(n).astype(np.float32)
        spectrum = fast_rfft(frame)
        assert spectrum.dtype == np.complex64 and spectrum.shape == (n // 2 + 1,)
        np.testing.assert_allclose(spectrum, np.fft.rfft(frame.astype(np.float64)), atol=1e-4)
        back = fast_irfft(spectrum, n)
        assert back.dtype == np.float32
        np.testing.assert_allclose(back, frame, atol=1e-5)
