"""Exported models: ``model.safetensors`` (weights) + ``model.json`` (architecture and metadata).

Nothing here unpickles: weights are safetensors, metadata is JSON, so an exported model from anywhere
is safe to load.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import sezoo
from sezoo.models import create_model
from sezoo.nn.quant import apply_quantization

WEIGHTS, METADATA = "model.safetensors", "model.json"


def export_model(model: nn.Module, folder: str | Path, arch: str, kwargs: dict, extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
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
            f"train.py, or a zoo name such as dyncp/mini-dense."
        )
    meta = json.loads(meta_path.read_text())
    model = create_model(meta["arch"], **meta["kwargs"])
    missing, unexpected = model.load_state_dict(load_file(str(weights_path)), strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights_path}: weights do not fit {meta['arch']} {meta['kwargs']}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if meta.get("quantization"):  # a QAT model: attach the quantizers it was trained with
        apply_quantization(model, meta["quantization"])
    if meta.get("operating_point"):  # e.g. one utilization factor of a slimmable model
        model.set_operating_point(**meta["operating_point"])
    model.metadata = meta
    return model.eval()
