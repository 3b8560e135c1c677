"""Quality against real-time factor: every zoo model and the peers, from the benchmarks' own results.

    python benchmarks/plot_quality_rtf.py --streaming benchmarks/results-streaming-mini-v2.json \
        --peers benchmarks/results-peers-mini-v2-test.json benchmarks/results-peers-rnnoise-mini-v2-test.json \
        --out docs/quality_rtf.png

Real-time factors are the streaming benchmark's (``benchmarks/streaming.py``: one run, one thread,
batch 1, hop by hop); quality is PESQ-WB on the mini v2 test split: the zoo registry's figures for our
models (``evaluated_on``), ``benchmarks/peers.py``'s for the peers (same split, same metric code). Only
models with both figures are drawn; the table printed says which were left out and why.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

PEER_ROWS = {"GTCRN (peer)": "gtcrn", "DTLN (peer)": "dtln", "RNNoise (peer)": "rnnoise"}  # streaming -> quality row
SPLIT = "mini-v2 test split"


def collect(streaming: Path, peers: list[Path], metric: str) -> tuple[list[dict], float, list[str]]:
    """Rows ``{model, group, rtf, quality}``, the noisy input's quality and what was left out."""
    from sezoo import zoo

    rtf = {}  # a model timed on several runtimes (--onnx-too) is plotted at its fastest
    for row in json.loads(streaming.read_text())["rows"]:
        rtf[row["model"]] = min(row["rtf"], rtf.get(row["model"], float("inf")))
    peer_quality, noisy = {}, None
    for path in peers:
        data = json.loads(path.read_text())
        if not str(data["noisy"]).startswith(SPLIT):
            raise ValueError(f"{path}: scored on {data['noisy']!r}, not the {SPLIT}")
        for name, row in data["rows"].items():
            if name == "noisy input":
                noisy = row[metric]
            else:
                peer_quality[name] = row[metric]
    rows, missing = [], []
    for name, seconds in rtf.items():
        if name in PEER_ROWS:
            quality = peer_quality.get(PEER_ROWS[name])
            group = "peer"
        else:
            entry = zoo.get_entry(name)
            quality = entry.metrics.get(metric) if str(entry.evaluated_on).startswith(SPLIT) else None
            group = entry.recipe
        if quality is None:
            missing.append(f"{name}: no {metric} on the {SPLIT}")
            continue
        rows.append({"model": name, "group": group, "rtf": seconds, "quality": quality})
    return rows, noisy, missing


def plot(rows: list[dict], noisy: float | None, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups = sorted({r["group"] for r in rows}, key=lambda g: (g == "peer", g))
    colours = dict(zip(groups, plt.get_cmap("tab10").colors))
    for group in groups:
        points = [r for r in rows if r["group"] == group]
        ax.scatter([r["rtf"] for r in points], [r["quality"] for r in points], label=group,
                   color="black" if group == "peer" else colours[group], marker="*" if group == "peer" else "o",
                   s=90 if group == "peer" else 40, zorder=3)
        for r in points:
            ax.annotate(r["model"].split("/")[-1].replace(" (peer)", ""), (r["rtf"], r["quality"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    if noisy is not None:
        ax.axhline(noisy, color="grey", linestyle="--", linewidth=1, label="noisy input")
    ax.set_xscale("log")
    ax.set_xlabel("real-time factor (streaming, 1 thread, batch 1; log scale)")
    ax.set_ylabel(f"{metric} ({SPLIT})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streaming", type=Path, required=True, help="benchmarks/streaming.py --json output")
    parser.add_argument("--peers", type=Path, nargs="+", required=True, help="benchmarks/peers.py --json outputs")
    parser.add_argument("--metric", default="pesq_wb", choices=["pesq_wb", "stoi", "si_sdr"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows, noisy, missing = collect(args.streaming, args.peers, args.metric)
    plot(rows, noisy, args.metric, args.out)
    print(f"| model | real-time factor | {args.metric} |\n|---|---|---|")
    for r in sorted(rows, key=lambda r: r["rtf"]):
        print(f"| {r['model']} | {r['rtf']:.4f} | {r['quality']:.3f} |")
    if noisy is not None:
        print(f"| noisy input | - | {noisy:.3f} |")
    for line in missing:
        print(f"left out: {line}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
