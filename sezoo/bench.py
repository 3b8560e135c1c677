"""Real-time cost of models as they run live: one hop in, its output out, batch 1 (``sezoo bench``).

Each model streams one file hop by hop through :mod:`sezoo.streaming` (ONNX Runtime for frame-stepped
models unless ``runtime="torch"``; the slimmable DEMUCS's own PyTorch streamer otherwise); every ``push``
is timed on its own, and the models of one run take their passes in turn (:func:`time_streams`).
Reported per model: the median and 99th percentile milliseconds per hop, the
real-time factor (all compute, flush included, over the audio's duration; the median of ``repeats``
passes) and the MACs per second the model executed on that file (counted on its offline forward, which
reports what a dynamic model ran).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Stream:
    """What one timed row streams: ``make()`` gives a fresh streamer (``push``/``flush``), fed
    ``waveform`` one ``hop`` at a time."""

    make: Callable[[], object]
    waveform: np.ndarray
    hop: int
    sample_rate: int


def time_streams(streams: list[Stream], repeats: int = 3) -> list[dict]:
    """Each stream's per-hop times and real-time factor, its passes interleaved with the others'.

    Every stream first takes one untimed pass (caches, allocators), then the ``repeats`` timed passes
    go round the streams in turn (A B C A B C ...): on a shared machine a slow spell then lands on every
    model alike instead of on one model's block of passes, which is what a side-by-side comparison
    needs. Per-hop times are pooled over a stream's passes; its real-time factor is its median pass
    (compute, flush included, over the audio's duration)."""
    per_hop: list[list[float]] = [[] for _ in streams]
    totals: list[list[float]] = [[] for _ in streams]
    for attempt in range(repeats + 1):
        for index, stream in enumerate(streams):
            streamer, times = stream.make(), []
            for start in range(0, stream.waveform.size, stream.hop):
                chunk = stream.waveform[start:start + stream.hop]
                begin = time.perf_counter()
                streamer.push(chunk)
                times.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            streamer.flush()
            flush = time.perf_counter() - begin
            if attempt:  # the first pass warms caches and allocators
                per_hop[index] += times
                totals[index].append(sum(times) + flush)
    return [{"ms_per_hop": 1e3 * float(np.median(hops)), "p99_ms": 1e3 * float(np.percentile(hops, 99)),
             "rtf": statistics.median(total) / (stream.waveform.size / stream.sample_rate),
             "hops": len(hops) // repeats}
            for stream, hops, total in zip(streams, per_hop, totals)]


def time_stream(make_streamer, waveform: np.ndarray, hop: int, sample_rate: int, repeats: int = 3) -> dict:
    """One stream timed on its own (:func:`time_streams`)."""
    return time_streams([Stream(make_streamer, waveform, hop, sample_rate)], repeats)[0]


def prepare_model(name: str, wav: str, runtime: str = "onnx", threads: int = 1,
                  int8: bool = False) -> tuple[dict, Stream]:
    """A model's row (without its times) and the stream to time. ``runtime``: ``onnx`` (its exported step;
    ``int8``: the step of ``sezoo export --int8``), ``torch``, ``compiled`` (a model's compiled step), or
    ``auto``: compiled where the model has one, ONNX otherwise. A model that is not frame-stepped (the
    slimmable DEMUCS's own streamer) streams in PyTorch; the row's ``runtime`` says what ran."""
    from sezoo.data.audio import read_audio
    from sezoo.inference import resolve_model
    from sezoo.metrics.cost import count_macs
    from sezoo.streaming import export_onnx, has_compiled_step, is_frame_stepped, open_streamer

    torch.set_num_threads(threads)
    model = resolve_model(name).eval()
    rate = int(model.sample_rate)
    waveform = read_audio(wav, rate, model.min_samples)
    macs = count_macs(model, waveform[None])
    if runtime == "auto":
        runtime = "compiled" if has_compiled_step(model) and not int8 else "onnx"
    if runtime == "compiled" and not has_compiled_step(model):
        raise ValueError(f"{name}: no compiled streaming step; use runtime 'onnx', 'torch' or 'auto'")
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
    elif used == "compiled":
        make = lambda: open_streamer(model, "compiled")  # noqa: E731
    else:
        make = lambda: _InferenceStreamer(open_streamer(model))  # noqa: E731
    hop = int(model.hop_samples)
    row = {"model": name, "runtime": used, "threads": threads, "hop": hop, "hop_ms": 1e3 * hop / rate,
           "macs_per_second": macs / (waveform.numel() / rate), "latency_ms": model.latency_ms}
    return row, Stream(make, waveform.numpy(), hop, rate)


class _InferenceStreamer:
    """A PyTorch streamer pushed under ``torch.inference_mode`` (no autograd bookkeeping per hop)."""

    def __init__(self, streamer):
        self.streamer = streamer

    def push(self, chunk):
        with torch.inference_mode():
            return self.streamer.push(chunk)

    def flush(self):
        with torch.inference_mode():
            return self.streamer.flush()


def bench_models(models: list[tuple], wav: str, runtime: str = "auto", threads: int = 1,
                 repeats: int = 3, extra: list[tuple[dict, Stream]] = ()) -> list[dict]:
    """``sezoo bench``'s rows for ``(name, int8)`` pairs, or ``(name, int8, runtime)`` to override
    ``runtime`` for one row, timed in one interleaved run (:func:`time_streams`), after any ``extra``
    rows (a benchmark's peers). Each row: ``model``,
    ``runtime``, ``hop``, ``hop_ms``, ``ms_per_hop``, ``p99_ms``, ``rtf``, ``hops``, ``macs_per_second``,
    ``latency_ms``, ``threads``."""
    prepared = list(extra) + [prepare_model(item[0], wav, item[2] if len(item) > 2 else runtime, threads, item[1])
                              for item in models]
    timings = time_streams([stream for _, stream in prepared], repeats)
    return [{**row, **timing} for (row, _), timing in zip(prepared, timings)]


def bench_model(name: str, wav: str, runtime: str = "auto", threads: int = 1, repeats: int = 3,
                int8: bool = False) -> dict:
    """One model's row of ``sezoo bench`` (:func:`bench_models`)."""
    return bench_models([(name, int8)], wav, runtime, threads, repeats)[0]


def markdown(rows: list[dict]) -> str:
    lines = ["| model | runtime | MMAC/s | ms per hop p50 (p99) | hop | real-time factor | latency |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        macs = "-" if r["macs_per_second"] is None else f"{r['macs_per_second'] / 1e6:.2f}"  # a peer's may be unknown
        lines.append(f"| {r['model']} | {r['runtime']} | {macs} | {r['ms_per_hop']:.3f} "
                     f"({r['p99_ms']:.3f}) | {r['hop_ms']:g} ms | {r['rtf']:.4f} | {r['latency_ms']:.0f} ms |")
    return "\n".join(lines)
