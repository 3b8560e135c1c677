"""Per-frame wall-clock latency of DynCP's streaming path, dense vs gated (batch 1, one thread).

    python benchmarks/dyncp_streaming.py --model runs/dyncp/X-dense --model runs/dyncp/X-keep25 \\
        --wav $SEZOO_DATA/mini/test/noisy/<file>.wav

Each model streams the utterance's frames through ``ConvFSENet.stream_mask`` (only open channels
computed) ``--repeats`` times; the median time per frame is reported with the MACs that ran.
The executor is PyTorch eager code driven from Python, so per-operation overhead is part of what is
measured: it shows how much of the MAC saving survives as time on a general-purpose CPU.
"""
from __future__ import annotations

import json
import statistics
import time


from sezoo.data.audio import read_audio
from sezoo.inference import resolve_model

from _streaming import parse_args  # benchmarks/, on the path when a benchmark runs as a script


def main() -> None:
    args = parse_args(__doc__)
    rows = []
    for name in args.model:
        model = resolve_model(name)
        wave = read_audio(args.wav, model.sample_rate, 512)
        features = model.features(model.stft(wave[None]))
        frames = features.shape[-1]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _, macs, gates = model.stream_mask(features)
            times.append(time.perf_counter() - start)
        keep = sum(float(g.mean()) for g in gates) / len(gates)
        rows.append({"model": name, "frames": frames, "threads": args.threads, "keep": round(keep, 4),
                     "macs_per_frame": macs / frames, "ms_per_frame": 1e3 * statistics.median(times) / frames})
    if len(rows) > 1:
        base = rows[0]
        for row in rows[1:]:
            row["mac_saving_vs_first"] = 1 - row["macs_per_frame"] / base["macs_per_frame"]
            row["time_saving_vs_first"] = 1 - row["ms_per_frame"] / base["ms_per_frame"]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
