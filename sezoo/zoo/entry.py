"""A zoo entry as a type: what a pretrained model is, where it came from, what it scores and costs.

Like timm's pretrained configs and torchvision's ``Weights``, an entry is a typed record apart from
the architecture (``sezoo.models`` registers those) with its files' hashes, its measured figures and
its lineage: a compressed entry names its ``parent`` (the int8 model names the pruned one, the pruned
names the fp32). The registry JSON, the CLI, the model cards, reports and ``sezoo.zoo.load`` all read
entries through :meth:`ZooEntry.from_dict`, and only there is the JSON's shape known.

Standard library only: listing the zoo never loads torch or Lightning.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import PurePosixPath

FORMAT = 2  # 1: paper as method/citation strings, no parent


@dataclass(frozen=True)
class Paper:
    """The publication a recipe reproduces; a recipe declares it, every entry it trains carries it."""
    title: str
    citation: str
    url: str = ""


@dataclass(frozen=True)
class ZooFile:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Training:
    data: str
    run: str
    command: str


@dataclass(frozen=True)
class ZooEntry:
    name: str                     # <recipe>/<variant>
    recipe: str
    arch: str                     # a registered architecture (sezoo.models.create_model)
    kwargs: dict
    sample_rate: int
    files: tuple[ZooFile, ...]    # the weights first, then the JSON sidecar
    training: Training
    evaluated_on: str
    metrics: dict                 # test-split quality of the output ...
    input_metrics: dict           # ... and of the noisy input
    cost: dict                    # macs_per_second (executed), params, model_bytes
    paper: Paper
    licence: str
    description: str = ""
    operating_point: dict | None = None   # e.g. {"uf": 0.25}: one point of a shared weight file
    parent: str | None = None             # the entry this one was compressed from
    quantization: dict | None = None      # QAT ranges per quantizer site
    utilization: dict | None = None       # dynamic models: mean utilization on the test split
    latency_ms: float | None = None       # algorithmic latency (the model's latency_samples)
    extra: dict = field(default_factory=dict)  # keys a newer sezoo wrote that this one does not know

    @property
    def weights(self) -> ZooFile:
        (found,) = [f for f in self.files if PurePosixPath(f.name).suffix == ".safetensors"]
        return found

    @classmethod
    def from_dict(cls, data: dict) -> "ZooEntry":
        name = data.get("name", "<unnamed>")
        data = _upgrade(dict(data))
        known = {f.name for f in fields(cls)} - {"extra"}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name != "extra"]
        absent = [k for k in required if k not in data]
        if absent:
            raise ValueError(f"zoo entry {name!r}: missing {', '.join(absent)}; the registry is damaged or "
                             f"from an incompatible sezoo")
        values = {k: v for k, v in data.items() if k in known}
        values["files"] = tuple(ZooFile(**f) for f in data["files"])
        values["training"] = Training(**data["training"])
        values["paper"] = Paper(**data["paper"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict:
        out = asdict(self)
        out["files"] = [asdict(f) for f in self.files]
        extra = out.pop("extra")
        return {**{k: v for k, v in out.items() if v is not None}, **extra}


def _upgrade(data: dict) -> dict:
    """Format 1 kept the paper as ``method`` + ``citation`` strings."""
    if "paper" not in data and "citation" in data:
        data["paper"] = {"title": data.pop("method", ""), "citation": data.pop("citation")}
    return data


def lineage(entry: ZooEntry, entries: dict[str, ZooEntry]) -> list[str]:
    """The entry's name and its ancestors', nearest first: ``[int8, pruned, fp32]``."""
    chain, seen = [entry.name], {entry.name}
    while entry.parent:
        if entry.parent in seen:
            raise ValueError(f"zoo entry {entry.name!r}: its lineage loops back to {entry.parent!r}")
        if entry.parent not in entries:
            raise ValueError(f"zoo entry {entry.name!r}: parent {entry.parent!r} is not in the registry")
        entry = entries[entry.parent]
        chain.append(entry.name)
        seen.add(entry.name)
    return chain
