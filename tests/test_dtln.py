"""The DTLN-class model of recipes/sparsity: cost against its closed form, shape and level behaviour,
unit pruning that compacts to the same function, and quantizer sites QAT reaches."""
import pytest
import torch

from sezoo.callbacks import PruningSchedule, QuantizationAwareTraining
from sezoo.metrics.cost import count_macs, count_params
from sezoo.models import create_model


def test_default_dtln_cost_matches_the_closed_form():
    model = create_model("dtln").eval()
    lstm = lambda i, h: 4 * h * (i + h)  # noqa: E731
    per_frame = (lstm(257, 128) + lstm(128, 128) + 128 * 257  # magnitude stage
                 + 512 * 256 + lstm(256, 128) + lstm(128, 128) + 128 * 256 + 256 * 512)  # basis stage, synthesis
    assert model.macs_per_frame() == per_frame == 983_680
    assert count_macs(model, torch.randn(1, 16000)) == 125 * per_frame  # 122.96 MMAC/s
    # LSTMs (one bias each), both masks' FC, basis and synthesis without bias, two layer norms
    params = (lstm(257, 128) + 512 + lstm(128, 128) + 512 + 128 * 257 + 257 + 2 * 257
              + 512 * 256 + lstm(256, 128) + 512 + lstm(128, 128) + 512 + 128 * 256 + 256 + 2 * 256 + 256 * 512)
    assert count_params(model) == params == 987_267


@pytest.mark.parametrize("length", [128, 1000, 16000])
def test_output_has_the_input_length_and_follows_the_input_level(length):
    torch.manual_seed(0)
    model = create_model("dtln", hidden1=[32], hidden2=[32], basis=64).eval()
    x = torch.randn(2, length) * 0.1
    with torch.no_grad():
        y, y_loud = model(x), model(4 * x)
    assert y.shape == x.shape
    # normalised log magnitude and instant layer norm: the masks do not depend on the level (but for
    # the norms' epsilon, which only very quiet input meets)
    torch.testing.assert_close(y_loud / 4, y, atol=1e-3 * float(y.abs().max()), rtol=1e-3)


def test_unit_pruned_dtln_compacts_to_the_same_function():
    torch.manual_seed(0)
    model = create_model("dtln", hidden1=[24, 24], hidden2=[24, 24], basis=64).eval()
    callback = PruningSchedule(0.5, structure="unit", include=["*_stage.layers.?"], attribute=None)
    groups = callback.build_groups(model)
    assert [g.label for g in groups] == [f"{s}_stage.layers.{k}" for s in ("magnitude", "basis") for k in (0, 1)]
    for group in groups:
        group.update(0.5)
        group.apply()
    small = model.compact().eval()
    assert [layer.hidden_size for stage in (small.magnitude_stage, small.basis_stage) for layer in stage.layers] == [12] * 4
    assert small.macs_per_frame() < model.macs_per_frame()
    x = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-6, rtol=1e-4)


def test_qat_reaches_every_weight_and_the_masks():
    model = create_model("dtln", hidden1=[16], hidden2=[16], basis=32)
    covered = QuantizationAwareTraining({"*": 8}).attach(model)
    weights = {name.rsplit(".", 1)[0] + "." + site.param for name, site in covered.items() if site.param}
    matrices = {name for name, p in model.named_parameters() if p.dim() == 2}
    assert weights == matrices  # every matrix is stored at 8 bits
    assert {"magnitude_stage.mask_quant", "basis_stage.mask_quant", "magnitude_stage.norm_quant"} <= set(covered)
