"""Publish a run folder to the zoo: weights, model card and registry entry, figures from results.json.

Everything an entry says comes from the run folder the recipe wrote: the measured figures, the
command, the paper and licence the recipe declares (``results.json``), the architecture and its
recorded kwargs (``model.json``). Only the lineage is the publisher's to state: ``parent`` names the
entry this model was compressed from, and it must already be in the registry.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from sezoo.weights import METADATA, WEIGHTS
from sezoo.zoo.download import sha256_of
from sezoo.zoo.entry import Paper, Training, ZooEntry, ZooFile
from sezoo.zoo.registry import NAME_PATTERN, model_card, read_registry, write_registry


def machine_paths(text: str) -> list[str]:
    """Absolute paths in a command (``/home/...``, ``C:\\...``): they name one machine's folders."""
    words = [w.split("=", 1)[-1] for w in text.split()]
    return [w for w in words if w.startswith(("/", "~")) or (len(w) > 2 and w[1:3] in (":\\", ":/"))]


def build_entry(run_folder: Path, name: str, file_name: str, sha256: str, size: int,
                operating_point: dict | None, command: str | None, description: str, parent: str | None) -> ZooEntry:
    results = json.loads((run_folder / "results.json").read_text())
    meta = json.loads((run_folder / METADATA).read_text())
    recipe = results["recipe"]
    if "paper" not in results or "licence" not in results:
        raise ValueError(f"{run_folder / 'results.json'}: no paper or licence (a run from before sezoo 0.2); "
                         f"retrain, or add the recipe's paper and licence to it")
    command = command or results.get("command", f"python recipes/{recipe}/train.py")
    if machine_paths(command):
        raise ValueError(f"the training command names this machine's folders ({', '.join(machine_paths(command))}); "
                         f"pass --command with paths relative to the repository or $SEZOO_DATA")
    return ZooEntry(
        name=name, recipe=recipe, arch=meta["arch"], kwargs=meta["kwargs"], sample_rate=meta["sample_rate"],
        files=(ZooFile(file_name, sha256, size),),
        training=Training(data=results["data"], run=results["run"], command=command),
        evaluated_on=f"{results['data']} test split ({results['n_test_files']} utterances)",
        metrics=results["metrics"], input_metrics=results["input_metrics"], cost=results["cost"],
        paper=Paper(**results["paper"]), licence=results["licence"], description=description,
        operating_point=operating_point, parent=parent, quantization=meta.get("quantization"),
        utilization=results.get("utilization"), latency_ms=algorithmic_latency_ms(meta))


def algorithmic_latency_ms(meta: dict) -> float:
    """The latency of the architecture as recorded (``model.json``): its ``latency_samples``, in ms."""
    from sezoo.models import create_model

    model = create_model(meta["arch"], **meta["kwargs"])
    return round(model.latency_ms, 3)


def model_json(entry: ZooEntry) -> dict:
    """The small JSON published beside the weights: enough to rebuild the model without the registry."""
    import torch

    import sezoo

    return {"format": 1, "name": entry.name, "arch": entry.arch, "kwargs": entry.kwargs,
            "operating_point": entry.operating_point, "sample_rate": entry.sample_rate,
            "quantization": entry.quantization, "weights": vars(entry.files[0]),
            "versions": {"sezoo": sezoo.__version__, "torch": torch.__version__}}


def _with_sidecar(entry: ZooEntry, sidecar_name: str, data: bytes) -> ZooEntry:
    return replace(entry, files=(*entry.files, ZooFile(sidecar_name, hashlib.sha256(data).hexdigest(), len(data))))


def _check_parent(parent: str | None, entries: list[ZooEntry], where: str) -> None:
    if parent and parent not in {e.name for e in entries}:
        raise KeyError(f"--parent {parent!r} is not in {where}; publish the parent first (lineage names existing entries)")


def publish(run_folder: str | Path, name: str, to: str, registry: str | Path | None = None,
            operating_point: dict | None = None, command: str | None = None, description: str = "",
            parent: str | None = None) -> ZooEntry:
    """Write weights, card and entry to ``to`` (a folder or ``hf://ORG/REPO``); also merge the entry into
    ``registry`` (e.g. the package's ``sezoo/zoo/registry.json``) when given."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"zoo name {name!r} must look like <recipe>/<variant> (lower-case recipe)")
    run_folder = Path(run_folder)
    for required in ("results.json", METADATA, WEIGHTS):
        if not (run_folder / required).exists():
            raise FileNotFoundError(f"{run_folder / required}: missing; publish a finished run folder")
    sha256 = sha256_of(run_folder / WEIGHTS)
    size = (run_folder / WEIGHTS).stat().st_size
    stem = name.replace("/", "-")
    if to.startswith("hf://"):
        return _publish_hf(run_folder, name, to, sha256, size, operating_point, command, description, parent, registry)
    target = Path(to)
    target.mkdir(parents=True, exist_ok=True)
    entries = read_registry(target / "registry.json")
    _check_parent(parent, entries, str(target / "registry.json"))
    # One weight file may serve several entries (operating points): reuse a file with the same bytes.
    same = [e.weights.name for e in entries if e.weights.sha256 == sha256]
    file_name = same[0] if same else f"{stem}.safetensors"
    if not same:
        shutil.copyfile(run_folder / WEIGHTS, target / file_name)
    entry = build_entry(run_folder, name, file_name, sha256, size, operating_point, command, description, parent)
    sidecar = json.dumps(model_json(entry), indent=1).encode() + b"\n"
    (target / f"{stem}.json").write_bytes(sidecar)
    entry = _with_sidecar(entry, f"{stem}.json", sidecar)
    merged = [e for e in entries if e.name != name] + [entry]
    (target / f"{stem}.md").write_text(model_card(entry, _ancestry(entry, merged)))
    write_registry(merged, target / "registry.json")
    if registry:
        _merge_into(Path(registry), entry)
    return entry


def retire(names: list[str], to: str | Path, registry: str | Path | None = None) -> list[str]:
    """Take superseded entries out of the zoo folder ``to`` (and out of ``registry`` when given): their
    entries, cards and sidecars, and each weight file no remaining entry shares. The files stay in the
    repository's history. Refused while a remaining entry names one of them as its parent (retire the
    children with it). Returns the files removed."""
    target = Path(to)
    entries = read_registry(target / "registry.json")
    known = {e.name for e in entries}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"not in {target / 'registry.json'}: {', '.join(unknown)}")
    keep = [e for e in entries if e.name not in names]
    orphans = [f"{e.name} (parent {e.parent})" for e in keep if e.parent in names]
    if orphans:
        raise ValueError(f"still the parent of {', '.join(orphans)}: retire those too, or keep the parent")
    shared = {f.name for e in keep for f in e.files}
    removed = []
    for entry in entries:
        if entry.name in names:
            stem = entry.name.replace("/", "-")
            for name in [f.name for f in entry.files] + [f"{stem}.md"]:
                if name not in shared and (target / name).exists():
                    (target / name).unlink()
                    removed.append(name)
    write_registry(keep, target / "registry.json")
    if registry:
        write_registry([e for e in read_registry(Path(registry)) if e.name not in names], Path(registry))
    return removed


def repack(names: list[str], to: str | Path, registry: str | Path | None = None) -> dict[str, tuple[int, int]]:
    """Store published QAT entries' weights at their deployable width: integer codes and one scale per
    tensor (:func:`sezoo.nn.encoding.pack_state`, what ``export_model`` writes since sezoo 0.3), for
    entries published as float32 before then. Lossless for the model as it runs: each quantized weight
    is stored as the codes its quantizer produced, and the repacked model's output is checked equal to
    the stored one's on a probe signal before anything is replaced (refused otherwise). The float
    master weights, which only further training would need, stay in the repository's history.
    Returns the weight files rewritten: name -> (bytes before, bytes after)."""
    import torch

    from sezoo.export import save_weights
    from sezoo.weights import build_model

    target = Path(to)
    entries = read_registry(target / "registry.json")
    by_name = {e.name: e for e in entries}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"not in {target / 'registry.json'}: {', '.join(unknown)}")
    rewritten: dict[str, tuple[int, int]] = {}
    for name in names:
        entry = by_name[name]
        if not entry.quantization:
            raise ValueError(f"{name}: no quantizer ranges (not a QAT model); its float weights are its deployable width")
        path = target / entry.weights.name
        model = build_model(entry.arch, entry.kwargs, path, entry.quantization, entry.operating_point)
        with tempfile.TemporaryDirectory() as tmp:
            candidate = Path(tmp) / entry.weights.name
            save_weights(model, candidate)
            repacked = build_model(entry.arch, entry.kwargs, candidate, entry.quantization, entry.operating_point)
            probe = torch.randn(1, entry.sample_rate, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                if not torch.equal(model(probe), repacked(probe)):
                    raise ValueError(f"{name}: the repacked weights change the model's output; left as it is")
            before = path.stat().st_size
            shutil.copyfile(candidate, path)
        rewritten[entry.weights.name] = (before, path.stat().st_size)
    # every entry that shares a rewritten file (operating points) gets its new hash, sidecar and card
    updated = []
    for entry in entries:
        if entry.weights.name in rewritten:
            weights = ZooFile(entry.weights.name, sha256_of(target / entry.weights.name),
                              (target / entry.weights.name).stat().st_size)
            entry = replace(entry, files=(weights,))
            stem = entry.name.replace("/", "-")
            sidecar = json.dumps(model_json(entry), indent=1).encode() + b"\n"
            (target / f"{stem}.json").write_bytes(sidecar)
            entry = _with_sidecar(entry, f"{stem}.json", sidecar)
        updated.append(entry)
    for entry in updated:
        if entry.weights.name in rewritten:
            (target / f"{entry.name.replace('/', '-')}.md").write_text(model_card(entry, _ancestry(entry, updated)))
    write_registry(updated, target / "registry.json")
    if registry:
        changed = {e.name: e for e in updated if e.weights.name in rewritten}
        write_registry([changed.get(e.name, e) for e in read_registry(Path(registry))], Path(registry))
    return rewritten


def _ancestry(entry: ZooEntry, entries: list[ZooEntry]) -> list[str]:
    from sezoo.zoo.entry import lineage

    return lineage(entry, {e.name: e for e in entries})


def _merge_into(registry: Path, entry: ZooEntry) -> None:
    entries = read_registry(registry)
    _check_parent(entry.parent, entries, str(registry))
    write_registry([e for e in entries if e.name != entry.name] + [entry], registry)


def _publish_hf(run_folder, name, to, sha256, size, operating_point, command, description, parent, registry) -> ZooEntry:
    from huggingface_hub import HfApi

    repo = to[len("hf://"):].strip("/")
    api = HfApi()
    stem = name.replace("/", "-")
    file_name = f"{stem}.safetensors"
    entry = build_entry(run_folder, name, file_name, sha256, size, operating_point, command, description, parent)
    api.upload_file(path_or_fileobj=str(run_folder / WEIGHTS), path_in_repo=file_name, repo_id=repo)
    sidecar = json.dumps(model_json(entry), indent=1).encode() + b"\n"
    api.upload_file(path_or_fileobj=sidecar, path_in_repo=f"{stem}.json", repo_id=repo)
    entry = _with_sidecar(entry, f"{stem}.json", sidecar)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = api.hf_hub_download(repo_id=repo, filename="registry.json", local_dir=tmp)
            entries = read_registry(Path(local))
        except Exception:  # a new repository has no registry yet
            entries = []
        _check_parent(parent, entries, to)
        merged = [e for e in entries if e.name != name] + [entry]
        api.upload_file(path_or_fileobj=model_card(entry, _ancestry(entry, merged)).encode(),
                        path_in_repo=f"{stem}.md", repo_id=repo)
        merged_path = Path(tmp) / "merged.json"
        write_registry(merged, merged_path)
        api.upload_file(path_or_fileobj=str(merged_path), path_in_repo="registry.json", repo_id=repo)
    if registry:
        _merge_into(Path(registry), entry)
    return entry
