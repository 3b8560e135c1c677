"""Publish a run folder to the zoo: weights, model card and registry entry, figures from results.json."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from sezoo.export import METADATA, WEIGHTS
from sezoo.zoo.download import sha256_of
from sezoo.zoo.registry import NAME_PATTERN, model_card, read_registry, write_registry

PAPERS = {
    "dyncp": ("Dynamic channel pruning of Conv-FSENet",
              "R. Miccini, C. Laroche, T. Piechowiak, L. Pezzarossa. Scalable Speech Enhancement with Dynamic "
              "Channel Pruning. ICASSP 2025. arXiv:2412.17121"),
    "tinylstm": ("Pruned, int8-quantized LSTM with skip-RNN",
                 "I. Fedorov et al. TinyLSTMs: Efficient Neural Speech Enhancement for Hearing Aids. Interspeech "
                 "2020. arXiv:2005.11138"),
    "dynslim": ("Adaptive slimming of DEMUCS with a Gumbel-softmax router",
                "R. Miccini, M. Kim, C. Laroche, L. Pezzarossa, P. Smaragdis. Adaptive Slimming for Scalable and "
                "Efficient Speech Enhancement. WASPAA 2025. arXiv:2507.04879"),
}
LICENCE = ("weights Apache-2.0; trained on the sezoo `mini` corpus, a derived work of CC-BY-SA-3.0 recordings "
           "(see the corpus' ATTRIBUTION.md)")


def build_entry(run_folder: Path, name: str, file_name: str, sha256: str, size: int,
                operating_point: dict | None, command: str | None, description: str) -> dict:
    results = json.loads((run_folder / "results.json").read_text())
    meta = json.loads((run_folder / METADATA).read_text())
    recipe = results["recipe"]
    method, citation = PAPERS.get(recipe, ("", "see CITATION.cff"))
    files = [{"name": file_name, "sha256": sha256, "size": size}]
    entry = {
        "name": name,
        "recipe": recipe,
        "method": method,
        "description": description,
        "arch": meta["arch"],
        "kwargs": meta["kwargs"],
        "operating_point": operating_point,
        "sample_rate": meta["sample_rate"],
        "files": files,
        "training": {"data": results["data"], "run": results["run"],
                     "command": command or results.get("command", f"python recipes/{recipe}/train.py")},
        "evaluated_on": f"{results['data']} test split ({results['n_test_files']} utterances)",
        "metrics": results["metrics"],
        "input_metrics": results["input_metrics"],
        "cost": results["cost"],
        "licence": LICENCE,
        "citation": citation,
    }
    if "utilization" in results:
        entry["utilization"] = results["utilization"]
    if meta.get("quantization"):  # a QAT model: the quantizer ranges it runs with
        entry["quantization"] = meta["quantization"]
    return entry


def model_json(entry: dict) -> dict:
    """The small JSON published beside the weights: enough to rebuild the model without the registry."""
    import torch

    import sezoo

    return {"format": 1, "name": entry["name"], "arch": entry["arch"], "kwargs": entry["kwargs"],
            "operating_point": entry["operating_point"], "sample_rate": entry["sample_rate"],
            "quantization": entry.get("quantization"), "weights": entry["files"][0],
            "versions": {"sezoo": sezoo.__version__, "torch": torch.__version__}}


def publish(run_folder: str | Path, name: str, to: str, registry: str | Path | None = None,
            operating_point: dict | None = None, command: str | None = None, description: str = "") -> dict:
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
        return _publish_hf(run_folder, name, to, sha256, size, operating_point, command, description, registry)
    target = Path(to)
    target.mkdir(parents=True, exist_ok=True)
    entries = read_registry(target / "registry.json")
    # One weight file may serve several entries (operating points): reuse a file with the same bytes.
    same = [f["name"] for e in entries for f in e["files"] if f["sha256"] == sha256]
    file_name = same[0] if same else f"{stem}.safetensors"
    if not same:
        shutil.copyfile(run_folder / WEIGHTS, target / file_name)
    entry = build_entry(run_folder, name, file_name, sha256, size, operating_point, command, description)
    sidecar = target / f"{stem}.json"
    sidecar.write_text(json.dumps(model_json(entry), indent=1) + "\n")
    entry["files"].append({"name": sidecar.name, "sha256": sha256_of(sidecar), "size": sidecar.stat().st_size})
    (target / f"{stem}.md").write_text(model_card(entry))
    write_registry([e for e in entries if e["name"] != name] + [entry], target / "registry.json")
    if registry:
        registry = Path(registry)
        write_registry([e for e in read_registry(registry) if e["name"] != name] + [entry], registry)
    return entry


def _publish_hf(run_folder, name, to, sha256, size, operating_point, command, description, registry) -> dict:
    from huggingface_hub import HfApi

    repo = to[len("hf://"):].strip("/")
    api = HfApi()
    stem = name.replace("/", "-")
    file_name = f"{stem}.safetensors"
    entry = build_entry(run_folder, name, file_name, sha256, size, operating_point, command, description)
    api.upload_file(path_or_fileobj=str(run_folder / WEIGHTS), path_in_repo=file_name, repo_id=repo)
    sidecar = json.dumps(model_json(entry), indent=1).encode() + b"\n"
    api.upload_file(path_or_fileobj=sidecar, path_in_repo=f"{stem}.json", repo_id=repo)
    entry["files"].append({"name": f"{stem}.json", "sha256": hashlib.sha256(sidecar).hexdigest(), "size": len(sidecar)})
    api.upload_file(path_or_fileobj=model_card(entry).encode(), path_in_repo=f"{stem}.md", repo_id=repo)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = api.hf_hub_download(repo_id=repo, filename="registry.json", local_dir=tmp)
            entries = read_registry(Path(local))
        except Exception:  # a new repository has no registry yet
            entries = []
        merged = Path(tmp) / "merged.json"
        write_registry([e for e in entries if e["name"] != name] + [entry], merged)
        api.upload_file(path_or_fileobj=str(merged), path_in_repo="registry.json", repo_id=repo)
    if registry:
        write_registry([e for e in read_registry(Path(registry)) if e["name"] != name] + [entry], Path(registry))
    return entry
