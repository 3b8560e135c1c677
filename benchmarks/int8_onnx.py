"""What ``sezoo export --int8`` costs in quality and buys in time and bytes, per zoo model, in one run.

    python benchmarks/int8_onnx.py --model NAME [--model NAME ...] [--files 40] [--wav FILE] [--json FILE]

Each model is exported twice (float, and int8 by :mod:`sezoo.onnx_int8`: trained ranges for QAT models,
ranges calibrated on the first mini validation files otherwise). Both graphs stream the first ``--files``
recordings of the mini test split hop by hop in ONNX Runtime (one thread), scored against the clean
references (PESQ-WB, STOI, SI-SDR); both are timed on ``--wav`` as ``sezoo bench`` times them (batch 1,
one thread, each hop on its own). Bytes: the ONNX file, and how many of its weights are 8-bit integers.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from sezoo.bench import time_stream
from sezoo.data.audio import pair_folders, read_audio
from sezoo.data.datamodule import data_root
from sezoo.inference import resolve_model
from sezoo.metrics.quality import quality
from sezoo.onnx_int8 import export_int8, int8_bytes
from sezoo.streaming import ONNX_FILE, export_onnx, open_streamer, stream_enhance


def scores(folder: Path, pairs, rate: int) -> dict:
    rows = []
    for noisy, clean in pairs:
        x, ref = read_audio(noisy, rate).numpy(), read_audio(clean, rate)
        y = stream_enhance(open_streamer(folder, "onnx"), x, 4096)
        rows.append(quality(torch.from_numpy(y), ref, rate))
    return {k: float(np.nanmean([r[k] for r in rows])) for k in ("pesq_wb", "stoi", "si_sdr")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--files", type=int, default=40, help="mini test recordings scored (sorted by name)")
    parser.add_argument("--wav", default=None, help="the file timed (default: the first scored one)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = data_root() / "mini" / "test"
    pairs = pair_folders(test / "noisy", test / "clean")[: args.files]
    wav = args.wav or str(pairs[0][0])
    rows = []
    for name in args.model:
        model = resolve_model(name).eval()
        rate, hop = int(model.sample_rate), int(model.hop_samples)
        waveform = read_audio(wav, rate, model.min_samples).numpy()
        for kind in ("float", "int8"):
            folder = Path(tempfile.mkdtemp(prefix=f"sezoo-{kind}-"))
            (export_int8 if kind == "int8" else export_onnx)(model, folder)
            timing = time_stream(lambda: open_streamer(folder, "onnx", 1), waveform, hop, rate)
            row = {"model": name, "graph": kind, **scores(folder, pairs, rate), **timing,
                   "onnx_bytes": (folder / ONNX_FILE).stat().st_size, "int8_weights": int8_bytes(folder),
                   "files": len(pairs)}
            if kind == "int8":
                row["route"] = json.loads((folder / "stream.json").read_text())["int8"]["route"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| model | graph | PESQ-WB | STOI | SI-SDR | ms per hop p50 (p99) | RTF | ONNX bytes | int8 weights |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        graph = r["graph"] + (f" ({r['route']})" if "route" in r else "")
        print(f"| {r['model']} | {graph} | {r['pesq_wb']:.3f} | {r['stoi']:.3f} | {r['si_sdr']:.2f} | "
              f"{r['ms_per_hop']:.3f} ({r['p99_ms']:.3f}) | {r['rtf']:.4f} | {r['onnx_bytes']:,} | {r['int8_weights']:,} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
