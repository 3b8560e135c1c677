"""Side-by-side comparison of models from any source: run folders, sweep folders and zoo entries mixed
(``sezoo compare``), one quality-against-cost Pareto plot and one markdown table, and the same points
for the zoo's leaderboard and page (:mod:`sezoo.zoo.page`).

A point's quality and MACs are the ones its source measured on its test split (``results.json`` of a run,
the registry entry of a zoo model); the real-time factor is measured here, in this call, for every point
alike (streaming, batch 1, ``sezoo bench``'s timer), never read from elsewhere.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

X_AXES = {  # key -> (axis label with its unit, value of a point)
    "macs": ("MMAC/s executed (per second of audio)", lambda p: p.macs_per_second / 1e6),
    "bytes": ("deployable kB (each tensor at its trained width)", lambda p: p.model_bytes / 1e3),
    "rtf": ("real-time factor (streaming, batch 1; lower is faster)", lambda p: p.rtf),
}
Y_AXES = {"pesq_wb": "PESQ-WB", "si_sdr": "SI-SDR (dB)", "stoi": "STOI"}


@dataclass
class Point:
    label: str
    source: str          # zoo | run | sweep
    recipe: str
    model: str           # what resolve_model() loads: a zoo name or a run folder
    metrics: dict
    input_metrics: dict
    macs_per_second: float
    model_bytes: int
    data: str = ""       # the corpus (and version) whose test split scored it
    rtf: float | None = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- gathering
def _run_point(run_dir: Path, label: str, source: str) -> Point:
    r = json.loads((run_dir / "results.json").read_text())
    return Point(label=label, source=source, recipe=r.get("recipe", run_dir.parent.name), model=str(run_dir),
                 metrics=r["metrics"], input_metrics=r.get("input_metrics", {}),
                 macs_per_second=r["cost"]["macs_per_second"], model_bytes=r["cost"]["model_bytes"],
                 data=r.get("data", ""))


def zoo_point(entry) -> Point:
    return Point(label=entry.name, source="zoo", recipe=entry.recipe, model=entry.name, metrics=entry.metrics,
                 input_metrics=entry.input_metrics, macs_per_second=entry.cost["macs_per_second"],
                 model_bytes=entry.cost["model_bytes"], data=entry.training.data,
                 extra={"latency_ms": entry.latency_ms, "parent": entry.parent})


def gather(items: list[str]) -> list[Point]:
    """Points for each item: a sweep folder (``sweep.json``: each finished run), a run folder
    (``results.json``; its operating-point sub-folders too), or a zoo name."""
    from sezoo.sweep import STATE_FILE, sweep_rows
    from sezoo.zoo import list_models

    zoo = {e.name: e for e in list_models()}
    points: list[Point] = []
    for item in items:
        path = Path(item)
        if (path / STATE_FILE).is_file():
            saved = json.loads((path / STATE_FILE).read_text())
            varying = [k for k, spec in saved["config"]["parameters"].items() if "value" not in spec]
            for row in sweep_rows(path):
                if "pesq_wb" in row:
                    knobs = ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in varying)
                    points.append(_run_point(Path(row["run_dir"]), f"{path.name}/{row['id']} ({knobs})", "sweep"))
        elif (path / "results.json").is_file():
            points.append(_run_point(path, f"{path.parent.name}/{path.name}", "run"))
            for sub in sorted(p for p in path.iterdir() if (p / "results.json").is_file()):
                points.append(_run_point(sub, f"{path.parent.name}/{path.name}:{sub.name}", "run"))
        elif item in zoo:
            points.append(zoo_point(zoo[item]))
        else:
            close = difflib.get_close_matches(item, list(zoo), n=3)
            raise FileNotFoundError(f"{item}: not a run folder (results.json), a sweep folder (sweep.json) or a zoo "
                                    f"name" + (f"; did you mean {', '.join(close)}?" if close else
                                               " (sezoo zoo list shows the names)"))
    if not points:
        raise ValueError(f"{' '.join(items)}: nothing finished to compare (no results.json)")
    return points


def measure_rtf(points: list[Point], wav: str, threads: int = 1, runtime: str = "onnx") -> None:
    """Every point's real-time factor, measured now on the same file, their passes interleaved."""
    from sezoo.bench import bench_models

    for point, row in zip(points, bench_models([(p.model, False) for p in points], wav, runtime, threads)):
        point.rtf = row["rtf"]


# ---------------------------------------------------------------- the front
def pareto_front(points: list[Point], x: str, y: str) -> list[Point]:
    """The points no other point beats on both axes (lower cost, higher quality), in cost order."""
    x_of = X_AXES[x][1]
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (x_of(p), -p.metrics[y])):
        if p.metrics[y] is not None and p.metrics[y] > best:
            front.append(p)
            best = p.metrics[y]
    return front


def fronts(points: list[Point], x: str, y: str) -> dict[str, list[Point]]:
    """The front of each test split: points scored on different splits do not dominate one another."""
    splits: dict[str, list[Point]] = {}
    for p in points:
        splits.setdefault(p.data, []).append(p)
    return {data: pareto_front(group, x, y) for data, group in sorted(splits.items())}


def on_front(points: list[Point], x: str, y: str) -> set[int]:
    return {id(p) for front in fronts(points, x, y).values() for p in front}


def markdown(points: list[Point], x: str = "macs", y: str = "pesq_wb") -> str:
    """One row per point, in cost order; the front marked. Input quality shows what each model improves on."""
    x_label, x_of = X_AXES[x]
    front = on_front(points, x, y)
    x_head = {"macs": "MMAC/s", "bytes": "deployable kB", "rtf": "RTF"}[x]
    lines = [f"| model | source | data | {Y_AXES[y]} (input) | PESQ-WB | STOI | SI-SDR (dB) | {x_head} | front |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=x_of):
        m, i = p.metrics, p.input_metrics
        value = x_of(p)
        x_text = f"{value:.4f}" if x == "rtf" else f"{value:,.2f}" if x == "macs" else f"{value:,.1f}"
        lines.append(f"| {p.label} | {p.source} | {p.data} | {_f(i.get(y), y)} | {_f(m['pesq_wb'], 'pesq_wb')} | "
                     f"{_f(m['stoi'], 'stoi')} | {_f(m['si_sdr'], 'si_sdr')} | {x_text} | {'yes' if id(p) in front else ''} |")
    return "\n".join(lines)


def _f(value, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if key == "si_sdr" else f"{value:.3f}"


# ---------------------------------------------------------------- the plot
def plot(points: list[Point], path: str | Path, x: str = "macs", y: str = "pesq_wb", title: str | None = None,
         ax=None) -> Path | None:
    """Quality against cost: one colour per recipe, one marker per source, each test split's front as a line,
    every point labelled; a log cost axis when the costs span more than 20x. With ``ax``, draws there
    (for multi-panel figures) and writes nothing."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(8, 5.2))
    x_label, x_of = X_AXES[x]
    recipes = sorted({p.recipe for p in points})
    colours = {r: plt.get_cmap("tab10")(i % 10) for i, r in enumerate(recipes)}
    markers = {"zoo": "o", "run": "s", "sweep": "^"}
    for recipe in recipes:
        for source, marker in markers.items():
            chosen = [p for p in points if p.recipe == recipe and p.source == source]
            if chosen:
                ax.scatter([x_of(p) for p in chosen], [p.metrics[y] for p in chosen], color=colours[recipe],
                           marker=marker, s=42, label=f"{recipe} ({source})", zorder=3)
    split_fronts = fronts(points, x, y)
    for index, (data, front) in enumerate(split_fronts.items()):
        name = f"Pareto front ({data})" if len(split_fronts) > 1 and data else "Pareto front"
        ax.plot([x_of(p) for p in front], [p.metrics[y] for p in front], ("--", ":", "-.")[index % 3], color="0.35",
                lw=1.2, label=name, zorder=2)
    front_ids = on_front(points, x, y)
    for p in points:
        ax.annotate(p.label, (x_of(p), p.metrics[y]), textcoords="offset points", xytext=(4, 3), fontsize=6.5,
                    fontweight="bold" if id(p) in front_ids else "normal")
    inputs = sorted({(p.data, p.input_metrics[y]) for p in points if p.input_metrics.get(y) is not None})
    for data, value in inputs:
        ax.axhline(value, color="0.6", lw=0.8, ls=":")
        ax.annotate(f"noisy input ({data or 'test split'})", (0.01, value), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 2), fontsize=6.5, color="0.4")
    costs = [x_of(p) for p in points if x_of(p) > 0]
    if costs and max(costs) / min(costs) > 20:
        ax.set_xscale("log")
    ax.set(xlabel=x_label, ylabel=Y_AXES[y], title=title or f"{Y_AXES[y]} against cost ({len(points)} models)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path, dpi=130) if own else None


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def log_to_wandb(points: list[Point], png: Path, x: str, y: str, project: str = "sezoo") -> str | None:
    """When the user is logged in to W&B: the same rows as a W&B table, and the plot. Returns the run URL."""
    from sezoo.training import _wandb_logged_in

    if not _wandb_logged_in():
        return None
    import wandb

    x_of = X_AXES[x][1]
    columns = ["model", "source", "recipe", "data", "pesq_wb", "stoi", "si_sdr", "macs_per_second", "model_bytes", x]
    rows = [[p.label, p.source, p.recipe, p.data, p.metrics["pesq_wb"], p.metrics["stoi"], p.metrics["si_sdr"],
             p.macs_per_second, p.model_bytes, x_of(p)] for p in points]
    run = wandb.init(project=project, job_type="compare", config={"x": x, "y": y})
    run.log({"compare": wandb.Table(columns=columns, data=rows), "pareto": wandb.Image(str(png))})
    url = run.url
    run.finish()
    return url
