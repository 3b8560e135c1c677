"""The paper's comparison from finished searches: mixed-precision fronts against uniform precision.

``python recipes/gruquant/report.py runs/gruquant/search/{se,vad,noise,adding} --out recipes/gruquant/results``

Per task: the non-dominated mixed-precision plans (validation metric against weight bits) beside the
uniform 2..8-bit models; the hypervolume of each front (pymoo's ``HV``) in one normalisation per task
(the ideal and nadir of every point evaluated, reference 1.1 x the nadir), so that the two numbers
compare; the size saving of the smallest mixed plan whose validation metric is at least uniform
8-bit's; and the front's genomes clustered (scikit-learn's k-means) into which operators tolerate few
bits, as a heat map. Writes ``results.json``, ``results.md``, ``front_<task>.png`` and
``genomes_<task>.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.gruquant.tasks import TASKS  # noqa: E402

HIGHER_IS_BETTER = {"se": True, "vad": True, "noise": True, "adding": False}
METRIC = {"se": "SI-SDR (dB)", "vad": "frame F1", "noise": "accuracy", "adding": "MSE"}


def load(folder: str | Path) -> dict:
    path = Path(folder) / "search.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no search here; run recipes/gruquant/search.py first")
    state = json.loads(path.read_text())
    state["task"] = state["evaluation"]["task"]
    return state


def _objectives(task: str, points: list[dict]) -> np.ndarray:
    sign = -1.0 if HIGHER_IS_BETTER[task] else 1.0
    return np.array([[sign * p["val"], p["size_bits"]] for p in points], dtype=float).reshape(-1, 2)


def non_dominated(task: str, points: list[dict]) -> list[dict]:
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if not points:
        return []
    front = NonDominatedSorting().do(_objectives(task, points), only_non_dominated_front=True)
    return sorted((points[i] for i in front), key=lambda p: p["size_bits"])


def split_points(state: dict) -> tuple[list[dict], list[dict]]:
    uniform_keys = set(state["uniform"].values())
    uniform = [dict(state["evaluations"][k], bits=int(b)) for b, k in state["uniform"].items()]
    mixed = [p for k, p in state["evaluations"].items() if k not in uniform_keys]
    return mixed, sorted(uniform, key=lambda p: p["bits"])


def hypervolumes(task: str, mixed: list[dict], uniform: list[dict]) -> dict[str, float]:
    from pymoo.indicators.hv import HV

    everything = _objectives(task, mixed + uniform)
    ideal, nadir = everything.min(axis=0), everything.max(axis=0)
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    indicator = HV(ref_point=np.full(2, 1.1))
    return {name: float(indicator((_objectives(task, non_dominated(task, pts)) - ideal) / span)) if pts else 0.0
            for name, pts in (("mixed", mixed), ("uniform", uniform))}


def saving_against_int8(task: str, mixed: list[dict], uniform: list[dict]) -> dict | None:
    """The smallest mixed plan at or above uniform 8-bit's validation metric, and its size saving."""
    int8 = next((u for u in uniform if u["bits"] == 8), None)
    if int8 is None:
        return None
    ok = [p for p in mixed if (p["val"] >= int8["val"] if HIGHER_IS_BETTER[task] else p["val"] <= int8["val"])]
    if not ok:
        return {"plan": None, "int8": int8}
    best = min(ok, key=lambda p: p["size_bits"])
    return {"plan": best, "int8": int8, "saving": 1 - best["size_bits"] / int8["size_bits"]}


def clusters(front: list[dict], k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the front's genomes: (labels, centroids in bits per site)."""
    from sklearn.cluster import KMeans

    genomes = np.array([p["genome"] for p in front], dtype=float)
    k = max(1, min(k, len(np.unique(genomes, axis=0))))
    model = KMeans(n_clusters=k, n_init=10, random_state=0).fit(genomes)
    return model.labels_, model.cluster_centers_


def short_site(name: str) -> str:
    """``gru.layers.0.r_hn`` -> ``L0 r_hn``; ``head.weight_quant`` -> ``head w``."""
    parts = name.split(".")
    if parts[:2] == ["gru", "layers"]:
        return f"L{parts[2]} {parts[3]}"
    return name.replace("weight_quant", "w").replace("output_quant", "out").replace("_quant", "").replace(".", " ")


def plot_front(state: dict, mixed: list[dict], uniform: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    from sezoo.compare import save_figure

    task = state["task"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([p["size_bits"] / 8192 for p in mixed], [p["val"] for p in mixed], s=10, color="0.75", label="evaluated plans")
    front = non_dominated(task, mixed)
    ax.plot([p["size_bits"] / 8192 for p in front], [p["val"] for p in front], "o-", color="C0", label="mixed-precision front")
    ax.plot([u["size_bits"] / 8192 for u in uniform], [u["val"] for u in uniform], "s--", color="C3", label="uniform")
    for u in uniform:
        ax.annotate(f"{u['bits']}b", (u["size_bits"] / 8192, u["val"]), textcoords="offset points", xytext=(4, -10), fontsize=8, color="C3")
    fp32 = state.get("fp32")
    if fp32:
        ax.axhline(fp32["val"], color="0.4", lw=0.8, ls=":", label="fp32")
    ax.set_xlabel("weights (KiB, at their bit widths; biases int32)")
    ax.set_ylabel(f"validation {METRIC[task]}")
    ax.set_title(f"{task}: mixed precision vs uniform")
    if not HIGHER_IS_BETTER[task]:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    save_figure(fig, path, 120)


def plot_genomes(state: dict, front: list[dict], labels: np.ndarray, path: Path) -> None:
    import matplotlib.pyplot as plt

    from sezoo.compare import save_figure

    order = np.lexsort(([p["size_bits"] for p in front], labels))
    genomes = np.array([front[i]["genome"] for i in order])
    sites = [short_site(s) for s in state["sites"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(sites) + 2), 0.3 * len(genomes) + 1.8))
    image = ax.imshow(genomes, aspect="auto", cmap="viridis", vmin=2, vmax=8)
    ax.set_xticks(range(len(sites)), sites, rotation=90, fontsize=7)
    ax.set_yticks(range(len(genomes)), [f"c{labels[i]} {front[i]['size_bits'] / 8192:.1f} KiB" for i in order], fontsize=7)
    ax.set_title(f"{state['task']}: bits per site on the front (rows by cluster, then size)")
    fig.colorbar(image, ax=ax, label="bits")
    save_figure(fig, path, 120)


def summarise(state: dict) -> dict:
    task = state["task"]
    mixed, uniform = split_points(state)
    front = non_dominated(task, mixed)
    labels, centroids = clusters(front) if front else (np.array([]), np.empty((0, len(state["sites"]))))
    mean_bits = np.array([p["genome"] for p in front]).mean(axis=0) if front else np.array([])
    return {
        "task": task, "metric": METRIC[task], "sites": state["sites"], "evaluations": len(state["evaluations"]),
        "generations": len(state["generations"]), "search": state.get("search"), "fp32": state.get("fp32"),
        "uniform": uniform, "front": front, "hypervolume": hypervolumes(task, mixed, uniform),
        "against_int8": saving_against_int8(task, mixed, uniform),
        "clusters": [{"centroid_bits": [round(float(b), 2) for b in c], "members": int((labels == k).sum())}
                     for k, c in enumerate(centroids)],
        "fewest_bits": [state["sites"][i] for i in np.argsort(mean_bits)[:5]] if front else [],
        "most_bits": [state["sites"][i] for i in np.argsort(mean_bits)[::-1][:5]] if front else [],
        "labels": labels.tolist(),
    }


def markdown(summaries: list[dict]) -> str:
    rows = ["| task | metric (val) | fp32 | uniform 8-bit | mixed plan at >= int8 | its size vs int8 | test: int8 / mixed | "
            "HV mixed / uniform | evaluations |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        a, fp32 = s["against_int8"], s["fp32"] or {}
        int8 = a["int8"] if a else None
        plan = a.get("plan") if a else None
        rows.append(
            f"| {s['task']} | {s['metric']} | {fp32.get('val', float('nan')):.4g} | "
            + (f"{int8['val']:.4g} ({int8['size_bits'] / 8192:.1f} KiB)" if int8 else "-") + " | "
            + (f"{plan['val']:.4g} ({plan['size_bits'] / 8192:.1f} KiB)" if plan else "none") + " | "
            + (f"-{100 * a['saving']:.1f}%" if plan else "-") + " | "
            + (f"{int8['test']:.4g} / {plan['test']:.4g}" if plan else "-") + " | "
            + f"{s['hypervolume']['mixed']:.3f} / {s['hypervolume']['uniform']:.3f} | {s['evaluations']} |")
    return "\n".join(rows) + "\n"


def export_plan(folder: str | Path, saving: float | None = None) -> dict:
    """``plan.json`` in the search folder, as ``{site: bits}`` for ``train.py stage=qat plan_file=...``.

    Default: the smallest searched plan at or above uniform 8-bit's validation metric. ``saving``: the
    plan with the best validation metric among those at least ``saving`` (a fraction) smaller than
    uniform 8-bit, whether or not it reaches 8-bit's metric: the search ranks plans after a 30-step
    fine-tune, a screen, and the full fine-tune of ``train.py`` (which the uniform model gets too)
    decides whether the plan reaches 8-bit's metric."""
    state = load(folder)
    mixed, uniform = split_points(state)
    if saving is None:
        chosen = saving_against_int8(state["task"], mixed, uniform)
        if not chosen or not chosen.get("plan"):
            raise ValueError(f"{folder}: no searched plan reaches uniform 8-bit's validation metric yet; search "
                             f"longer, or take the best plan at a size saving (--saving 0.25)")
        rule = "smallest at or above uniform 8-bit's validation metric"
    else:
        int8 = next((u for u in uniform if u["bits"] == 8), None)
        if int8 is None:
            raise ValueError(f"{folder}: uniform 8-bit was not evaluated; run the search to the end first")
        small = [p for p in mixed if p["size_bits"] <= (1 - saving) * int8["size_bits"]]
        if not small:
            raise ValueError(f"{folder}: saving={saving}: no searched plan is that much smaller than uniform 8-bit")
        sign = 1.0 if HIGHER_IS_BETTER[state["task"]] else -1.0
        plan = max(small, key=lambda p: (sign * p["val"], -p["size_bits"]))
        chosen = {"plan": plan, "int8": int8, "saving": 1 - plan["size_bits"] / int8["size_bits"]}
        rule = f"best val among plans at least {100 * saving:g}% smaller than uniform 8-bit"
    plan = chosen["plan"]
    out = {"task": state["task"], "rule": rule, "plan": dict(zip(state["sites"], plan["genome"])),
           "genome": plan["genome"], "val": plan["val"], "test": plan["test"], "size_bits": plan["size_bits"],
           "int8": {k: chosen["int8"][k] for k in ("val", "test", "size_bits")}, "saving": chosen["saving"]}
    path = Path(folder) / "plan.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{path}: {plan['size_bits'] / 8192:.1f} KiB ({100 * chosen['saving']:.1f}% below int8), "
          f"val {plan['val']:.4g} vs int8 {chosen['int8']['val']:.4g} ({rule})")
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("searches", nargs="+", help="search folders (runs/gruquant/search/<task>)")
    parser.add_argument("--out", default="recipes/gruquant/results", help="folder for the figures and tables")
    args = parser.parse_args(argv)
    out = Path(args.out)
    summaries = []
    for folder in args.searches:
        state = load(folder)
        if state["task"] not in TASKS:
            raise ValueError(f"{folder}: unknown task {state['task']!r}")
        summary = summarise(state)
        mixed, uniform = split_points(state)
        plot_front(state, mixed, uniform, out / f"front_{state['task']}.png")
        if summary["front"]:
            plot_genomes(state, summary["front"], np.array(summary["labels"]), out / f"genomes_{state['task']}.png")
        summaries.append(summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summaries, indent=1))
    table = markdown(summaries)
    (out / "results.md").write_text(table)
    print(table)
    return summaries


if __name__ == "__main__":
    main()
