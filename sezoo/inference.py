"""Using a trained model: resolve ``--model``, enhance files, evaluate against clean references."""
from __future__ import annotations

import math
import time
from pathlib import Path

import soundfile as sf
import torch
from torch import nn

from sezoo.data.audio import AudioError, list_audio, pair_folders, read_audio, resample, write_audio
from sezoo.export import load_exported
from sezoo.metrics.cost import count_macs, count_params, deployable_bytes, model_bit_widths
from sezoo.metrics.dnsmos import DNSMOS_KEYS, dnsmos_available
from sezoo.metrics.quality import QUALITY_KEYS, quality


def resolve_model(name_or_path: str) -> nn.Module:
    """A path to an exported model / run folder, or a zoo name ``<recipe>/<variant>``."""
    path = Path(name_or_path)
    if path.exists():
        return load_exported(path)
    from sezoo import zoo

    if zoo.registry.NAME_PATTERN.match(name_or_path):
        return zoo.load(name_or_path)
    raise FileNotFoundError(f"--model {name_or_path!r}: no such file or folder, and not a zoo name "
                            f"(<recipe>/<variant>; `sezoo zoo list` shows them)")


def _sample_rate(model: nn.Module) -> int:
    return int(getattr(model, "sample_rate", 16000))


def _min_samples(model: nn.Module) -> int:
    stft = getattr(model, "stft", None)
    return getattr(stft, "n_fft", 1)


@torch.no_grad()
def enhance_waveform(model: nn.Module, waveform: torch.Tensor) -> torch.Tensor:
    return model(waveform.unsqueeze(0))[0]


def enhance(model: nn.Module, source: str | Path, destination: str | Path) -> list[Path]:
    """Enhance a file into a file, or every audio file of a folder into a folder (same names).

    Output is written at the input's own sample rate.
    """
    source, destination = Path(source), Path(destination)
    if source.is_dir():
        jobs = [(f, destination / f.name) for f in list_audio(source)]
        if not jobs:
            raise AudioError(f"{source}: no audio files to enhance")
    elif source.is_file():
        jobs = [(source, destination / source.name if destination.is_dir() else destination)]
    else:
        raise AudioError(f"{source}: no such file or folder")
    rate = _sample_rate(model)
    for src, dst in jobs:
        try:
            file_rate = sf.info(str(src)).samplerate
        except RuntimeError as err:
            raise AudioError(f"{src}: cannot be read as audio ({err})") from err
        enhanced = enhance_waveform(model, read_audio(src, rate, _min_samples(model)))
        write_audio(dst, resample(enhanced, rate, file_rate), file_rate)
    return [dst for _, dst in jobs]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def evaluate(model: nn.Module, noisy_dir: str | Path, clean_dir: str | Path, model_name: str = "",
             progress: bool = False, with_dnsmos: bool = False) -> dict:
    """Quality of the output and of the noisy input, and the cost of what actually ran.

    ``macs_per_second`` is the MAC count measured on these files (what a dynamic model executed)
    divided by their duration; ``rtf`` is compute time over audio time, whole files, batch 1.
    """
    from tqdm import tqdm

    rate = _sample_rate(model)
    if with_dnsmos and not dnsmos_available():
        raise RuntimeError("--dnsmos needs librosa, onnxruntime and speechmos (pip install -e .)")
    keys = QUALITY_KEYS + (DNSMOS_KEYS if with_dnsmos else ())
    model.eval()
    per_file, total_macs, total_seconds, total_compute = [], 0, 0.0, 0.0
    for noisy_path, clean_path in tqdm(pair_folders(noisy_dir, clean_dir), disable=not progress, desc="evaluate"):
        noisy = read_audio(noisy_path, rate, _min_samples(model))
        clean = read_audio(clean_path, rate, _min_samples(model))
        if noisy.numel() != clean.numel():
            raise AudioError(f"{noisy_path} and {clean_path} differ in length ({noisy.numel()} vs {clean.numel()} "
                             f"samples at {rate} Hz); pairs must be time-aligned")
        start = time.perf_counter()
        enhanced = enhance_waveform(model, noisy)
        compute = time.perf_counter() - start
        macs = count_macs(model, noisy.unsqueeze(0))
        seconds = noisy.numel() / rate
        total_macs, total_seconds, total_compute = total_macs + macs, total_seconds + seconds, total_compute + compute
        per_file.append({"name": noisy_path.name, "seconds": seconds, "macs": macs,
                         "metrics": quality(enhanced, clean, rate, with_dnsmos),
                         "input_metrics": quality(noisy, clean, rate, with_dnsmos)})
    return {
        "model": model_name,
        "n_files": len(per_file),
        "sample_rate": rate,
        "metrics": {k: _mean([f["metrics"][k] for f in per_file]) for k in keys},
        "input_metrics": {k: _mean([f["input_metrics"][k] for f in per_file]) for k in keys},
        "cost": {
            "macs_per_second": total_macs / total_seconds,
            "params": count_params(model),
            "model_bytes": deployable_bytes(model, model_bit_widths(model)).total,
            "rtf": total_compute / total_seconds,
            "threads": torch.get_num_threads(),
        },
        "per_file": per_file,
    }
