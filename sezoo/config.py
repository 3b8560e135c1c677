"""Recipe configuration: one YAML per recipe, OmegaConf dotlist overrides, strict.

An override must name a key that exists in the recipe's YAML (the YAML is the schema) with a value
of a compatible type; otherwise :class:`ConfigError` names the key and the closest existing keys.
A *group selector* such as ``data=vbdemand`` swaps in a preset for a whole section before the other
overrides apply, so ``data=folder data.noisy_dir=...`` reads naturally.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    pass


def _leaf_keys(cfg: Any, prefix: str = "") -> list[str]:
    if isinstance(cfg, DictConfig):
        keys = []
        for k in cfg.keys():
            path = f"{prefix}{k}"
            keys.append(path)
            keys.extend(_leaf_keys(cfg._get_node(k), path + "."))
        return keys
    return []


def _compatible(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, (int, float))
    if isinstance(old, int):
        return isinstance(new, int)
    if isinstance(old, str):
        return isinstance(new, (str, int, float))
    if isinstance(old, (list, ListConfig)):
        return isinstance(new, (list, ListConfig))
    if isinstance(old, (dict, DictConfig)):
        return isinstance(new, (dict, DictConfig))
    return True


def _unknown_key(cfg: DictConfig, key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, _leaf_keys(cfg), n=3, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return ConfigError(f"unknown config key {key!r} ({source}).{hint}")


def apply_overrides(cfg: DictConfig, overrides: list[str], presets: Mapping[str, Mapping[str, dict]] | None = None,
                    source: str = "command line") -> DictConfig:
    presets = presets or {}
    cfg = cfg.copy()
    plain = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} ({source}) is not of the form key=value")
        key, raw = item.split("=", 1)
        if key in presets:
            if raw not in presets[key]:
                raise ConfigError(f"{key}={raw!r}: unknown preset; choose from {', '.join(sorted(presets[key]))}")
            if isinstance(cfg.get(key), DictConfig):  # a section preset, e.g. data=vbdemand
                cfg[key] = OmegaConf.merge(cfg[key], presets[key][raw])
            else:  # a whole-config variant, e.g. variant=keep50: recorded under its key
                cfg = OmegaConf.merge(cfg, presets[key][raw])
                cfg[key] = raw
        else:
            plain.append((key, item))
    for key, item in plain:
        value = OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=False)
        for part in key.split("."):
            value = value[part]
        sentinel = object()
        old = OmegaConf.select(cfg, key, default=sentinel, throw_on_missing=False)
        if old is sentinel:
            raise _unknown_key(cfg, key, source)
        if not _compatible(old, value):
            raise ConfigError(
                f"config key {key!r} ({source}) expects {type(old).__name__} (default {old!r}), got {value!r}"
            )
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, str) and not isinstance(value, str):
            value = str(value)
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def load_presets(folder: str | Path) -> dict[str, DictConfig]:
    """Every ``*.yaml`` in ``folder`` as a preset named by its file stem."""
    return {p.stem: OmegaConf.load(p) for p in sorted(Path(folder).glob("*.yaml"))}


RECIPE_DEFAULTS = Path(__file__).with_name("recipe_defaults.yaml")


def load_config(path: str | Path, overrides: list[str] = (), presets: Mapping[str, Mapping[str, dict]] | None = None) -> DictConfig:
    """A recipe's config: the shared defaults (run, data, trainer, metrics, logger) with the recipe's
    YAML merged over them, then the command-line overrides (strict)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    cfg = OmegaConf.merge(OmegaConf.load(RECIPE_DEFAULTS), OmegaConf.load(path))
    return apply_overrides(cfg, list(overrides), presets)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)
