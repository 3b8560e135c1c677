"""DynCP: gates, the streaming path that really skips channels, the recipe's stages."""
import pytest
import torch
from torch import nn

from sezoo.config import ConfigError
from sezoo.metrics.cost import count_macs
from sezoo.models import create_model
from sezoo.nn.gates import ChannelGate, straight_through_gate

from conftest import FAST_TRAINER, REPO, TINY_MODEL, load_recipe


def _recipe():
    return load_recipe("dyncp")


def _gated(causal=True, **kwargs):
    torch.manual_seed(0)
    model = create_model("convfsenet", causal=causal, gate_hidden=16, **kwargs).eval()
    for m in model.modules():  # non-trivial batch-norm statistics and half-open gates
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.bias, -0.3, 0.3)
        if isinstance(m, ChannelGate):
            nn.init.uniform_(m.expand.bias, -1.0, 1.0)
    return model


def test_straight_through_gate_is_binary_forward_sigmoid_backward():
    logits = torch.tensor([-2.0, 0.5, 3.0], requires_grad=True)
    gates = straight_through_gate(logits)
    assert gates.tolist() == [0.0, 1.0, 1.0]
    gates.sum().backward()
    assert torch.allclose(logits.grad, torch.sigmoid(logits) * (1 - torch.sigmoid(logits)))


@pytest.mark.parametrize("causal", [True, False])
def test_streaming_path_matches_masked_path_and_counts_what_ran(causal):
    model = _gated(causal=causal)
    features = torch.rand(1, 257, 30)
    with torch.no_grad():
        reference = model.mask(features)
    masked_gates = [g[0] for g in model.block_gates()]
    mask, executed, gates = model.stream_mask(features)
    assert torch.allclose(mask, reference, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(masked_gates, gates))
    open_channels = [int(g.sum()) for g in gates]
    assert 0.2 < sum(open_channels) / (9 * 256 * 30) < 0.8  # really half-open, so skipping is exercised
    # the count from the gate pattern, written out: front + back + gate nets per frame, 2C+K per open channel
    per_frame = 257 * 128 * 2 + 9 * (128 * 16 + 16 * 256)
    assert executed == 30 * per_frame + sum(open_channels) * (128 + 3 + 128)
    assert executed == model.executed_macs(30, open_channels)


def test_executed_macs_reported_for_dynamic_and_upper_bound_when_all_open():
    model = _gated()
    wave = torch.randn(1, 8000)
    executed = count_macs(model, wave)
    upper = count_macs(model, wave, executed=False)  # FLOP counter on the masked path: everything
    frames = 1 + 8000 // 256
    assert upper == frames * (662_528 + 9 * (128 * 16 + 16 * 256))
    assert executed < upper
    for block in model.blocks:
        nn.init.constant_(block.gate.expand.bias, 100.0)  # every gate open
    assert count_macs(model, wave) == upper


def test_streaming_a_dense_model_costs_the_closed_form():
    model = create_model("convfsenet").eval()
    features = torch.rand(1, 257, 12)
    mask, executed, gates = model.stream_mask(features)
    with torch.no_grad():
        assert torch.allclose(mask, model.mask(features), atol=1e-5)
    assert executed == 12 * 662_528 and all(bool(g.all()) for g in gates)


@pytest.mark.parametrize("gated", [True, False])
def test_compiled_step_streams_the_offline_output_and_runs_only_the_open_channels(gated):
    """The Numba step (sezoo.models.convfsenet_compiled): the streamed waveform equals the offline forward,
    and the channel-frames it computed are the masked path's open gates, so its MACs are the executed count."""
    import numpy as np

    from sezoo.streaming import open_streamer, stream_enhance

    model = _gated(causal=True, compression=0.3) if gated else create_model("convfsenet", causal=True).eval()
    torch.manual_seed(1)
    wave = torch.randn(8000) * 0.1
    with torch.no_grad():
        offline = model(wave[None])[0].numpy()
    streamer = open_streamer(model, "compiled")
    for chunk in (256, 1000):
        streamed = stream_enhance(streamer, wave.numpy(), chunk)
        np.testing.assert_allclose(streamed, offline, atol=1e-5, err_msg=f"chunk {chunk}")
        streamer.reset()
    stream_enhance(streamer, wave.numpy(), 256)
    frames = 1 + 8000 // 256
    computed = streamer.step.open_channels.tolist()
    if gated:
        with torch.no_grad():
            model.mask(model.features(model.stft(wave[None])))
        assert computed == [int(g.sum()) for g in model.block_gates()]
        assert 0.2 < sum(computed) / (9 * 256 * frames) < 0.8  # half open: the skipping is exercised
        assert model.executed_macs(frames, computed) < frames * (662_528 + 9 * (128 * 16 + 16 * 256))
    else:
        assert computed == [256 * frames] * 9


def test_compiled_step_refuses_a_model_with_lookahead_and_one_without_a_compiled_step():
    from sezoo.streaming import open_streamer

    with pytest.raises(ValueError, match="waits 21 frames ahead.*runtime='onnx'"):
        open_streamer(_gated(causal=False), "compiled")
    with pytest.raises(ValueError, match="TinyLSTM has no compiled streaming step"):
        open_streamer(create_model("tinylstm"), "compiled")


def test_variants_and_stage_checks(tmp_path):
    recipe = _recipe()
    with pytest.raises(ConfigError, match="init_from"):
        recipe.main(["stage=gated"])
    from sezoo.config import load_config, load_presets
    cfg = load_config(REPO / "recipes/dyncp/config.yaml", ["variant=keep50"],
                      {"variant": load_presets(REPO / "recipes/dyncp/variants")})
    assert cfg.utilization.target == 0.5 and cfg.variant == "keep50"
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        recipe.main([*TINY_MODEL, "stage=gated", f"init_from={tmp_path}"])


def test_stage_all_trains_dense_then_gated(tiny_corpus, tmp_path):
    args = [*TINY_MODEL, *FAST_TRAINER, "stage=all", "model.gate_hidden=4", f"data.root={tiny_corpus}",
            f"run.dir={tmp_path}", "run.name=t"]
    results = _recipe().main(args)
    assert (tmp_path / "dyncp" / "t-dense" / "model.safetensors").exists()
    assert results["run"] == "t-keep25" and 0.0 <= results["utilization"]["mean"] <= 1.0
    # executed: measured on whole utterances, whose edge frame adds 1/94 at most over the static rate
    assert results["cost"]["macs_per_second"] <= results["cost"]["max_macs_per_second"] * (1 + 1 / 93)


def test_gumbel_gates_are_binary_noisy_in_training_deterministic_in_eval():
    torch.manual_seed(0)
    gate = ChannelGate(4, 64, hidden=4, initial_bias=0.0, estimator="gumbel", temperature=0.5)
    x = torch.randn(2, 4, 50)
    train_gates = gate(x)
    assert set(train_gates.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(train_gates, gate(x))  # logistic noise: two draws differ
    gate.eval()
    assert torch.equal(gate(x), (gate.logits(x) > 0).float())
    with pytest.raises(ValueError, match="gate estimator"):
        ChannelGate(4, 8, estimator="sigmoid")
