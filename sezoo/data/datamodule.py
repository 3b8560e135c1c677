"""LightningDataModules for SE: the embedded `mini` corpus, VoiceBank+DEMAND, paired folders, and
DNS-style on-the-fly mixing of a user's folders (the one mixer, `sezoo.data.mixing`).

Every corpus yields ``(noisy, clean)`` waveform pairs at the model's rate: random fixed-length
segments for training, whole utterances (batch 1, so no padding enters a metric) for val and test.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sezoo.data.audio import AudioError, list_audio, pair_folders, read_audio

DATA_PRESETS = {
    "mini": {"name": "mini"},
    "vbdemand": {"name": "vbdemand"},
    "folder": {"name": "folder"},
    "dns": {"name": "dns"},
}
# What a model trained on each corpus inherits from the corpus' terms (results.json and model cards quote it).
DATA_TERMS = {
    "mini": "trained on the sezoo `mini` corpus (version 2), built from CC-BY-SA-3.0 and GPL-2+ recordings (see the corpus' ATTRIBUTION.md)",
    "vbdemand": "trained on VoiceBank+DEMAND (CC-BY-4.0)",
    "folder": "trained on the user's own folder of pairs, whose terms apply",
    "dns": "trained on DNS-style mixtures of the user's own folders, whose terms apply",
}
# VoiceBank+DEMAND's standard folder names (Valentini et al. 2016), 28- or 56-speaker training set.
VBD_TRAIN = (("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
             ("noisy_trainset_56spk_wav", "clean_trainset_56spk_wav"))
VBD_TEST = ("noisy_testset_wav", "clean_testset_wav")
VBD_VAL_SPEAKERS = ("p226", "p287")  # [ours] held out of training for validation


def data_label(cfg) -> str:
    """What a model was trained on, as results.json and the zoo name it: `mini` with its version."""
    if cfg.name == "mini":
        from sezoo.data.mini import CORPUS_VERSION

        return f"mini-v{CORPUS_VERSION}"
    return cfg.name


def data_root(root: str | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    if os.environ.get("SEZOO_DATA"):
        return Path(os.environ["SEZOO_DATA"]).expanduser()
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "sezoo"


def _fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class PairedDataset(Dataset):
    """Noisy/clean file pairs; a random ``segment`` per item when given, else whole utterances."""

    def __init__(self, pairs: list[tuple[Path, Path]], sample_rate: int, segment: int | None = None,
                 min_samples: int = 512):
        if not pairs:
            raise AudioError("no noisy/clean pairs to read")
        self.pairs, self.sample_rate, self.segment, self.min_samples = pairs, sample_rate, segment, min_samples

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        noisy_path, clean_path = self.pairs[index]
        noisy = read_audio(noisy_path, self.sample_rate, self.min_samples)
        clean = read_audio(clean_path, self.sample_rate, self.min_samples)
        if noisy.numel() != clean.numel():
            raise AudioError(
                f"{noisy_path} has {noisy.numel()} samples but {clean_path} has {clean.numel()} at "
                f"{self.sample_rate} Hz; a noisy file and its clean reference must be time-aligned."
            )
        if self.segment is None:
            return noisy, clean, noisy_path.stem
        return (*_crop([noisy, clean], self.segment), noisy_path.stem)


def _crop(signals: list[torch.Tensor], segment: int) -> list[torch.Tensor]:
    n = signals[0].numel()
    if n >= segment:
        start = int(torch.randint(0, n - segment + 1, ()))
        return [s[start : start + segment] for s in signals]
    return [torch.nn.functional.pad(s, (0, segment - n)) for s in signals]


class MixingDataset(Dataset):
    """Fresh mixtures of clean speech files with a noise bank (and rooms), drawn by `sezoo.data.mixing.mix`.

    Training (``fixed_seed=None``) draws every choice anew on every call, from torch's generator (so
    ``seed_everything`` and Lightning's worker seeding make a run repeatable) and never shows a model
    the same mixture twice. With ``fixed_seed`` item ``i`` is one fixed mixture (validation and test).
    """

    def __init__(self, speech_files: list[Path], noises, rooms, settings, sample_rate: int,
                 segment: int | None, items: int, fixed_seed: int | None = None):
        if not speech_files:
            raise AudioError("mixing needs at least one clean speech file")
        self.speech_files, self.noises, self.rooms, self.settings = speech_files, noises, rooms, settings
        self.sample_rate, self.segment, self.items, self.fixed_seed = sample_rate, segment, items, fixed_seed

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int):
        from sezoo.data.mixing import mix

        if self.fixed_seed is None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            file_index = int(rng.integers(len(self.speech_files)))
        else:
            rng = np.random.default_rng([self.fixed_seed, index])
            file_index = index % len(self.speech_files)
        path = self.speech_files[file_index]
        speech = read_audio(path, self.sample_rate, 512).numpy()
        if self.segment is not None:
            speech = _crop_active(rng, speech, self.segment)
        mixture = mix(speech, rng, self.noises, self.rooms, self.settings, self.sample_rate)
        return torch.from_numpy(mixture.noisy), torch.from_numpy(mixture.target), f"{path.stem}-{index}"


def _crop_active(rng: np.random.Generator, speech: np.ndarray, segment: int, tries: int = 8) -> np.ndarray:
    """A ``segment``-long excerpt that holds speech (KLettres utterances pause between letters)."""
    if len(speech) <= segment:
        return np.pad(speech, (0, segment - len(speech)))
    peak = np.abs(speech).max()
    for _ in range(tries):
        start = int(rng.integers(0, len(speech) - segment + 1))
        piece = speech[start : start + segment]
        if np.abs(piece).max() > 0.1 * peak:
            break
    return piece


def _split_by_name(pairs: list, val_fraction: float, test_fraction: float) -> dict[str, list]:
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for pair in pairs:
        u = _fraction(pair[0].name if isinstance(pair, tuple) else pair.name)
        splits["test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"].append(pair)
    return splits


class SEDataModule(L.LightningDataModule):
    def __init__(self, cfg, min_samples: int = 512):
        super().__init__()
        self.cfg, self.min_samples = cfg, min_samples
        self.sample_rate = int(cfg.sample_rate)
        self.segment = int(cfg.segment_seconds * self.sample_rate)
        self.datasets: dict[str, Dataset] = {}

    # ----------------------------------------------------------- pairs per corpus
    def split_pairs(self) -> dict[str, list[tuple[Path, Path]]]:
        name = self.cfg.name
        if name == "vbdemand":
            return self._vbdemand()
        if name == "folder":
            return self._folder()
        raise ValueError(f"data.name={name!r}: choose mini, vbdemand, folder or dns")

    def _vbdemand(self):
        base = data_root(self.cfg.root)
        candidates = [base, base / "vbdemand", base / "VoiceBank-DEMAND", base / "DS_10283_2791"]
        for folder in candidates:
            train = next(((folder / n, folder / c) for n, c in VBD_TRAIN if (folder / n).is_dir() and (folder / c).is_dir()), None)
            test = (folder / VBD_TEST[0], folder / VBD_TEST[1])
            if train and test[0].is_dir() and test[1].is_dir():
                pairs = pair_folders(*train)
                val = [p for p in pairs if p[0].name.split("_")[0] in VBD_VAL_SPEAKERS]
                return {"train": [p for p in pairs if p not in val], "val": val, "test": pair_folders(*test)}
        needed = f"{VBD_TRAIN[0][0]}/, {VBD_TRAIN[0][1]}/ (or the 56spk pair), {VBD_TEST[0]}/, {VBD_TEST[1]}/"
        raise FileNotFoundError(
            f"VoiceBank+DEMAND not found. Looked in {', '.join(str(c) for c in candidates)} for the folders "
            f"{needed}. Download it from https://doi.org/10.7488/ds/2117, unzip it under $SEZOO_DATA/vbdemand "
            f"(or set data.root)."
        )

    def _folder(self):
        if not self.cfg.noisy_dir or not self.cfg.clean_dir:
            raise ValueError("data=folder needs data.noisy_dir=... and data.clean_dir=...")
        pairs = pair_folders(self.cfg.noisy_dir, self.cfg.clean_dir)
        test_fraction = 0.0 if self.cfg.test_noisy_dir else self.cfg.test_fraction
        splits = _split_by_name(pairs, self.cfg.val_fraction, test_fraction)
        if self.cfg.test_noisy_dir:
            splits["test"] = pair_folders(self.cfg.test_noisy_dir, self.cfg.test_clean_dir)
        for split, items in splits.items():
            if not items:
                raise ValueError(f"data=folder: the {split} split is empty ({len(pairs)} pairs in all); "
                                 f"add files or change data.val_fraction / data.test_fraction")
        return splits

    # ----------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        sr, seg = self.sample_rate, self.segment
        if self.cfg.name in ("mini", "dns"):
            self._setup_mixing()
            return
        splits = self.split_pairs()
        self.datasets = {
            "train": PairedDataset(splits["train"], sr, seg, self.min_samples),
            "val": PairedDataset(splits["val"], sr, None, self.min_samples),
            "test": PairedDataset(splits["test"], sr, None, self.min_samples),
        }

    def mix_settings(self):
        from sezoo.data.mixing import MixSettings

        cfg = self.cfg
        return MixSettings(snr_db=(cfg.snr_low, cfg.snr_high), reverb_share=cfg.reverb_share,
                           synthetic_share=cfg.synthetic_share)

    def _setup_mixing(self):
        """`mini`: fresh training mixtures of its speech, noise and rooms, and its fixed val/test pairs;
        `dns`: the user's clean, noise (and RIR) folders, with val and test mixtures fixed by seed."""
        from sezoo.data.mixing import SYNTHETIC_NOISES, NoiseBank, RirBank, clips_from_folder, simulate_room

        cfg, sr = self.cfg, self.sample_rate
        settings = self.mix_settings()
        if cfg.name == "mini":
            from sezoo.data.mini import read_manifest

            base = data_root(cfg.root) / "mini"
            try:
                read_manifest(base)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"{err} (set SEZOO_DATA or data.root to use a corpus elsewhere)") from None
            speech = list_audio(base / "train" / "speech")
            noise_dir, rir_dir = base / "train" / "noise", base / "train" / "rir"
        else:
            if not cfg.clean_dir or not cfg.noise_dir:
                raise ValueError("data=dns needs data.clean_dir=... and data.noise_dir=... (data.rir_dir optional)")
            noise_dir, rir_dir = Path(cfg.noise_dir), Path(cfg.rir_dir) if cfg.rir_dir else None
            clean = _split_by_name(list_audio(cfg.clean_dir), cfg.val_fraction, cfg.test_fraction)
            for split in ("val", "test"):
                if not clean[split]:
                    raise ValueError(f"data=dns: no clean files fall in the {split} split; add clean files "
                                     f"(found {len(list_audio(cfg.clean_dir))}) or raise data.{split}_fraction")
            speech = clean["train"]
        bank = NoiseBank(clips_from_folder(noise_dir, sr), sr, settings,
                         synthetic=SYNTHETIC_NOISES if cfg.synthetic_share > 0 else ())
        if rir_dir is not None and rir_dir.is_dir() and list_audio(rir_dir):
            rooms = RirBank(list_audio(rir_dir), sr)
        elif cfg.simulate_rooms:
            rooms = lambda rng: simulate_room(rng, sr)  # noqa: E731
        else:
            rooms = None
        self.datasets["train"] = MixingDataset(speech, bank, rooms, settings, sr, self.segment, cfg.epoch_items)
        if cfg.name == "mini":
            for split in ("val", "test"):
                self.datasets[split] = PairedDataset(pair_folders(base / split / "noisy", base / split / "clean"),
                                                     sr, None, self.min_samples)
        else:
            for seed, split in ((1, "val"), (2, "test")):
                self.datasets[split] = MixingDataset(clean[split], bank, rooms, settings, sr, None,
                                                     len(clean[split]), fixed_seed=seed)

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0,
                          drop_last=shuffle)

    def train_dataloader(self):
        return self._loader("train", True, self.cfg.batch_size)

    def val_dataloader(self):
        return self._loader("val", False, 1)

    def test_dataloader(self):
        return self._loader("test", False, 1)
