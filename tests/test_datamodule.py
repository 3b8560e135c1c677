import numpy as np
import pytest
import soundfile as sf
import torch

from sezoo.config import load_config
from sezoo.data.audio import AudioError
from sezoo.data.datamodule import DATA_PRESETS, PairedDataset, SEDataModule

from conftest import REPO, make_pairs, speech_like

DYNCP = REPO / "recipes" / "dyncp" / "config.yaml"


def _data_cfg(*overrides):
    return load_config(DYNCP, list(overrides), {"data": DATA_PRESETS}).data


def test_mini_layout_train_segments_and_whole_eval_utterances(tiny_corpus):
    dm = SEDataModule(_data_cfg(f"data.root={tiny_corpus}", "data.segment_seconds=0.5", "data.batch_size=4"))
    dm.setup("fit")
    noisy, clean, names = next(iter(dm.train_dataloader()))
    assert noisy.shape == clean.shape == (4, 8000)
    noisy, clean, _ = next(iter(dm.val_dataloader()))
    assert noisy.shape == (1, 24000)


def test_missing_mini_says_how_to_build(tmp_path):
    dm = SEDataModule(_data_cfg(f"data.root={tmp_path}"))
    with pytest.raises(FileNotFoundError, match="sezoo data prepare mini"):
        dm.setup()


def test_folder_splits_by_name_deterministically(tmp_path):
    make_pairs(tmp_path, 40, seed=4, seconds=0.1)
    cfg = _data_cfg("data=folder", f"data.noisy_dir={tmp_path / 'noisy'}", f"data.clean_dir={tmp_path / 'clean'}",
                    "data.val_fraction=0.2", "data.test_fraction=0.2")
    splits = SEDataModule(cfg).split_pairs()
    assert sum(map(len, splits.values())) == 40 and all(splits.values())
    assert splits == SEDataModule(cfg).split_pairs()


def test_vbdemand_layout_resampled_with_speaker_validation(tmp_path):
    rng = np.random.default_rng(0)
    for folder, names in (("trainset_28spk_wav", ["p226_001", "p227_001", "p227_002"]), ("testset_wav", ["p232_001"])):
        for kind in ("noisy", "clean"):
            for name in names:
                path = tmp_path / "vbdemand" / f"{kind}_{folder}" / f"{name}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, speech_like(rng, 0.5, sr=48000), 48000)
    dm = SEDataModule(_data_cfg("data=vbdemand", f"data.root={tmp_path}"))
    splits = dm.split_pairs()
    assert [p[0].stem for p in splits["val"]] == ["p226_001"] and len(splits["train"]) == 2
    dm.setup()
    with pytest.warns(UserWarning, match="resampled"):
        noisy, clean, _ = dm.datasets["test"][0]
    assert noisy.shape == (8000,)


def test_vbdemand_missing_says_where_it_looked(tmp_path):
    dm = SEDataModule(_data_cfg("data=vbdemand", f"data.root={tmp_path}"))
    with pytest.raises(FileNotFoundError, match=r"Looked in .*vbdemand.*clean_testset_wav"):
        dm.setup()


def test_length_mismatch_is_refused(tmp_path):
    make_pairs(tmp_path, 1, seed=5, seconds=0.2)
    (clean,) = (tmp_path / "clean").iterdir()
    sf.write(clean, np.zeros(1000), 16000)
    with pytest.raises(AudioError, match="must be time-aligned"):
        PairedDataset([(tmp_path / "noisy" / clean.name, clean)], 16000)[0]


def test_dns_mixing_with_speechbrain_gives_consistent_targets(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "clean").mkdir()
    (tmp_path / "noise").mkdir()
    for i in range(20):
        sf.write(tmp_path / "clean" / f"c{i:02d}.wav", speech_like(rng, 1.0), 16000)
    for i in range(3):
        sf.write(tmp_path / "noise" / f"n{i}.wav", rng.standard_normal(24000).astype(np.float32) * 0.1, 16000)
    cfg = _data_cfg("data=dns", f"data.root={tmp_path}", f"data.clean_dir={tmp_path / 'clean'}",
                    f"data.noise_dir={tmp_path / 'noise'}", "data.snr_low=0", "data.snr_high=10",
                    "data.val_fraction=0.25", "data.test_fraction=0.25", "data.epoch_items=6", "data.segment_seconds=0.5")
    dm = SEDataModule(cfg)
    dm.setup()
    assert len(dm.datasets["train"]) == 6
    for noisy, target, _ in (dm.datasets["train"][0], dm.datasets["val"][0]):
        noise = noisy - target
        snr = 10 * torch.log10(target.pow(2).mean() / noise.pow(2).mean())
        assert 0.0 - 0.1 <= snr.item() <= 10.0 + 0.1
    a, b = dm.datasets["val"][0], dm.datasets["val"][0]
    assert torch.equal(a[0], b[0])  # validation mixtures are fixed
