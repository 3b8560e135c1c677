"""Fully int8 TFLite models for Arm Ethos-U microNPUs, and Arm Vela's estimates of them (the optional
``npu`` extra: ``make npu``).

The route, one tool per step, each a maintained one:

1. :func:`float_twin`: a QAT model becomes a float model whose weights are its fake-quantized weights
   (a pruned weight stays exactly 0) and whose quantizer sites are off, so the converter sees plain ops.
2. ``litert-torch`` converts each step module (one frame, state in, state out) to a float TFLite model
   of basic ops; an LSTM becomes fully connected layers, element-wise ops and lookup tables.
3. ``ai-edge-quantizer``'s static recipe (``static_wi8_ai8``: int8 weights per output channel, int8
   activations; or ``static_wi8_ai16``) makes it fully integer, calibrated on the model's own steps
   over real recordings (:class:`Recording`). litert-torch's own PT2E quantizer would leave the LSTM
   gates in float, which Vela would send to the CPU.
4. ``vela`` (Arm's Ethos-U compiler) compiles it for an accelerator and writes its estimates: cycles,
   inference time, SRAM and flash used, weights as its codec stored them, and the operators it leaves
   to the CPU (:func:`vela_estimate`).

The TFLite ranges are calibrated, not the QAT ranges: ai-edge-quantizer picks its own scales (weights
per channel). Pruned zeros survive that, since 0 is exactly representable in every symmetric scale.
"""
from __future__ import annotations

import copy
import csv
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from sezoo.nn.quant import QuantSite, weight_quantizers

ACCELERATORS = ("ethos-u55-128", "ethos-u55-256")
# Arm's own reference systems (Vela's config_files/Arm/vela.ini): a Cortex-M55 class system, the NPU at
# 500 MHz, weights in off-chip flash, tensors in SRAM shared with the CPU.
SYSTEM_CONFIG = "Ethos_U55_High_End_Embedded"
MEMORY_MODE = "Shared_Sram"
CALIBRATION_STEPS = 400  # per model: enough for stable min/max, and ai-edge-quantizer runs them one by one


def missing_extra() -> str | None:
    """What is missing for this module's route, or None (the tests skip on it; the CLI says it)."""
    for module in ("litert_torch", "ai_edge_quantizer", "ethosu.vela"):
        try:
            __import__(module)
        except ImportError:
            return (f"{module} is not installed: the TFLite/Vela route needs the optional 'npu' extra "
                    f"(`make npu`, then run with .venv-npu/bin/python)")
    return None


@torch.no_grad()
def float_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose weights are what its weight quantizers make of them and whose
    quantizer sites are all off: the float model an int8 converter should start from."""
    twin = copy.deepcopy(model).eval()
    for name, quantizer in weight_quantizers(twin).items():
        parameter = twin.get_parameter(name)
        parameter.copy_(quantizer(parameter, False))
    for site in twin.modules():
        if isinstance(site, QuantSite):
            site.quantizer = None
    return twin


class Recording:
    """Wraps a step and keeps the arguments of every ``every``-th call: calibration data with the states
    that real streams reach, recorded while the host loop runs as it will on the device."""

    def __init__(self, step: Callable, every: int = 1):
        self.step, self.every, self.calls, self.count = step, every, [], 0

    def __call__(self, *args: torch.Tensor):
        if self.count % self.every == 0:
            self.calls.append(tuple(a.clone() for a in args))
        self.count += 1
        return self.step(*args)


def convert_int8(step: nn.Module, calibration: Sequence[tuple[torch.Tensor, ...]], path: str | Path,
                 activation_bits: int = 8) -> Path:
    """``step`` (float, one frame) -> a fully integer TFLite model at ``path``, calibrated on
    ``calibration`` (tuples of its arguments)."""
    import litert_torch
    from ai_edge_quantizer import calibrator, quantizer, recipe
    from ai_edge_quantizer.utils import qsv_utils

    if activation_bits not in (8, 16):
        raise ValueError(f"activation_bits={activation_bits}: ai-edge-quantizer's static recipes take 8 or 16")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    float_path = path.with_suffix(".float.tflite")
    litert_torch.convert(step.eval(), tuple(calibration[0])).export(str(float_path))
    q = quantizer.Quantizer(str(float_path))
    q.load_quantization_recipe(recipe.static_wi8_ai8() if activation_bits == 8 else recipe.static_wi8_ai16())
    # litert-torch names a signature's inputs args_0, args_1, ... in argument order
    feeds = [{f"args_{k}": t.numpy().astype(np.float32) for k, t in enumerate(args)} for args in calibration]
    # Each sample is one frame of a stream, in time order. Quantizer.calibrate keeps a moving average of
    # each tensor's min and max (factor 0.95 per sample), so the last few dozen frames would set every
    # range and clip the rest (measured: LSTM states 7 to 17 dB from float even at 16 bits). The true
    # min and max over all frames is what a streaming model needs; the quantizer has no argument for it,
    # so its Calibrator is called as Quantizer.calibrate calls it, with min_max_update.
    calib = calibrator.Calibrator(float_path.read_bytes(), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({"serving_default": feeds}, q._recipe_manager)
    q.quantize(calib.get_model_qsvs()).export_model(str(path), overwrite=True)
    float_path.unlink()
    return path


class TfliteStep:
    """A converted step run by the TFLite interpreter, called as the PyTorch step is (tensors in, its
    outputs in the same order out), so a host loop can run either."""

    def __init__(self, path: str | Path):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(str(path), num_threads=1)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.inputs = self.runner.get_input_details()
        outputs = self.runner.get_output_details()
        self.outputs = sorted(outputs.items(), key=lambda item: int(item[0].rsplit("_", 1)[1]))

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        feeds = {name: _quantize(a.numpy(), self.inputs[name]) for name, a in zip(self._input_names(len(args)), args)}
        result = self.runner(**feeds)
        return [torch.from_numpy(_dequantize(result[name], detail)) for name, detail in self.outputs]

    def _input_names(self, count: int) -> list[str]:
        return [f"args_{k}" for k in range(count)]


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float array as the integer tensor an int8/int16 model's input takes (its scale and zero point)."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(detail["dtype"], np.integer):
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((x.astype(np.float32) - zero_point) * scale).astype(np.float32)


class HostLoop(nn.Module):
    """A DTLN-class model run as a microcontroller runs it: the host's framing, transforms and
    overlap-add (the model's own, ``host_step``) around the given step implementations, frame by frame.
    ``forward`` is the whole-file enhancer :func:`sezoo.inference.evaluate` expects."""

    def __init__(self, model: nn.Module, steps: Sequence[Callable]):
        super().__init__()
        self.model, self.steps = model, list(steps)
        self.sample_rate = model.sample_rate

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        outputs = []
        for batch in waveform:
            state = list(self.model.stream_state().values())
            decoded = []
            for frame in self.model.frames(batch[None])[0]:
                out, *state = self.model.host_step(frame[None], state, *self.steps)
                decoded.append(out)
            outputs.append(self.model.overlap_add(torch.stack(decoded, dim=1), batch.shape[-1]))
        return torch.cat(outputs)


@dataclass
class VelaEstimate:
    """Vela's figures for one compiled model (one row of its summary CSV), and its CPU operators."""

    network: str
    accelerator: str
    system_config: str
    memory_mode: str
    inference_time_s: float
    cycles_total: int
    cycles_npu: int
    cycles_off_chip_flash: int
    sram_kib: float
    off_chip_flash_kib: float
    original_weight_bytes: int
    encoded_weight_bytes: int
    nn_macs: int
    npu_operators: int
    cpu_operators: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


_CPU_OPERATOR = re.compile(r"^\s*CPU:\s*(\S+)")
_NPU_COUNT = re.compile(r"^NPU operators = (\d+)")


def parse_vela(summary_csv: str | Path, stdout: str, accelerator: str) -> VelaEstimate:
    """Vela's summary CSV and its ``--show-cpu-operations`` output -> a :class:`VelaEstimate`."""
    with open(summary_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise ValueError(f"{summary_csv}: expected one summary row, found {len(rows)}")
    row = rows[0]
    cpu = [m.group(1) for line in stdout.splitlines() if (m := _CPU_OPERATOR.match(line))]
    npu = [int(m.group(1)) for line in stdout.splitlines() if (m := _NPU_COUNT.match(line.strip()))]
    return VelaEstimate(
        network=row["network"], accelerator=accelerator, system_config=row["system_config"],
        memory_mode=row["memory_mode"], inference_time_s=float(row["inference_time"]),
        cycles_total=round(float(row["cycles_total"])), cycles_npu=round(float(row["cycles_npu"])),
        cycles_off_chip_flash=round(float(row["cycles_off_chip_flash_access"])),
        sram_kib=float(row["sram_memory_used"]), off_chip_flash_kib=float(row["off_chip_flash_memory_used"]),
        original_weight_bytes=round(float(row["total_original_weights"])),
        encoded_weight_bytes=round(float(row["total_npu_encoded_weights"])),
        nn_macs=round(float(row["nn_macs"])), npu_operators=npu[0] if npu else 0, cpu_operators=cpu)


def vela_estimate(tflite: str | Path, accelerator: str, out_dir: str | Path, system_config: str = SYSTEM_CONFIG,
                  memory_mode: str = MEMORY_MODE) -> VelaEstimate:
    """Compile ``tflite`` with Vela for ``accelerator`` (e.g. ``ethos-u55-128``) and read its estimates."""
    tflite, out_dir = Path(tflite), Path(out_dir)
    vela = shutil.which("vela", path=str(Path(sys.executable).parent)) or shutil.which("vela")
    if vela is None:
        raise FileNotFoundError("no `vela` command: install the optional 'npu' extra (`make npu`)")
    command = [vela, str(tflite), "--accelerator-config", accelerator, "--config", "Arm/vela.ini",
               "--system-config", system_config, "--memory-mode", memory_mode, "--output-dir", str(out_dir),
               "--show-cpu-operations"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vela failed on {tflite} ({accelerator}):\n{done.stderr[-2000:] or done.stdout[-2000:]}")
    summary = out_dir / f"{tflite.stem}_summary_{system_config}.csv"
    return parse_vela(summary, done.stdout, accelerator)
