"""Exported streaming steps side by side: the same file through each ONNX folder, passes interleaved.

    python benchmarks/onnx_ab.py --wav FILE DIR [DIR ...] [--repeats 7]

For comparing two exports of one model (before and after a change to its step: export each with
its own checkout of sezoo, `sezoo export NAME --format onnx --out DIR`), where a whole
``benchmarks/streaming.py`` run would put minutes between them. Every folder streams the file hop by
hop in turn (A B A B ...), one thread (:func:`sezoo.bench.time_streams`), so a slow spell of the
machine lands on all of them; printed: the median and the fastest pass's real-time factor.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from sezoo.bench import Stream, time_streams
from sezoo.data.audio import read_audio
from sezoo.streaming import open_streamer


def fastest_pass(stream: Stream, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        streamer, begin = stream.make(), time.perf_counter()
        for start in range(0, stream.waveform.size, stream.hop):
            streamer.push(stream.waveform[start:start + stream.hop])
        streamer.flush()
        best = min(best, time.perf_counter() - begin)
    return best / (stream.waveform.size / stream.sample_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="ONNX export folders (stream.onnx + stream.json)")
    parser.add_argument("--wav", required=True)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    streams = []
    for folder in args.folders:
        streamer = open_streamer(folder, "onnx", 1)
        rate = int(streamer.step.meta["sample_rate"])
        streams.append(Stream(lambda f=folder: open_streamer(f, "onnx", 1), read_audio(args.wav, rate).numpy(),
                              streamer.framing.hop, rate))
    rows = time_streams(streams, args.repeats)
    fastest = [fastest_pass(s, args.repeats) for s in streams]
    print("| export | real-time factor: median pass | fastest pass | ms per hop p50 |\n|---|---|---|---|")
    for folder, row, best in zip(args.folders, rows, fastest):
        print(f"| {folder} | {row['rtf']:.4f} | {best:.4f} | {row['ms_per_hop']:.3f} |")
    if len(rows) > 1:
        ratio = np.array([r["rtf"] for r in rows]) / rows[0]["rtf"]
        print("median pass against the first: " + ", ".join(f"{r:.2f}" for r in ratio))


if __name__ == "__main__":
    main()
