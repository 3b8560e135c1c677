"""`mini`: the embedded default corpus, built locally from the operating system's packaged audio.

Speech: real recorded voice prompts (Debian's Asterisk core sounds in G.722: Allison Smith in English
and Spanish, June Wallack in French) and synthetic voices (flite: kal16, awb, rms, slt) reading
generated sentences. Noise, five categories: packaged music on hold, babble built from held-out
prompts, stationary coloured noise, non-stationary bursts and clicks, and tonal hum/fan noise.
Mixtures at -5..20 dB SNR (active speech level against noise RMS).

Splits are drawn per *prompt* (the same prompt in another language or voice lands in the same split),
so test prompts never occur in training. Each utterance draws its randomness from
``(seed, sha256(utterance id))`` alone, so the output is bit-identical for a seed whatever the order
of work, and ``manifest.json`` lists every file's sha256 to prove it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sezoo.data.audio import read_audio, write_audio
from sezoo.data.sentences import sentence

SAMPLE_RATE = 16000
CORPUS_VERSION = 1
APT_PACKAGES = (
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-es-g722",
    "asterisk-moh-opsound-g722",
    "flite",
)
DEFAULT_SOUNDS_DIR = Path("/usr/share/asterisk/sounds")
DEFAULT_MOH_DIR = Path("/usr/share/asterisk/moh")


@dataclass(frozen=True)
class VoicePrompts:
    """One recorded voice in one language, as its Debian package lays it out.

    ``folder`` is where the package itself puts the prompts (``en_US_f_Allison/``). The short
    ``lang`` folder (``en/``) is only a link that the *recommended* ``asterisk-core-sounds-en``
    package's alternatives make, or the layout of Asterisk's upstream tarballs and other
    distributions; it is tried second, so neither a missing link nor another layout matters.
    ``lang`` also names the utterances (``allison-en-...``), so the corpus is the same either way.
    """
    lang: str
    package: str
    folder: str

    def find(self, sounds_dir: Path) -> Path | None:
        for candidate in (sounds_dir / self.folder, sounds_dir / self.lang):
            if candidate.is_dir() and any(candidate.rglob("*.g722")):
                return candidate.resolve()
        return None


# speaker -> the packages that hold their prompts
RECORDED_VOICES = {
    "allison": (VoicePrompts("en", "asterisk-core-sounds-en-g722", "en_US_f_Allison"),
                VoicePrompts("es", "asterisk-core-sounds-es-g722", "es_MX_f_Allison")),
    "june": (VoicePrompts("fr", "asterisk-core-sounds-fr-g722", "fr_CA_f_June"),),
}
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
NOISE_CATEGORIES = ("music", "babble", "stationary", "nonstationary", "tonal")
SNR_RANGE_DB = (-5.0, 20.0)
# Music-on-hold tracks are split by track so that test music is never heard in training.
MOH_SPLIT = {"manolo_camp-morning_coffee": "val", "reno_project-system": "test"}
SPLIT_FRACTIONS = (("test", 0.10), ("val", 0.06), ("babble", 0.06))  # the rest is train

ATTRIBUTION = """# Sources of the sezoo `mini` corpus

The mixtures in this folder are derived works of the following recordings; their licences apply.

| source | Debian package | author | licence |
|---|---|---|---|
| English and Spanish voice prompts | asterisk-core-sounds-en-g722, -es-g722 | Allison Smith (theivrvoice.com), Digium, Inc. | CC-BY-SA-3.0 |
| French voice prompts | asterisk-core-sounds-fr-g722 | June Wallack; translated by Clod Patry, Kristopher Lalletti, June Wallack | CC-BY-SA-3.0 |
| Music on hold | asterisk-moh-opsound-g722 | Paul Shuler (Macroform), Manolo Camp, Reno Project | CC-BY-SA-3.0 |
| Synthetic voices (kal16, awb, rms, slt) | flite | Carnegie Mellon University, University of Edinburgh | BSD-style (flite licence) |
| Synthetic noises, sentences, mixing | sezoo | the sezoo authors | Apache-2.0 |

The full licence texts are in `/usr/share/doc/<package>/copyright` of the machine that built the corpus.
Being a derived work of CC-BY-SA-3.0 material, this corpus is shared under CC-BY-SA-3.0.
"""


class MissingSources(RuntimeError):
    def __init__(self, packages: list[str]):
        self.packages = packages
        super().__init__(
            "the mini corpus is built from OS packages that are missing here: "
            + ", ".join(packages)
            + f".\nInstall them with:\n  sudo apt-get update && sudo apt-get install -y {' '.join(packages)}\n"
            "or run `sezoo data prepare mini --install-deps` as root."
        )


@dataclass(frozen=True)
class Speech:
    uid: str
    voice: str
    recorded: bool
    prompt: str  # the split is a function of the prompt alone
    load: Callable[[], np.ndarray]


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, _stable_int(key)])


def split_of(prompt: str) -> str:
    """A prompt's split, from its name alone (independent of the seed, so splits never drift)."""
    u = (_stable_int("split:" + prompt) % 10_000) / 10_000
    edge = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        edge += fraction
        if u < edge:
            return name
    return "train"


def decode_g722(path: Path) -> np.ndarray:
    import G722  # the `g722` package on PyPI; imported here so the rest of sezoo does not need it

    pcm = np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(path.read_bytes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def missing_packages(sounds_dir: Path, moh_dir: Path, flite_voices: tuple[str, ...]) -> list[str]:
    missing = [source.package for sources in RECORDED_VOICES.values() for source in sources
               if source.find(sounds_dir) is None]
    if not any(moh_dir.glob("*.g722")):
        missing.append("asterisk-moh-opsound-g722")
    if flite_voices and shutil.which("flite") is None:
        missing.append("flite")
    return missing


def install_packages(packages: list[str]) -> None:
    """apt-get install when we are root and apt-get exists; otherwise say the exact command."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise MissingSources(packages)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], check=True, env=env)


def recorded_speech(sounds_dir: Path, min_seconds: float) -> list[Speech]:
    items = []
    for voice, sources in RECORDED_VOICES.items():
        for source in sources:
            base, lang = source.find(sounds_dir), source.lang
            for path in sorted(base.rglob("*.g722")):
                if path.stat().st_size < min_seconds * 8000:  # G.722 is 8000 bytes per second
                    continue
                prompt = path.relative_to(base).with_suffix("").as_posix()
                items.append(Speech(f"{voice}-{lang}-{prompt.replace('/', '_')}", voice, True, prompt,
                                    lambda p=path: decode_g722(p)))
    return items


def _flite(voice: str, text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True,
                       capture_output=True)
        return read_audio(out, SAMPLE_RATE).numpy()


def synthetic_speech(voices: tuple[str, ...], sentences_per_voice: int) -> list[Speech]:
    # Each voice reads its own block of sentence ids, so the voices do not all say the same thing;
    # the split is still by sentence, so a test sentence is never heard in training.
    return [Speech(f"flite-{voice}-s{i:04d}", voice, False, f"sentence{i}",
                   lambda v=voice, t=sentence(i): _flite(v, t))
            for k, voice in enumerate(voices)
            for i in range(k * sentences_per_voice, (k + 1) * sentences_per_voice)]


# ---------------------------------------------------------------- noise
def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum *= 1.0 / np.maximum(f, 20.0) ** (exponent / 2)
    x = np.fft.irfft(spectrum, n)
    return x / (np.std(x) + 1e-12)


def _nonstationary(rng: np.random.Generator, n: int) -> np.ndarray:
    base = _coloured(rng, n, rng.uniform(0.5, 1.5))
    envelope = np.full(n, 0.05)
    t = 0
    while t < n:  # bursts of 50..400 ms with gaps, like traffic or machinery switching on and off
        length = int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
        ramp = np.hanning(max(length, 2))[: max(0, min(length, n - t))]
        envelope[t : t + len(ramp)] += rng.uniform(0.3, 1.0) * ramp
        t += length + int(rng.uniform(0.05, 0.6) * SAMPLE_RATE)
    x = base * envelope
    for onset in rng.integers(0, n, size=int(rng.integers(2, 12) * n / SAMPLE_RATE) + 1):
        click = rng.standard_normal(200) * np.exp(-np.arange(200) / 30.0) * rng.uniform(2, 6)
        x[onset : onset + 200] += click[: n - onset]
    return x


def _tonal(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.choice([50.0, 60.0])
    hum = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, 12))
    fan_f = rng.uniform(300, 2500)
    wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t)
    fan = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * fan_f * np.cumsum(wobble) / SAMPLE_RATE)
    return hum + fan + 0.05 * _coloured(rng, n, 1.0)


def _loop_excerpt(rng: np.random.Generator, source: np.ndarray, n: int) -> np.ndarray:
    reps = int(np.ceil((n + len(source)) / len(source)))
    start = int(rng.integers(0, len(source)))
    return np.tile(source, reps)[start : start + n]


class NoiseBank:
    def __init__(self, moh_dir: Path, babble_pool: dict[str, list[Speech]]):
        self.tracks: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
        for path in sorted(moh_dir.glob("*.g722")):
            self.tracks[MOH_SPLIT.get(path.stem, "train")].append(decode_g722(path))
        for split, tracks in self.tracks.items():
            if not tracks:  # a small fixture may have fewer tracks than splits: share them
                self.tracks[split] = [t for ts in self.tracks.values() for t in ts]
        self.babble_pool = babble_pool
        self._babble_cache: dict[str, np.ndarray] = {}

    def _babble_voice(self, speech: Speech) -> np.ndarray:
        if speech.uid not in self._babble_cache:
            self._babble_cache[speech.uid] = speech.load()
        return self._babble_cache[speech.uid]

    def make(self, category: str, split: str, rng: np.random.Generator, n: int) -> np.ndarray:
        if category == "music":
            tracks = self.tracks[split]
            return _loop_excerpt(rng, tracks[int(rng.integers(len(tracks)))], n)
        if category == "babble":
            pool = self.babble_pool[split]
            talkers = rng.choice(len(pool), size=min(len(pool), int(rng.integers(3, 7))), replace=False)
            x = np.zeros(n)
            for k in talkers:
                voice = self._babble_voice(pool[int(k)])
                x += _loop_excerpt(rng, voice / (np.std(voice) + 1e-9), n)
            return x
        if category == "stationary":
            return _coloured(rng, n, rng.uniform(0.0, 2.0))
        if category == "nonstationary":
            return _nonstationary(rng, n)
        if category == "tonal":
            return _tonal(rng, n)
        raise ValueError(f"unknown noise category {category!r}; choose from {NOISE_CATEGORIES}")


def active_level_db(x: np.ndarray, frame: int = 320) -> float:
    """Speech level over active 20 ms frames (within 40 dB of the loudest), a light-weight P.56."""
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    power = (frames.astype(np.float64) ** 2).mean(axis=1) + 1e-20
    active = power[power > power.max() * 1e-4]
    return float(10 * np.log10(active.mean()))


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, level_db: float) -> tuple[np.ndarray, np.ndarray]:
    clean = clean * 10 ** ((level_db - active_level_db(clean)) / 20)
    noise_db = 10 * np.log10((noise.astype(np.float64) ** 2).mean() + 1e-20)
    noise = noise * 10 ** ((active_level_db(clean) - snr_db - noise_db) / 20)
    noisy = clean + noise
    peak = np.abs(noisy).max()
    if peak > 0.99:  # scale both, so the pair stays consistent and nothing clips
        clean, noisy = clean * 0.99 / peak, noisy * 0.99 / peak
    return clean.astype(np.float32), noisy.astype(np.float32)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_mini(
    root: str | Path,
    seed: int = 0,
    sounds_dir: Path = DEFAULT_SOUNDS_DIR,
    moh_dir: Path = DEFAULT_MOH_DIR,
    flite_voices: tuple[str, ...] = FLITE_VOICES,
    sentences_per_voice: int = 60,
    min_seconds: float = 1.0,
    progress: bool = True,
) -> Path:
    """Build the corpus under ``root/mini`` and return that folder."""
    from tqdm import tqdm

    sounds_dir, moh_dir = Path(sounds_dir), Path(moh_dir)
    missing = missing_packages(sounds_dir, moh_dir, flite_voices)
    if missing:
        raise MissingSources(missing)
    out = Path(root) / "mini"
    staging = Path(root) / f".mini-building-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)

    speech = recorded_speech(sounds_dir, min_seconds) + synthetic_speech(flite_voices, sentences_per_voice)
    by_split: dict[str, list[Speech]] = {"train": [], "val": [], "test": [], "babble": []}
    for s in speech:
        by_split[split_of(s.prompt)].append(s)
    # Babble talkers: held-out prompts, one half for training noise, the other for val/test noise.
    babble = {"train": [], "val": [], "test": []}
    for s in by_split.pop("babble"):
        if s.recorded:
            half = "train" if _stable_int("babble:" + s.uid) % 2 else "val"
            babble[half].append(s)
    babble["test"] = babble["val"]
    for split in babble:
        if not babble[split]:  # tiny fixtures: fall back to whichever half exists
            babble[split] = babble["train"] or babble["val"]
    noises = NoiseBank(moh_dir, babble)

    records = []
    jobs = [(split, s) for split in ("train", "val", "test") for s in by_split[split]]
    for split, s in tqdm(jobs, desc="building mini", unit="utt", disable=not progress):
        clean = s.load()
        if len(clean) < min_seconds * SAMPLE_RATE:
            continue
        rng = _rng(seed, s.uid)
        category = NOISE_CATEGORIES[int(rng.integers(len(NOISE_CATEGORIES)))]
        snr = float(rng.uniform(*SNR_RANGE_DB))
        clean, noisy = mix(clean, noises.make(category, split, rng, len(clean)), snr, float(rng.uniform(-33, -23)))
        for kind, audio in (("clean", clean), ("noisy", noisy)):
            write_audio(staging / split / kind / f"{s.uid}.wav", audio, SAMPLE_RATE)
        records.append({"uid": s.uid, "split": split, "voice": s.voice, "recorded": s.recorded,
                        "prompt": s.prompt, "noise": category, "snr_db": round(snr, 3),
                        "seconds": round(len(clean) / SAMPLE_RATE, 4)})

    files = {p.relative_to(staging).as_posix(): _sha256(p) for p in sorted(staging.rglob("*.wav"))}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    manifest = {"corpus": "mini", "version": CORPUS_VERSION, "seed": seed, "sample_rate": SAMPLE_RATE,
                "digest": digest, "utterances": records, "files": files}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (staging / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    # Swap in only a complete build, so an interrupted one never leaves a half corpus behind.
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def info(folder: str | Path) -> dict:
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path}: not found. Build the corpus with `sezoo data prepare mini`.")
    manifest = json.loads(manifest_path.read_text())
    utts = manifest["utterances"]
    snrs = [u["snr_db"] for u in utts]
    splits = {name: sum(u["split"] == name for u in utts) for name in ("train", "val", "test")}
    train_prompts = {u["prompt"] for u in utts if u["split"] == "train"}
    test_prompts = {u["prompt"] for u in utts if u["split"] == "test"}
    return {
        "speech_minutes": round(sum(u["seconds"] for u in utts) / 60, 2),
        "voices": len({u["voice"] for u in utts}),
        "recorded_voices": len({u["voice"] for u in utts if u["recorded"]}),
        "noise_categories": len({u["noise"] for u in utts}),
        "splits": splits,
        "snr_db": {"min": min(snrs), "max": max(snrs)},
        "test_prompts_in_train": len(train_prompts & test_prompts),
        "seed": manifest["seed"],
        "digest": manifest["digest"],
    }
