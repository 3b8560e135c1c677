"""Real-time factor of a model, batch 1, one thread: ``python benchmarks/rtf.py [--model RUN_OR_EXPORT]``.

Offline (whole-file) processing of ``--seconds`` of noise; reports the median of ``--repeats`` runs as
compute time per hop and real-time factor. Streaming paths get their own benchmark with their recipe.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sezoo.inference import resolve_model
from sezoo.metrics.cost import static_macs_per_second
from sezoo.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="run folder / export / zoo name (default: an untrained Conv-FSENet)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = resolve_model(args.model) if args.model else create_model("convfsenet").eval()
    rate = getattr(model, "sample_rate", 16000)
    x = torch.randn(1, int(args.seconds * rate)) * 0.1
    times = []
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    hop = getattr(model, "hop_samples", None)
    report = {"model": args.model or "convfsenet (untrained)", "threads": args.threads, "seconds": args.seconds,
              "rtf": median / args.seconds, "mmac_per_second": static_macs_per_second(model, rate) / 1e6}
    if hop:
        report["ms_per_hop"] = 1e3 * median / (x.shape[1] / hop)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
