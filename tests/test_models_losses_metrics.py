import numpy as np
import pytest
import torch

from sezoo.losses import CompressedSpectralMSE, NegativeSISDR
from sezoo.metrics.quality import quality
from sezoo.models import create_model
from sezoo.nn import STFT

from conftest import speech_like


def test_stft_round_trip():
    stft = STFT(512, 256)
    x = torch.randn(2, 5000)
    assert torch.allclose(stft.inverse(stft(x), 5000), x, atol=1e-5)
    assert stft(x).shape == (2, 257, 1 + 5000 // 256)


def test_convfsenet_shapes_and_mask_range():
    model = create_model("convfsenet", channels=16, hidden=32, stacks=1).eval()
    x = torch.randn(3, 4000)
    assert model(x).shape == (3, 4000)
    mask = model.mask(model.features(model.stft(x)))
    assert mask.shape == (3, 257, 16) and mask.min() >= 0 and mask.max() <= 1


def test_causal_variant_ignores_the_future():
    torch.manual_seed(0)
    for causal, expect_same in ((True, True), (False, False)):
        model = create_model("convfsenet", channels=16, hidden=32, stacks=1, causal=causal).eval()
        feats = torch.rand(1, 257, 20)
        changed = feats.clone()
        changed[..., 12:] += 1.0
        same = torch.allclose(model.mask(feats)[..., :12], model.mask(changed)[..., :12])
        assert same == expect_same


def test_unknown_architecture_suggests_a_name():
    with pytest.raises(KeyError, match="Did you mean convfsenet"):
        create_model("convfsnet")


def test_losses_zero_on_target_and_level_invariant():
    x = torch.randn(2, 8000)
    y = x + 0.3 * torch.randn(2, 8000)
    loss = CompressedSpectralMSE()
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(y, x).item() > 0.01
    assert loss(10 * y, 10 * x).item() == pytest.approx(loss(y, x).item(), rel=1e-4)
    noise = torch.randn(1, 8000)
    noise = noise - (noise * x[:1]).sum() / (x[:1] ** 2).sum() * x[:1]  # orthogonal to x
    noise = noise / noise.norm() * x[:1].norm() * 0.1  # 20 dB below
    assert -NegativeSISDR()(x[:1] + noise, x[:1]).item() == pytest.approx(20.0, abs=0.05)
    # the SI-SDR term adds weight * (-SI-SDR) to the spectral loss, and nothing when the weight is 0
    mixed = CompressedSpectralMSE(sisdr_weight=0.02)
    assert mixed(y, x).item() == pytest.approx(loss(y, x).item() + 0.02 * NegativeSISDR()(y, x).item(), rel=1e-5)
    with pytest.raises(ValueError, match="sisdr_weight=-1"):
        CompressedSpectralMSE(sisdr_weight=-1)


def test_quality_metrics_on_known_signals():
    clean = torch.from_numpy(speech_like(np.random.default_rng(0), 3.0))
    perfect = quality(clean, clean)
    assert perfect["pesq_wb"] > 4.5 and perfect["stoi"] > 0.99 and perfect["si_sdr"] > 50
    noisy = clean + 0.05 * torch.randn_like(clean)
    degraded = quality(noisy, clean)
    assert degraded["pesq_wb"] < 3.0 and degraded["si_sdr"] < perfect["si_sdr"]
    assert perfect["sdr"] > 40 and abs(degraded["sdr"] - degraded["si_sdr"]) < 1.5  # white noise: no filter helps


def test_dnsmos_offline_scores_noise_lower():
    from sezoo.metrics.dnsmos import dnsmos, dnsmos_available

    assert dnsmos_available()  # a dependency of sezoo: its absence is an install bug
    clean = torch.from_numpy(speech_like(np.random.default_rng(1), 4.0))
    noisy = clean + 0.1 * torch.randn_like(clean)
    clean_scores, noisy_scores = dnsmos(clean), dnsmos(noisy)
    assert set(clean_scores) == {"dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovr"}
    assert all(1.0 <= v <= 5.0 for v in clean_scores.values())
    assert noisy_scores["dnsmos_bak"] < clean_scores["dnsmos_bak"] - 0.5


def test_every_model_records_its_constructor_arguments():
    """capture_init, once in SEModel: create_model(arch, **model.kwargs) rebuilds the same network."""
    import json

    from sezoo.models import SEModel, create_model, list_models

    small = {"convfsenet": {"channels": 8, "dilations": (1,)}, "tinylstm": {"hidden": (8, 4)},
             "slimdemucs": {"hidden": 4, "depth": 2, "utilization_factors": (0.5, 1.0)}}
    for arch in list_models():
        if arch not in small:
            continue
        model = create_model(arch, **small[arch])
        json.dumps(model.kwargs)  # JSON-ready: tuples became lists
        rebuilt = create_model(arch, **model.kwargs)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
        assert model.min_samples >= 1 and model.hop_samples >= 1
    assert set(small) <= set(list_models())

    class Base(SEModel):
        def __init__(self, width: int = 3, **extra):
            super().__init__()
            self.width = width

    class Wider(Base):
        def __init__(self, width: int = 5, depth: int = 2):
            super().__init__(width=width, note="inner")

    assert Base(4, note="x").kwargs == {"width": 4, "note": "x"}
    assert Wider().kwargs == {"width": 5, "depth": 2}  # the outermost class records, not its parent
    with pytest.raises(ValueError, match="single operating point"):
        Base().set_operating_point(uf=0.5)
