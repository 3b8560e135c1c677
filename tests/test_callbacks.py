"""The shared UtilizationLoss callback on a user's own LightningModule: schedules, a second fit,
epochs without sources, resume with new settings, argument checks."""
import lightning as L
import pytest
import torch
from torch import nn

from sezoo.callbacks import UtilizationLoss
from sezoo.nn.gates import ChannelGate


class _ToyGated(L.LightningModule):
    """A user's own module: one gate over 8 channels, nothing from sezoo but the gate."""

    def __init__(self):
        super().__init__()
        self.gate = ChannelGate(4, 8, hidden=4, initial_bias=2.0)
        self.head = nn.Conv1d(4, 1, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.head(x) * self.gate(x).mean(1, keepdim=True)).pow(2).mean() * 0

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class _ToyStatic(L.LightningModule):
    """No utilization source anywhere, with a validation loop."""

    def __init__(self):
        super().__init__()
        self.model = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.model(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.model(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _data(n=64, shape=(4, 10)):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(n, *shape)), batch_size=8)


def _trainer(tmp_path, callback, steps, **kwargs):
    return L.Trainer(max_steps=steps, callbacks=[callback], logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu", **kwargs)


def test_utilization_loss_pulls_any_module_to_target(tmp_path):
    module = _ToyGated()
    callback = UtilizationLoss(target=0.25, weight=1.0, start_target=1.0, anneal_steps=10, attribute=None)
    assert callback.target_at(0) == 1.0 and callback.target_at(5) == pytest.approx(0.625) and callback.target_at(99) == 0.25
    _trainer(tmp_path, callback, 120).fit(module, _data())
    assert float(module.gate.last_utilization.detach()) == pytest.approx(0.25, abs=0.1)


def test_a_second_fit_runs_with_its_own_callback_and_trainer(tmp_path):
    """A two-phase curriculum: the second fit's target and step count, not the first's."""
    module = _ToyGated()
    first = _trainer(tmp_path, UtilizationLoss(target=0.9, attribute=None), 5)
    first.fit(module, _data())
    steps_seen = []
    second = _trainer(tmp_path, UtilizationLoss(target=lambda step: steps_seen.append(step) or 0.1, attribute=None), 3)
    second.fit(module, _data())
    assert steps_seen == [0, 1, 2]
    assert float(second.callback_metrics["train/util/target"]) == pytest.approx(0.1)
    assert "training_step" not in module.__dict__  # the wrapper goes with its fit


def test_an_epoch_without_sources_logs_nothing(tmp_path):
    trainer = _trainer(tmp_path, UtilizationLoss(target=0.5), 4, limit_val_batches=2, val_check_interval=2)
    trainer.fit(_ToyStatic(), _data(shape=(4,)), _data(16, shape=(4,)))
    assert trainer.global_step == 4 and not any(k.startswith("val/util") for k in trainer.callback_metrics)


def test_resume_takes_the_new_settings_and_warns(tmp_path):
    module = _ToyGated()
    trainer = _trainer(tmp_path, UtilizationLoss(target=0.25, start_target=1.0, anneal_steps=10, attribute=None), 3)
    trainer.fit(module, _data())
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    resumed = UtilizationLoss(target=0.6, attribute=None)
    with pytest.warns(UserWarning, match=r"target: 0.25 -> 0.6.*anneal_steps: 10 -> 0"):
        _trainer(tmp_path, resumed, 4).fit(_ToyGated(), _data(), ckpt_path=tmp_path / "c.ckpt")
    assert resumed.target == 0.6 and resumed.anneal_steps == 0 and resumed.start_target == 0.6


def test_temperature_schedule_reaches_gumbel_gates(tmp_path):
    module = _ToyGated()
    module.gate.estimator = "gumbel"
    callback = UtilizationLoss(target=0.5, temperature=(1.0, 0.1), temperature_steps=2, attribute=None)
    assert callback.temperature_at(1) == pytest.approx(0.1 ** 0.5)
    _trainer(tmp_path, callback, 2).fit(module, _data(16))
    assert module.gate.temperature == pytest.approx(0.1 ** 0.5)  # set before the last (second) step


def test_attribute_limits_the_search_and_a_missing_one_is_named(tmp_path):
    class Wrapped(_ToyGated):
        def __init__(self):
            super().__init__()
            self.model = nn.ModuleDict({"inner": ChannelGate(4, 8, hidden=4, initial_bias=-2.0)})

        def training_step(self, batch, batch_idx):
            self.model["inner"](batch[0])
            return super().training_step(batch, batch_idx)

    module = Wrapped()
    callback = UtilizationLoss(target=0.5)  # attribute="model": the outer gate is not the network's
    _trainer(tmp_path, callback, 1).fit(module, _data(8))
    assert list(callback.sources(module)) == ["inner"]
    with pytest.raises(AttributeError, match=r"attribute='net'.*_ToyGated has no attribute 'net'.*attribute=None"):
        _trainer(tmp_path, UtilizationLoss(target=0.5, attribute="net"), 1).fit(_ToyGated(), _data(8))


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.5}, r"target=1.5 is not a utilization"),
    ({"target": 0.5, "temperature": (1.0, 0.0)}, r"temperature=\(1.0, 0.0\).*both > 0"),
    ({"target": 0.5, "weight": -1}, r"weight=-1 must not be negative"),
    ({"target": 0.5, "start_target": 2.0}, r"start_target=2.0"),
    ({"target": lambda s: 0.5, "anneal_steps": 10}, r"callable target is its own schedule"),
])
def test_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UtilizationLoss(**kwargs)


def test_a_schedule_outside_0_1_is_refused_at_the_step():
    with pytest.raises(ValueError, match=r"target\(3\)=1.3"):
        UtilizationLoss(target=lambda step: 1.0 + step / 10).target_at(3)
