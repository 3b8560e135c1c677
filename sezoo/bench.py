"""Real-time cost of models as they run live: one hop in, its output out, batch 1 (``sezoo bench``).

Each model streams one file hop by hop through :mod:`sezoo.streaming` (ONNX Runtime for frame-stepped
models unless ``runtime="torch"``; the slimmable DEMUCS's own PyTorch streamer otherwise); every ``push``
is timed on its own. Reported per model: the median and 99th percentile milliseconds per hop, the
real-time factor (all compute, flush included, over the audio's duration; the median of ``repeats``
passes) and the MACs per second the model executed on that file (counted on its offline forward, which
reports what a dynamic model ran).
"""
from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np
import torch


def time_stream(make_streamer, waveform: np.ndarray, hop: int, sample_rate: int, repeats: int = 3) -> dict:
    """Push ``waveform`` one ``hop`` at a time into fresh streamers (``repeats`` timed passes after a
    warm-up pass); per-hop times are pooled over the passes."""
    per_hop, totals = [], []
    for attempt in range(repeats + 1):
        streamer = make_streamer()
        times = []
        for start in range(0, waveform.size, hop):
            chunk = waveform[start:start + hop]
            begin = time.perf_counter()
            streamer.push(chunk)
            times.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        streamer.flush()
        flush = time.perf_counter() - begin
        if attempt:  # the first pass warms caches and allocators
            per_hop += times
            totals.append(sum(times) + flush)
    seconds = waveform.size / sample_rate
    return {"ms_per_hop": 1e3 * float(np.median(per_hop)), "p99_ms": 1e3 * float(np.percentile(per_hop, 99)),
            "rtf": statistics.median(totals) / seconds, "hops": len(per_hop) // repeats}


def bench_model(name: str, wav: str, runtime: str = "onnx", threads: int = 1, repeats: int = 3,
                int8: bool = False) -> dict:
    """One row of ``sezoo bench``: ``model``, ``runtime``, ``hop``, ``ms_per_hop``, ``p99_ms``, ``rtf``,
    ``macs_per_second``, ``latency_ms``, ``threads``. ``int8``: the ONNX step of ``sezoo export --int8``
    (runtime ``onnx-int8``)."""
    from sezoo.data.audio import read_audio
    from sezoo.inference import resolve_model
    from sezoo.metrics.cost import count_macs
    from sezoo.streaming import export_onnx, is_frame_stepped, open_streamer

    torch.set_num_threads(threads)
    model = resolve_model(name).eval()
    rate = int(model.sample_rate)
    waveform = read_audio(wav, rate, model.min_samples)
    macs = count_macs(model, waveform[None])
    used = runtime if is_frame_stepped(model) else "torch"
    if int8 and used != "onnx":
        raise ValueError(f"{name}: int8 runs as an ONNX step, which this model (or runtime={runtime!r}) has not")
    if used == "onnx":
        if int8:
            from sezoo.onnx_int8 import export_int8

            folder, used = export_int8(model, tempfile.mkdtemp(prefix="sezoo-bench-")), "onnx-int8"
        else:
            folder = export_onnx(model, tempfile.mkdtemp(prefix="sezoo-bench-"))
        make = lambda: open_streamer(folder, "onnx", threads)  # noqa: E731
    else:
        make = lambda: open_streamer(model)  # noqa: E731
    hop = int(model.hop_samples)
    with torch.inference_mode():
        timing = time_stream(make, waveform.numpy(), hop, rate, repeats)
    return {"model": name, "runtime": used, "threads": threads, "hop": hop, "hop_ms": 1e3 * hop / rate, **timing,
            "macs_per_second": macs / (waveform.numel() / rate), "latency_ms": model.latency_ms}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | runtime | MMAC/s | ms per hop p50 (p99) | hop | real-time factor | latency |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['macs_per_second'] / 1e6:.2f} | {r['ms_per_hop']:.3f} "
                     f"({r['p99_ms']:.3f}) | {r['hop_ms']:g} ms | {r['rtf']:.4f} | {r['latency_ms']:.0f} ms |")
    return "\n".join(lines)
