"""The one place where weights go into a model.

- :func:`build_model`: an architecture, its kwargs and a weight file -> a ready model (quantizers
  and operating point restored). ``sezoo.export.load_exported`` (run and export folders) and
  ``sezoo.zoo.load`` (zoo entries) both build through it.
- :func:`load_weights`: start a training stage from another run folder, export or zoo entry. The
  keys that the new stage adds (a router, gates, pruning thresholds) are named explicitly with
  ``new_keys`` patterns; anything else missing, and anything unexpected, is an error that lists both.

Weights are read with safetensors only: nothing here unpickles.
"""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:  # torch is imported where weights are read: the zoo's listing stays light
    import torch
    from torch import nn

WEIGHTS, METADATA = "model.safetensors", "model.json"
PACKED_KEY = "sezoo.packed"  # safetensors metadata: how encoded tensors decode (sezoo.nn.encoding)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's state dict, encoded tensors (integer codes, sparse forms) decoded."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        packed = (handle.metadata() or {}).get(PACKED_KEY)
    if not packed:
        return tensors
    from sezoo.nn.encoding import unpack_state

    return unpack_state(tensors, json.loads(packed))


class WeightsError(ValueError):
    """Weights that do not fit a model, or a source that holds none; the message says which keys."""


def _listed(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def read_state(source: str | Path | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a run or export folder, a ``.safetensors`` file or a zoo name, and a label
    naming where it came from. A mapping (a state dict in memory) passes through."""
    if isinstance(source, Mapping):
        return dict(source), "the given state dict"
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS
    elif not path.exists():
        from sezoo.zoo.registry import NAME_PATTERN

        if NAME_PATTERN.match(str(source)):  # a zoo entry: verified download into the cache
            from sezoo import zoo

            return load_state_file(zoo.weights_path(str(source))), f"zoo entry {source}"
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no {WEIGHTS} there. Point at a finished run folder, an export folder, "
                                f"a .safetensors file or a zoo name (`sezoo zoo list`).")
    return load_state_file(path), str(path)


def load_weights(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], new_keys: Iterable[str] = ()) -> None:
    """Load ``source`` into ``model``. ``new_keys``: fnmatch patterns of the parameters that ``model``
    has and the source may lack (what this stage adds, e.g. ``"router.*"``); they keep their
    initialisation. Any other missing key, and any unexpected one, raises :class:`WeightsError`."""
    state, label = read_state(source)
    new_keys = tuple(new_keys)
    own = model.state_dict()
    # Shapes first: load_state_dict raises a bare RuntimeError on them, which names no setting.
    reshaped = [f"{k} {list(state[k].shape)} in the weights, {list(v.shape)} here"
                for k, v in own.items() if k in state and state[k].shape != v.shape]
    missing = [k for k in own if k not in state and not any(fnmatch.fnmatchcase(k, p) for p in new_keys)]
    unexpected = [k for k in state if k not in own]
    if not reshaped:
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if missing or unexpected or reshaped:
        arch = getattr(model, "arch_name", type(model).__name__)
        parts = ([f"missing {_listed(missing)}"] if missing else []) + ([f"unexpected {_listed(unexpected)}"] if unexpected else [])
        parts += [f"wrong shape {_listed(reshaped, 3)}"] if reshaped else []
        allowed = f" (new keys allowed: {', '.join(new_keys)})" if new_keys else ""
        raise WeightsError(f"{label}: the weights do not fit this {arch} {json.dumps(getattr(model, 'kwargs', {}))}: "
                           f"{'; '.join(parts)}{allowed}. The model settings must match the run the weights come from.")


def build_model(arch: str, kwargs: dict, weights: str | Path | Mapping[str, torch.Tensor],
                quantization: dict | None = None, operating_point: dict | None = None) -> nn.Module:
    """A model in eval mode from its architecture, kwargs and weights (strict: every key must fit),
    with the QAT quantizers it was trained with and its operating point."""
    from sezoo.models import create_model
    from sezoo.nn.quant import apply_quantization

    model = create_model(arch, **kwargs)
    load_weights(model, weights)
    if quantization:
        apply_quantization(model, quantization)
    if operating_point:
        model.set_operating_point(**operating_point)
    return model.eval()
