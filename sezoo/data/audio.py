"""Audio I/O that copes with what real folders contain.

Every reader in sezoo goes through :func:`read_audio`, so a bad file fails the same way everywhere:
with an :class:`AudioError` that names the file and says what to do. Other sample rates are
resampled and multi-channel audio is downmixed (with a warning), because both have one obvious fix;
anything else (unreadable, empty, NaN/inf, shorter than a frame) is refused rather than padded or
zeroed, so that a broken file can never silently corrupt a batch.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF


class AudioError(ValueError):
    """A file that cannot be used as it is; the message names the file and the fix."""


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling (torchaudio's windowed sinc); a no-op when the rates agree."""
    if orig_rate == new_rate:
        return waveform
    return AF.resample(waveform, orig_rate, new_rate)


def read_audio(path: str | Path, sample_rate: int, min_samples: int = 1) -> torch.Tensor:
    """Read a mono float32 waveform at ``sample_rate`` from ``path``.

    Raises :class:`AudioError` for unreadable, empty, non-finite or too-short audio.
    """
    path = Path(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(
            f"{path}: cannot be read as audio ({err}). Check that it is a WAV/FLAC/OGG file and not "
            f"truncated; re-export it or remove it from the folder."
        ) from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples. Remove it or replace it with the real recording.")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(
            f"{path}: {bad} samples are NaN or infinite. The file is corrupt; regenerate or remove it."
        )
    if data.shape[1] > 1:
        _warn_once(f"{path}: {data.shape[1]} channels downmixed to mono by averaging (sezoo models are mono).")
        data = data.mean(axis=1, keepdims=True)
    waveform = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
    if file_rate != sample_rate:
        _warn_once(f"{path.parent}: audio at {file_rate} Hz resampled to {sample_rate} Hz.")
        waveform = resample(waveform, file_rate, sample_rate)
    if waveform.numel() < min_samples:
        raise AudioError(
            f"{path}: {waveform.numel()} samples at {sample_rate} Hz is shorter than one analysis frame "
            f"({min_samples} samples). Remove the file or pad it at the source."
        )
    return waveform


def write_audio(path: str | Path, waveform: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM WAV, clipping to [-1, 1] (16-bit cannot hold more)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    data = np.clip(np.asarray(waveform, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(str(path), data, sample_rate, subtype="PCM_16")


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def list_audio(folder: str | Path, recursive: bool = False) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"{folder}: no such folder.")
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def match_folders(noisy_dir: str | Path, clean_dir: str | Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Pair noisy and clean files by file name: ``(pairs, unpaired)``, each unpaired file with its reason."""
    noisy = {p.name: p for p in list_audio(noisy_dir)}
    clean = {p.name: p for p in list_audio(clean_dir)}
    if not noisy:
        raise AudioError(f"{noisy_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found.")
    unpaired = [(noisy[n], f"no clean file of the same name in {clean_dir}") for n in sorted(set(noisy) - set(clean))]
    unpaired += [(clean[n], f"no noisy file of the same name in {noisy_dir}") for n in sorted(set(clean) - set(noisy))]
    return [(noisy[name], clean[name]) for name in sorted(set(noisy) & set(clean))], unpaired


def pair_folders(noisy_dir: str | Path, clean_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair noisy and clean files by file name; refuse unpaired names, listing a few of them."""
    pairs, unpaired = match_folders(noisy_dir, clean_dir)
    if unpaired:
        only_noisy = [p.name for p in (path for path, _ in unpaired) if p.parent == Path(noisy_dir)]
        only_clean = [p.name for p in (path for path, _ in unpaired) if p.parent != Path(noisy_dir)]
        parts = []
        if only_noisy:
            parts.append(f"{len(only_noisy)} in {noisy_dir} have no clean file (e.g. {', '.join(only_noisy[:3])})")
        if only_clean:
            parts.append(f"{len(only_clean)} in {clean_dir} have no noisy file (e.g. {', '.join(only_clean[:3])})")
        raise AudioError(
            "unpaired files: " + "; ".join(parts) + ". Noisy and clean files are paired by identical names."
        )
    return pairs
