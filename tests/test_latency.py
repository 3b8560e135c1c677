"""Algorithmic latency: each architecture's ``latency_samples`` against its closed form, and checked on
the network itself: changing the input from sample p on leaves every output sample before p - latency
as it was (and, where the bound is tight, changes the one just after)."""
import pytest
import torch

from sezoo.models import create_model


def _first_changed_output(model, p: int, length: int = 16000) -> int:
    torch.manual_seed(0)
    x = torch.randn(1, length) * 0.1
    changed = x.clone()
    changed[:, p:] += torch.randn(1, length - p) * 0.1
    with torch.no_grad():
        diff = (model(x) - model(changed)).abs()[0]
    return int(torch.nonzero(diff > 0)[0])


def test_convfsenet_latency_is_the_window_plus_the_blocks_lookahead():
    causal = create_model("convfsenet", causal=True).eval()
    lookahead = create_model("convfsenet", causal=False).eval()
    assert causal.latency_samples == 512 and causal.latency_ms == 32.0
    # kernel 3 with dilations 1, 2, 4 looks d frames ahead per block; three stacks: 3 * (1 + 2 + 4) = 21 frames
    assert lookahead.lookahead_frames == 21
    assert lookahead.latency_samples == 512 + 21 * 256
    p = 8000
    for model in (causal, lookahead):
        # the first output sample that may change: the first sample of the earliest frame that sees sample p
        first = _first_changed_output(model, p)
        assert p - model.latency_samples <= first < p - model.latency_samples + model.hop_samples


def test_tinylstm_latency_is_one_window():
    model = create_model("tinylstm", hidden=[32, 32]).eval()
    assert model.latency_samples == 512
    first = _first_changed_output(model, 8000)
    assert 8000 - 512 <= first < 8000 - 512 + 256


@pytest.mark.parametrize("resample", [1, 4])
def test_demucs_latency_bounds_the_offline_network(resample):
    """The streaming step's lag plus the rest of a hop; the offline network (without utterance
    normalisation, which sees the whole input) never reaches further ahead than that."""
    # At the paper's size: the x2 upsamplers look 56 samples ahead (at 16 kHz, then 32 kHz), the encoder
    # and decoder add their strides' alignment, the x2 downsamplers 55 and 56 more: 595 samples (hand
    # derived, stage by stage, in _StreamPlan), and a hop of 256 is gathered before it is processed.
    assert create_model("slimdemucs").latency_samples == 595 + 256
    model = create_model("slimdemucs", hidden=8, depth=4, resample=resample, normalize=False).eval()
    latency = model.latency_samples
    assert latency >= model.hop_samples  # a hop is gathered before it is processed
    p = 8000
    assert _first_changed_output(model, p) >= p - latency


def test_dtln_latency_is_one_frame():
    model = create_model("dtln", hidden1=[16], hidden2=[16], basis=32).eval()
    assert model.latency_samples == 512 and model.hop_samples == 128
    first = _first_changed_output(model, 8000)
    assert 8000 - 512 <= first < 8000 - 512 + 128
