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
from sezoo.weights import METADATA, WEIGHTS, build_model


def export_model(model: nn.Module, folder: str | Path, arch: str | None = None, kwargs: dict | None = None,
                 extra: dict | None = None) -> Path:
    """Weights and ``model.json``; ``arch`` and ``kwargs`` default to what the model recorded."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
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
