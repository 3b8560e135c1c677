"""LightningDataModules for SE: the embedded `mini` corpus, VoiceBank+DEMAND, paired folders, and
DNS-style on-the-fly mixing (speechbrain's AddNoise / AddReverb).

Every corpus yields ``(noisy, clean)`` waveform pairs at the model's rate: random fixed-length
segments for training, whole utterances (batch 1, so no padding enters a metric) for val and test.
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import lightning as L
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
    "mini": "trained on the sezoo `mini` corpus, a derived work of CC-BY-SA-3.0 recordings (see the corpus' ATTRIBUTION.md)",
    "vbdemand": "trained on VoiceBank+DEMAND (CC-BY-4.0)",
    "folder": "trained on the user's own folder of pairs, whose terms apply",
    "dns": "trained on DNS-style mixtures of the user's own folders, whose terms apply",
}
# VoiceBank+DEMAND's standard folder names (Valentini et al. 2016), 28- or 56-speaker training set.
VBD_TRAIN = (("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
             ("noisy_trainset_56spk_wav", "clean_trainset_56spk_wav"))
VBD_TEST = ("noisy_testset_wav", "clean_testset_wav")
VBD_VAL_SPEAKERS = ("p226", "p287")  # [ours] held out of training for validation


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


class DNSMixingDataset(Dataset):
    """DNS-challenge-style dynamic mixing: clean speech + a random noise at a random SNR (+ a RIR).

    Mixing and reverberation are speechbrain's ``AddNoise`` and ``AddReverb`` driven by CSV manifests
    that this class writes. With ``fixed_seed`` every item is the same mixture on every call (val/test).
    """

    def __init__(self, clean_files: list[Path], noise_files: list[Path], rir_files: list[Path],
                 manifest_dir: Path, sample_rate: int, segment: int | None, snr_low: float, snr_high: float,
                 items: int, fixed_seed: int | None = None):
        from speechbrain.augment.time_domain import AddNoise, AddReverb

        if not clean_files or not noise_files:
            raise AudioError("dns mixing needs at least one clean and one noise file")
        self.clean_files, self.sample_rate, self.segment = clean_files, sample_rate, segment
        self.snr_low, self.snr_high, self.items, self.fixed_seed = snr_low, snr_high, items, fixed_seed
        manifest_dir.mkdir(parents=True, exist_ok=True)
        self.add_noise = AddNoise(csv_file=str(_write_manifest(manifest_dir, "noise", noise_files)),
                                  snr_low=snr_low, snr_high=snr_high, pad_noise=True,
                                  noise_sample_rate=sample_rate, clean_sample_rate=sample_rate)
        self.add_reverb = (AddReverb(csv_file=str(_write_manifest(manifest_dir, "rir", rir_files)),
                                     reverb_sample_rate=sample_rate, clean_sample_rate=sample_rate)
                           if rir_files else None)

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int):
        if self.fixed_seed is None:
            return self._mix(int(torch.randint(len(self.clean_files), ())))
        with torch.random.fork_rng():
            torch.manual_seed(self.fixed_seed * 1_000_003 + index)
            # speechbrain draws noises (and RIRs) from a loader it keeps iterating across calls;
            # a fresh, freshly seeded iterator makes a fixed item pick the same noise every time.
            for augment in (self.add_noise, self.add_reverb):
                if hasattr(augment, "data_loader"):
                    augment.noise_data = augment.rir_data = iter(augment.data_loader)
            return self._mix(index % len(self.clean_files))

    def _mix(self, file_index: int):
        path = self.clean_files[file_index]
        clean = read_audio(path, self.sample_rate, 512)
        if self.segment is not None:
            (clean,) = _crop([clean], self.segment)
        clean = clean.unsqueeze(0)
        if self.add_reverb is not None:
            clean = self.add_reverb(clean)
        # AddNoise scales the speech inside the mixture by (1 - f), f = 1 / (10^(snr/20) + 1), with
        # an SNR it draws as its first random number. Replaying that draw gives the exact clean
        # component of the mixture, so the training target matches the speech the model hears.
        state = torch.get_rng_state()
        noisy = self.add_noise(clean, torch.ones(1))
        after = torch.get_rng_state()
        torch.set_rng_state(state)
        snr = torch.rand(1, 1) * (self.snr_high - self.snr_low) + self.snr_low
        torch.set_rng_state(after)
        target = clean * (1 - 1 / (10 ** (snr / 20) + 1))
        return noisy[0], target[0], f"{path.stem}-{file_index}"


def _write_manifest(folder: Path, kind: str, files: list[Path]) -> Path:
    import soundfile as sf

    path = folder / f"{kind}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])  # speechbrain's CSV layout
        for i, f in enumerate(files):
            try:
                duration = sf.info(str(f)).duration
            except RuntimeError as err:
                raise AudioError(f"{f}: cannot be read as audio ({err})") from err
            writer.writerow([f"{kind}{i:06d}", f"{duration:.3f}", str(f.resolve()), f.suffix.lstrip("."), ""])
    return path


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
        if name == "mini":
            base = data_root(self.cfg.root) / "mini"
            if not (base / "manifest.json").exists():
                raise FileNotFoundError(f"{base}: the mini corpus is not built. Run `sezoo data prepare mini` "
                                        f"(set SEZOO_DATA or data.root to build it elsewhere).")
            return {s: pair_folders(base / s / "noisy", base / s / "clean") for s in ("train", "val", "test")}
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
        if self.cfg.name == "dns":
            self._setup_dns()
            return
        splits = self.split_pairs()
        self.datasets = {
            "train": PairedDataset(splits["train"], sr, seg, self.min_samples),
            "val": PairedDataset(splits["val"], sr, None, self.min_samples),
            "test": PairedDataset(splits["test"], sr, None, self.min_samples),
        }

    def _setup_dns(self):
        cfg = self.cfg
        if not cfg.clean_dir or not cfg.noise_dir:
            raise ValueError("data=dns needs data.clean_dir=... and data.noise_dir=... (data.rir_dir optional)")
        clean = _split_by_name(list_audio(cfg.clean_dir), cfg.val_fraction, cfg.test_fraction)
        noise = list_audio(cfg.noise_dir)
        rirs = list_audio(cfg.rir_dir) if cfg.rir_dir else []
        manifests = data_root(cfg.root) / "manifests" / hashlib.sha256(
            f"{cfg.clean_dir}|{cfg.noise_dir}|{cfg.rir_dir}".encode()).hexdigest()[:12]
        common = dict(noise_files=noise, rir_files=rirs, manifest_dir=manifests, sample_rate=self.sample_rate,
                      snr_low=cfg.snr_low, snr_high=cfg.snr_high)
        for split in ("val", "test"):
            if not clean[split]:
                raise ValueError(f"data=dns: no clean files fall in the {split} split; lower data.{split}_fraction "
                                 f"is not the fix, add clean files (found {len(list_audio(cfg.clean_dir))})")
        self.datasets = {
            "train": DNSMixingDataset(clean["train"], segment=self.segment, items=cfg.epoch_items, **common),
            "val": DNSMixingDataset(clean["val"], segment=None, items=len(clean["val"]), fixed_seed=1, **common),
            "test": DNSMixingDataset(clean["test"], segment=None, items=len(clean["test"]), fixed_seed=2, **common),
        }

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
