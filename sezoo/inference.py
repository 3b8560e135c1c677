"""Using a trained model: resolve ``--model``, enhance files, evaluate against clean references."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
from torch import nn

from sezoo.data.audio import AudioError, list_audio, match_folders, read_audio, resample, write_audio
from sezoo.export import load_exported
from sezoo.metrics.cost import count_macs, count_params, deployable_bytes, model_bit_widths
from sezoo.metrics.dnsmos import DNSMOS_KEYS, dnsmos_available
from sezoo.metrics.quality import QUALITY_KEYS, SILENT_REFERENCE, quality, silent


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


class Skipped(list):
    """The files a folder command refused, each ``{"file", "reason"}``; it goes on with the others."""

    def add(self, path: Path, reason: str, strict: bool) -> None:
        if strict:
            raise AudioError(f"{path}: {reason}")
        self.append({"file": str(path), "reason": reason})
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _reason(err: Exception, path: Path) -> str:
    """An error's message without the file name it already starts with (the record names the file)."""
    text = str(err)
    return text[len(str(path)) + 2:] if text.startswith(f"{path}: ") else text


def enhance(model: nn.Module, source: str | Path, destination: str | Path, strict: bool = False,
            streamer=None, chunk: int | None = None) -> tuple[list[Path], Skipped]:
    """Enhance a file into a file, or every audio file of a folder into a folder (same names).

    Output is written at the input's own sample rate. A bad file in a folder is refused with its
    reason (``skipped``) and the others are enhanced; ``strict`` stops at the first one instead.
    ``streamer``: a function returning a fresh :class:`sezoo.streaming.Streamer`; each file is then fed
    to one in chunks of ``chunk`` samples (default: the model's hop), as a live input would arrive.
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
    written, skipped = [], Skipped()
    for src, dst in jobs:
        try:
            file_rate = sf.info(str(src)).samplerate
            noisy = read_audio(src, rate, _min_samples(model))
            if streamer is None:
                enhanced = enhance_waveform(model, noisy)
            else:
                from sezoo.streaming import stream_enhance

                enhanced = torch.from_numpy(stream_enhance(streamer(), noisy.numpy(), chunk or model.hop_samples))
        except (AudioError, RuntimeError) as err:  # soundfile raises RuntimeError for unreadable files
            if len(jobs) == 1:
                raise AudioError(f"{src}: {_reason(err, src)}") from err
            skipped.add(src, _reason(err, src), strict)
            continue
        write_audio(dst, resample(enhanced, rate, file_rate), file_rate)
        written.append(dst)
    return written, skipped


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _scored(scores: dict[str, float]) -> tuple[dict, list[str]]:
    """Per-file scores for JSON: an undefined metric is null, with the reason beside it."""
    undefined = [k for k, v in scores.items() if math.isnan(v)]
    return {k: (None if k in undefined else v) for k, v in scores.items()}, undefined


def evaluate(model: nn.Module, noisy_dir: str | Path, clean_dir: str | Path, model_name: str = "",
             progress: bool = False, with_dnsmos: bool = False, strict: bool = False) -> dict:
    """Quality of the output and of the noisy input, and the cost of what actually ran.

    ``macs_per_second`` is the MAC count measured on these files (what a dynamic model executed)
    divided by their duration; ``rtf`` is compute time over audio time, whole files, batch 1.
    Every good pair is scored; each bad or unpaired file is listed under ``skipped`` with its reason
    (``strict``: the first one stops the run). A metric undefined for a file (a silent clean
    reference) is ``null`` in ``per_file`` with the reason under ``undefined``, and left out of the means.
    """
    from tqdm import tqdm

    rate = _sample_rate(model)
    if with_dnsmos and not dnsmos_available():
        raise RuntimeError("--dnsmos needs librosa, onnxruntime and speechmos (pip install -e .)")
    keys = QUALITY_KEYS + (DNSMOS_KEYS if with_dnsmos else ())
    model.eval()
    pairs, unpaired = match_folders(noisy_dir, clean_dir)
    skipped = Skipped()
    for path, reason in unpaired:
        skipped.add(path, reason, strict)
    per_file, total_macs, total_seconds, total_compute = [], 0, 0.0, 0.0
    for noisy_path, clean_path in tqdm(pairs, disable=not progress, desc="evaluate"):
        try:
            noisy = read_audio(noisy_path, rate, _min_samples(model))
            clean = read_audio(clean_path, rate, _min_samples(model))
        except AudioError as err:
            bad = clean_path if str(err).startswith(str(clean_path)) else noisy_path
            skipped.add(bad, _reason(err, bad), strict)
            continue
        if noisy.numel() != clean.numel():
            skipped.add(noisy_path, f"differs in length from {clean_path} ({noisy.numel()} vs {clean.numel()} samples "
                                    f"at {rate} Hz); pairs must be time-aligned", strict)
            continue
        start = time.perf_counter()
        enhanced = enhance_waveform(model, noisy)
        compute = time.perf_counter() - start
        macs = count_macs(model, noisy.unsqueeze(0))
        seconds = noisy.numel() / rate
        total_macs, total_seconds, total_compute = total_macs + macs, total_seconds + seconds, total_compute + compute
        record = {"name": noisy_path.name, "seconds": seconds, "macs": macs}
        record["metrics"], undefined = _scored(quality(enhanced, clean, rate, with_dnsmos))
        record["input_metrics"], _ = _scored(quality(noisy, clean, rate, with_dnsmos))
        if undefined:
            reason = SILENT_REFERENCE if silent(clean) else "the metric could not be computed for this file"
            record["undefined"] = {k: reason for k in undefined}
        per_file.append(record)
    if not per_file:
        raise AudioError(f"{noisy_dir}: none of the {len(pairs) + len(unpaired)} files could be scored "
                         f"(first: {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else f"{noisy_dir}: nothing to score")
    return {
        "model": model_name,
        "n_files": len(per_file),
        "sample_rate": rate,
        "metrics": {k: _json_number(_mean([f["metrics"][k] for f in per_file])) for k in keys},
        "input_metrics": {k: _json_number(_mean([f["input_metrics"][k] for f in per_file])) for k in keys},
        "cost": {
            "macs_per_second": total_macs / total_seconds,
            "params": count_params(model),
            "model_bytes": deployable_bytes(model, model_bit_widths(model)).total,
            "rtf": total_compute / total_seconds,
            "threads": torch.get_num_threads(),
        },
        "per_file": per_file,
        "skipped": list(skipped),
    }


def _json_number(value: float) -> float | None:
    """JSON has no NaN: a mean over no defined values is null."""
    return None if math.isnan(value) else value
