"""PruningSchedule and the sparsity masks: exact sparsity per structure, schedules against their closed
forms, pruned RNN units that output exactly 0, exact resume with a real Trainer, QAT together, a plain
user model, and a state dict the plain model loads."""
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sezoo.callbacks import PruningSchedule, QuantizationAwareTraining
from sezoo.models.tinylstm import TinyLSTM
from sezoo.nn.sparsity import MaskGroup, nonzero_blocks, skipped_block_elements, unit_layout


# ---------------------------------------------------------------------- masks
def test_weight_and_block_masks_prune_exactly_the_share_asked():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(64, 128))
    group = MaskGroup("w", "weight", {"w": w})
    group.update(0.7)
    group.apply()
    assert int((w == 0).sum()) == round(0.7 * 64 * 128) and group.group_sparsity() == pytest.approx(0.7, abs=1e-4)
    # the smallest magnitudes went: every survivor is at least as large as every pruned value was
    w = nn.Parameter(torch.randn(64, 128))
    before = w.detach().abs().clone()
    block = MaskGroup("w", "block", {"w": w}, block_shape=(8, 8))
    block.update(0.5)
    block.apply()
    blocks = (w.detach() != 0).view(8, 8, 16, 8).permute(0, 2, 1, 3).reshape(128, 64)
    assert set(blocks.sum(dim=1).tolist()) == {0, 64}  # whole 8x8 blocks, nothing partial
    assert int((blocks.sum(dim=1) == 0).sum()) == 64 and nonzero_blocks(w, (8, 8)) == 64
    norms = before.view(8, 8, 16, 8).pow(2).sum(dim=(1, 3)).sqrt().flatten()
    kept = blocks.sum(dim=1) > 0
    assert norms[kept].min() >= norms[~kept].max()


def test_block_masks_cover_partial_edge_blocks_and_conv_kernels():
    w = nn.Parameter(torch.ones(10, 3, 3))  # a conv kernel seen as [10, 9]: 3 x 3 blocks of 4 x 4, edges partial
    group = MaskGroup("w", "block", {"w": w}, block_shape=(4, 4))
    assert group.n_groups == 9
    keep = torch.ones(9, dtype=torch.bool)
    keep[8] = False  # the bottom-right block: rows 8-9, columns 8
    group.set_keep(keep)
    group.apply()
    assert torch.nonzero(w.detach().reshape(10, 9) == 0).tolist() == [[8, 8], [9, 8]]
    assert skipped_block_elements(w, (4, 4)) == 2  # the partial block skips what it holds, not 16
    keep[0] = False
    group.set_keep(keep)
    group.apply()
    assert skipped_block_elements(w, (4, 4)) == 2 + 16
    with torch.no_grad():
        w.view(-1)[5] = 0.0  # row 0, column 5: a scattered zero inside a live block is still multiplied
    assert skipped_block_elements(w, (4, 4)) == 18 and skipped_block_elements(w, (1, 1)) == 19


@pytest.mark.parametrize("rnn", [nn.LSTM(6, 8, num_layers=2, batch_first=True), nn.GRU(6, 8, batch_first=True)])
def test_pruned_rnn_units_output_exactly_zero(rnn):
    torch.manual_seed(0)
    callback = PruningSchedule(0.5, structure="unit", attribute=None)
    groups = callback.build_groups(rnn)  # the network is the RNN itself: one unit set per layer
    assert [g.label for g in groups] == [f"l{k}" for k in range(rnn.num_layers)]
    for group in groups:
        group.update(0.5)
        group.apply()
    out, _ = rnn(torch.randn(3, 20, 6))
    dead = ~groups[-1].keep
    assert int(dead.sum()) == 4
    assert torch.all(out[..., dead] == 0) and torch.all(out[..., ~dead].abs().sum(dim=(0, 1)) > 0)


def test_unit_layout_refuses_what_it_cannot_prune():
    with pytest.raises(ValueError, match="bidirectional"):
        unit_layout(nn.LSTM(4, 4, bidirectional=True))
    with pytest.raises(ValueError, match="no unit layout for LayerNorm"):
        unit_layout(nn.LayerNorm(4))


def test_unit_pruned_tinylstm_compacts_to_the_same_function():
    torch.manual_seed(0)
    model = TinyLSTM(hidden=(16, 12)).eval()
    callback = PruningSchedule(0.25, structure="unit", include=["layers.?"], attribute=None)
    groups = callback.build_groups(model)
    assert [g.label for g in groups] == ["layers.0", "layers.1"]
    for group in groups:
        group.update(0.25)
        group.apply()
    small = PruningSchedule.compact(model).eval()
    assert [layer.hidden_size for layer in small.layers] == [12, 9]
    x = torch.randn(2, 8000)
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="no compact"):
        PruningSchedule.compact(nn.Linear(2, 2))


# ---------------------------------------------------------------------- schedule
def test_schedules_follow_their_closed_forms():
    cubic = PruningSchedule(0.8, start=10, end=110, update_every=10, initial=0.1)
    assert cubic.sparsity_at(9, 10, 110) == 0.0
    assert cubic.sparsity_at(10, 10, 110) == pytest.approx(0.1)
    assert cubic.sparsity_at(60, 10, 110) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5 ** 3)
    assert cubic.sparsity_at(500, 10, 110) == 0.8
    assert [cubic.due_point(s, 10, 110) for s in (5, 10, 19, 20, 109, 110, 400)] == [None, 10, 10, 20, 100, 110, 110]
    linear = PruningSchedule(0.6, schedule="linear", start=0, end=100)
    assert linear.sparsity_at(25, 0, 100) == pytest.approx(0.15)
    one_shot = PruningSchedule(0.5, schedule="one_shot", start=30)
    assert (one_shot.sparsity_at(29, 30, 30), one_shot.sparsity_at(30, 30, 30)) == (0.0, 0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.0}, "target=1.0"),
    ({"target": 0.5, "structure": "channel"}, "structure='channel'"),
    ({"target": 0.5, "structure": "block"}, "block_shape=None"),
    ({"target": 0.5, "block_shape": (4, 4)}, "is for structure='block'"),
    ({"target": 0.5, "start": 10, "end": 0.5}, "both in steps"),
    ({"target": 0.5, "start": 0.6, "end": 0.5}, "0 <= start <= end <= 1"),
    ({"target": 0.5, "schedule": "exp"}, "schedule='exp'"),
    ({"target": 0.5, "update_every": 0}, "update_every=0"),
])
def test_invalid_combinations_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PruningSchedule(**kwargs)


# ---------------------------------------------------------------------- with a real Trainer
class UserModule(L.LightningModule):
    """A plain user model: nothing of sezoo inside."""

    def __init__(self):
        super().__init__()
        self.model = nn.ModuleDict({"rnn": nn.LSTM(8, 16, num_layers=2, batch_first=True), "head": nn.Linear(16, 4)})

    def forward(self, x):
        return self.model["head"](self.model["rnn"](x)[0])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 10, 8, generator=g), torch.randn(32, 10, 4, generator=g)),
                      batch_size=8)  # 4 steps an epoch, fixed order


def _fit(module, callbacks, epochs, root=None, ckpt_path=None):
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks, enable_checkpointing=root is not None,
                        default_root_dir=root)
    trainer.fit(module, _loader(), ckpt_path=ckpt_path)
    return trainer


def test_plain_model_reaches_the_target_exactly_and_keeps_a_plain_state_dict():
    L.seed_everything(0)
    module = UserModule()
    keys = set(module.state_dict())
    callback = PruningSchedule(0.75, structure="weight", exclude=["*head*"], start=0.0, end=0.5, update_every=2,
                               attribute=None)
    _fit(module, [callback], epochs=4)
    achieved = callback.achieved()
    assert set(achieved) == {f"model.rnn.weight_{k}_l{n}" for k in ("ih", "hh") for n in (0, 1)}
    for name, p in module.named_parameters():
        if name in achieved:
            assert achieved[name] == pytest.approx(0.75) and float((p == 0).float().mean()) == pytest.approx(0.75)
        elif name == "model.head.weight":
            assert not torch.any(p == 0)
    assert set(module.state_dict()) == keys
    plain = UserModule()
    plain.load_state_dict(module.state_dict())  # strict: nothing added, nothing renamed


def test_killed_and_resumed_run_ends_with_the_masks_of_an_uninterrupted_one(tmp_path):
    def callback():
        return PruningSchedule(0.6, structure="block", block_shape=(4, 4), start=0, end=20, update_every=2)

    L.seed_everything(0)
    whole = UserModule()
    whole_callback = callback()
    _fit(whole, [whole_callback], epochs=6)

    L.seed_everything(0)
    first = UserModule()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    with pytest.warns(UserWarning, match="sparsity 0.525 of the target 0.6"):  # killed after 12 steps
        _fit(first, [callback(), checkpoint], epochs=3, root=tmp_path)
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(state.get("last_update") == 10 for state in saved["callbacks"].values())
    resumed = UserModule()
    resumed_callback = callback()
    _fit(resumed, [resumed_callback, ModelCheckpoint(dirpath=tmp_path, save_last=True)], epochs=6, root=tmp_path,
         ckpt_path=tmp_path / "last.ckpt")

    assert whole_callback.last_update == resumed_callback.last_update == 20
    for a, b in zip(whole_callback.groups, resumed_callback.groups):
        assert torch.equal(a.keep, b.keep)
    for (name, p), q in zip(whole.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0, msg=name)
    # exactly round(0.6 n) of each tensor's n blocks: 2 of the head's 4, 19 of the first input matrix's 32
    assert {name: round(v * g.n_groups) for (name, v), g in zip(resumed_callback.achieved().items(), resumed_callback.groups)} == \
        {g.label: round(0.6 * g.n_groups) for g in resumed_callback.groups}
    assert resumed_callback.achieved()["head.weight"] == 0.5


def test_pruning_and_qat_together_keep_the_zeros_through_fake_quantization():
    L.seed_everything(0)
    module = UserModule()
    pruning = PruningSchedule(0.5, structure="weight", include=["head.weight"], schedule="one_shot", start=2)
    qat = QuantizationAwareTraining({"head": 8}, start_step=0)
    _fit(module, [pruning, qat], epochs=2)
    head = module.model["head"]
    assert {n: s["bits"] for n, s in qat.state_dict()["sites"].items()} == {"head.weight_quant": 8, "head.output_quant": 8}
    mask = pruning.groups[0].masks["head.weight"]
    assert float((~mask).float().mean()) == pytest.approx(0.5) and torch.all(head.weight[~mask] == 0)
    quantized = head.weight_quant.quantize(head.weight)
    assert torch.all(quantized[~mask] == 0) and len(torch.unique(quantized[mask])) > 8


def test_fractions_of_training_become_steps_and_a_run_stopped_early_warns():
    L.seed_everything(0)
    callback = PruningSchedule(0.5, start=0.25, end=0.75, update_every=1, exclude=["head.*"])
    _fit(UserModule(), [callback], epochs=4)  # 16 steps: the schedule runs from step 4 to step 12
    assert callback._steps == (4, 12) and callback.last_update == 12
    assert set(callback.achieved().values()) == {0.5}
    short = PruningSchedule(0.5, start=0, end=100, update_every=1)
    with pytest.warns(UserWarning, match=r"before the schedule's end \(step 100\)"):
        _fit(UserModule(), [short], epochs=1)
