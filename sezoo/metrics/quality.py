"""Quality metrics through torchmetrics: PESQ (wide band), STOI, SI-SDR, SDR; DNSMOS where available."""
from __future__ import annotations

import math
import warnings

import torch
from torchmetrics.functional.audio import (perceptual_evaluation_speech_quality,
                                           scale_invariant_signal_distortion_ratio,
                                           short_time_objective_intelligibility, signal_distortion_ratio)

from sezoo.metrics.dnsmos import dnsmos

QUALITY_KEYS = ("pesq_wb", "stoi", "si_sdr", "sdr")
SILENT_REFERENCE = "the clean reference is silent: intrusive metrics compare against it and are undefined"


def silent(reference: torch.Tensor) -> bool:
    """True when a reference holds no signal (all samples below 16-bit resolution)."""
    return bool(reference.abs().max() < 2.0 ** -16)


def pesq_wb(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int = 16000) -> float:
    """PESQ-WB of one utterance; NaN (with a warning) where PESQ finds no speech to score."""
    try:
        return float(perceptual_evaluation_speech_quality(estimate, reference, sample_rate, "wb"))
    except Exception as err:  # the pesq C library raises its own error types for silent input
        warnings.warn(f"PESQ could not score an utterance ({err}); counted as NaN", stacklevel=2)
        return math.nan


def quality(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int = 16000,
            with_dnsmos: bool = False) -> dict[str, float]:
    """The four quality metrics of one mono utterance (1-D tensors of equal length), plus the
    non-intrusive DNSMOS scores when ``with_dnsmos``."""
    estimate, reference = estimate.detach().float().cpu(), reference.detach().float().cpu()
    if silent(reference):  # SDR's Toeplitz solve would be singular, SI-SDR 0/0, PESQ would refuse
        scores = dict.fromkeys(QUALITY_KEYS, math.nan)
        if with_dnsmos:  # non-intrusive: the estimate alone
            scores.update(dnsmos(estimate, sample_rate))
        return scores
    scores = {
        "pesq_wb": pesq_wb(estimate, reference, sample_rate),
        "stoi": float(short_time_objective_intelligibility(estimate, reference, sample_rate)),
        "si_sdr": float(scale_invariant_signal_distortion_ratio(estimate, reference)),
        # BSS-eval SDR (a 512-tap distortion filter allowed), the metric TinyLSTMs reports; float64
        # because its Toeplitz solve is ill-conditioned in float32.
        "sdr": float(signal_distortion_ratio(estimate.double(), reference.double())),
    }
    if with_dnsmos:
        scores.update(dnsmos(estimate, sample_rate))
    return scores
