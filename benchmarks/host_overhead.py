"""The streaming host's own time per hop: framing, FFTs, overlap-add, with the model's step replaced by a
constant mask, so that what remains is what every hop of every frame model pays around its step.

    python benchmarks/host_overhead.py dyncp/mini2-causal-dense earlyexit/mini-plain-exit3

One thread, 8 s of noise fed one hop at a time, 3 passes; prints the mean and median microseconds per hop.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sezoo.inference import resolve_model
from sezoo.streaming import FrameStreamer


class _ConstantStep:
    def __init__(self, bins: int):
        self.out = np.ones((1, bins), np.float32)

    def reset(self) -> None:
        pass

    def __call__(self, frame, valid):
        return self.out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="zoo names or run folders of frame-stepped models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = (0.1 * np.random.default_rng(0).standard_normal(16000 * 8)).astype(np.float32)
    for name in args.models:
        model = resolve_model(name).eval()
        framing = model.stream_framing()
        bins = framing.frame // 2 + 1 if framing.kind == "stft_mask" else framing.frame
        streamer = FrameStreamer(framing, _ConstantStep(bins), model.stream_delay_frames, model.latency_samples)
        passes = []
        for _ in range(3):
            streamer.reset()
            times = []
            for start in range(0, x.size, framing.hop):
                begin = time.perf_counter()
                streamer.push(x[start:start + framing.hop])
                times.append(time.perf_counter() - begin)
            passes.append((np.mean(times), np.median(times)))
        mean, median = np.median(np.array(passes), axis=0) * 1e6
        print(f"{name}: frame {framing.frame}, hop {framing.hop}: host {mean:.1f} us mean, {median:.1f} us median per hop")


if __name__ == "__main__":
    main()
