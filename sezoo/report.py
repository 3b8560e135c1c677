"""Results tables for recipe READMEs, written from run folders' results.json (never typed by hand)."""
from __future__ import annotations

import json
from pathlib import Path


def load_results(run: str | Path) -> dict:
    path = Path(run) / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {run} a finished run folder?")
    return json.loads(path.read_text())


def markdown_table(runs: list[str | Path], baseline: str | Path | None = None) -> str:
    """One row per run; with a baseline, MAC saving and relative PESQ-WB change against it."""
    rows = [(Path(r).name, load_results(r)) for r in runs]
    base = load_results(baseline) if baseline else None
    head = "| run | PESQ-WB | STOI | SI-SDR (dB) | MMAC/s executed | mean utilization | params | deployable bytes |"
    rule = "|---|---|---|---|---|---|---|---|"
    if base:
        head += " MACs vs baseline | PESQ-WB vs baseline |"
        rule += "---|---|"
    lines = [head, rule]
    first = rows[0][1]
    lines.append(f"| noisy input | {first['input_metrics']['pesq_wb']:.3f} | {first['input_metrics']['stoi']:.3f} | "
                 f"{first['input_metrics']['si_sdr']:.2f} | | | | |" + (" | |" if base else ""))
    for name, r in rows:
        m, c = r["metrics"], r["cost"]
        util = f"{r['utilization']['mean']:.3f}" if "utilization" in r else "1 (static)"
        line = (f"| {name} | {m['pesq_wb']:.3f} | {m['stoi']:.3f} | {m['si_sdr']:.2f} | "
                f"{c['macs_per_second'] / 1e6:.2f} | {util} | {c['params']:,} | {c['model_bytes']:,} |")
        if base:
            mac_change = c["macs_per_second"] / base["cost"]["macs_per_second"] - 1
            pesq_change = m["pesq_wb"] / base["metrics"]["pesq_wb"] - 1
            line += f" {100 * mac_change:+.1f}% | {100 * pesq_change:+.2f}% |"
        lines.append(line)
    return "\n".join(lines)


def print_results(results: dict) -> None:
    rows = [("PESQ-WB", "pesq_wb", "{:.3f}"), ("STOI", "stoi", "{:.3f}"), ("SI-SDR (dB)", "si_sdr", "{:.2f}"), ("SDR (dB)", "sdr", "{:.2f}"),
            ("DNSMOS OVR", "dnsmos_ovr", "{:.3f}")]
    print(f"\n{'':14}{'noisy input':>14}{'enhanced':>12}")
    for label, key, fmt in rows:
        if key not in results["metrics"]:
            continue
        shown = [("undefined" if v is None else fmt.format(v)) for v in (results["input_metrics"][key], results["metrics"][key])]
        print(f"{label:14}{shown[0]:>14}{shown[1]:>12}")
    cost = results["cost"]
    print(f"\ncost: {cost['macs_per_second'] / 1e6:.2f} MMAC/s, {cost['params'] / 1e6:.3f} M params, "
          f"{cost['model_bytes'] / 1e6:.3f} MB deployable")
    if "utilization" in results:
        print(f"mean utilization: {results['utilization']['mean']:.3f}")


Point = tuple[float, float, str]  # (cost, quality, label)


def plot_pareto(panels: dict[str, dict[str, list[Point]]], path: str | Path,
                x_label: str = "MMAC/s executed", y_label: str = "PESQ-WB") -> Path:
    """Quality against cost as a PNG: one panel per title, in each one marked line per series (its
    points joined in cost order, each labelled). Panels do not share axes: results on different data
    (ours, a paper's) sit side by side without being compared point for point."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    markers = "osD^v<>"
    for ax, (title, series) in zip(axes[0], panels.items()):
        for index, (name, points) in enumerate(series.items()):
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=markers[index % len(markers)],
                    linestyle="-" if len(points) > 1 else "none", label=name)
            for cost, value, label in points:
                ax.annotate(label, (cost, value), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set(title=title, xlabel=x_label, ylabel=y_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
