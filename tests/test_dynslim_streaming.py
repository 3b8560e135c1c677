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
