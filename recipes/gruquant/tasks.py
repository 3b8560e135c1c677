"""The four sequential tasks of the bit-width search, each a small GRU model with its own metric.

The paper searches on four sequential tasks it does not name in what we can read; ours run on 2 cores
(PAPERS.md section 2):

- ``se``: speech enhancement, the :class:`~sezoo.models.GRUMask` mask estimator of ``train.py`` on
  the embedded ``mini`` corpus; SI-SDR (dB) on ``mini``'s validation and test pairs.
- ``vad``: voice activity detection, a GRU tagging each 16 ms frame; frame F1. Labels come free from
  the mixing: a frame is speech where the clean target's power is within 25 dB of its active level.
- ``noise``: noise-type classification, the mean over frames of a GRU's class logits; accuracy over
  the seven recorded categories. Validation and test are ``mini``'s own val/test mixtures, whose noise
  clips no training mixture uses, labelled from ``mini``'s manifest (their primary noise).
- ``adding``: the adding problem (Hochreiter & Schmidhuber 1997): 50 steps of (value, marker), the
  target the sum of the two marked values; mean squared error (predicting 1 scores about 0.167).

``vad`` and ``noise`` read log-mel features (40 bands of the 512/256 STFT) computed once: the
quantized network starts at its input site, as a microcontroller's front end hands over features.
Their training items are mixtures of ``mini``'s training speech, placed at a random offset in a
3-second window of silence so that frames without speech exist, with one recorded noise category
(and ``mini``'s rooms for half of them); ``vad``'s validation and test items are made the same way
from ``mini``'s validation and test speech (noise from the training clips: what VAD is tested on is
held-out speech).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sezoo.data.audio import list_audio, pair_folders, read_audio
from sezoo.data.datamodule import MixingDataset
from sezoo.data.mini import read_manifest
from sezoo.data.mixing import (
    SYNTHETIC_NOISES,
    MixSettings,
    NoiseBank,
    RirBank,
    active_level_db,
    clips_from_folder,
    mix,
)
from sezoo.losses import NegativeSISDR
from sezoo.nn.gru import QuantGRU
from sezoo.nn.quant import QuantLinear, QuantSite

TASKS = ("se", "vad", "noise", "adding")
NOISE_CATEGORIES = ("babble", "crowd", "domestic", "machinery", "music", "nature", "traffic")
MEL_BANDS, N_FFT, HOP, SAMPLE_RATE = 40, 512, 256, 16000


class SequenceGRU(nn.Module):
    """Features ``[B, T, in]`` -> input site -> GRU layers -> head: per-frame outputs ``[B, T, out]``
    (``pooling="frame"``), their mean over frames ``[B, out]`` (``"mean"``) or the last frame's (``"last"``)."""

    def __init__(self, input_size: int, hidden: list[int], outputs: int, pooling: str, input_signed: bool = True):
        super().__init__()
        if pooling not in ("frame", "mean", "last"):
            raise ValueError(f"pooling={pooling!r}: frame, mean or last")
        self.pooling = pooling
        self.input_quant = QuantSite(signed=input_signed)
        self.gru = QuantGRU(input_size, hidden)
        self.head = QuantLinear(hidden[-1], outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gru(self.input_quant(x))
        if self.pooling == "last":
            h = h[:, -1]
        out = self.head(h)
        return out.mean(dim=1) if self.pooling == "mean" else out


# ---------------------------------------------------------------------------- data
def _log_mel(waveforms: torch.Tensor) -> torch.Tensor:
    """[B, samples] -> [B, frames, 40] log10 mel power (frames centred, hop 256)."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=MEL_BANDS, center=True)
    return torch.log10(mel(waveforms) + 1e-8).transpose(1, 2)


def _vad_labels(target: np.ndarray) -> np.ndarray:
    """Per STFT frame (centred, 512/256): 1 where the clean target's power is within 25 dB of its active level."""
    level = active_level_db(target)
    padded = np.pad(target.astype(np.float64), N_FFT // 2)
    frames = 1 + len(target) // HOP
    power = np.array([np.mean(padded[t * HOP: t * HOP + N_FFT] ** 2) for t in range(frames)])
    return (10 * np.log10(power + 1e-20) > level - 25.0).astype(np.float32)


def _mini(root: Path) -> Path:
    base = root / "mini"
    read_manifest(base)  # a clear error when the corpus is missing
    return base


def labelled_mixtures(speech_files: list[Path], items: int, seed: int, root: Path, seconds: float = 3.0) -> dict[str, torch.Tensor]:
    """``items`` fixed mixtures (seeded): log-mel features, per-frame speech labels, noise category."""
    base = _mini(root)
    settings = MixSettings(second_noise_share=0.0, synthetic_share=0.0)
    bank = NoiseBank([c for c in clips_from_folder(base / "train" / "noise", SAMPLE_RATE) if c.category in NOISE_CATEGORIES],
                     SAMPLE_RATE, settings, synthetic=())
    rooms = RirBank(list_audio(base / "train" / "rir"), SAMPLE_RATE)
    n = int(seconds * SAMPLE_RATE)
    noisy, labels, categories = [], [], []
    for index in range(items):
        rng = np.random.default_rng([seed, index])
        speech = read_audio(speech_files[int(rng.integers(len(speech_files)))], SAMPLE_RATE).numpy()
        length = min(len(speech), int(rng.uniform(0.4, 0.8) * n))
        start = int(rng.integers(0, len(speech) - length + 1))
        window = np.zeros(n, np.float32)
        offset = int(rng.integers(0, n - length + 1))
        window[offset: offset + length] = speech[start: start + length]
        mixture = mix(window, rng, bank, rooms, settings, SAMPLE_RATE)
        noisy.append(torch.from_numpy(mixture.noisy))
        labels.append(torch.from_numpy(_vad_labels(mixture.target)))
        categories.append(NOISE_CATEGORIES.index(mixture.meta["noise"]))
    return {"x": _log_mel(torch.stack(noisy)), "vad": torch.stack(labels), "noise": torch.tensor(categories)}


def mini_split_noise(split: str, root: Path, items: int | None = None) -> dict[str, torch.Tensor]:
    """``mini``'s own val/test mixtures (held-out noise clips) with their manifest noise categories,
    cropped or zero-padded to 3 s so that they batch."""
    base = _mini(root)
    utterances = [u for u in read_manifest(base)["utterances"] if u["split"] == split and u.get("noise") in NOISE_CATEGORIES]
    utterances = sorted(utterances, key=lambda u: u["uid"])[:items]
    n, features, categories = 3 * SAMPLE_RATE, [], []
    for u in utterances:
        audio = read_audio(base / split / "noisy" / f"{u['uid']}.wav", SAMPLE_RATE)[:n]
        features.append(torch.nn.functional.pad(audio, (0, n - len(audio))))
        categories.append(NOISE_CATEGORIES.index(u["noise"]))
    return {"x": _log_mel(torch.stack(features)), "noise": torch.tensor(categories)}


def adding_problem(items: int, seed: int, length: int = 50) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, (items, length))
    markers = np.zeros((items, length))
    for row in range(items):
        first = rng.integers(0, length // 2)
        second = rng.integers(length // 2, length)
        markers[row, [first, second]] = 1
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    return {"x": torch.from_numpy(x), "y": torch.from_numpy((values * markers).sum(axis=1).astype(np.float32))}


# ---------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """One task: its model, its data splits (tensors), its training loss and its metric."""
    name: str
    metric: str
    higher_is_better: bool

    def objective(self, value: float) -> float:
        """The value NSGA-II minimises."""
        return -value if self.higher_is_better else value


class SpeechEnhancement(Task):
    def __init__(self, cfg, root: Path):
        super().__init__("se", "si_sdr", True)
        self.cfg, self.root = cfg, root

    def build_model(self) -> nn.Module:
        from sezoo.inference import resolve_model
        from sezoo.models import GRUMask

        if not self.cfg.init_from:
            raise ValueError("task=se starts from a trained GRUMask: set init_from=<recipes/gruquant/train.py fp32 "
                             "run folder or zoo name>")
        model = resolve_model(str(self.cfg.init_from))
        if not isinstance(model, GRUMask):
            raise ValueError(f"init_from={self.cfg.init_from}: a {type(model).__name__}, not a GRUMask")
        return model

    def make_data(self) -> dict[str, dict[str, torch.Tensor]]:
        base, c = _mini(self.root), self.cfg.tasks.se
        bank = NoiseBank(clips_from_folder(base / "train" / "noise", SAMPLE_RATE), SAMPLE_RATE, MixSettings(),
                         synthetic=SYNTHETIC_NOISES)
        pool = MixingDataset(list_audio(base / "train" / "speech"), bank, RirBank(list_audio(base / "train" / "rir"), SAMPLE_RATE),
                             MixSettings(), SAMPLE_RATE, int(c.segment_seconds * SAMPLE_RATE), c.finetune_items,
                             fixed_seed=self.cfg.seed)
        noisy, clean = zip(*[pool[i][:2] for i in range(len(pool))])
        data = {"train": {"x": torch.stack(noisy), "y": torch.stack(clean)}}
        for split, items in (("val", c.val_items), ("test", c.test_items)):
            pairs = pair_folders(base / split / "noisy", base / split / "clean")[:items]
            data[split] = {"noisy": [read_audio(n, SAMPLE_RATE) for n, _ in pairs],
                           "clean": [read_audio(k, SAMPLE_RATE) for _, k in pairs]}
        return data

    def loss(self, model, batch) -> torch.Tensor:
        return NegativeSISDR()(model(batch["x"]), batch["y"])

    @torch.no_grad()
    def evaluate(self, model, split: dict) -> float:
        from torchmetrics.functional.audio import (
            scale_invariant_signal_distortion_ratio as si_sdr,
        )

        return float(np.mean([float(si_sdr(model(n[None])[0], k)) for n, k in zip(split["noisy"], split["clean"])]))


class TaggingTask(Task):
    """``vad``, ``noise`` and ``adding``: a :class:`SequenceGRU` trained here from scratch (``fit_fp32``)."""

    def __init__(self, name: str, cfg, root: Path):
        metric, higher = {"vad": ("f1", True), "noise": ("accuracy", True), "adding": ("mse", False)}[name]
        super().__init__(name, metric, higher)
        self.cfg, self.root, self.settings = cfg, root, cfg.tasks[name]

    def build_model(self) -> nn.Module:
        hidden = list(self.settings.hidden)
        if self.name == "vad":
            return SequenceGRU(MEL_BANDS, hidden, 1, "frame")
        if self.name == "noise":
            return SequenceGRU(MEL_BANDS, hidden, len(NOISE_CATEGORIES), "mean")
        return SequenceGRU(2, hidden, 1, "last", input_signed=False)

    def make_data(self) -> dict[str, dict[str, torch.Tensor]]:
        s, seed = self.settings, self.cfg.seed
        if self.name == "adding":
            return {split: adding_problem(items, seed * 10 + k, s.length)
                    for k, (split, items) in enumerate((("train", s.train_items), ("val", s.val_items), ("test", s.test_items)))}
        base = _mini(self.root)
        data = {"train": labelled_mixtures(list_audio(base / "train" / "speech"), s.train_items, seed * 10, self.root)}
        if self.name == "noise":
            data["val"] = mini_split_noise("val", self.root, s.val_items)
            data["test"] = mini_split_noise("test", self.root, s.test_items)
        else:
            for k, split in ((1, "val"), (2, "test")):
                data[split] = labelled_mixtures(list_audio(base / split / "clean"), s[f"{split}_items"], seed * 10 + k, self.root)
        return data

    def loss(self, model, batch) -> torch.Tensor:
        out = model(batch["x"])
        if self.name == "vad":
            return nn.functional.binary_cross_entropy_with_logits(out[..., 0], batch["vad"])
        if self.name == "noise":
            return nn.functional.cross_entropy(out, batch["noise"])
        return nn.functional.mse_loss(out[:, 0], batch["y"])

    @torch.no_grad()
    def evaluate(self, model, split: dict) -> float:
        from torchmetrics.functional.classification import (
            binary_f1_score,
            multiclass_accuracy,
        )

        out = torch.cat([model(x) for x in split["x"].split(256)])
        if self.name == "vad":
            return float(binary_f1_score(out[..., 0].flatten(), split["vad"].flatten().long()))
        if self.name == "noise":
            return float(multiclass_accuracy(out, split["noise"], num_classes=len(NOISE_CATEGORIES), average="micro"))
        return float(nn.functional.mse_loss(out[:, 0], split["y"]))


def make_task(cfg, root: Path) -> Task:
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r}: choose from {', '.join(TASKS)}")
    return SpeechEnhancement(cfg, root) if cfg.task == "se" else TaggingTask(cfg.task, cfg, root)


def batches(split: dict, batch_size: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """One epoch of shuffled mini-batches of a tensor split (the order fixed by ``generator``)."""
    items = len(next(iter(split.values())))
    order = torch.randperm(items, generator=generator)
    return [{k: v[index] for k, v in split.items()} for index in order.split(batch_size) if len(index) == batch_size]
