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


def test_deployable_bytes_bit_widths_and_sparse_encoding():
    model = nn.Linear(1000, 100, bias=False)
    assert deployable_bytes(model).total == 100_000 * 4
    assert deployable_bytes(model, {"weight": 8}).total == 100_000
    with torch.no_grad():
        model.weight.zero_()
        model.weight[:, :10] = 1.0  # 1% non-zero
    report = deployable_bytes(model, {"weight": 8})
    (entry,) = report.tensors
    # 100,000 elements need 32-bit indices. bitmap: 100,000 bits + 1,000 int8 values = 13,500;
    # coordinate: 1,000 x (4 + 1) bytes = 5,000: the latter wins
    assert entry.nonzero == 1000 and entry.encoding == "coo32" and report.total == 5000
    small = nn.Linear(256, 256, bias=False)  # 65,536 elements: a 16-bit index addresses them all
    with torch.no_grad():
        small.weight.zero_()
        small.weight[:, :2] = 1.0
    entry = deployable_bytes(small, {"weight": 8}).tensors[0]
    assert entry.encoding == "coo16" and entry.bytes == 512 * (2 + 1)
    larger = nn.Linear(257, 256, bias=False)  # one row past 2^16 elements: 16 bits no longer suffice
    with torch.no_grad():
        larger.weight.zero_()
        larger.weight[:, :2] = 1.0
    entry = deployable_bytes(larger, {"weight": 8}).tensors[0]
    assert entry.encoding == "coo32" and entry.bytes == 512 * (4 + 1)
    with torch.no_grad():
        model.weight[:, :300] = 1.0  # 30% non-zero: bitmap (12,500 + 30,000) beats dense (100,000)
    entry = deployable_bytes(model, {"weight": 8}).tensors[0]
    assert entry.encoding == "bitmap" and entry.bytes == 12_500 + 30_000


def test_batchnorm_statistics_counted_step_counter_not():
    bn = nn.BatchNorm1d(10)
    bn.running_mean.fill_(0.5)
    nn.init.constant_(bn.bias, 0.1)  # all-zero tensors would deploy for free (no non-zeros to store)
    assert deployable_bytes(bn).total == 4 * 10 * 4  # weight, bias, running mean, running var
