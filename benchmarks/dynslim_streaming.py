"""Wall-clock time per hop of the slimmable DEMUCS streamed hop by hop (batch 1, one thread): each
static operating point and each dynamic model, with the MACs per sample that ran.

    python benchmarks/dynslim_streaming.py --model runs/dynslim/X-static/uf1 --model runs/dynslim/X-static/uf0.25 \\
        --model runs/dynslim/X-dyn0.10 --wav $SEZOO_DATA/mini/test/noisy/<file>.wav

Each model streams the utterance through ``SlimStreamer`` (one hop = 256 samples = 16 ms at 16 kHz)
``--repeats`` times; the median time per hop is reported. The executor is eager PyTorch driven from
Python, so per-operation overhead is part of what is measured: the rows show how much of the MAC
saving survives as time on a general-purpose CPU, and how far each is inside the 16 ms hop.
"""
from __future__ import annotations

import json
import statistics
import time


from sezoo.data.audio import read_audio
from sezoo.inference import resolve_model

from _streaming import parse_args  # benchmarks/, on the path when a benchmark runs as a script
from sezoo.models.demucs_streaming import stream_enhance


def main() -> None:
    args = parse_args(__doc__)
    rows = []
    for name in args.model:
        model = resolve_model(name)
        wave = read_audio(args.wav, model.sample_rate, 512)[None]
        hops = -(-wave.shape[-1] // model.hop_samples)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _, streamer = stream_enhance(model, wave)
            times.append(time.perf_counter() - start)
        rows.append({"model": name, "hops": hops, "threads": args.threads,
                     "mean_uf": round(streamer.mean_utilization, 4),
                     "macs_per_sample": round(streamer.total_macs / wave.shape[-1]),
                     "ms_per_hop": round(1e3 * statistics.median(times) / hops, 3)})
    if len(rows) > 1:
        base = rows[0]
        for row in rows[1:]:
            row["mac_saving_vs_first"] = round(1 - row["macs_per_sample"] / base["macs_per_sample"], 4)
            row["time_saving_vs_first"] = round(1 - row["ms_per_hop"] / base["ms_per_hop"], 4)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
