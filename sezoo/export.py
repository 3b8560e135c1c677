"""Exported models: ``model.safetensors`` (weights) + ``model.json`` (architecture and metadata).

Nothing here unpickles: weights are safetensors, metadata is JSON, so an exported model from anywhere
is safe to load.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

import sezoo
from sezoo.nn.encoding import pack_state
from sezoo.nn.quant import weight_bit_widths
from sezoo.weights import METADATA, PACKED_KEY, WEIGHTS, build_model


def save_weights(model: nn.Module, path: str | Path) -> None:
    """The model's weights as safetensors at their deployable width: quantized weights as their integer
    codes and sparse tensors in the encoding that deployable bytes count (sezoo.nn.encoding); how to
    decode them goes in the file's own metadata."""
    tensors, packed = pack_state(model.state_dict(), weight_bit_widths(model))
    save_file(tensors, str(path), metadata={PACKED_KEY: json.dumps(packed)} if packed else None)


def export_model(model: nn.Module, folder: str | Path, arch: str | None = None, kwargs: dict | None = None,
                 extra: dict | None = None) -> Path:
    """Weights and ``model.json``; ``arch`` and ``kwargs`` default to what the model recorded.

    A QAT model's weights are stored at their bit width, a pruned model's in its sparse encoding
    (:func:`sezoo.weights.read_state` decodes both)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS)
    arch = arch or model.arch_name
    kwargs = model.kwargs if kwargs is None else kwargs
    meta = {"format": 1, "arch": arch, "kwargs": kwargs, "sample_rate": getattr(model, "sample_rate", 16000),
            "sezoo_version": sezoo.__version__, "torch_version": torch.__version__, **(extra or {})}
    (folder / METADATA).write_text(json.dumps(meta, indent=1))
    return folder


def load_exported(path: str | Path) -> nn.Module:
    """Load from a run folder, an export folder, or its ``model.json`` / ``model.safetensors`` path."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    meta_path, weights_path = folder / METADATA, folder / WEIGHTS
    if not meta_path.exists() or not weights_path.exists():
        raise FileNotFoundError(
            f"{folder}: no exported model ({METADATA} + {WEIGHTS}). Pass a run folder written by a recipe's "
            f"train.py, or a zoo name such as dyncp/mini2-causal-dense."
        )
    meta = json.loads(meta_path.read_text())
    model = build_model(meta["arch"], meta["kwargs"], weights_path, meta.get("quantization"), meta.get("operating_point"))
    model.metadata = meta
    return model
