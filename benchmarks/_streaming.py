"""What the streaming benchmarks share: their command line (models to compare, one file, repeats,
threads), parsed with torch's thread count already set."""
from __future__ import annotations

import argparse

import torch


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="run folder / export; repeat to compare")
    parser.add_argument("--wav", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args
