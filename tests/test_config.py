import pytest
from omegaconf import OmegaConf

from sezoo.config import ConfigError, apply_overrides, load_config, save_config
from sezoo.data.datamodule import DATA_PRESETS

from conftest import REPO

DYNCP = REPO / "recipes" / "dyncp" / "config.yaml"


def test_dotlist_overrides_apply_with_types():
    cfg = load_config(DYNCP, ["trainer.max_epochs=3", "data.batch_size=8", "optim.lr=1", "model.causal=true"])
    assert cfg.trainer.max_epochs == 3 and cfg.data.batch_size == 8
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.causal is True


def test_unknown_key_names_the_key_and_close_matches():
    with pytest.raises(ConfigError, match=r"'trainer.max_epoch'.*Close matches: trainer.max_epochs"):
        load_config(DYNCP, ["trainer.max_epoch=3"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match=r"'data.batch_size' .* expects int .* got 'eight'"):
        load_config(DYNCP, ["data.batch_size=eight"])
    with pytest.raises(ConfigError, match="expects bool"):
        load_config(DYNCP, ["model.causal=3"])


def test_group_selector_switches_data_preset():
    cfg = load_config(DYNCP, ["data=folder", "data.noisy_dir=/x/noisy", "data.clean_dir=/x/clean"], {"data": DATA_PRESETS})
    assert cfg.data.name == "folder" and cfg.data.noisy_dir == "/x/noisy"
    with pytest.raises(ConfigError, match="unknown preset; choose from dns, folder, mini, vbdemand"):
        load_config(DYNCP, ["data=vbdemnd"], {"data": DATA_PRESETS})


def test_not_key_value():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides(OmegaConf.create({"a": 1}), ["a"])


def test_saved_config_is_resolved(tmp_path):
    cfg = OmegaConf.create({"a": 2, "b": "${a}"})
    save_config(cfg, tmp_path / "c.yaml")
    assert OmegaConf.load(tmp_path / "c.yaml").b == 2 and "${" not in (tmp_path / "c.yaml").read_text()
