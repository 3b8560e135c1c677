"""The ``sezoo`` command: data preparation, evaluation and enhancement (see ``sezoo --help``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Only the standard library at the top: each command imports what it needs, so that light commands
# (`zoo list`, `zoo info`, `--help`) never load the training stack.

CORPORA = ("mini",)


def _data_prepare(args) -> None:
    from sezoo.data import mini
    from sezoo.data.datamodule import data_root

    root = data_root(args.root)
    missing = mini.missing_packages()
    if missing:
        if not args.install_deps:
            raise mini.MissingSources(missing)
        print(f"installing OS packages: {' '.join(missing)}")
        mini.install_packages(missing)
    folder = mini.build_mini(root, seed=args.seed, progress=not args.quiet)
    summary = mini.info(folder)
    print(f"mini corpus ready at {folder}: {summary['speech_minutes']} min of speech "
          f"({summary['recorded_speech_minutes']} recorded), {summary['voices']} voices ({summary['recorded_voices']} "
          f"recorded, in {len(summary['languages'])} languages), noise: {len(summary['real_noise_categories'])} "
          f"recorded categories + {len(summary['synthetic_noise_categories'])} synthetic, splits {summary['splits']}")


def _data_info(args) -> None:
    from sezoo.data import mini
    from sezoo.data.datamodule import data_root

    summary = mini.info(data_root(args.root) / args.corpus)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:22} {value}")


class FilesSkipped(Exception):
    """A folder command finished but refused some files: exit status 1 (errors are 2)."""


def _evaluate(args) -> None:
    from sezoo.inference import evaluate, resolve_model
    from sezoo.report import print_results

    report = evaluate(resolve_model(args.model), args.noisy, args.clean, model_name=args.model,
                      progress=not args.quiet, with_dnsmos=args.dnsmos, strict=args.strict)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"{report['model']}: {report['n_files']} files")
    print_results(report)
    print(f"real-time factor {report['cost']['rtf']:.4f} ({report['cost']['threads']} threads)")
    if report["skipped"]:
        raise FilesSkipped(f"{len(report['skipped'])} file(s) skipped (listed above and under \"skipped\" in the JSON)")


def _enhance(args) -> None:
    from sezoo.inference import enhance, resolve_model

    model = resolve_model(args.model)
    streamer = None
    if args.stream:
        from sezoo.streaming import export_onnx, open_streamer

        if args.runtime == "onnx":
            import tempfile

            folder = export_onnx(model, tempfile.mkdtemp(prefix="sezoo-onnx-"))
            streamer = lambda: open_streamer(folder, "onnx")  # noqa: E731
        else:
            streamer = lambda: open_streamer(model, args.runtime)  # noqa: E731
    written, skipped = enhance(model, args.input, args.output, strict=args.strict, streamer=streamer, chunk=args.chunk)
    print(f"wrote {len(written)} file(s) to {args.output}")
    if skipped:
        raise FilesSkipped(f"{len(skipped)} file(s) skipped (listed above)")


def _export(args) -> None:
    from sezoo.inference import resolve_model
    from sezoo.streaming import ONNX_FILE, ONNX_META, export_onnx

    model = resolve_model(args.model)
    if args.int8:
        from sezoo.onnx_int8 import export_int8

        folder = export_int8(model, args.out, args.calibration)
        record = json.loads((folder / ONNX_META).read_text())["int8"]
        how = ("its QAT ranges kept" if record["route"] == "qat"
               else f"ranges calibrated on {record['calibration_steps']} streamed steps of {len(record['calibration_files'])} files")
        print(f"int8: {how}")
    elif args.calibration:
        raise SystemExit("--calibration goes with --int8")
    else:
        folder = export_onnx(model, args.out)
    print(f"wrote {folder / ONNX_FILE} (one streaming step: frame, valid and state in; out and state out) "
          f"and {folder / ONNX_META}")


def _bench(args) -> None:
    from sezoo.bench import bench_models, markdown

    rows = bench_models([(name, int8) for name in args.models for int8 in ((False, True) if args.int8 else (False,))],
                        args.wav, args.runtime, args.threads, args.repeats)
    print(markdown(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))


def _sweep(args) -> None:
    from sezoo.sweep import RESULTS_TABLE, Sweep, markdown

    sweep = Sweep(args.sweep_file, name=args.name, runs_dir=args.runs_dir)
    state = sweep.run(count=args.count, parallel=args.parallel, retry_failed=args.retry_failed, dry_run=args.dry_run)
    if args.dry_run:
        return
    print(markdown(sweep))
    print(f"\n(also in {sweep.folder / RESULTS_TABLE}; compare the runs: sezoo compare {sweep.folder})")
    failed = [r.id for r in state.runs if r.state == "failed"]
    if failed:
        raise FilesSkipped(f"{len(failed)} run(s) failed: {', '.join(failed)} (their train.log says why; "
                           f"--retry-failed runs them again)")


def _compare(args) -> None:
    from sezoo import compare

    points = compare.gather(args.items)
    if args.x == "rtf":
        if not args.wav:
            raise ValueError("--x rtf measures every model streaming one file now: give --wav FILE")
        compare.measure_rtf(points, args.wav, args.threads)
    table = compare.markdown(points, args.x, args.y)
    print(table)
    splits = sorted({p.data for p in points if p.data})
    if len(splits) > 1:
        print(f"note: these points were scored on different test splits ({', '.join(splits)}); quality compares "
              f"fairly only within one (the plot draws each split's noisy input)", file=sys.stderr)
    png = compare.plot(points, args.out, args.x, args.y)
    print(f"\nPareto plot: {png}")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(table + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        front = compare.on_front(points, args.x, args.y)
        Path(args.json).write_text(json.dumps([{**p.__dict__, "front": id(p) in front} for p in points], indent=1))
    url = compare.log_to_wandb(points, png, args.x, args.y)
    if url:
        print(f"W&B: {url}")


def _zoo_list(args) -> None:
    from sezoo import zoo

    entries = zoo.list_models()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1))
        return
    print(f"{'name':30}{'PESQ-WB':>9}{'STOI':>7}{'SI-SDR':>8}{'MMAC/s':>9}{'params':>10}{'bytes':>11}"
          f"{'latency':>9}  data     parent")
    for e in entries:
        m, c = e.metrics, e.cost
        latency = "-" if e.latency_ms is None else f"{e.latency_ms:.0f} ms"
        print(f"{e.name:30}{m['pesq_wb']:9.3f}{m['stoi']:7.3f}{m['si_sdr']:8.2f}{c['macs_per_second'] / 1e6:9.2f}"
              f"{c['params']:10,}{c['model_bytes']:11,}{latency:>9}  {e.training.data:8} {e.parent or '-'}")


def _zoo_leaderboard(args) -> None:
    from sezoo.zoo import list_models
    from sezoo.zoo.page import figure, leaderboard_markdown, update_readme

    entries = list_models()
    print(leaderboard_markdown(entries))
    if args.readme:
        changed = update_readme(args.readme, entries)
        print(f"{args.readme}: leaderboard {'rewritten' if changed else 'already up to date'}")
    if args.figure:
        print(f"figure: {figure(entries, args.figure)}")


def _zoo_page(args) -> None:
    import os

    from sezoo.zoo.page import build_page, render, render_summary

    data = Path(os.environ.get("SEZOO_DATA", "data")) / "mini" / "test"
    noisy, clean = args.noisy or data / "noisy", args.clean or data / "clean"
    index = build_page(args.out, noisy, clean, args.examples, args.models, progress=print)
    print(f"wrote {index} (open it in a browser; no server needed)")
    if args.check:
        result = render(index)
        print(render_summary(result))
        failed = [src for src, state in result["audio"] + result["images"] if state != "loaded"]
        if failed:
            raise RuntimeError(f"the browser could not load: {', '.join(failed)}")


def _zoo_info(args) -> None:
    from sezoo import zoo

    print(zoo.model_card(zoo.get_entry(args.name), zoo.entry_lineage(args.name)))


def _zoo_download(args) -> None:
    from sezoo import zoo

    for path in zoo.download(args.name):
        print(path)


def _zoo_publish(args) -> None:
    from sezoo import zoo

    operating_point = json.loads(args.operating_point) if args.operating_point else None
    entry = zoo.publish(args.run, args.name, args.to, registry=args.registry, operating_point=operating_point,
                        command=args.command, description=args.description, parent=args.parent)
    print(f"published {entry.name} ({entry.weights.name}) to {args.to}")


def _zoo_retire(args) -> None:
    from sezoo.zoo.publish import retire

    removed = retire(args.names, args.to, args.registry)
    print(f"retired {', '.join(args.names)} from {args.to}; removed {len(removed)} files: {', '.join(removed)}")


def _zoo_repack(args) -> None:
    from sezoo.zoo.publish import repack

    for file, (before, after) in repack(args.names, args.to, args.registry).items():
        print(f"{file}: {before:,} -> {after:,} bytes")


def _report(args) -> None:
    from sezoo.report import load_results, markdown_table, plot_pareto

    print(markdown_table(args.runs, args.baseline))
    if args.pareto:
        points = [(r["cost"]["macs_per_second"] / 1e6, r["metrics"]["pesq_wb"], Path(run).name)
                  for run, r in ((run, load_results(run)) for run in args.runs)]
        print(f"Pareto plot: {plot_pareto({'PESQ-WB against cost': {'runs': points}}, args.pareto)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sezoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or describe a corpus").add_subparsers(dest="action", required=True)
    prepare = data.add_parser("prepare", help="build a corpus (mini: from OS packages)")
    prepare.add_argument("corpus", choices=CORPORA)
    prepare.add_argument("--root", help="data root (default $SEZOO_DATA or ~/.local/share/sezoo)")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--install-deps", action="store_true",
                         help="apt-get install the source packages if missing (needs root)")
    prepare.add_argument("--quiet", action="store_true")
    prepare.set_defaults(func=_data_prepare)
    info = data.add_parser("info", help="describe a built corpus")
    info.add_argument("corpus", choices=CORPORA)
    info.add_argument("--root")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_data_info)

    ev = sub.add_parser("evaluate", help="quality and cost of a model on paired noisy/clean folders")
    ev.add_argument("--model", required=True, help="zoo name or path to an exported model / run folder")
    ev.add_argument("--noisy", required=True)
    ev.add_argument("--clean", required=True)
    ev.add_argument("--json", help="write the full report (per file too) here")
    ev.add_argument("--dnsmos", action="store_true", help="also DNSMOS P.835/P.808 (seconds per file on a CPU)")
    ev.add_argument("--quiet", action="store_true")
    ev.add_argument("--strict", action="store_true", help="stop at the first bad file (default: skip it, exit 1)")
    ev.set_defaults(func=_evaluate)

    en = sub.add_parser("enhance", help="enhance a .wav file or a folder of them")
    en.add_argument("--model", required=True)
    en.add_argument("input")
    en.add_argument("output")
    en.add_argument("--strict", action="store_true", help="stop at the first bad file (default: skip it, exit 1)")
    en.add_argument("--stream", action="store_true",
                    help="feed each file through the model's streaming path, chunk by chunk, as live audio arrives")
    en.add_argument("--chunk", type=int, help="--stream: samples per chunk (default: the model's hop)")
    en.add_argument("--runtime", choices=("torch", "onnx", "compiled"), default="torch",
                    help="--stream: run the steps in PyTorch, in ONNX Runtime (exported on the fly) or compiled "
                         "(models with a compiled step: causal Conv-FSENet / DynCP)")
    en.set_defaults(func=_enhance)
    ex = sub.add_parser("export", help="a streaming ONNX graph of a model (one step, state in and out)")
    ex.add_argument("model", help="zoo name or path to an exported model / run folder")
    ex.add_argument("--format", choices=("onnx",), default="onnx")
    ex.add_argument("--out", required=True, help="folder for stream.onnx and stream.json")
    ex.add_argument("--int8", action="store_true",
                    help="int8 QuantizeLinear/DequantizeLinear graph: a QAT model keeps its trained ranges, any "
                         "other is calibrated on streamed recordings (default: the mini validation split)")
    ex.add_argument("--calibration", help="--int8, float models: a folder of noisy recordings to calibrate on")
    ex.set_defaults(func=_export)
    be = sub.add_parser("bench", help="milliseconds per hop and real-time factor, streaming, batch 1")
    be.add_argument("models", nargs="+", help="zoo names or paths to exported models / run folders")
    be.add_argument("--wav", required=True, help="the file every model streams")
    be.add_argument("--threads", type=int, default=1)
    be.add_argument("--runtime", choices=("auto", "onnx", "compiled", "torch"), default="auto",
                    help="where frame-stepped models run their steps: auto = a model's compiled step where it has "
                         "one (causal Conv-FSENet / DynCP), ONNX Runtime otherwise (others stream in PyTorch)")
    be.add_argument("--repeats", type=int, default=3)
    be.add_argument("--int8", action="store_true",
                    help="also time each model's int8 ONNX step (sezoo export --int8), row beside its float one")
    be.add_argument("--json", help="also write the rows here")
    be.set_defaults(func=_bench)
    sw = sub.add_parser("sweep", help="run a W&B-format sweep here, offline (the W&B sweep engine proposes the runs)")
    sw.add_argument("sweep_file", help="e.g. recipes/dyncp/sweep.yaml")
    sw.add_argument("--count", type=int, help="start at most N runs in this call (default: a grid to its end)")
    sw.add_argument("--parallel", type=int, default=1, help="trainings at once on this machine")
    sw.add_argument("--name", help="the sweep's folder under runs/<recipe>/sweeps/ (default: the YAML's file name)")
    sw.add_argument("--runs-dir", default="runs", help="the run.dir of every run (default: runs)")
    sw.add_argument("--retry-failed", action="store_true", help="run failed runs of a resumed sweep again")
    sw.add_argument("--dry-run", action="store_true", help="print the commands of the runs a new sweep would start")
    sw.set_defaults(func=_sweep)
    co = sub.add_parser("compare", help="one Pareto plot and table across runs, sweeps and zoo models")
    co.add_argument("items", nargs="+", help="run folders, sweep folders (runs/<recipe>/sweeps/<name>) or zoo names")
    co.add_argument("--x", choices=("macs", "bytes", "rtf"), default="macs",
                    help="cost axis: MMAC/s executed, deployable bytes, or the real-time factor measured now (--wav)")
    co.add_argument("--y", choices=("pesq_wb", "si_sdr", "stoi"), default="pesq_wb")
    co.add_argument("--out", default="pareto.png", help="the PNG (default: pareto.png)")
    co.add_argument("--table", help="also write the markdown table here")
    co.add_argument("--json", help="also write the points here")
    co.add_argument("--wav", help="--x rtf: the file every model streams")
    co.add_argument("--threads", type=int, default=1, help="--x rtf: threads per model")
    co.set_defaults(func=_compare)
    rep = sub.add_parser("report", help="a markdown results table from run folders")
    rep.add_argument("runs", nargs="+", help="run folders (each with results.json)")
    rep.add_argument("--baseline", help="a run folder to compare MACs and PESQ-WB against")
    rep.add_argument("--pareto", metavar="PNG", help="also plot PESQ-WB against MMAC/s executed here")
    rep.set_defaults(func=_report)

    zoo = sub.add_parser("zoo", help="pretrained models: list, info, download, publish").add_subparsers(
        dest="action", required=True)
    zl = zoo.add_parser("list", help="the registry as a table (or --json)")
    zl.add_argument("--json", action="store_true")
    zl.set_defaults(func=_zoo_list)
    zi = zoo.add_parser("info", help="a model's card")
    zi.add_argument("name")
    zi.set_defaults(func=_zoo_info)
    zb = zoo.add_parser("leaderboard", help="the leaderboard from the registry (markdown), the README's block, the figure")
    zb.add_argument("--readme", help="rewrite the leaderboard block of this file (e.g. README.md)")
    zb.add_argument("--figure", help="also draw every model's quality against MMAC/s and bytes here (PNG)")
    zb.set_defaults(func=_zoo_leaderboard)
    zg = zoo.add_parser("page", help="a static HTML zoo page: leaderboard, figures, cards, listening examples")
    zg.add_argument("--out", required=True, help="the folder to write (index.html, pareto.png, audio/)")
    zg.add_argument("--noisy", help="noisy examples (default $SEZOO_DATA/mini/test/noisy)")
    zg.add_argument("--clean", help="their clean references (default $SEZOO_DATA/mini/test/clean)")
    zg.add_argument("--examples", type=int, default=3, help="utterances per model")
    zg.add_argument("--models", nargs="+", help="only these zoo models (default: all)")
    zg.add_argument("--check", action="store_true", help="open the page in headless Chromium; fail if a file does not load")
    zg.set_defaults(func=_zoo_page)
    zd = zoo.add_parser("download", help="fetch a model's files into the cache (verified)")
    zd.add_argument("name")
    zd.set_defaults(func=_zoo_download)
    zp = zoo.add_parser("publish", help="publish a run folder: weights, card, registry entry")
    zp.add_argument("run", help="a finished run folder (results.json, model.json, model.safetensors)")
    zp.add_argument("--name", required=True, help="<recipe>/<variant>")
    zp.add_argument("--to", required=True, help="a folder, or hf://ORG/REPO")
    zp.add_argument("--registry", help="also merge the entry into this registry file (e.g. sezoo/zoo/registry.json)")
    zp.add_argument("--operating-point", help='JSON, e.g. \'{"uf": 0.25}\' for one point of a shared weight file')
    zp.add_argument("--command", help="the training command (default: the one recorded in results.json)")
    zp.add_argument("--description", default="")
    zp.add_argument("--parent", help="the zoo entry this model was compressed from (lineage), e.g. tinylstm/mini2-pruned")
    zp.set_defaults(func=_zoo_publish)
    zr = zoo.add_parser("retire", help="take superseded entries out of a zoo folder (their files stay in git history)")
    zr.add_argument("names", nargs="+")
    zr.add_argument("--to", required=True, help="the zoo folder (e.g. release)")
    zr.add_argument("--registry", help="also take them out of this registry file (e.g. sezoo/zoo/registry.json)")
    zr.set_defaults(func=_zoo_retire)
    zk = zoo.add_parser("repack", help="store published QAT entries' weights as their integer codes (checked lossless)")
    zk.add_argument("names", nargs="+")
    zk.add_argument("--to", required=True, help="the zoo folder (e.g. release)")
    zk.add_argument("--registry", help="also update this registry file (e.g. sezoo/zoo/registry.json)")
    zk.set_defaults(func=_zoo_repack)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except FilesSkipped as done:
        print(f"sezoo: {done}", file=sys.stderr)
        return 1
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:  # AudioError is a ValueError
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sezoo: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
