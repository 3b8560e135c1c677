"""nsNet2 with early exits (sezoo.models.nsnet2): sizes and MACs against the closed form, what each
operating point executes, streaming against offline, and the early-exit recipe's stages."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sezoo.callbacks import UtilizationLoss
from sezoo.metrics.cost import close_ledger, count_params, open_ledger, static_macs_per_second
from sezoo.models import NsNet2, create_model
from sezoo.streaming import open_streamer, stream_enhance

SR = 16000


def _closed_form(hidden=400, decoder=600, bins=161):
    """MACs per frame of the DNS baseline: FC in, two GRUs (3 gates x (in + h) x h), the FC decoder."""
    encoder, gru = bins * hidden, 3 * hidden * (hidden + hidden)
    return encoder, gru, hidden * decoder + decoder * decoder + decoder * bins


def test_the_baseline_has_microsofts_size_and_268_mmacs():
    model = NsNet2("none")
    encoder, gru, dec = _closed_form()
    assert count_params(model) == 2_687_561  # Microsoft's ONNX: the same tensors plus two scalar constants
    assert static_macs_per_second(model, SR) == pytest.approx((encoder + 2 * gru + dec) * 100)
    assert static_macs_per_second(model, SR) == pytest.approx(268.1e6)


@pytest.mark.parametrize("topology,head", [("plain", 400 * 161), ("split1", 400 * 600 + 600 * 161),
                                           ("split2", 400 * 600 + 600 * 600 + 600 * 161)])
def test_each_exit_costs_its_closed_form(topology, head):
    model = NsNet2(topology).eval()
    encoder, gru, dec = _closed_form()
    expected = {1: encoder + gru + head, 2: encoder + 2 * gru + head, 3: encoder + 2 * gru + dec}
    for exit, macs in expected.items():
        model.set_operating_point(exit=exit)
        assert model.exit_macs_per_frame(exit) == macs
        assert static_macs_per_second(model, SR) == pytest.approx(macs * 100)  # what the FLOP counter sees
    if topology == "plain":  # the recipe's bar: the first exit runs at most 45 % of the full model
        assert expected[1] / expected[3] == pytest.approx(0.4061, abs=1e-4)


def _trained_looking_policy(model: NsNet2, seed=0):
    """Random scores, biased so that about half the frames of ``_speechlike()`` continue at each decision."""
    torch.manual_seed(seed)
    with torch.no_grad():
        _, x = model.features(_speechlike()[None])
        h1, _ = model.gru1(x)
        h2, _ = model.gru2(h1)
        for score, h in zip(model.policy.scores, (h1, h2)):
            score.weight.normal_(0, 0.3)
            score.bias.copy_(-score(h).median())


def _speechlike(seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    envelope = (torch.sin(2 * np.pi * 3 * t) > 0).float()
    return 0.3 * envelope * torch.sin(2 * np.pi * 220 * t) + 0.05 * torch.randn(t.shape, generator=g)


OPERATING_POINTS = [{"exit": 1}, {"exit": 2}, {"exit": 3}, {"policy": "adaptive", "threshold": 0.5},
                    {"policy": "budget", "macs_per_second": 150e6}, {"policy": "budget", "macs_per_second": 240e6}]


@pytest.mark.parametrize("point", OPERATING_POINTS, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_streaming_equals_offline_and_the_ledger_counts_what_ran(point):
    torch.set_num_threads(1)
    model = NsNet2("plain").eval()
    _trained_looking_policy(model)
    model.set_operating_point(**point)
    x = _speechlike()
    with torch.no_grad():
        offline = model(x[None])[0].numpy()
    depth = model.policy.last_depth[0] if "policy" in point else None  # a fixed exit reports no depths
    streamed = stream_enhance(open_streamer(model), x.numpy(), 347)
    np.testing.assert_allclose(streamed, offline, atol=2e-5)
    # What the model reports it ran equals what the FLOP counter saw it run (each layer on the frames
    # that reached it), and the per-depth closed form.
    ledger, token = open_ledger()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x[None])
    finally:
        close_ledger(token)
    if "policy" in point:
        assert sum(ledger) == counter.get_total_flops() // 2
        per_depth = model.depth_macs_per_frame if point["policy"] == "adaptive" else model.exit_macs_per_frame
        assert sum(ledger) == sum(int((depth == d).sum()) * per_depth(d) for d in (1, 2, 3))
        assert len(set(depth.tolist())) >= 2  # a mix of depths: the test exercises held GRU states
    else:
        frames = model.features(x[None])[1].shape[1]
        assert counter.get_total_flops() // 2 == frames * model.exit_macs_per_frame(point["exit"])


def test_a_budget_is_met_and_the_adaptive_rate_follows_its_threshold():
    model = NsNet2("plain").eval()
    _trained_looking_policy(model)
    x = _speechlike(2.0)
    for budget in (120e6, 180e6, 230e6):
        model.set_operating_point(policy="budget", macs_per_second=budget)
        with torch.no_grad():
            model(x[None])
        frames = model.policy.last_depth.numel()
        spent = sum(int((model.policy.last_depth == d).sum()) * model.exit_macs_per_frame(d) for d in (1, 2, 3))
        assert spent / frames * 100 == pytest.approx(budget, rel=0.01)
    utilization = []
    for threshold in (0.2, 0.5, 0.8):
        model.set_operating_point(policy="adaptive", threshold=threshold)
        with torch.no_grad():
            model(x[None])
        utilization.append(float(model.policy.last_utilization))
    assert utilization[0] > utilization[1] > utilization[2]


def test_an_early_frame_computes_nothing_after_its_exit():
    model = NsNet2("plain").eval()
    model.set_operating_point(exit=1)
    calls = []
    model.gru2.register_forward_hook(lambda *a: calls.append("gru2"))
    model.decoder.register_forward_hook(lambda *a: calls.append("decoder"))
    with torch.no_grad():
        model(_speechlike()[None])
    stream_enhance(open_streamer(model), _speechlike().numpy(), 160)
    assert calls == []


def test_bad_operating_points_are_refused_by_name():
    model = NsNet2("plain")
    with pytest.raises(ValueError, match="exit=4"):
        model.set_operating_point(exit=4)
    with pytest.raises(ValueError, match="not both"):
        model.set_operating_point(exit=1, policy="adaptive")
    with pytest.raises(ValueError, match="macs_per_second=5"):
        model.set_operating_point(policy="budget", macs_per_second=5)
    with pytest.raises(ValueError, match="has no early exits"):
        NsNet2("none").set_operating_point(policy="adaptive")
    with pytest.raises(ValueError, match="topology='deep'"):
        NsNet2("deep")


def test_the_relaxed_policy_trains_toward_its_utilization_target():
    """Training the adaptive policy: the decisions are hard in the forward and differentiable in the
    backward, and the shared UtilizationLoss moves the executed MAC share toward its target."""
    torch.manual_seed(0)
    model = NsNet2("plain", hidden=16, decoder=24).train()
    model.set_operating_point(policy="adaptive")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.policy.parameters():
        p.requires_grad_(True)
    # At this width exit 1 already costs 64 % of the full model: the reachable shares are 0.64..1.
    loss = UtilizationLoss(target=0.9, weight=1.0)
    optimizer = torch.optim.Adam(model.policy.parameters(), lr=0.05)
    x = torch.randn(4, 4000) * 0.1
    shares = []
    for _ in range(60):
        model(x)
        term = loss.loss({"policy": model.policy}, 0.9)
        optimizer.zero_grad()
        term.backward()
        optimizer.step()
        shares.append(float(model.policy.last_utilization.detach()))
        assert set(model.policy.last_depth.unique().tolist()) <= {1.0, 2.0, 3.0}  # hard decisions
    assert abs(np.mean(shares[-10:]) - 0.9) < 0.04 < 0.1 < abs(shares[0] - 0.9)


def test_the_architecture_is_registered_and_records_its_arguments():
    model = create_model("nsnet2", topology="split1", hidden=32, decoder=48, branch_width=40)
    assert model.kwargs["topology"] == "split1" and model.kwargs["branch_width"] == 40
    rebuilt = create_model("nsnet2", **model.kwargs)
    assert count_params(rebuilt) == count_params(model)


@pytest.mark.parametrize("policy", ["adaptive", "budget"])
def test_onnx_export_of_a_policy_streams_like_pytorch_and_branches_past_exit1(tmp_path, policy):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from sezoo.streaming import export_onnx

    model = NsNet2("plain", hidden=32, decoder=48).eval()
    _trained_looking_policy(model)
    if policy == "adaptive":
        model.set_operating_point(policy="adaptive", threshold=0.5)
    else:  # between exits 1 and 2: every frame leaves at exit 1 or 2, as a schedule says
        first, second = model.exit_macs_per_frame(1), model.exit_macs_per_frame(2)
        model.set_operating_point(policy="budget", macs_per_second=(first + second) / 2 * 100)
    export_onnx(model, tmp_path)
    x = _speechlike().numpy()
    torch_out = stream_enhance(open_streamer(model), x, 320)
    onnx_out = stream_enhance(open_streamer(tmp_path, runtime="onnx"), x, 320)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4)
    # The saving is real in the graph: only GRU 1 runs unconditionally; GRU 2 and the decoder sit in
    # the branches of an If (a graph that computed every exit and selected would save no time); the
    # adaptive policy's decision past exit 2 is a second If inside the first.
    graph = onnx.load(str(tmp_path / "stream.onnx")).graph
    top = [n.op_type for n in graph.node]
    assert top.count("GRU") == 1 and top.count("If") == 1
    branch = next(n for n in graph.node if n.op_type == "If")
    deeper = next(a.g for a in branch.attribute if a.name == "then_branch")
    inside = [n.op_type for n in deeper.node]
    assert inside.count("GRU") == 1 and inside.count("If") == (policy == "adaptive")


@pytest.mark.parametrize("stage", ["joint", "layer3", "policy"])
def test_an_exit_models_run_exports_every_fixed_exit_and_the_budgets_it_can_meet(stage):
    from omegaconf import OmegaConf

    from recipes.earlyexit.module import operating_points

    cfg = OmegaConf.create({"stage": stage, "policy": {"budgets": [0.3, 0.6], "thresholds": [0.2, 0.8]}})
    model = NsNet2("plain")  # exit 1 costs 40.6 %: a 30 % budget cannot be met
    points = operating_points(cfg, model)
    assert points["exit1"] == {"exit": 1} and points["exit2"] == {"exit": 2}
    assert points["budget0.60"] == {"policy": "budget", "macs_per_second": pytest.approx(0.6 * 268.1e6)}
    assert "budget0.30" not in points
    # the policy stage's file (a frozen backbone plus the policy) serves every point of its topology
    adaptive = {name for name in points if name.startswith("adaptive")}
    assert adaptive == ({"adaptive-t0.2", "adaptive-t0.8"} if stage == "policy" else set())
    assert ("exit3" in points) == (stage == "policy")


def test_a_fixed_exit_reports_no_utilization_even_when_the_model_has_a_policy():
    """A fixed exit is a static model (its MACs are the closed form): its run records no utilization, so
    a zoo entry at a fixed exit is not mistaken for a dynamic one (regression: exit 1 of a policy run
    recorded utilization 0.406 and the shipped-registry test refused it)."""
    model = NsNet2("plain", hidden=32, decoder=48).eval()
    _trained_looking_policy(model)
    x = _speechlike()[None]
    model.set_operating_point(policy="adaptive", threshold=0.5)
    with torch.no_grad():
        model(x)
    assert model.policy.last_utilization is not None and model.policy.last_depth is not None
    model.set_operating_point(exit=1)
    with torch.no_grad():
        model(x)
    assert model.policy.last_utilization is None and model.policy.last_depth is None


def test_the_joint_stage_can_fine_tune_a_trained_exit_model(tmp_path):
    """joint with init_from (a layer-wise or joint run) starts from its weights and trains every part;
    without it the joint stage builds a fresh model from ``model``."""
    from omegaconf import OmegaConf

    from recipes.earlyexit.module import build_model, trainable
    from sezoo.export import export_model

    trained = NsNet2("plain", hidden=32, decoder=48)
    export_model(trained, tmp_path / "layer3")
    cfg = OmegaConf.create({"stage": "joint", "init_from": str(tmp_path / "layer3"), "data": {"sample_rate": 16000},
                            "model": {"topology": "split1", "hidden": 400, "decoder": 600, "branch_width": 600}})
    model = build_model(cfg)
    assert model.topology == "plain" and model.kwargs["hidden"] == 32  # the run's architecture, not cfg.model
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)
    trainable(model, "joint")
    assert model.training and all(p.requires_grad for p in model.parameters())
    fresh = build_model(OmegaConf.merge(cfg, {"init_from": None, "model": {"hidden": 32, "decoder": 48}}))
    assert fresh.topology == "split1"
    assert not torch.equal(fresh.encoder.weight, trained.encoder.weight)
