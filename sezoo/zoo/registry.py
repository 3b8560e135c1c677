"""The model zoo: a registry shipped as data, verified downloads, one-line loading, model cards.

Where files live: the registry names files; a base URL says where to fetch them. By default that is
this repository's own ``release/`` folder (``file://``), so a clone works with no network at all;
``SEZOO_ZOO_URL`` points at a mirror instead (``https://...``, ``file:///...`` or ``hf://ORG/REPO``).
Files are content-addressed in the cache (``$SEZOO_CACHE/files/<sha256>.<ext>``): operating points
that share a weight file share one copy.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

from safetensors.torch import load_file

from sezoo.models import create_model
from sezoo.nn.quant import apply_quantization
from sezoo.zoo.download import cache_dir, fetch, join_url

REGISTRY = Path(__file__).with_name("registry.json")
RELEASE_DIR = Path(__file__).resolve().parents[2] / "release"
NAME_PATTERN = re.compile(r"^[a-z0-9_]+/[A-Za-z0-9_.-]+$")


def base_url() -> str:
    if os.environ.get("SEZOO_ZOO_URL"):
        return os.environ["SEZOO_ZOO_URL"]
    if RELEASE_DIR.is_dir():
        return RELEASE_DIR.as_uri()
    raise RuntimeError("no zoo location: this installation has no release/ folder beside the package. Set "
                       "SEZOO_ZOO_URL to a mirror (https://..., file:///..., or hf://ORG/REPO).")


def read_registry(path: Path | None = None) -> list[dict]:
    path = path or REGISTRY
    if not path.exists():
        return []
    return json.loads(path.read_text())["models"]


def write_registry(entries: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = sorted(entries, key=lambda e: e["name"])
    path.write_text(json.dumps({"format": 1, "models": entries}, indent=1) + "\n")


def list_models() -> list[dict]:
    return read_registry()


def get_entry(name: str) -> dict:
    entries = {e["name"]: e for e in read_registry()}
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no zoo model named {name!r}.{hint} `sezoo zoo list` shows them all.")
    return entries[name]


def download(name: str) -> list[Path]:
    """Fetch (or find in the cache) every file of an entry, verified; returns their cache paths."""
    entry = get_entry(name)
    base = base_url()
    paths = []
    for f in entry["files"]:
        suffix = Path(f["name"]).suffix
        paths.append(fetch(join_url(base, f["name"]), cache_dir() / "files" / f"{f['sha256']}{suffix}",
                           f["sha256"], f.get("size")))
    return paths


def load(name: str):
    """A ready model in eval mode, with ``enhance(waveform, sample_rate)``, ``cost`` and ``zoo_entry``."""
    entry = get_entry(name)
    (weights,) = [p for p in download(name) if p.suffix == ".safetensors"]  # the JSON sidecar is for users
    model = create_model(entry["arch"], **entry["kwargs"])
    model.load_state_dict(load_file(str(weights)), strict=True)
    if entry.get("quantization"):
        apply_quantization(model, entry["quantization"])
    if entry.get("operating_point"):
        model.set_operating_point(**entry["operating_point"])
    model.eval()
    model.zoo_entry = entry
    model.cost = entry["cost"]
    return model


def _fmt(value, digits=3):
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(entry: dict) -> str:
    """The model card, written from the registry entry (whose figures come from results.json)."""
    metrics, inputs, cost = entry["metrics"], entry["input_metrics"], entry["cost"]
    lines = [
        f"# {entry['name']}",
        "",
        entry.get("description", ""),
        "",
        f"- recipe: `recipes/{entry['recipe']}` ({entry.get('method', '')})",
        f"- architecture: `{entry['arch']}` {json.dumps(entry['kwargs'])}",
        f"- operating point: {json.dumps(entry.get('operating_point'))}",
        f"- sample rate: {entry['sample_rate']} Hz",
        f"- training data: {entry['training']['data']}",
        f"- command: `{entry['training']['command']}`",
        f"- evaluated on: {entry['evaluated_on']}",
        "",
        "| | PESQ-WB | STOI | SI-SDR (dB) | SDR (dB) |",
        "|---|---|---|---|---|",
        f"| noisy input | {_fmt(inputs['pesq_wb'])} | {_fmt(inputs['stoi'])} | {_fmt(inputs['si_sdr'], 2)} | "
        f"{_fmt(inputs.get('sdr', '-'), 2)} |",
        f"| this model | {_fmt(metrics['pesq_wb'])} | {_fmt(metrics['stoi'])} | {_fmt(metrics['si_sdr'], 2)} | "
        f"{_fmt(metrics.get('sdr', '-'), 2)} |",
        "",
        f"Cost: {cost['macs_per_second'] / 1e6:.2f} MMAC/s executed on the evaluation audio, "
        f"{cost['params']:,} parameters, {cost['model_bytes']:,} deployable bytes.",
    ]
    if "utilization" in entry:
        lines.append(f"Mean utilization (fraction of the dynamic capacity computed): {entry['utilization']['mean']:.3f}.")
    if entry.get("quantization"):
        bits = sorted({s["bits"] for s in entry["quantization"].values()})
        lines.append(f"Quantized (fake-quantized weights and activations at {'/'.join(map(str, bits))} bits; "
                     f"deployable bytes at those widths).")
    lines += ["", f"Licence: {entry['licence']}", "", f"Citation: {entry['citation']}", ""]
    return "\n".join(lines)
