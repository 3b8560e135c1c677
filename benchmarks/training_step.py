"""Seconds per training step of the recurrent models that train step by step in Python: quantized LSTMs
and GRUs (every QAT stage) and DEMUCS's Gumbel router (its diagonal GRU), on one CPU thread.

    python benchmarks/training_step.py [--batch 16] [--seconds 2] [--repeats 3] [--json FILE]

A step is forward, backward and an Adam update on a batch of noise at 16 kHz, after one warm-up step.
These loops are where a CPU run of the sparsity, TinyLSTM and gruquant recipes spends its time: QAT
puts a quantizer inside each recurrent step, so PyTorch's fused LSTM/GRU kernels cannot run them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sezoo.callbacks import QuantizationAwareTraining
from sezoo.models import DTLN
from sezoo.models.grumask import GRUMask
from sezoo.nn.router import DiagonalGRU

RATE = 16000


def step_seconds(model: torch.nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)

    def step():
        loss = model(inputs).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocator, quantizer ranges)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def quantized(model: torch.nn.Module, plan: dict) -> torch.nn.Module:
    QuantizationAwareTraining(plan).attach(model)
    return model.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    audio = 0.1 * torch.randn(args.batch, int(args.seconds * RATE))
    dtln_plan = {"*.mask_quant": 16, "*.cell_quant": 16, "*": 8}  # recipes/sparsity/config.yaml
    cases = {
        "DTLN fp32 (fused LSTM kernel)": (DTLN().train(), audio),
        "DTLN int8 QAT (sparsity recipe)": (quantized(DTLN(), dtln_plan), audio),
        "GRUMask int8 QAT (gruquant recipe)": (quantized(GRUMask(), {"*": 8}), audio),
        # the router's GRU on DEMUCS's 256-sample hops: [batch, channels, hops]
        "DiagonalGRU router (32 channels)": (DiagonalGRU(32).train(),
                                             torch.randn(args.batch, 32, audio.shape[-1] // 256)),
    }
    rows = {}
    for name, (model, inputs) in cases.items():
        rows[name] = step_seconds(model, inputs, args.repeats)
        print(f"{name:40s} {rows[name]:.3f} s per step")
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "seconds": args.seconds, "threads": 1,
                                         "seconds_per_step": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
