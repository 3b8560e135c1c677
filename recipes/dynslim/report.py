"""The adaptive-slimming results from run folders: the README tables, the Pareto plot, and mean UF per
test utterance against its input SNR (README rows are never typed by hand).

``python recipes/dynslim/report.py --static runs/dynslim/mini-static-sandwich
--dynamic runs/dynslim/mini-dyn0.10 runs/dynslim/mini-dyn0.25 runs/dynslim/mini-dyn0.50
--rules runs/dynslim/mini-static-random runs/dynslim/mini-static-sandwich runs/dynslim/mini-static-all
--figures recipes/dynslim``

MACs per sample = the measured MAC rate / 16,000: the static closed form for static operating points,
what ran (router included) on the test audio for dynamic models.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from sezoo.data.audio import pair_folders, read_audio  # noqa: E402
from sezoo.data.datamodule import data_root  # noqa: E402
from sezoo.export import load_exported  # noqa: E402
from sezoo.report import load_results, plot_pareto  # noqa: E402

# The paper's VB-DEMAND test results (Table 1): UF -> (PESQ-WB, MACs per sample) for the static
# backbone, target -> (PESQ-WB, mean UF) for joint training.
PAPER_STATIC = {0.125: (2.86, 8_944), 0.25: (2.96, 15_664), 0.5: (3.00, 29_104), 1.0: (3.01, 55_985)}
PAPER_DYNAMIC = {0.10: (2.96, 0.18), 0.25: (2.96, 0.29), 0.50: (3.03, 0.54)}


def paper_macs(uf: float) -> int:
    """The paper's MACs per sample at a mean UF: its static closed form (router not included)."""
    return round(53_760 * uf + 2_224)


def macs_per_sample(results: dict) -> float:
    return results["cost"]["macs_per_second"] / 16_000


def static_points(static_run: Path) -> list[tuple[float, Path]]:
    folders = sorted(static_run.glob("uf*/results.json"))
    if not folders:
        raise FileNotFoundError(f"{static_run}: no uf*/results.json; is it a finished stage=static run?")
    return sorted((load_results(f.parent)["operating_point"]["uf"], f.parent) for f in folders)


def target_of(run: Path) -> float:
    config = _config(run)
    return float(config["utilization"]["target"] if "utilization" in config else config["router"]["target"])  # "router": runs before v2


def _config(run: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)


def rule_table(rule_runs: list[Path]) -> str:
    """The slimming rules after the same number of steps: the validation loss (mean over the UFs, the
    selection criterion) and each UF's PESQ-WB / SI-SDR on the run's test utterances. A folder holds
    ``results.json`` (its ``selection``: the validation loss the checkpoint was chosen on, and the steps
    trained) and ``uf*/results.json``, snapshots of the rule's run taken before the winner was trained
    further (``mini.sh``). The folder's name is the rule."""
    lines = ["| rule | UFs per step | steps | val loss (mean over UFs) | PESQ-WB at UF .125 / .25 / .5 / 1 | "
             "SI-SDR (dB) at UF .125 / .25 / .5 / 1 |", "|---|---|---|---|---|---|"]
    per_step = {"all": "4", "sandwich": "3 (1, 0.125, one of 0.25 / 0.5)", "random": "1"}
    for run in rule_runs:
        selection, rule = load_results(run)["selection"], run.name
        points = [load_results(folder) for _, folder in static_points(run)]
        pesq = " / ".join(f"{r['metrics']['pesq_wb']:.3f}" for r in points)
        si_sdr = " / ".join(f"{r['metrics']['si_sdr']:.2f}" for r in points)
        lines.append(f"| {rule} | {per_step[rule]} | {selection['steps']} | "
                     f"{selection['best']:.4f} | {pesq} | {si_sdr} |")
    return "\n".join(lines)


def results_table(static_run: Path, dynamic_runs: list[Path]) -> tuple[str, dict]:
    head = ("| model | PESQ-WB | STOI | SI-SDR (dB) | MACs/sample | mean UF | params | deployable bytes | "
            "paper PESQ-WB | paper MACs/sample | paper mean UF |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    static = static_points(static_run)
    first = load_results(static[0][1])
    i = first["input_metrics"]
    lines.append(f"| noisy input | {i['pesq_wb']:.3f} | {i['stoi']:.3f} | {i['si_sdr']:.2f} |" + " |" * 7)
    measured = {}

    def row(name: str, r: dict, uf: str, paper: tuple) -> None:
        m, c = r["metrics"], r["cost"]
        lines.append(f"| {name} | {m['pesq_wb']:.3f} | {m['stoi']:.3f} | {m['si_sdr']:.2f} | {macs_per_sample(r):,.0f} | "
                     f"{uf} | {c['params']:,} | {c['model_bytes']:,} | " + " | ".join(paper) + " |")

    for uf, folder in static:
        r = load_results(folder)
        measured[f"static {uf:g}"] = r
        pesq, macs = PAPER_STATIC.get(uf, (math.nan, math.nan))
        row(f"static UF {uf:g}", r, f"{uf:g} (static)", (f"{pesq:.2f}", f"{macs:,}", f"{uf:g}"))
    for run in dynamic_runs:
        r, target = load_results(run), target_of(run)
        measured[f"dynamic {target:.2f}"] = r
        pesq, util = PAPER_DYNAMIC.get(round(target, 2), (math.nan, math.nan))
        row(f"dynamic, target {target:.2f}", r, f"{r['utilization']['mean']:.3f}",
            (f"{pesq:.2f}", f"{paper_macs(util):,} (derived)", f"{util:.2f}"))
    lines += ["", "Commands (each row's run):", f"- static: `{first['command']}`"]
    lines += [f"- dynamic {target_of(run):.2f}: `{load_results(run)['command']}`" for run in dynamic_runs]
    return "\n".join(lines), measured


def bar_check(measured: dict) -> str:
    """The paper's claim on our data: target 0.10 at least the PESQ-WB of static UF 0.25, >= 29% fewer MACs."""
    if "dynamic 0.10" not in measured or "static 0.25" not in measured:
        return "Bar: needs the static UF 0.25 point and the dynamic target 0.10 model."
    dyn, ref = measured["dynamic 0.10"], measured["static 0.25"]
    saving = 1 - macs_per_sample(dyn) / macs_per_sample(ref)
    gap = dyn["metrics"]["pesq_wb"] - ref["metrics"]["pesq_wb"]
    met = gap >= 0 and saving >= 0.29
    return (f"Bar (target 0.10 against static UF 0.25): PESQ-WB {gap:+.3f}, MACs/sample {-100 * saving:+.1f}% "
            f"-> {'met' if met else 'not met'} (paper: PESQ-WB +0.00 at 29% fewer MACs).")


def pareto(static_run: Path, measured: dict, path: Path) -> Path:
    ours = {"static UFs": [(macs_per_sample(r), r["metrics"]["pesq_wb"], k.split()[1])
                           for k, r in measured.items() if k.startswith("static")],
            "dynamic (router)": [(macs_per_sample(r), r["metrics"]["pesq_wb"],
                                  f"{k.split()[1]} (UF {r['utilization']['mean']:.2f})")
                                 for k, r in measured.items() if k.startswith("dynamic")]}
    paper = {"static UFs": [(m, p, f"{uf:g}") for uf, (p, m) in PAPER_STATIC.items()],
             "dynamic (router)": [(paper_macs(u), p, f"{t:.2f} (UF {u:.2f})") for t, (p, u) in PAPER_DYNAMIC.items()]}
    return plot_pareto({f"ours ({load_results(static_run)['data']} test)": ours, "paper (VB-DEMAND test)": paper},
                       path, x_label="MACs per input sample")


def utilization_against_snr(dynamic_runs: list[Path], noisy_dir: Path, clean_dir: Path, path: Path) -> str:
    """Each test utterance's mean UF (what the router chose over its frames) against its input SNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import pearsonr, spearmanr

    pairs = pair_folders(noisy_dir, clean_dir)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    lines = ["| model | utterances | Pearson r (mean UF, input SNR) | Spearman rho | mean UF at the lowest / highest SNR third |",
             "|---|---|---|---|---|"]
    for run in dynamic_runs:
        model = load_exported(run).eval()
        snr, util = [], []
        with torch.no_grad():
            for noisy_path, clean_path in pairs:
                noisy, clean = read_audio(noisy_path, 16_000), read_audio(clean_path, 16_000)
                model.route(noisy[None])  # the router alone decides the capacity
                util.append(float(model.router.last_utilization))
                snr.append(float(10 * torch.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())))
        order = sorted(range(len(snr)), key=snr.__getitem__)
        third = len(order) // 3
        low, high = (sum(util[i] for i in order[s]) / third for s in (slice(0, third), slice(-third, None)))
        name = f"target {target_of(run):.2f}"
        lines.append(f"| {name} | {len(snr)} | {pearsonr(snr, util)[0]:+.3f} | {spearmanr(snr, util)[0]:+.3f} | "
                     f"{low:.3f} / {high:.3f} |")
        ax.scatter(snr, util, s=10, alpha=0.7, label=name)
    ax.set(xlabel="input SNR (dB)", ylabel="mean UF chosen", title="Router capacity per test utterance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "\n".join(lines)

def learning_curves(static_runs: list[Path], val_dir: Path, path: Path) -> str:
    """Validation PESQ-WB and SI-SDR at every UF against training steps, one line style per static run
    (every ``logs/metrics*.csv`` of a run, so a resumed run is one curve), with the noisy input's level on
    the same validation utterances (the first ``limit_val_batches`` of the split, batch 1)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as si_sdr

    from sezoo.metrics.quality import pesq_wb

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles, colours = ["--", "-", ":", "-."], plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lines = ["| run | STFT weight | steps | val SI-SDR (dB) at UF .125 / .25 / .5 / 1 | val PESQ-WB at UF .125 / .25 / .5 / 1 |",
             "|---|---|---|---|---|"]
    limit = None
    for style, run in zip(styles, static_runs):
        config = _config(run)
        limit = limit or config["trainer"]["limit_val_batches"]
        rows = sorted((row for log in (run / "logs").glob("metrics*.csv") for row in csv.DictReader(log.open())
                       if row.get("val/loss")), key=lambda row: int(row["step"]))
        label = f"{run.name} (STFT weight {config['loss']['stft_weight']:g})"
        factors = config["model"]["utilization_factors"]
        for colour, uf in zip(colours, factors):
            steps = [int(row["step"]) for row in rows]
            for ax, key in zip(axes, ("si_sdr", "pesq_wb")):
                ax.plot(steps, [float(row[f"val/{key}_uf{uf:g}"]) for row in rows], style, color=colour,
                        label=f"UF {uf:g}, {label}")
        last = rows[-1]
        lines.append(f"| {run.name} | {config['loss']['stft_weight']:g} | {last['step']} | "
                     + " / ".join(f"{float(last[f'val/si_sdr_uf{uf:g}']):.2f}" for uf in factors) + " | "
                     + " / ".join(f"{float(last[f'val/pesq_wb_uf{uf:g}']):.3f}" for uf in factors) + " |")
    pairs = pair_folders(val_dir / "noisy", val_dir / "clean")
    pairs = pairs[: max(1, int(len(pairs) * limit))] if isinstance(limit, float) else pairs[: int(limit)]
    level = {"si_sdr": [], "pesq_wb": []}
    for noisy_path, clean_path in pairs:
        noisy, clean = read_audio(noisy_path, 16_000), read_audio(clean_path, 16_000)
        level["si_sdr"].append(float(si_sdr(noisy, clean)))
        level["pesq_wb"].append(pesq_wb(noisy, clean, 16_000))
    for ax, key, name in zip(axes, ("si_sdr", "pesq_wb"), ("SI-SDR (dB)", "PESQ-WB")):
        mean = sum(level[key]) / len(level[key])
        ax.axhline(mean, color="black", linewidth=1, label=f"noisy input ({mean:.2f})")
        ax.set(xlabel="training step", ylabel=f"validation {name}", title=f"{name} per UF ({len(pairs)} val utterances)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=-10)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    lines.append(f"| noisy input | | | {sum(level['si_sdr']) / len(pairs):.2f} (every UF) | "
                 f"{sum(level['pesq_wb']) / len(pairs):.3f} (every UF) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--static", type=Path, help="the stage=static run folder")
    parser.add_argument("--dynamic", nargs="*", default=[], type=Path, help="stage=joint run folders")
    parser.add_argument("--rules", nargs="*", default=[], type=Path, help="static runs of the slimming rules")
    parser.add_argument("--figures", type=Path, help="write pareto.png and utilization_snr.png here")
    parser.add_argument("--test", type=Path, help="test folder with noisy/ and clean/ (default: mini's)")
    parser.add_argument("--curves", nargs="*", default=[], type=Path,
                        help="static runs whose validation curves per UF go into learning_curves.png (with --figures)")
    parser.add_argument("--val", type=Path, help="validation folder with noisy/ and clean/ (default: mini's)")
    args = parser.parse_args(argv)
    if args.curves:
        if not args.figures:
            parser.error("--curves writes learning_curves.png: name the folder with --figures")
        val = args.val or data_root() / "mini" / "val"
        args.figures.mkdir(parents=True, exist_ok=True)
        print(learning_curves(args.curves, val, args.figures / "learning_curves.png"), end="\n\n")
    if args.static is None:
        return
    if args.rules:
        print(rule_table(args.rules), end="\n\n")
    table, measured = results_table(args.static, args.dynamic)
    print(table, end="\n\n")
    print(bar_check(measured), end="\n\n")
    if args.figures:
        print(f"Pareto plot: {pareto(args.static, measured, args.figures / 'pareto.png')}\n")
        if args.dynamic:
            test = args.test or data_root() / "mini" / "test"
            print(utilization_against_snr(args.dynamic, test / "noisy", test / "clean",
                                          args.figures / "utilization_snr.png"))


if __name__ == "__main__":
    main()
