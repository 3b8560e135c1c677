"""`mini`: the embedded default corpus, built locally from the operating system's packaged recordings.

**Speech** (clean targets). Recorded voices, the large majority: Debian's Asterisk prompts in G.722
(16 kHz: Allison Smith in English and Spanish, June Wallack in French, Carlo in Italian, a Russian
female voice) and KLettres' letters and syllables, one speaker per language, joined into utterances
(44.1 kHz, high-passed at 70 Hz; languages whose recordings carry their own noise are left out by a
measured rule). Synthetic voices (flite) stay a minority.

**Noise**, recorded in seven categories: music on hold, babble from held-out recorded voices, and the
recorded ambiences and foley of packaged games (nature, traffic, machinery, crowd, domestic); three
synthetic noises (stationary, non-stationary, tonal) as a minority.

**Rooms**: pyroomacoustics' image source method, a room per mixture (see `sezoo.data.mixing`).

**Splits.** Test and validation speakers are held out of training (and test babble talkers are the
validation voices, never a test target's own voice); noise scenes are held out by group (a scene's
variants stay together). Training reads clean utterances, noise clips and simulated rooms and mixes
fresh every epoch (`MixingDataset`); validation and test mixtures are written once, fixed by the seed.

Every choice draws its randomness from ``(seed, sha256(key))`` alone, so the build is bit-identical
for a seed whatever the order of work; ``manifest.json`` lists every file's sha256 to prove it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from sezoo.data.audio import read_audio, write_audio
from sezoo.data.mixing import (SYNTHETIC_NOISES, MixSettings, NoiseBank, NoiseClip, active_level_db, mix,
                               simulate_room)
from sezoo.data.sentences import sentence

SAMPLE_RATE = 16000
CORPUS_VERSION = 2
DEFAULT_SHARE = Path("/usr/share")
SETTINGS = MixSettings()  # the mixtures of every split: SNR -5..20 dB, half of them in a room


@dataclass(frozen=True)
class VoicePrompts:
    """One recorded Asterisk voice in one language, as its Debian package lays it out.

    ``folder`` is where the package itself puts the prompts (``en_US_f_Allison/``). The short
    ``lang`` folder (``en/``) is only a link that the *recommended* ``asterisk-core-sounds-en``
    package's alternatives make, or the layout of Asterisk's upstream tarballs and other
    distributions; it is tried second, so neither a missing link nor another layout matters.
    """
    lang: str
    package: str
    folder: str
    sex: str  # as the package's folder name states it (``_f_``, ``_m_``)

    def find(self, sounds_dir: Path) -> Path | None:
        for candidate in (sounds_dir / self.folder, sounds_dir / self.lang):
            if candidate.is_dir() and any(candidate.rglob("*.g722")):
                return candidate.resolve()
        return None


# speaker -> the packages that hold their prompts
ASTERISK_VOICES = {
    "allison": (VoicePrompts("en", "asterisk-core-sounds-en-g722", "en_US_f_Allison", "female"),
                VoicePrompts("es", "asterisk-core-sounds-es-g722", "es_MX_f_Allison", "female")),
    "june": (VoicePrompts("fr", "asterisk-core-sounds-fr-g722", "fr_CA_f_June", "female"),),
    "carlo": (VoicePrompts("it", "asterisk-core-sounds-it-g722", "it_IT_m_Carlo", "male"),),
    "ivr-ru": (VoicePrompts("ru", "asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", "female"),),
}
KLETTRES_PACKAGE = "klettres-data"
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
# Held-out speakers (sexes as measured by median F0). Test: a large recorded voice (female), three
# KLettres speakers (fr and lt male, uk female) and a synthetic one; validation: two KLettres speakers and a synthetic one, plus 5 % of the training voices' prompts.
TEST_VOICES = ("ivr-ru", "klettres-fr", "klettres-uk", "klettres-lt", "flite-slt")
VAL_VOICES = ("klettres-de", "klettres-pt_BR", "flite-rms")
HELD_OUT_CAP = {"asterisk": 60, "flite": 20}  # utterances per held-out voice in its split
KLETTRES_CLIPS_PER_UTTERANCE = 6
KLETTRES_MIN_DYNAMIC_RANGE_DB = 30.0
F0_CLIPS = 12  # clips per language whose F0 is measured  # median over a language's clips of (95th - 10th percentile frame power)
TRAIN_ROOMS = 400
BABBLE_PROMPT_SHARE = 0.06  # training voices' prompts kept out of the targets and used as training babble
VAL_PROMPT_SHARE = 0.05


@dataclass(frozen=True)
class NoiseSource:
    package: str
    pattern: str  # a glob under /usr/share
    category: str
    names: str = ""  # a regex the file's stem must match (empty: every file)


_MT = "games/minetest/games/minetest_game/mods"
_LC = "games/lincity-ng/sounds"
_WL = "games/widelands/data/sound"
NOISE_SOURCES = (
    NoiseSource("asterisk-moh-opsound-g722", "asterisk/moh/*.g722", "music"),
    NoiseSource("megaglest-data", "games/megaglest/tilesets/*/sounds/*", "nature"),
    NoiseSource("minetest-data", f"{_MT}/env_sounds/sounds/*.ogg", "nature"),
    NoiseSource("minetest-data", f"{_MT}/fire/sounds/*.ogg", "nature", r"fire_(fire|large|small)"),
    NoiseSource("lincity-ng-data", f"{_LC}/*.wav", "nature", r"(Water|ParklandLake|ParklandPlane|Green|Farm|OrganicFarm)\d*"),
    NoiseSource("widelands-data", f"{_WL}/animals/*.ogg", "nature"),
    NoiseSource("widelands-data", f"{_WL}/farm/*.ogg", "nature", r"(donkey|farm_animal|horse|ox|sheep)_?\d*"),
    NoiseSource("lincity-ng-data", f"{_LC}/*.wav", "traffic", r"(TraficHigh|TraficLow|DirtTrack|RailTrain|Harbor)\d*"),
    NoiseSource("lincity-ng-data", f"{_LC}/*.wav", "machinery",
                r"(IndustryHigh|IndustryLight|Mill|CoalMine|OreMine|PowerCoal\w*|Recycle|Blacksmith|WindMill\w*|"
                r"MonumentConstruction|Tip|Rocket|RocketTakeoff)\d*"),
    NoiseSource("widelands-data", f"{_WL}/**/*.ogg", "machinery",
                r"(benchsaw|sawing|sawmill|stonecutter|stonemason|stonegrind|smith|toolsmith|sharpening|furnace|"
                r"mill_turning|weaving|weaver|hammering|woodcutting|fast_woodcutting|mortar)_?\d*"),
    NoiseSource("minetest-data", f"{_MT}/default/sounds/*.ogg", "machinery", r"default_furnace_active"),
    NoiseSource("lincity-ng-data", f"{_LC}/*.wav", "crowd",
                r"(MarketFull|MarketMed|MarketLow|SportsCroud|School|University|Health|ResidentialHigh|"
                r"ResidentialMed|ResidentialLow|Shanty|Commune)\d*"),
    NoiseSource("widelands-data", f"{_WL}/*/taverns/*.ogg", "domestic"),
    NoiseSource("minetest-data", f"{_MT}/doors/sounds/*.ogg", "domestic"),
    NoiseSource("minetest-data", f"{_MT}/default/sounds/*.ogg", "domestic",
                r"default_(\w+_footstep|break_glass|chest_\w+|place_node\w*|dug_\w+|tool_breaks)(\.\d+)?"),
    NoiseSource("lincity-ng-data", f"{_LC}/*.wav", "domestic", r"Window(Open|Close)"),
)
NOISE_CATEGORIES = ("music", "babble", "nature", "traffic", "machinery", "crowd", "domestic")
# Music-on-hold tracks are split by track so that test music is never heard in training.
MOH_SPLIT = {"manolo_camp-morning_coffee": "val", "reno_project-system": "test"}
NOISE_GROUP_SHARES = (("test", 0.2), ("val", 0.15))  # of each category's scene groups; the rest trains

ATTRIBUTION = """# Sources of the sezoo `mini` corpus (version 2)

The files in this folder are derived from the following recordings; their licences apply. Every
utterance, noise clip and mixture in `manifest.json` names the sources it was made from.

| source | Debian package | author | licence |
|---|---|---|---|
| English and Spanish voice prompts | asterisk-core-sounds-en-g722, -es-g722 | Allison Smith (theivrvoice.com), Digium, Inc. | CC-BY-SA-3.0 |
| French voice prompts | asterisk-core-sounds-fr-g722 | June Wallack | CC-BY-SA-3.0 |
| Italian and Russian voice prompts | asterisk-core-sounds-it-g722, -ru-g722 | Digium, Inc. and their voice talents | CC-BY-SA-3.0 |
| Letters and syllables in 20 languages | klettres-data | the KDE Education contributors (Anne-Marie Mahfouf et al.) | GPL-2+ |
| Music on hold | asterisk-moh-opsound-g722 | Paul Shuler (Macroform), Manolo Camp, Reno Project | CC-BY-SA-3.0 |
| Ambiences (day, night, rain, wind, animals) | megaglest-data | the MegaGlest team | CC-BY-SA-3.0 |
| City sounds (traffic, industry, crowds, water) | lincity-ng-data | the LinCity-NG authors | GPL-2+ |
| Workshop, animal and tavern sounds | widelands-data | the Widelands Development Team | GPL-2+ |
| Foley (doors, steps, glass, water, fire, furnace) | minetest-data | the Minetest contributors | CC-BY-SA-3.0 (doors: CC-BY-3.0) |
| Synthetic voices (kal16, awb, rms, slt) | flite | Carnegie Mellon University, University of Edinburgh | BSD-style (flite licence) |
| Synthetic noises, sentences, rooms, mixing | sezoo | the sezoo authors | Apache-2.0 |

The full licence texts are in `/usr/share/doc/<package>/copyright` of the machine that built the corpus.
The corpus is built on the user's machine and is not redistributed by sezoo; whoever shares a copy
must honour every licence above (the CC-BY-SA-3.0 and GPL-2+ parts are shared under their own terms).
"""


class MissingSources(RuntimeError):
    def __init__(self, packages: list[str]):
        self.packages = packages
        super().__init__(
            "the mini corpus is built from OS packages that are missing here: "
            + ", ".join(packages)
            + f".\nInstall them with:\n  sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            f"{' '.join(packages)}\nor run `sezoo data prepare mini --install-deps` as root."
        )


@dataclass(frozen=True)
class Speech:
    uid: str
    voice: str
    recorded: bool
    lang: str
    source: str  # the package (or program) it comes from
    load: Callable[[], np.ndarray] = field(compare=False, repr=False)
    prompt: str = ""


def _read(path: Path) -> np.ndarray:
    """A packaged recording at 16 kHz (resampling is expected here, so read_audio's warning is not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return read_audio(path, SAMPLE_RATE).numpy()


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _fraction(text: str) -> float:
    return (_stable_int(text) % 10_000) / 10_000


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, _stable_int(key)])


def decode_g722(path: Path) -> np.ndarray:
    import G722  # the `g722` package on PyPI; imported here so the rest of sezoo does not need it

    pcm = np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(path.read_bytes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


# ---------------------------------------------------------------- what is installed
def _noise_files(share: Path, source: NoiseSource) -> list[Path]:
    pattern = re.compile(source.names) if source.names else None
    files = [p for p in sorted(share.glob(source.pattern))
             if p.is_file() and p.suffix.lower() in (".ogg", ".wav", ".flac", ".g722")
             and (pattern is None or pattern.fullmatch(p.stem))]
    return files


def missing_packages(share: Path = DEFAULT_SHARE, flite_voices: tuple[str, ...] = FLITE_VOICES) -> list[str]:
    share = Path(share)
    missing = [source.package for sources in ASTERISK_VOICES.values() for source in sources
               if source.find(share / "asterisk" / "sounds") is None]
    if not any((share / "klettres").glob("*/alpha/*.ogg")):
        missing.append(KLETTRES_PACKAGE)
    for package in dict.fromkeys(source.package for source in NOISE_SOURCES):
        if not any(_noise_files(share, source) for source in NOISE_SOURCES if source.package == package):
            missing.append(package)
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


# ---------------------------------------------------------------- speech
def asterisk_speech(share: Path, min_seconds: float) -> list[Speech]:
    items = []
    for voice, sources in ASTERISK_VOICES.items():
        for source in sources:
            base, lang = source.find(share / "asterisk" / "sounds"), source.lang
            for path in sorted(base.rglob("*.g722")):
                if path.stat().st_size < min_seconds * 8000:  # G.722 is 8000 bytes per second
                    continue
                prompt = path.relative_to(base).with_suffix("").as_posix()
                items.append(Speech(f"{voice}-{lang}-{prompt.replace('/', '_')}", voice, True, lang,
                                    source.package, lambda p=path: decode_g722(p), prompt))
    return items


def _highpass(x: np.ndarray, cutoff_hz: float = 70.0) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    # KLettres' recordings carry mains hum and rumble below the voice; a clean target must not.
    return sosfiltfilt(butter(4, cutoff_hz, "highpass", fs=SAMPLE_RATE, output="sos"), x).astype(np.float32)


def _frame_power_db(x: np.ndarray, frame: int = 320) -> np.ndarray:
    frames = x[: len(x) // frame * frame].reshape(-1, frame).astype(np.float64)
    return 10 * np.log10((frames**2).mean(axis=1) + 1e-12)


def _trim(x: np.ndarray, frame: int = 320) -> np.ndarray:
    """Cut leading and trailing frames more than 40 dB below the loudest one."""
    power = _frame_power_db(x, frame)
    if not len(power):
        return x
    active = np.flatnonzero(power > power.max() - 40)
    return x[active[0] * frame : (active[-1] + 1) * frame]


def _klettres_clip(path: Path) -> np.ndarray:
    return _trim(_highpass(_read(path)))


def klettres_languages(share: Path) -> dict[str, dict]:
    """Each KLettres language folder with its clips, measured: dynamic range (is it clean enough to be
    a target?) and median F0 over voiced frames (pYIN; the speaker's likely sex, above 165 Hz female,
    since KLettres does not say who recorded)."""
    import librosa

    languages = {}
    for folder in sorted(p for p in (share / "klettres").iterdir() if p.is_dir() and any(p.glob("*/*.ogg"))):
        clips = sorted(folder.glob("*/*.ogg"))
        ranges, f0s = [], []
        for k, path in enumerate(clips):
            x = _read(path)
            power = _frame_power_db(x)
            if len(power) >= 5:
                ranges.append(np.percentile(power, 95) - np.percentile(power, 10))
            if k % max(1, len(clips) // F0_CLIPS):  # pYIN is slow: a spread of clips gives a steady median
                continue
            f0, voiced, _ = librosa.pyin(_highpass(x), fmin=60, fmax=400, sr=SAMPLE_RATE, frame_length=1024,
                                         hop_length=512)
            f0s.extend(f0[voiced & np.isfinite(f0)])
        median_f0 = float(np.median(f0s)) if f0s else float("nan")
        languages[folder.name] = {
            "clips": clips,
            "dynamic_range_db": round(float(np.median(ranges)), 1) if ranges else 0.0,
            "median_f0_hz": round(median_f0, 1),
            "sex": "female" if median_f0 > 165 else "male",
        }
    return languages


def klettres_speech(languages: dict[str, dict]) -> list[Speech]:
    """Each fit language's clips, in name order, joined ``KLETTRES_CLIPS_PER_UTTERANCE`` at a time with
    pauses of 0.15..0.5 s, each clip at the same active level (they were recorded at different ones)."""
    items = []
    for lang, found in languages.items():
        if found["dynamic_range_db"] < KLETTRES_MIN_DYNAMIC_RANGE_DB:
            continue
        clips = found["clips"]
        for k in range(0, len(clips) - KLETTRES_CLIPS_PER_UTTERANCE // 2, KLETTRES_CLIPS_PER_UTTERANCE):
            group = clips[k : k + KLETTRES_CLIPS_PER_UTTERANCE]
            uid = f"klettres-{lang}-u{k // KLETTRES_CLIPS_PER_UTTERANCE:03d}"

            def load(group=group, uid=uid):
                rng = _rng(0, "pauses:" + uid)  # seed-free: an utterance is the same in every build
                pieces = []
                for path in group:
                    clip = _klettres_clip(path)
                    if len(clip) < 320:
                        continue
                    pieces += [clip * 10 ** ((-26 - active_level_db(clip)) / 20),
                               np.zeros(int(rng.uniform(0.15, 0.5) * SAMPLE_RATE), np.float32)]
                return np.concatenate(pieces[:-1]).astype(np.float32) if pieces else np.zeros(0, np.float32)

            items.append(Speech(uid, f"klettres-{lang}", True, lang, KLETTRES_PACKAGE, load, uid))
    return items


def _flite(voice: str, text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True,
                       capture_output=True)
        return _read(out)


def synthetic_speech(voices: tuple[str, ...], sentences_per_voice: int) -> list[Speech]:
    # Each voice reads its own block of sentence ids, so the voices do not all say the same thing.
    return [Speech(f"flite-{voice}-s{i:04d}", f"flite-{voice}", False, "en", "flite",
                   lambda v=voice, t=sentence(i): _flite(v, t), f"sentence{i}")
            for k, voice in enumerate(voices)
            for i in range(k * sentences_per_voice, (k + 1) * sentences_per_voice)]


def assign_speech(speech: list[Speech]) -> dict[str, list[Speech]]:
    """Targets of each split, and the babble talkers of each split (which are never its targets)."""
    out: dict[str, list[Speech]] = {k: [] for k in ("train", "val", "test", "babble-train", "babble-val")}
    for split, held_out in (("test", TEST_VOICES), ("val", VAL_VOICES)):
        for voice in held_out:
            mine = sorted((s for s in speech if s.voice == voice), key=lambda s: _stable_int("order:" + s.uid))
            cap = HELD_OUT_CAP.get(mine[0].source.split("-")[0], len(mine)) if mine else 0
            out[split] += mine[:cap]
            if split == "test" and mine and mine[0].recorded:
                out["babble-val"] += mine[cap:]  # a test voice's spare prompts babble in validation
    for s in speech:
        if s.voice in TEST_VOICES or s.voice in VAL_VOICES:
            continue
        u = _fraction("split:" + s.uid)
        if s.recorded and u < BABBLE_PROMPT_SHARE:
            out["babble-train"].append(s)
        elif u < BABBLE_PROMPT_SHARE + VAL_PROMPT_SHARE:
            out["val"].append(s)
        else:
            out["train"].append(s)
    # test babble: the validation voices (held out of training, and never a test target)
    out["babble-test"] = [s for s in out["val"] if s.voice in VAL_VOICES and s.recorded]
    for key in ("babble-val", "babble-test"):  # small fixtures may lack held-out voices
        out[key] = out[key] or out["babble-train"]
    return out


# ---------------------------------------------------------------- noise
def _noise_name(share: Path, source: NoiseSource, path: Path) -> str:
    rel = path.relative_to(share).with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", rel.removeprefix("games/").removeprefix("asterisk/"))


def _group(stem: str) -> str:
    """A scene's variants share a group (``TraficHigh1``..``3``, ``bird2_00``..``04``, ``fire_fire.1``)."""
    return re.sub(r"[._]?\d+$", "", stem)


def recorded_noise(share: Path) -> dict[str, list[tuple[NoiseClip, str]]]:
    """Each split's recorded noise clips (as ``(clip, package)``), identical files counted once.

    Within a category, scene groups are ranked by a hash of their name: the first 20 % (at least one)
    are test scenes, the next 15 % (at least one) validation scenes, the rest train; a category with
    fewer than three groups only trains. Music on hold is split by track (`MOH_SPLIT`)."""
    out: dict[str, list[tuple[NoiseClip, str]]] = {"train": [], "val": [], "test": []}
    groups: dict[str, dict[str, list[tuple[NoiseClip, str]]]] = {}
    seen: set[str] = set()
    for source in NOISE_SOURCES:
        for path in _noise_files(share, source):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:  # MegaGlest ships one ambience in several tilesets
                continue
            seen.add(digest)
            name = f"{source.category}/{_noise_name(share, source, path)}"
            if path.suffix == ".g722":
                out[MOH_SPLIT.get(path.stem, "train")].append(
                    (NoiseClip(name, source.category, lambda p=path: decode_g722(p)), source.package))
                continue
            clip = NoiseClip(name, source.category, lambda p=path: _read(p))
            groups.setdefault(source.category, {}).setdefault(_group(path.stem), []).append((clip, source.package))
    for category, by_group in groups.items():
        ranked = sorted(by_group, key=lambda g: _stable_int(f"noise:{category}:{g}"))
        held = {}
        if len(ranked) >= 3:
            n_test = max(1, round(NOISE_GROUP_SHARES[0][1] * len(ranked)))
            n_val = max(1, round(NOISE_GROUP_SHARES[1][1] * len(ranked)))
            held = {g: "test" for g in ranked[:n_test]} | {g: "val" for g in ranked[n_test : n_test + n_val]}
        for g in ranked:
            out[held.get(g, "train")] += by_group[g]
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_mini(
    root: str | Path,
    seed: int = 0,
    share: Path = DEFAULT_SHARE,
    flite_voices: tuple[str, ...] = FLITE_VOICES,
    sentences_per_voice: int = 60,
    min_seconds: float = 1.0,
    train_rooms: int = TRAIN_ROOMS,
    progress: bool = True,
) -> Path:
    """Build the corpus under ``root/mini`` and return that folder."""
    import soundfile as sf
    from tqdm import tqdm

    share = Path(share)
    missing = missing_packages(share, flite_voices)
    if missing:
        raise MissingSources(missing)
    out = Path(root) / "mini"
    staging = Path(root) / f".mini-building-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)

    languages = klettres_languages(share)
    speech = (asterisk_speech(share, min_seconds) + klettres_speech(languages)
              + synthetic_speech(flite_voices, sentences_per_voice))
    splits = assign_speech(speech)
    noise = recorded_noise(share)
    manifest: dict = {"corpus": "mini", "version": CORPUS_VERSION, "seed": seed, "sample_rate": SAMPLE_RATE,
                      "utterances": [], "noise": [], "rooms": [],
                      "klettres": {lang: {k: v for k, v in found.items() if k != "clips"} | {"clips": len(found["clips"])}
                                   for lang, found in languages.items()}}
    sexes = {voice: s.sex for voice, sources in ASTERISK_VOICES.items() for s in sources}
    sexes |= {f"klettres-{lang}": found["sex"] for lang, found in languages.items()}

    def record(s: Speech, split: str, audio: np.ndarray, **extra) -> None:
        manifest["utterances"].append({"uid": s.uid, "split": split, "voice": s.voice, "recorded": s.recorded,
                                       "sex": sexes.get(s.voice), "lang": s.lang, "source": s.source,
                                       "seconds": round(len(audio) / SAMPLE_RATE, 4), **extra})

    # Training material: clean utterances, noise clips by category, simulated rooms; mixed on the fly.
    for s in tqdm(splits["train"], desc="mini: training speech", unit="utt", disable=not progress):
        audio = s.load()
        if len(audio) >= min_seconds * SAMPLE_RATE:
            write_audio(staging / "train" / "speech" / f"{s.uid}.wav", audio, SAMPLE_RATE)
            record(s, "train", audio)
    babble = {split: [NoiseClip(f"babble/{s.uid}", "babble", s.load) for s in splits[f"babble-{split}"]]
              for split in ("train", "val", "test")}
    for clip in [*babble["train"], *(c for c, _ in noise["train"])]:
        audio = clip.load()
        if len(audio) >= 160 and np.abs(audio).max() > 0:
            write_audio(staging / "train" / "noise" / f"{clip.name}.wav", audio, SAMPLE_RATE)
    for split, clips in noise.items():
        manifest["noise"] += [{"name": c.name, "category": c.category, "package": p, "split": split} for c, p in clips]
    for split, clips in babble.items():
        manifest["noise"] += [{"name": c.name, "category": "babble", "package": "speech", "split": split} for c in clips]
    for k in tqdm(range(train_rooms), desc="mini: training rooms", unit="room", disable=not progress):
        rir, meta = simulate_room(_rng(seed, f"room:{k}"), SAMPLE_RATE)
        path = staging / "train" / "rir" / f"room{k:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        # 24 bits keep the tail (16 would cut it at -96 dB); float WAVs carry a time stamp (PEAK chunk)
        # that would break the bit-identical build
        sf.write(str(path), rir, SAMPLE_RATE, subtype="PCM_24")
        manifest["rooms"].append({"name": path.name, **meta})

    # Validation and test: fixed mixtures of held-out voices, noise scenes and rooms.
    for split in ("val", "test"):
        bank = NoiseBank([c for c, _ in noise[split]] + babble[split], SAMPLE_RATE, SETTINGS, SYNTHETIC_NOISES)
        for s in tqdm(splits[split], desc=f"mini: {split} mixtures", unit="utt", disable=not progress):
            clean = s.load()
            if len(clean) < min_seconds * SAMPLE_RATE:
                continue
            rng = _rng(seed, s.uid)
            mixture = mix(clean, rng, bank, lambda r: simulate_room(r, SAMPLE_RATE), SETTINGS, SAMPLE_RATE)
            write_audio(staging / split / "clean" / f"{s.uid}.wav", mixture.target, SAMPLE_RATE)
            write_audio(staging / split / "noisy" / f"{s.uid}.wav", mixture.noisy, SAMPLE_RATE)
            record(s, split, clean, **mixture.meta)

    files = {p.relative_to(staging).as_posix(): _sha256(p) for p in sorted(staging.rglob("*.wav"))}
    manifest["digest"] = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    manifest["files"] = files
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (staging / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    # Swap in only a complete build, so an interrupted one never leaves a half corpus behind.
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found. Build the corpus with `sezoo data prepare mini`.")
    manifest = json.loads(path.read_text())
    if manifest.get("version") != CORPUS_VERSION:
        raise FileNotFoundError(f"{folder} holds mini version {manifest.get('version', 1)}, this sezoo reads version "
                                f"{CORPUS_VERSION}. Rebuild it with `sezoo data prepare mini`.")
    return manifest


def info(folder: str | Path) -> dict:
    manifest = read_manifest(folder)
    utts = manifest["utterances"]

    def minutes(items) -> float:
        return round(sum(u["seconds"] for u in items) / 60, 2)

    def composition(split: str) -> dict:
        mine = [u for u in utts if u["split"] == split]
        snrs = [u["snr_db"] for u in mine if "snr_db" in u]
        return {
            "utterances": len(mine), "minutes": minutes(mine),
            "voices": sorted({u["voice"] for u in mine}),
            "recorded_share": round(sum(u["recorded"] for u in mine) / max(1, len(mine)), 3),
            "reverberant_share": round(sum("room" in u for u in mine) / max(1, len(mine)), 3) if snrs else None,
            "noise": {c: sum(u.get("noise") == c for u in mine) for c in sorted({u.get("noise") for u in mine} - {None})},
            "snr_db": {"min": min(snrs), "max": max(snrs)} if snrs else None,
        }

    recorded = {u["voice"]: u for u in utts if u["recorded"]}
    real = sorted({n["category"] for n in manifest["noise"]})
    voices_by_split = {s: {u["voice"] for u in utts if u["split"] == s} for s in ("train", "val", "test")}
    noise_by_split = {s: {n["name"] for n in manifest["noise"] if n["split"] == s} for s in ("train", "val", "test")}
    splits = {name: composition(name) for name in ("train", "val", "test")}
    snrs = [u["snr_db"] for u in utts if "snr_db" in u]
    return {
        "version": manifest["version"],
        "speech_minutes": minutes(utts),
        "recorded_speech_minutes": minutes(u for u in utts if u["recorded"]),
        "voices": len({u["voice"] for u in utts}),
        "recorded_voices": len(recorded),
        "recorded_voices_by_sex": {sex: sum(u["sex"] == sex for u in recorded.values()) for sex in ("female", "male")},
        "languages": sorted({u["lang"] for u in utts if u["recorded"]}),
        "noise_categories": len(real) + len(SYNTHETIC_NOISES),
        "real_noise_categories": real,
        "synthetic_noise_categories": list(SYNTHETIC_NOISES),
        "real_noise_files": len(manifest["noise"]),
        "training_rooms": len(manifest["rooms"]),
        "splits": {name: splits[name]["utterances"] for name in splits},
        "split_composition": splits,
        "snr_db": {"min": min(snrs), "max": max(snrs)} if snrs else None,
        "test_voices_in_train": len(voices_by_split["test"] & voices_by_split["train"]),
        "val_voices_in_train": len(voices_by_split["val"] & voices_by_split["train"] & set(VAL_VOICES)),
        "test_noise_files_in_train": len(noise_by_split["test"] & noise_by_split["train"]),
        "seed": manifest["seed"],
        "digest": manifest["digest"],
    }
