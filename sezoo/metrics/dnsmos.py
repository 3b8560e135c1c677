"""DNSMOS (P.835 SIG/BAK/OVR and P.808 MOS) through torchmetrics, offline.

torchmetrics downloads the DNSMOS ONNX files from GitHub at first use, which fails offline. The
``speechmos`` package ships the same Microsoft models, so they are copied into the folder torchmetrics
reads before the first call; torchmetrics then computes the metric with no network.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch

DNSMOS_KEYS = ("dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovr")


def dnsmos_available() -> bool:
    return all(importlib.util.find_spec(m) for m in ("librosa", "onnxruntime", "speechmos"))


def _seed_model_files() -> None:
    import speechmos
    from torchmetrics.functional.audio import dnsmos as tm_dnsmos

    shipped = Path(speechmos.__file__).parent
    target = Path(os.path.expanduser(tm_dnsmos.DNSMOS_DIR))
    for source, dest in (("dnsmos_models/model_v8.onnx", "DNSMOS/model_v8.onnx"),
                         ("dnsmos_models/sig_bak_ovr.onnx", "DNSMOS/sig_bak_ovr.onnx"),
                         ("pdnsmos_models/sig_bak_ovr.onnx", "pDNSMOS/sig_bak_ovr.onnx")):
        if not (target / dest).exists():
            (target / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shipped / source, target / dest)


def dnsmos(waveform: torch.Tensor, sample_rate: int = 16000) -> dict[str, float]:
    """Non-intrusive DNSMOS of one mono utterance."""
    from torchmetrics.functional.audio.dnsmos import deep_noise_suppression_mean_opinion_score

    _seed_model_files()
    scores = deep_noise_suppression_mean_opinion_score(waveform.detach().float().cpu(), sample_rate,
                                                       personalized=False, device="cpu")
    return {key: float(v) for key, v in zip(DNSMOS_KEYS, scores.tolist())}
