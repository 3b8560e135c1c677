"""The sparsity recipe's results: quality against deployable bytes and against executed MACs, one Pareto
curve per structure plus the offline baseline, and the paper's two claims beside ours.

    python recipes/sparsity/report.py runs/sparsity/mini2-* --out recipes/sparsity/results

reads each finished run folder (``results.json`` for the test metrics, the exported model for the costs)
and writes ``results.json``, ``results.md`` (the README's table) and ``pareto.png`` under ``--out``.

Costs, recomputed from the exported model:
- ``bytes``: deployable bytes, each tensor in its cheapest encoding (``sezoo.nn.encoding``), the file the
  export wrote.
- ``macs``: dense MAC/s of the model as stored (a unit-pruned run exports the smaller dense model).
- ``executed_macs``: what a sparse kernel really executes. Block: a block-sparse kernel skips the all-zero
  blocks of each weight matrix; every DTLN matrix is applied once per frame, so it saves
  ``skipped_block_elements`` MACs per frame (a model that applies a matrix more often per frame would need
  its own count). Unit: the compacted model's dense MACs. Weight: scattered zeros skip nothing.
- ``vela_codec_bytes`` (when ``ethos-u-vela`` is installed, ``pip install -e .[npu]``): each int8 weight
  tensor through Vela's own weight codec (``ethosu.mlw_codec``) in row-major order, the compression an
  Ethos-U stores in flash; Vela itself reorders weights into its brick layout first, so this is an
  estimate of the same codec, not a compiled model's flash size.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sezoo.export import load_exported  # noqa: E402
from sezoo.metrics.cost import deployable_bytes, model_bit_widths, static_macs_per_second  # noqa: E402
from sezoo.nn.encoding import SCALE_BYTES, weight_codes  # noqa: E402
from sezoo.nn.sparsity import skipped_block_elements  # noqa: E402

QUALITY = ("sdr", "si_sdr", "pesq_wb", "stoi")
STYLE = {"weight": ("tab:blue", "o"), "block": ("tab:orange", "s"), "unit": ("tab:green", "^"),
         "fp32": ("black", "*"), "int8": ("tab:gray", "D"), "offline-weight": ("tab:blue", "x"), "offline-block": ("tab:orange", "x"), "offline-unit": ("tab:green", "x")}


def vela_codec_bytes(model) -> int | None:
    try:
        from ethosu import mlw_codec
    except ImportError:
        return None
    total = 0
    for name, bits in model_bit_widths(model).items():
        codes, _ = weight_codes(model.get_parameter(name), bits)
        total += len(mlw_codec.encode([int(c) for c in codes]))
    return total


def run_row(folder: Path) -> dict:
    results = json.loads((folder / "results.json").read_text())
    model = load_exported(folder)
    sparsity = model.metadata.get("sparsity") or {}
    structure = sparsity.get("structure")
    stage = results.get("stage")
    frames_per_second = model.sample_rate / model.hop_samples
    macs = static_macs_per_second(model, model.sample_rate)
    executed = macs
    if structure == "block":
        shape = tuple(sparsity["block_shape"])
        skipped = sum(skipped_block_elements(model.get_parameter(name), shape) for name in model_bit_widths(model)
                      if model.get_parameter(name).dim() == 2)
        executed = macs - skipped * frames_per_second
    widths = model_bit_widths(model)
    counted = deployable_bytes(model, widths)
    return {
        "run": folder.name, "stage": stage, "structure": structure, "target": sparsity.get("target"),
        "curve": (f"offline-{structure}" if stage == "offline" else structure) if structure else stage,
        "quantized": bool(widths), "steps": results.get("selection", {}).get("steps"),
        **{k: results["metrics"].get(k) for k in QUALITY},
        "bytes": counted.total, "macs": macs, "executed_macs": executed,
        # the int8 weights alone (codes and their encoding, no scales): what Vela's codec is compared with
        "int8_weight_bytes": sum(t.bytes - SCALE_BYTES for t in counted.tensors if t.name in widths) if widths else None,
        "vela_codec_bytes": vela_codec_bytes(model) if widths else None,
        "command": results.get("command"),
    }


def claims(rows: list[dict]) -> list[dict]:
    """The paper's two claims, measured: the bytes ratio to fp32 of each weight-pruned model and the MAC
    ratio of each block-pruned one, with the SDR each costs against fp32 (and against int8)."""
    by_stage = {r["stage"]: r for r in rows if r["stage"] in ("fp32", "int8")}
    fp32 = by_stage.get("fp32")
    if fp32 is None:
        return []
    out = []
    for r in rows:
        if r["stage"] == "pruned" and r["structure"] in ("weight", "block"):
            ratio = fp32["bytes"] / r["bytes"] if r["structure"] == "weight" else fp32["macs"] / r["executed_macs"]
            out.append({"run": r["run"], "structure": r["structure"], "target": r["target"],
                        "ratio": ratio, "sdr_change": r["sdr"] - fp32["sdr"],
                        "paper": "42x smaller, -0.1 dB SDR" if r["structure"] == "weight" else "6.7x fewer MACs, -0.59 dB SDR"})
    return out


def markdown(rows: list[dict], claim_rows: list[dict]) -> str:
    lines = ["| run | structure | target | steps | SDR | SI-SDR | PESQ-WB | STOI | deployable bytes | int8 weights: ours / Vela codec | MMAC/s dense | MMAC/s executed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vela = (f"{r['int8_weight_bytes']:,} / " + (f"{r['vela_codec_bytes']:,}" if r["vela_codec_bytes"] else "-")
                if r["int8_weight_bytes"] else "-")
        lines.append(f"| {r['run']} | {r['curve']} | {r['target'] if r['target'] is not None else '-'} | "
                     f"{r['steps'] if r['steps'] is not None else '-'} | {r['sdr']:.2f} | "
                     f"{r['si_sdr']:.2f} | {r['pesq_wb']:.3f} | {r['stoi']:.3f} | {r['bytes']:,} | {vela} | "
                     f"{r['macs'] / 1e6:.2f} | {r['executed_macs'] / 1e6:.2f} |")
    if claim_rows:
        lines += ["", "| run | claim (paper) | ours: ratio to fp32 | ours: SDR change (dB) |", "|---|---|---|---|"]
        for c in claim_rows:
            what = "smaller" if c["structure"] == "weight" else "fewer MACs"
            lines.append(f"| {c['run']} | {c['paper']} | {c['ratio']:.1f}x {what} | {c['sdr_change']:+.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, cost, label in ((axes[0], "bytes", "deployable bytes (log)"), (axes[1], "executed_macs", "executed MMAC/s")):
        # one curve per structure and training length: runs of one structure trained for different
        # numbers of steps are different curves, the shorter ones fainter
        groups = sorted({(r["curve"], r["steps"] if r["stage"] == "pruned" else None) for r in rows},
                        key=lambda g: (g[0], g[1] or 0))
        longest = {c: max((s or 0) for cc, s in groups if cc == c) for c, _ in groups}
        for curve, steps in groups:
            points = sorted((r[cost], r["sdr"]) for r in rows
                            if r["curve"] == curve and (r["steps"] if r["stage"] == "pruned" else None) == steps)
            color, marker = STYLE.get(curve, ("black", "*"))
            xs = [x / (1e6 if cost == "executed_macs" else 1) for x, _ in points]
            ax.plot(xs, [y for _, y in points], marker=marker, color=color,
                    label=curve if steps is None else f"{curve}, {steps} steps",
                    alpha=1.0 if (steps or 0) == longest[curve] else 0.4,
                    linestyle=":" if curve.startswith("offline") else "-")
        ax.set_xlabel(label)
        ax.set_ylabel("SDR (dB), mini v2 test")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e3:g} kB"))
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle("DTLN on mini v2: joint pruning + int8 QAT against offline int8 magnitude pruning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders of this recipe")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md, pareto.png")
    args = parser.parse_args(argv)
    finished = [f for f in args.runs if (f / "results.json").exists()]
    for folder in sorted(set(args.runs) - set(finished)):
        print(f"{folder}: no results.json (unfinished run), left out", file=sys.stderr)
    rows = sorted((run_row(f) for f in finished), key=lambda r: (r["curve"], -(r["target"] or 0)))
    claim_rows = claims(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"runs": rows, "claims": claim_rows}, indent=1))
    (args.out / "results.md").write_text(markdown(rows, claim_rows))
    plot(rows, args.out / "pareto.png")
    print(markdown(rows, claim_rows))


if __name__ == "__main__":
    main()
