import numpy as np
import pytest
import soundfile as sf
import torch

from sezoo.config import load_config
from sezoo.data.audio import AudioError
from sezoo.data.datamodule import DATA_PRESETS, PairedDataset, SEDataModule
from sezoo.data.mixing import active_level_db, rms_db

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


def test_dns_mixing_is_fresh_for_training_and_fixed_for_validation(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(20):
        write = tmp_path / "clean" / f"c{i:02d}.wav"
        write.parent.mkdir(exist_ok=True)
        sf.write(write, speech_like(rng, 1.0), 16000)
    for category in ("street", "kitchen"):
        (tmp_path / "noise" / category).mkdir(parents=True)
        for i in range(2):
            sf.write(tmp_path / "noise" / category / f"n{i}.wav", rng.standard_normal(24000).astype(np.float32) * 0.1, 16000)
    cfg = _data_cfg("data=dns", f"data.root={tmp_path}", f"data.clean_dir={tmp_path / 'clean'}",
                    f"data.noise_dir={tmp_path / 'noise'}", "data.snr_low=0", "data.snr_high=10", "data.reverb_share=0",
                    "data.synthetic_share=0", "data.val_fraction=0.25", "data.test_fraction=0.25",
                    "data.epoch_items=6", "data.segment_seconds=0.5")
    dm = SEDataModule(cfg)
    dm.setup()
    assert len(dm.datasets["train"]) == 6
    assert dm.datasets["train"].noises.categories == ["kitchen", "street"]  # subfolders are categories
    for noisy, target, _ in (dm.datasets["train"][0], dm.datasets["val"][0]):
        noise = (noisy - target).numpy()
        snr = active_level_db(target.numpy()) - rms_db(noise)  # the SNR every sezoo mixture means
        assert 0.0 - 0.05 <= snr <= 10.0 + 0.05
    a, b = dm.datasets["val"][0], dm.datasets["val"][0]
    assert torch.equal(a[0], b[0])  # validation mixtures are fixed
    torch.manual_seed(0)
    first = dm.datasets["train"][0][0]
    assert not torch.equal(first, dm.datasets["train"][0][0])  # training mixtures are fresh on every call
    torch.manual_seed(0)
    assert torch.equal(first, dm.datasets["train"][0][0])  # and repeatable from the seed


def test_mini_trains_on_fresh_mixtures_of_its_material(tiny_corpus):
    dm = SEDataModule(_data_cfg(f"data.root={tiny_corpus}", "data.segment_seconds=0.5", "data.epoch_items=5"))
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) == 5 and sorted(train.noises.by_category) == ["babble", "street"]
    assert train.rooms is None  # the tiny corpus has no rooms folder
    assert not torch.equal(train[0][0], train[0][0])


def test_dns_simulates_rooms_when_asked(tmp_path):
    rng = np.random.default_rng(2)
    for folder in ("clean", "noise"):
        (tmp_path / folder).mkdir()
    for i in range(8):
        sf.write(tmp_path / "clean" / f"c{i}.wav", speech_like(rng, 1.0), 16000)
    sf.write(tmp_path / "noise" / "n.wav", rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    cfg = _data_cfg("data=dns", f"data.clean_dir={tmp_path / 'clean'}", f"data.noise_dir={tmp_path / 'noise'}",
                    "data.simulate_rooms=true", "data.reverb_share=1.0", "data.val_fraction=0.3",
                    "data.test_fraction=0.3", "data.segment_seconds=0.5")
    dm = SEDataModule(cfg)
    dm.setup()
    noisy, target, _ = dm.datasets["train"][0]
    assert noisy.shape == target.shape == (8000,)
