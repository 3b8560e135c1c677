"""The model zoo: a registry shipped as data, verified downloads, one-line loading, model cards.

Where files live: the registry names files; a base URL says where to fetch them. By default that is
this repository's own ``release/`` folder (``file://``), so a clone works with no network at all;
``SEZOO_ZOO_URL`` points at a mirror instead (``https://...``, ``file:///...`` or ``hf://ORG/REPO``).
Files are content-addressed in the cache (``$SEZOO_CACHE/files/<sha256>.<ext>``): operating points
that share a weight file share one copy. Entries are :class:`~sezoo.zoo.entry.ZooEntry` records, read
here and nowhere else. Nothing at this module's top imports torch: listing the zoo stays light.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

from sezoo.zoo.download import cache_dir, fetch, join_url
from sezoo.zoo.entry import FORMAT, ZooEntry, lineage

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


def read_registry(path: Path | None = None) -> list[ZooEntry]:
    path = path or REGISTRY
    if not path.exists():
        return []
    try:
        models = json.loads(path.read_text())["models"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: not a sezoo registry ({err})") from err
    return [ZooEntry.from_dict(e) for e in models]


def write_registry(entries: list[ZooEntry], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = sorted(entries, key=lambda e: e.name)
    known = {e.name: e for e in entries}
    for entry in entries:
        lineage(entry, known)  # every parent is in the same registry, and no lineage loops
    path.write_text(json.dumps({"format": FORMAT, "models": [e.to_dict() for e in entries]}, indent=1) + "\n")


def list_models() -> list[ZooEntry]:
    return read_registry()


def get_entry(name: str) -> ZooEntry:
    entries = {e.name: e for e in read_registry()}
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no zoo model named {name!r}.{hint} `sezoo zoo list` shows them all.")
    return entries[name]


def entry_lineage(name: str) -> list[str]:
    """``name`` and its ancestors, nearest first (``[int8, pruned, fp32]``)."""
    return lineage(get_entry(name), {e.name: e for e in read_registry()})


def _cached(file) -> Path:
    return cache_dir() / "files" / f"{file.sha256}{Path(file.name).suffix}"


def download(name: str) -> list[Path]:
    """Fetch (or find in the cache) every file of an entry, verified; returns their cache paths."""
    entry = get_entry(name)
    base = base_url()
    return [fetch(join_url(base, f.name), _cached(f), f.sha256, f.size) for f in entry.files]


def weights_path(name: str) -> Path:
    """The entry's weight file in the cache (fetched and verified if needed)."""
    entry = get_entry(name)
    return fetch(join_url(base_url(), entry.weights.name), _cached(entry.weights), entry.weights.sha256, entry.weights.size)


def load(name: str):
    """A ready model in eval mode, with ``enhance(waveform, sample_rate)``, ``cost`` and ``zoo_entry``."""
    from sezoo.weights import build_model

    entry = get_entry(name)
    download(name)  # every file verified, the JSON sidecar too (it is for users who skip the registry)
    model = build_model(entry.arch, entry.kwargs, weights_path(name), entry.quantization, entry.operating_point)
    model.zoo_entry = entry
    model.cost = entry.cost
    return model


def _fmt(value, digits=3):
    return f"{value:.{digits}f}" if isinstance(value, float) else ("undefined" if value is None else str(value))


def _latency(entry: ZooEntry) -> str:
    if entry.latency_ms is None:
        return "not recorded in this entry"
    causal = entry.kwargs.get("causal")
    note = {True: " (causal)", False: " (non-causal: the blocks look ahead)"}.get(causal, "")
    return f"{entry.latency_ms:g} ms{note}"


def model_card(entry: ZooEntry, ancestry: list[str] | None = None) -> str:
    """The model card, written from the entry (whose figures come from the run's results.json)."""
    metrics, inputs, cost = entry.metrics, entry.input_metrics, entry.cost
    ancestry = ancestry or [entry.name] + ([entry.parent] if entry.parent else [])
    lines = [
        f"# {entry.name}",
        "",
        entry.description,
        "",
        f"- recipe: `recipes/{entry.recipe}` ({entry.paper.title})",
        f"- architecture: `{entry.arch}` {json.dumps(entry.kwargs)}",
        f"- operating point: {json.dumps(entry.operating_point)}",
        f"- lineage: {' <- '.join(f'`{n}`' for n in ancestry)}" if entry.parent else "- lineage: trained from scratch",
        f"- sample rate: {entry.sample_rate} Hz",
        f"- algorithmic latency: {_latency(entry)}",
        f"- training data: {entry.training.data}",
        f"- command: `{entry.training.command}`",
        f"- evaluated on: {entry.evaluated_on}",
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
    if entry.utilization:
        lines.append(f"Mean utilization (fraction of the dynamic capacity computed): {entry.utilization['mean']:.3f}.")
    if entry.quantization:
        bits = sorted({s["bits"] for s in entry.quantization.values()})
        lines.append(f"Quantized (fake-quantized weights and activations at {'/'.join(map(str, bits))} bits; "
                     f"deployable bytes at those widths).")
    lines += ["", f"Licence: {entry.licence}", "", f"Citation: {entry.paper.citation}", ""]
    return "\n".join(lines)
