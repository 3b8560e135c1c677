"""Architectures by name, apart from any weights (the zoo holds those): ``create_model(arch, **kwargs)``."""
from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def wrap(cls):
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHITECTURES[name] = cls
        cls.arch_name = name
        return cls

    return wrap


def list_models() -> list[str]:
    return sorted(_ARCHITECTURES)


def create_model(arch: str, **kwargs) -> nn.Module:
    if arch not in _ARCHITECTURES:
        close = difflib.get_close_matches(arch, _ARCHITECTURES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(list_models())}.{hint}")
    return _ARCHITECTURES[arch](**kwargs)
