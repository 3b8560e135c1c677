"""What an Arm Ethos-U55 would do with each of this recipe's models, from Arm's own compiler.

    make npu    # once: the optional extra (litert-torch, ai-edge-quantizer, ethos-u-vela) in .venv-npu
    .venv-npu/bin/python recipes/sparsity/npu.py runs/sparsity/mini2-* --out recipes/sparsity/results

For each finished run folder:

1. Its two networks per frame (``DTLN.npu_steps``: the magnitude stage; the basis, its stage and the
   synthesis) become fully int8 TFLite models (``sezoo.npu``: litert-torch, then ai-edge-quantizer's
   static int8 recipe calibrated on the steps of the `mini` validation recordings). The rfft, log and
   irfft stay on the host core, as in the authors' own two-model TFLite deployment of DTLN.
2. Vela compiles both for Ethos-U55-128 and -256 (Arm's ``Ethos_U55_High_End_Embedded`` system:
   NPU at 500 MHz, weights in off-chip flash, tensors in shared SRAM) and estimates cycles, inference
   time, SRAM and flash; operators it cannot place on the NPU are listed (they would run on the CPU).
3. The TFLite models enhance the `mini` test split through the same host loop, so the table also says
   what the converted integer models lose against the PyTorch model they came from.

A run that already has its ``npu.json`` is read back, not redone (``--force`` redoes it).
Writes ``npu.json`` and ``npu.md`` (the README's NPU table) under ``--out``; each run's TFLite models and
Vela's reports go to ``<run>/npu/`` (``npu-a16/`` with ``--activation-bits 16``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from sezoo.data.audio import read_audio  # noqa: E402
from sezoo.data.datamodule import data_root  # noqa: E402
from sezoo.export import load_exported  # noqa: E402
from sezoo.inference import evaluate  # noqa: E402
from sezoo.npu import (ACCELERATORS, CALIBRATION_STEPS, HostLoop, Recording, TfliteStep, convert_int8,  # noqa: E402
                       float_twin, missing_extra, vela_estimate)
from sezoo.onnx_int8 import calibration_files  # noqa: E402

STEP_NAMES = ("magnitude", "basis")


def calibrate(twin, files: list[Path]) -> list[list[tuple]]:
    """The two steps' arguments, recorded while ``files`` stream through the float twin."""
    frames = sum(twin.frames(read_audio(f, twin.sample_rate)[None]).shape[1] for f in files)
    recorders = [Recording(step, every=max(1, frames // CALIBRATION_STEPS)) for step in twin.npu_steps()]
    loop = HostLoop(twin, recorders)
    for f in files:
        loop(read_audio(f, twin.sample_rate)[None])
    return [r.calls for r in recorders]


def npu_folder(run: Path, activation_bits: int) -> Path:
    return run / ("npu" if activation_bits == 8 else f"npu-a{activation_bits}")


def run_npu(folder: Path, activation_bits: int, test_dir: Path | None) -> dict:
    model = load_exported(folder).eval()
    twin = float_twin(model)
    out = npu_folder(folder, activation_bits)
    calibration = calibrate(twin, calibration_files())
    paths = [convert_int8(step, calls, out / f"{name}.tflite", activation_bits)
             for name, step, calls in zip(STEP_NAMES, twin.npu_steps(), calibration)]
    vela = {}
    for accelerator in ACCELERATORS:
        per_step = [vela_estimate(path, accelerator, out / accelerator).as_dict() for path in paths]
        frame_s = twin.hop / twin.sample_rate
        time_s = sum(e["inference_time_s"] for e in per_step)
        vela[accelerator] = {
            "steps": dict(zip(STEP_NAMES, per_step)),
            # both networks run once per frame, one after the other
            "inference_time_ms": 1e3 * time_s, "npu_load": time_s / frame_s,
            "flash_kib": sum(e["off_chip_flash_kib"] for e in per_step),
            "sram_kib": max(e["sram_kib"] for e in per_step),
            "flash_share_of_cycles": sum(e["cycles_off_chip_flash"] for e in per_step) / sum(e["cycles_total"] for e in per_step),
            "encoded_weight_bytes": sum(e["encoded_weight_bytes"] for e in per_step),
            "cpu_operators": sorted({op for e in per_step for op in e["cpu_operators"]}),
        }
    row = {"run": folder.name, "activation_bits": activation_bits, "tflite_bytes": sum(p.stat().st_size for p in paths),
           "vela": vela}
    if test_dir is not None:
        loop = HostLoop(model, [TfliteStep(p) for p in paths])
        scores = evaluate(loop, test_dir / "noisy", test_dir / "clean", model_name=f"{folder.name} (TFLite int8)")
        pytorch = json.loads((folder / "results.json").read_text())["metrics"]
        row["tflite_metrics"] = scores["metrics"]
        row["pytorch_metrics"] = {k: pytorch.get(k) for k in scores["metrics"]}
    (out / "npu.json").write_text(json.dumps(row, indent=1))
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| run | SDR PyTorch / TFLite int8 | PESQ-WB PyTorch / TFLite | flash (kB) | Vela weights (B) "
             "| U55-128: ms per 8 ms frame | U55-256: ms | flash share of cycles | CPU operators |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        u128, u256 = r["vela"]["ethos-u55-128"], r["vela"]["ethos-u55-256"]
        quality = "-", "-"
        if "tflite_metrics" in r:
            p, t = r["pytorch_metrics"], r["tflite_metrics"]
            quality = f"{p['sdr']:.2f} / {t['sdr']:.2f}", f"{p['pesq_wb']:.3f} / {t['pesq_wb']:.3f}"
        lines.append(f"| {r['run']} | {quality[0]} | {quality[1]} | {u128['flash_kib'] * 1.024:.1f} | "
                     f"{u128['encoded_weight_bytes']:,} | {u128['inference_time_ms']:.3f} | {u256['inference_time_ms']:.3f} | "
                     f"{u128['flash_share_of_cycles']:.0%} | {', '.join(u128['cpu_operators']) or 'none'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders of this recipe")
    parser.add_argument("--out", type=Path, required=True, help="folder for npu.json and npu.md")
    parser.add_argument("--activation-bits", type=int, default=8, choices=(8, 16))
    parser.add_argument("--test", type=Path, default=None,
                        help="a split with noisy/ and clean/ to score the TFLite models on (default: mini's test split)")
    parser.add_argument("--no-quality", action="store_true", help="only convert and estimate")
    parser.add_argument("--force", action="store_true",
                        help="convert and estimate again where a run already has its npu.json (kept by default)")
    args = parser.parse_args(argv)
    if (missing := missing_extra()) is not None:
        parser.error(missing)
    torch.set_num_threads(1)
    test_dir = None if args.no_quality else (args.test or data_root() / "mini" / "test")
    finished = [f for f in args.runs if (f / "results.json").exists()]
    for folder in sorted(set(args.runs) - set(finished)):
        print(f"{folder}: no results.json (unfinished run), left out", file=sys.stderr)
    rows = []
    for folder in sorted(finished):
        done = npu_folder(folder, args.activation_bits) / "npu.json"
        row = json.loads(done.read_text()) if done.exists() and not args.force else None
        if row is None or (test_dir is not None and "tflite_metrics" not in row):
            row = run_npu(folder, args.activation_bits, test_dir)
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.activation_bits == 8 else "-a16"
    (args.out / f"npu{suffix}.json").write_text(json.dumps(rows, indent=1))
    (args.out / f"npu{suffix}.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
