"""The TinyLSTMs results table from the four stages' run folders (README rows are never typed by hand).

``python recipes/tinylstm/report.py runs/tinylstm/mini2-fp32 runs/tinylstm/mini2-pruned
runs/tinylstm/mini2-pruned-int8 runs/tinylstm/mini2-pruned-int8-skip``

The first folder is the baseline. Ops per frame = 2 x MACs per frame (a multiply and an add), as the
paper counts them; "executed" is what ran on the test audio (skip-RNN frames that copied their state
cost nothing). Budgets from the paper: <= 1.55 MOps per frame and < 0.5 MB.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sezoo.report import load_results  # noqa: E402

OPS_BUDGET, BYTES_BUDGET = 1.55e6, 0.5e6


def ops_per_frame(results: dict, hop: int) -> float:
    return 2 * results["cost"]["macs_per_second"] * hop / 16000


def table(runs: list[str | Path]) -> str:
    rows = []
    for run in runs:
        meta = json.loads((Path(run) / "model.json").read_text())
        rows.append((Path(run).name, load_results(run), meta["kwargs"]))
    base, hop = rows[0][1], rows[0][2]["hop"]
    lines = ["| stage | SDR (dB) | SI-SDR (dB) | PESQ-WB | STOI | LSTM units | params | deployable bytes | "
             "MOps/frame executed | smaller | fewer ops | SDR change | <= 1.55 MOps | < 0.5 MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    i = base["input_metrics"]
    lines.append(f"| noisy input | {i['sdr']:.2f} | {i['si_sdr']:.2f} | {i['pesq_wb']:.3f} | {i['stoi']:.3f} |"
                 + " |" * 9)
    for name, r, kwargs in rows:
        m, c = r["metrics"], r["cost"]
        ops = ops_per_frame(r, hop)
        util = f" (update rate {r['utilization']['mean']:.2f})" if "utilization" in r else ""
        lines.append(
            f"| {name} | {m['sdr']:.2f} | {m['si_sdr']:.2f} | {m['pesq_wb']:.3f} | {m['stoi']:.3f} | "
            f"{'+'.join(map(str, kwargs['hidden']))}{util} | {c['params']:,} | {c['model_bytes']:,} | {ops / 1e6:.3f} | "
            f"{base['cost']['model_bytes'] / c['model_bytes']:.1f}x | {ops_per_frame(base, hop) / ops:.2f}x | "
            f"{m['sdr'] - base['metrics']['sdr']:+.2f} dB | {'yes' if ops <= OPS_BUDGET else 'no'} | "
            f"{'yes' if c['model_bytes'] < BYTES_BUDGET else 'no'} |")
    lines.append("| paper (CHiME-2, compressed vs its baseline) | | | | | | | | | 11.9x | 2.9x | -0.55 dB | yes | yes |")
    lines += ["", "Commands:"] + [f"- {name}: `{r['command']}`" for name, r, _ in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, the fp32 baseline first")
    print(table(parser.parse_args(argv).runs))


if __name__ == "__main__":
    main()
