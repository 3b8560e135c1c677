import torch
from torch import nn

from sezoo.metrics.cost import count_macs, count_params, deployable_bytes, report_macs, static_macs_per_second
from sezoo.models import create_model


def convfsenet_closed_form(bins=257, c=128, h=256, blocks=9, k=3):
    """Params and MACs per frame of Conv-FSENet, written out by hand."""
    macs = bins * c + blocks * (c * h + h * k + h * c) + c * bins
    block_params = (c * h + h) + 1 + 2 * h + (h * k + h) + 1 + 2 * h + (h * c + c)
    params = (bins * c + c) + blocks * block_params + (c * bins + bins)
    return params, macs


def test_convfsenet_cost_matches_closed_form():
    model = create_model("convfsenet")
    params, macs_per_frame = convfsenet_closed_form()
    assert macs_per_frame == 662_528  # 662.5 k MACs per frame (PAPERS.md)
    assert count_params(model) == params == 677_907
    assert static_macs_per_second(model, 16000) == macs_per_frame * 16000 / 256 == 41_408_000


def test_closed_form_follows_the_configuration():
    model = create_model("convfsenet", channels=64, hidden=96, stacks=2, dilations=(1, 2, 4, 8))
    params, macs = convfsenet_closed_form(c=64, h=96, blocks=8)
    assert count_params(model) == params
    assert static_macs_per_second(model, 16000) == macs * 62.5


def test_reported_macs_are_added_and_self_reporting_models_trusted():
    class Skips(nn.Module):
        def __init__(self, own: bool):
            super().__init__()
            self.linear = nn.Linear(4, 3, bias=False)
            self.reports_own_macs = own

        def forward(self, x):
            report_macs(7)
            return self.linear(x)

    x = torch.zeros(5, 4)
    assert count_macs(Skips(False), x) == 5 * 4 * 3 + 7
    assert count_macs(Skips(True), x) == 7


def _linear_with(rows: int, cols: int, nonzero) -> nn.Linear:
    layer = nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight.view(-1)[nonzero] = 1.0
    return layer


def test_deployable_bytes_bit_widths_and_sparse_encoding():
    model = nn.Linear(1000, 100, bias=False)
    assert deployable_bytes(model).total == 100_000 * 4
    assert deployable_bytes(model, {"weight": 8}).total == 100_000
    # 10 non-zeros at the start of each 1000-element row. Relative indices in 8 bits: 1,000 entries, plus
    # 3 fillers (256 zeros each) for the 990 zeros before each of the 99 later rows: 1,297 x (8 + 8) bits.
    # (bitmap: 12,500 + 1,000; coordinates: 1,000 x (4 + 1))
    entry = deployable_bytes(_linear_with(100, 1000, torch.arange(100_000).view(100, 1000)[:, :10].reshape(-1)),
                             {"weight": 8}).tensors[0]
    assert (entry.nonzero, entry.encoding, entry.bytes) == (1000, "rel8", 1297 * 2)
    # One non-zero every 1,000 elements: fillers would cost 3 entries each, coordinates win; 65,536 elements
    # are addressed by 16 bits (66 x (2 + 1) bytes), 100,000 need 32 (100 x (4 + 1) bytes).
    entry = deployable_bytes(_linear_with(256, 256, torch.arange(0, 65_536, 1000)), {"weight": 8}).tensors[0]
    assert (entry.nonzero, entry.encoding, entry.bytes) == (66, "coo16", 66 * 3)
    entry = deployable_bytes(_linear_with(257, 256, torch.arange(0, 65_792, 1000)), {"weight": 8}).tensors[0]
    assert (entry.encoding, entry.bytes) == ("coo32", 66 * 5)
    # 30 % non-zero: the bitmap (12,500 + 30,000) beats dense (100,000) and every index form
    entry = deployable_bytes(_linear_with(100, 1000, torch.arange(100_000).view(100, 1000)[:, :300].reshape(-1)),
                             {"weight": 8}).tensors[0]
    assert (entry.encoding, entry.bytes) == ("bitmap", 12_500 + 30_000)


def test_a_quantized_weight_counts_its_codes_and_its_scale():
    from sezoo.nn.quant import add_module_sites

    layer = _linear_with(100, 1000, torch.arange(100_000).view(100, 1000)[:, :10].reshape(-1))
    with torch.no_grad():
        layer.weight[layer.weight == 0] = 0.003  # below half a step (1/127): the 8-bit code is 0
    assert deployable_bytes(layer, {"weight": 8}).tensors[0].nonzero == 100_000  # not quantized: all count
    add_module_sites(layer)
    layer.weight_quant.quantizer = layer.weight_quant.make_quantizer(8)
    entry = deployable_bytes(layer).tensors[0]
    assert (entry.bits, entry.nonzero, entry.encoding, entry.bytes) == (8, 1000, "rel8", 1297 * 2 + 4)


def test_batchnorm_statistics_counted_step_counter_not():
    bn = nn.BatchNorm1d(10)
    bn.running_mean.fill_(0.5)
    nn.init.constant_(bn.bias, 0.1)  # all-zero tensors would deploy for free (no non-zeros to store)
    assert deployable_bytes(bn).total == 4 * 10 * 4  # weight, bias, running mean, running var


def test_static_macs_probe_follows_the_model_device():
    # Regression: the probe was built on the CPU, so a model trained on a GPU crashed the cost meter at its
    # first validation. The meta device stands in for a GPU on any machine; the model records where its
    # input lives (meta kernels do not refuse a CPU input the way CUDA ones do).
    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 3, padding=1)  # 4 x 3 MACs per sample
            self.seen = set()

        def forward(self, x):
            self.seen.add(x.device.type)
            return self.conv(x.unsqueeze(1))

    model = Conv().to("meta")
    assert static_macs_per_second(model, 16000) == 12 * 16000
    assert model.seen == {"meta"}
