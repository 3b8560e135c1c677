import pytest
import torch

from sezoo.metrics.cost import count_macs
from sezoo.models import SlimmableDemucs
from sezoo.models.demucs_streaming import SlimStreamer, stream_enhance


def _routing_model(**kwargs) -> SlimmableDemucs:
    torch.manual_seed(0)
    model = SlimmableDemucs(hidden=8, depth=3, router=True, **kwargs).eval()
    with torch.no_grad():  # a router that changes its choice within the utterance
        model.router.head.weight.normal_(0.0, 3.0)
    return model


@pytest.mark.parametrize("chunk", [16, 37, 1000])
def test_streaming_reproduces_the_offline_routed_forward_and_counts_what_ran(chunk):
    model = _routing_model()
    x = torch.randn(2, 3001)
    offline, offline_macs = model(x), count_macs(model, x)
    assert len(model.router.last_choice.argmax(-1).unique()) >= 3
    std = x.std(dim=-1, keepdim=True)  # the offline forward's input scale
    streamed, streamer = stream_enhance(model, x, chunk=chunk, scale=std)
    assert streamed.shape == x.shape
    assert torch.allclose(streamed, offline, atol=1e-5)
    # The offline resamplers' convolutions compute one sample more than they keep, per stage and row.
    assert streamer.total_macs == offline_macs - 2 * x.shape[0] * 112 * (model.resample // 2)
    assert streamer.mean_utilization == pytest.approx(float(model.router.last_utilization))


def test_streaming_a_static_operating_point_matches_it_and_lags_by_the_lookahead():
    torch.manual_seed(0)
    model = SlimmableDemucs(hidden=8, depth=3, normalize=False).eval()
    model.set_operating_point(0.25)
    x = torch.randn(1, 2000)
    streamer = SlimStreamer(model)
    first = streamer.push(x[:, :800])
    assert 0 < first.shape[-1] < 800  # the resamplers' look-ahead and the framing hold some back
    out = torch.cat([first, streamer.push(x[:, 800:]), streamer.flush()], dim=-1)
    assert torch.allclose(out, model(x), atol=1e-5)


@pytest.mark.parametrize("config", [dict(), dict(depth=3, resample=2), dict(depth=4, resample=1, kernel_size=6, stride=3),
                                    dict(depth=2, kernel_size=3, stride=4)])
def test_the_step_computes_the_valid_length_in_closed_form(config):
    """The fixed-shape step's closed form (one ceiling of a division by s^depth) equals the model's
    level-by-level valid length for every input length, short ones included."""
    from sezoo.models.demucs_streaming import _valid_length

    model = SlimmableDemucs(hidden=4, **config)
    lengths = torch.arange(1, 5000)
    assert _valid_length(model, lengths).tolist() == [model.valid_length(n) for n in lengths.tolist()]


def test_the_grouped_gru_step_is_the_grouped_gru_on_one_frame():
    """``GroupedGRU.step`` (the groups batched in one product per layer, for the exported step) and
    ``stream`` (one torch GRU per group) give the same output and states."""
    from sezoo.models.demucs import GroupedGRU

    torch.manual_seed(0)
    gru = GroupedGRU(48, groups=4, layers=2)
    x, state = torch.randn(1, 48, 1), torch.randn(4, 2, 1, 12)
    out, hidden = gru.stream(x, list(state.unbind(0)))
    step_out, step_state = gru.step(x, state)
    assert torch.allclose(step_out, out, atol=1e-6)
    assert torch.allclose(step_state, torch.stack(hidden), atol=1e-6)
