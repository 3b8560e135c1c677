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
from sezoo.nn.quant import quantization_state  # noqa: E402
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
    activations = [site["bits"] for name, site in quantization_state(model).items()
                   if not name.endswith(("w_ih_quant", "w_hh_quant", "weight_quant"))]
    return {
        "run": folder.name, "stage": stage, "structure": structure, "target": sparsity.get("target"),
        "init_from": Path(results["init_from"]).name if results.get("init_from") else None,
        # the narrowest activation width: 8 or 16 (masks and cell states are 16 bits in both plans)
        "activation_bits": min(activations) if activations else None,
        "curve": (f"offline-{structure}" if stage == "offline" else structure) if structure else stage,
        "quantized": bool(widths), "steps": results.get("selection", {}).get("steps"),
        **{k: results["metrics"].get(k) for k in QUALITY},
        "bytes": counted.total, "macs": macs, "executed_macs": executed,
        # the int8 weights alone (codes and their encoding, no scales): what Vela's codec is compared with
        "int8_weight_bytes": sum(t.bytes - SCALE_BYTES for t in counted.tensors if t.name in widths) if widths else None,
        "vela_codec_bytes": vela_codec_bytes(model) if widths else None,
        "command": results.get("command"),
    }


def fp32_ancestor(row: dict, by_run: dict[str, dict]) -> dict | None:
    """The fp32 run a run descends from (pruned -> int8 -> fp32, by ``init_from``), when it is among the rows."""
    while row is not None and row["stage"] != "fp32":
        row = by_run.get(row["init_from"])
    return row


def curve_key(row: dict, by_run: dict[str, dict]) -> tuple:
    """(structure or stage, steps of a pruned run, activation bits, the fp32 run it descends from)."""
    base = fp32_ancestor(row, by_run)
    return (row["curve"], row["steps"] if row["stage"] == "pruned" else None, row["activation_bits"],
            base["run"] if base is not None else None)


def claims(rows: list[dict]) -> list[dict]:
    """The paper's two claims, measured: the bytes ratio of each weight-pruned model to the fp32 model it
    descends from and the MAC ratio of each block-pruned one, with the SDR each costs against that fp32."""
    by_run = {r["run"]: r for r in rows}
    out = []
    for r in rows:
        fp32 = fp32_ancestor(r, by_run)
        if r["stage"] == "pruned" and r["structure"] in ("weight", "block") and fp32 is not None:
            ratio = fp32["bytes"] / r["bytes"] if r["structure"] == "weight" else fp32["macs"] / r["executed_macs"]
            out.append({"run": r["run"], "fp32": fp32["run"], "structure": r["structure"], "target": r["target"],
                        "ratio": ratio, "sdr_change": r["sdr"] - fp32["sdr"],
                        "paper": "42x smaller, -0.1 dB SDR" if r["structure"] == "weight" else "6.7x fewer MACs, -0.59 dB SDR"})
    return out


def markdown(rows: list[dict], claim_rows: list[dict]) -> str:
    lines = ["| run | structure | target | steps | activations (bits) | SDR | SI-SDR | PESQ-WB | STOI | deployable bytes | int8 weights: ours / Vela codec | MMAC/s dense | MMAC/s executed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vela = (f"{r['int8_weight_bytes']:,} / " + (f"{r['vela_codec_bytes']:,}" if r["vela_codec_bytes"] else "-")
                if r["int8_weight_bytes"] else "-")
        lines.append(f"| {r['run']} | {r['curve']} | {r['target'] if r['target'] is not None else '-'} | "
                     f"{r['steps'] if r['steps'] is not None else '-'} | {r['activation_bits'] or '-'} | {r['sdr']:.2f} | "
                     f"{r['si_sdr']:.2f} | {r['pesq_wb']:.3f} | {r['stoi']:.3f} | {r['bytes']:,} | {vela} | "
                     f"{r['macs'] / 1e6:.2f} | {r['executed_macs'] / 1e6:.2f} |")
    if claim_rows:
        lines += ["", "| run | claim (paper) | its fp32 run | ours: ratio to fp32 | ours: SDR change (dB) |",
                  "|---|---|---|---|---|"]
        for c in claim_rows:
            what = "smaller" if c["structure"] == "weight" else "fewer MACs"
            lines.append(f"| {c['run']} | {c['paper']} | {c['fp32']} | {c['ratio']:.1f}x {what} | {c['sdr_change']:+.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    by_run = {r["run"]: r for r in rows}
    fp32_runs = {r["run"] for r in rows if r["stage"] == "fp32"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, cost, label in ((axes[0], "bytes", "deployable bytes (log)"), (axes[1], "executed_macs", "executed MMAC/s")):
        # one curve per structure, training length, activation width and fp32 run: runs that differ in
        # any of these are different curves, the shorter ones fainter; fp32 and int8 runs are single points
        groups = sorted({curve_key(r, by_run) for r in rows}, key=lambda g: (g[0], g[1] or 0, g[2] or 0, g[3] or ""))
        longest = {c: max((s or 0) for cc, s, *_ in groups if cc == c) for c, *_ in groups}
        for key in groups:
            curve, steps, bits, base = key
            points = sorted((r[cost], r["sdr"]) for r in rows if curve_key(r, by_run) == key)
            color, marker = STYLE.get(curve, ("black", "*"))
            xs = [x / (1e6 if cost == "executed_macs" else 1) for x, _ in points]
            name = ", ".join([curve, *([f"{steps} steps"] if steps else []), *(["16-bit act."] if bits == 16 else []),
                              *([f"from {base}"] if base and len(fp32_runs) > 1 and curve != "fp32" else []),
                              *([base] if curve == "fp32" else [])])
            ax.plot(xs, [y for _, y in points], marker=marker, color=color, label=name,
                    alpha=1.0 if (steps or 0) == longest[curve] else 0.4, markerfacecolor="none" if bits == 16 else color,
                    linestyle=":" if curve.startswith("offline") else ("-" if steps else "none"))
        ax.set_xlabel(label)
        ax.set_ylabel("SDR (dB), mini v2 test")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e3:g} kB"))
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
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
