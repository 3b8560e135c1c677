"""Slimmable DEMUCS: static MACs against the closed form at every utilization factor, shapes, and the
slimming itself (a narrower factor touches only the leading filters)."""
import pytest
import torch

from sezoo.metrics.cost import static_macs_per_second
from sezoo.models import SlimmableDemucs, create_model


@pytest.mark.parametrize("uf", [0.125, 0.25, 0.5, 1.0])
def test_static_macs_per_sample_match_the_closed_form(uf):
    model = SlimmableDemucs()
    model.set_operating_point(uf)
    # 53,760 * UF (encoder + decoder) + 672 (x4 sinc resampling) + 1,536 (grouped GRU bottleneck)
    assert static_macs_per_second(model, 16000, seconds=(0.512, 1.024)) / 16000 == 53_760 * uf + 2_208
    assert model.bottleneck.macs_per_frame == 393_216 and model.hop_samples == 256


def test_forward_keeps_length_and_slimming_uses_only_leading_filters():
    torch.manual_seed(0)
    model = create_model("slimdemucs", hidden=8, depth=3).eval()
    x = torch.randn(2, 3000)
    assert model(x).shape == x.shape
    narrow = model(x, uf=0.25)
    with torch.no_grad():  # filters beyond the leading quarter do not matter at UF 0.25 ...
        block = model.encoder[1]
        block.conv.weight[slice(4, None)] += 1.0
        model.decoder[0].pointwise.weight[-1] += 1.0
    assert torch.allclose(model(x, uf=0.25), narrow, atol=1e-6)
    assert not torch.allclose(model(x, uf=1.0), narrow, atol=1e-3)  # ... but do at UF 1
    with pytest.raises(ValueError, match="trained for"):
        model.set_operating_point(0.3)


def test_router_picks_one_factor_per_frame_and_feeds_the_utilization_callback():
    from sezoo.callbacks import UtilizationLoss, utilization_sources
    from sezoo.nn.router import GumbelRouter

    torch.manual_seed(0)
    router = GumbelRouter((0.125, 0.25, 0.5, 1.0), frame=256).train()
    choice = router(torch.randn(3, 1000))
    assert choice.shape == (3, 4, 4) and torch.equal(choice.sum(-1), torch.ones(3, 4))
    assert 0.125 <= router.last_utilization.item() <= 1.0
    assert 0.0 < router.last_balance.item() <= 4.0
    sources = utilization_sources(torch.nn.ModuleDict({"router": router}))
    UtilizationLoss(target=0.1, weight=1.0, balance_weight=0.1).loss(sources, 0.1).backward()
    assert router.head.weight.grad.abs().sum() > 0 and router.gru.recurrent.grad is not None


@pytest.mark.parametrize("k", [0, 2])
def test_dynamic_model_counts_what_ran(k):
    from sezoo.metrics.cost import count_macs

    torch.manual_seed(0)
    model = SlimmableDemucs(hidden=8, depth=3, router=True).eval()
    with torch.no_grad():  # the router always picks choice k: the dynamic count equals the static one
        model.router.head.bias.fill_(-50.0)
        model.router.head.bias[k] = 50.0
    x = torch.randn(1, 4096)
    dynamic_out, executed = model(x), count_macs(model, x)
    routed = model.router.last_choice.shape[1] * model.router.macs_per_frame
    model.set_operating_point(model.utilization_factors[k])
    assert torch.allclose(model(x), dynamic_out, atol=1e-5)
    assert executed == count_macs(model, x) + routed
    assert float(model.router.last_utilization) == model.utilization_factors[k]


def test_routed_inference_computes_only_each_frames_width_and_matches_the_masks():
    from sezoo.metrics.cost import count_macs

    torch.manual_seed(0)
    model = SlimmableDemucs(hidden=8, depth=3, router=True).eval()
    with torch.no_grad():  # a router that changes its choice within the utterance
        model.router.head.weight.normal_(0.0, 3.0)
    x = torch.randn(2, 8192)
    routed, routed_macs = model(x), count_macs(model, x)
    choices = model.router.last_choice
    assert len(choices.argmax(-1).unique()) >= 3  # several UFs in use
    model.routed_inference = False  # the training-time computation: full width, masked
    assert torch.allclose(model(x), routed, atol=1e-5)
    assert count_macs(model, x) == routed_macs
    assert torch.equal(model.route(x), choices)  # the router alone makes the same choices
    # What ran is cheaper than the full width by exactly the skipped filters of each frame.
    model.set_operating_point(1.0)
    full = count_macs(model, x) + choices.shape[0] * choices.shape[1] * model.router.macs_per_frame
    assert routed_macs < full


def test_routed_blocks_count_the_matrix_products_they_ran():
    from sezoo.models.demucs import DecoderBlock, EncoderBlock

    torch.manual_seed(0)
    encoder, decoder = EncoderBlock(4, 8, 8, 4), DecoderBlock(8, 4, 8, 4, activate=True)
    x = torch.randn(2, 4, 8 + 4 * 9)  # 10 encoder frames
    widths = torch.tensor([[1, 1, 2, 4, 8, 8, 2, 1, 4, 8], [8] * 10])
    y, macs = encoder.routed(x, widths)
    assert y.shape == (2, 8, 10) and macs == int(widths.sum()) * (4 * 8 + 16)
    assert torch.allclose(y[1:], encoder(x[1:], uf=1.0), atol=1e-6)
    z, macs = decoder.routed(y, widths)
    assert z.shape == (2, 4, 9 * 4 + 8) and macs == int(widths.sum()) * (2 * 8 + 4 * 8)
    assert torch.allclose(z[1:], decoder(y[1:], uf=1.0), atol=1e-6)


def test_dynamic_upper_bound_is_every_frame_at_full_width():
    from sezoo.metrics.cost import count_macs

    torch.manual_seed(0)
    model = SlimmableDemucs(hidden=8, depth=3, router=True).eval()
    x = torch.randn(1, 4096)
    bound = count_macs(model, x, executed=False)
    frames = model.router.last_choice.shape[1]  # of the normalised, padded input
    model.set_operating_point(1.0)
    router_convs = frames * (model.router.macs_per_frame - 3 * model.router.conv.out_channels)  # not the diagonal recurrence
    assert bound == count_macs(model, x) + router_convs
