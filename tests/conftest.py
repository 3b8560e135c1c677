"""Fixtures: tiny generated audio only (never the network, never OS packages)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from sezoo.data.audio import write_audio

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ["SEZOO_CACHE"] = tempfile.mkdtemp(prefix="sezoo-test-cache-")  # never the user's cache
os.environ.setdefault("WANDB_SILENT", "true")

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def speech_like(rng: np.random.Generator, seconds: float, sr: int = SR) -> np.ndarray:
    """A voiced, syllable-paced harmonic signal with formant-like colouring: PESQ/STOI treat it as speech."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = rng.uniform([500, 1200, 2400], [800, 1800, 3200])
    x = sum(np.sin(k * phase) / k * (1 + 2 * sum(np.exp(-((k * f0 - f) / 150) ** 2) for f in formants))
            for k in range(1, 30))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t - np.pi / 2)) ** 2
    x = x * syllables
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


def make_pairs(folder: Path, count: int, seed: int, seconds: float = 1.5, snr_db: float = 5.0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        clean = speech_like(rng, seconds)
        noise = rng.standard_normal(clean.size).astype(np.float32)
        noise *= np.sqrt((clean**2).mean() / (noise**2).mean()) * 10 ** (-snr_db / 20)
        write_audio(folder / "clean" / f"utt{seed:02d}{i:03d}.wav", clean, SR)
        write_audio(folder / "noisy" / f"utt{seed:02d}{i:03d}.wav", clean + noise, SR)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A data root holding a corpus in the `mini` layout (generated, a few seconds per split)."""
    root = tmp_path_factory.mktemp("data")
    for split, count, seed in (("val", 2, 2), ("test", 2, 3)):
        make_pairs(root / "mini" / split, count, seed)
    rng = np.random.default_rng(1)
    for i in range(8):  # training material, mixed on the fly: speech, noise by category (no rooms)
        write_audio(root / "mini" / "train" / "speech" / f"utt{i:03d}.wav", speech_like(rng, 1.5), SR)
    for category in ("street", "babble"):
        for i in range(2):
            write_audio(root / "mini" / "train" / "noise" / category / f"n{i}.wav",
                        0.1 * rng.standard_normal(SR).astype(np.float32), SR)
    (root / "mini" / "manifest.json").write_text(json.dumps({"version": 2, "utterances": []}))
    return root


TINY_MODEL = ["model.channels=16", "model.hidden=32", "model.stacks=1", "model.dilations=[1,2]"]
FAST_TRAINER = ["stage=dense", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
                "logger.wandb=false", "data.batch_size=4", "data.segment_seconds=0.5", "trainer.log_every_n_steps=1"]


def load_recipe(name: str, script: str = "train"):
    """A recipe's script (``train.py`` by default) as a module (recipes are scripts, not an installed package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{script}_{name}", REPO / "recipes" / name / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained(tiny_corpus, tmp_path_factory):
    """A tiny dense DynCP run, trained for real on the tiny corpus: (run folder, results, its arguments)."""
    runs = tmp_path_factory.mktemp("runs")
    args = [*TINY_MODEL, *FAST_TRAINER, f"data.root={tiny_corpus}", f"run.dir={runs}", "run.name=t"]
    results = load_recipe("dyncp").main(args)
    return runs / "dyncp" / "t", results, args
