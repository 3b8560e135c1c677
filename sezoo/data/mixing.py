"""The one mixer: speech x noise x SNR x room x level, for every corpus that is mixed, not recorded in pairs.

`mini` writes its fixed validation and test mixtures with it and trains on fresh mixtures from it every
epoch; `data=dns` mixes a user's clean, noise and RIR folders with it. One function, :func:`mix`, so
the SNR, the level and the target mean the same thing everywhere:

* **Target: early-reverberant speech** (direct path + the first 50 ms of reflections). Users record in
  rooms; asking a small causal model to remove the early reflections too (a dry target) asks it to
  dereverberate, which costs it quality on the noise it can remove, and listeners do not hear early
  reflections as reverberation (they raise intelligibility). The late tail counts as interference to
  remove. On dry mixtures the target is the dry speech. CHiME-2's references are reverberant speech,
  VoiceBank+DEMAND's are dry: an early-reverberant target is right for both.
* **SNR** is the active level of the speech *as heard* (reverberant where there is a room) over the RMS
  of the noise across the whole excerpt, so a sparse noise (footsteps, a door) is louder when it sounds.
* **Level**: the target's active speech level is drawn in dBFS; noisy and target share every gain, and
  both are scaled down together if the mixture would clip.

Convolution with a RIR is speechbrain's ``reverberate`` (FFT convolution that keeps the direct path
aligned); rooms are simulated with pyroomacoustics' image source method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

EARLY_REFLECTIONS_MS = 50.0
EVENT_CLIP_SECONDS = 2.0  # noise clips shorter than this are events (a door, a step), scattered in time
SYNTHETIC_NOISES = ("stationary", "nonstationary", "tonal")


@dataclass(frozen=True)
class MixSettings:
    """What a mixture draws. Every range is uniform; shares are probabilities per mixture."""
    snr_db: tuple[float, float] = (-5.0, 20.0)
    level_db: tuple[float, float] = (-35.0, -15.0)  # target's active speech level, dBFS
    reverb_share: float = 0.5  # mixtures with a room (where rooms are given)
    second_noise_share: float = 0.3  # mixtures with a second, quieter noise from another category
    second_noise_below_db: tuple[float, float] = (3.0, 15.0)
    synthetic_share: float = 0.15  # mixtures whose noise is synthetic (where a bank enables it)
    babble_talkers: tuple[int, int] = (3, 7)  # talkers summed for the `babble` category, upper bound excluded
    event_rate_hz: tuple[float, float] = (0.3, 2.0)

    def __post_init__(self):
        for name in ("reverb_share", "second_noise_share", "synthetic_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: a share is a probability in [0, 1]")
        for name in ("snr_db", "level_db", "second_noise_below_db", "event_rate_hz"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}={getattr(self, name)}: the low end is above the high end")
        if self.level_db[1] > -3.0:
            raise ValueError(f"level_db={self.level_db}: a speech level above -3 dBFS leaves no room for noise")
        if self.babble_talkers[0] < 1 or self.babble_talkers[0] >= self.babble_talkers[1]:
            raise ValueError(f"babble_talkers={self.babble_talkers}: need 1 <= low < high")


# ---------------------------------------------------------------- levels
def active_level_db(x: np.ndarray, frame: int = 320) -> float:
    """Speech level over active 20 ms frames (within 40 dB of the loudest), a light-weight P.56."""
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    if not len(frames):
        frames = x.reshape(1, -1)
    power = (frames.astype(np.float64) ** 2).mean(axis=1) + 1e-20
    active = power[power > power.max() * 1e-4]
    return float(10 * np.log10(active.mean()))


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10((x.astype(np.float64) ** 2).mean() + 1e-20))


# ---------------------------------------------------------------- synthetic noise
def _coloured(rng: np.random.Generator, n: int, exponent: float, sample_rate: int) -> np.ndarray:
    """Gaussian noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sample_rate)
    spectrum *= 1.0 / np.maximum(f, 20.0) ** (exponent / 2)
    x = np.fft.irfft(spectrum, n)
    return x / (np.std(x) + 1e-12)


def _nonstationary(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    base = _coloured(rng, n, rng.uniform(0.5, 1.5), sample_rate)
    envelope = np.full(n, 0.05)
    t = 0
    while t < n:  # bursts of 50..400 ms with gaps, like machinery switching on and off
        length = int(rng.uniform(0.05, 0.4) * sample_rate)
        ramp = np.hanning(max(length, 2))[: max(0, min(length, n - t))]
        envelope[t : t + len(ramp)] += rng.uniform(0.3, 1.0) * ramp
        t += length + int(rng.uniform(0.05, 0.6) * sample_rate)
    x = base * envelope
    for onset in rng.integers(0, n, size=int(rng.integers(2, 12) * n / sample_rate) + 1):
        click = rng.standard_normal(200) * np.exp(-np.arange(200) / 30.0) * rng.uniform(2, 6)
        x[onset : onset + 200] += click[: n - onset]
    return x


def _tonal(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    t = np.arange(n) / sample_rate
    f0 = rng.choice([50.0, 60.0])
    hum = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, 12))
    fan_f = rng.uniform(300, 2500)
    wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t)
    fan = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * fan_f * np.cumsum(wobble) / sample_rate)
    return hum + fan + 0.05 * _coloured(rng, n, 1.0, sample_rate)


def synthetic_noise(category: str, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    if category == "stationary":
        return _coloured(rng, n, rng.uniform(0.0, 2.0), sample_rate)
    if category == "nonstationary":
        return _nonstationary(rng, n, sample_rate)
    if category == "tonal":
        return _tonal(rng, n, sample_rate)
    raise ValueError(f"unknown synthetic noise {category!r}; choose from {SYNTHETIC_NOISES}")


# ---------------------------------------------------------------- recorded noise
@dataclass(frozen=True)
class NoiseClip:
    """One recorded noise: ``name`` identifies it in manifests, ``load`` gives mono float32 audio."""
    name: str
    category: str
    load: Callable[[], np.ndarray] = field(compare=False, repr=False)


def loop_excerpt(rng: np.random.Generator, source: np.ndarray, n: int) -> np.ndarray:
    start = int(rng.integers(0, len(source)))
    return source[(start + np.arange(n)) % len(source)]  # looped; no copy of a long recording


def _scatter_events(rng: np.random.Generator, clip: np.ndarray, n: int, rate_hz: float, sample_rate: int) -> np.ndarray:
    """A short clip (a door, a step, a glass) placed at Poisson onsets, each at its own gain."""
    x = np.zeros(n)
    count = max(1, int(rng.poisson(rate_hz * n / sample_rate)))
    for onset in rng.integers(-len(clip) // 2, n, size=count):
        start, cut = max(0, int(onset)), max(0, -int(onset))
        piece = clip[cut : cut + n - start]
        x[start : start + len(piece)] += piece * 10 ** (rng.uniform(-6, 6) / 20)
    return x


class NoiseBank:
    """Recorded noise clips by category, plus (optionally) synthetic noises, drawn per mixture.

    Categories are drawn uniformly, so a category with few long files weighs as much as one with many
    short ones; ``babble`` clips are single talkers, summed several at a time.
    """

    def __init__(self, clips: list[NoiseClip], sample_rate: int, settings: MixSettings = MixSettings(),
                 synthetic: tuple[str, ...] = SYNTHETIC_NOISES):
        self.sample_rate, self.settings, self.synthetic = sample_rate, settings, tuple(synthetic)
        self.by_category: dict[str, list[NoiseClip]] = {}
        for clip in clips:
            self.by_category.setdefault(clip.category, []).append(clip)
        if not self.by_category and not self.synthetic:
            raise ValueError("a noise bank needs recorded clips or synthetic noises")
        self._cache: dict[str, np.ndarray] = {}

    @property
    def categories(self) -> list[str]:
        return sorted(self.by_category) + list(self.synthetic)

    def _audio(self, clip: NoiseClip) -> np.ndarray:
        if clip.name not in self._cache:
            audio = np.asarray(clip.load(), dtype=np.float32)
            if not len(audio) or not np.isfinite(audio).all() or np.abs(audio).max() == 0:
                raise ValueError(f"noise {clip.name}: empty, silent or not finite; remove it from the noise folder")
            self._cache[clip.name] = audio
        return self._cache[clip.name]

    def draw_category(self, rng: np.random.Generator, exclude: str | None = None) -> str:
        recorded = [c for c in sorted(self.by_category) if c != exclude]
        synthetic = [c for c in self.synthetic if c != exclude]
        if synthetic and (not recorded or rng.random() < self.settings.synthetic_share):
            return synthetic[int(rng.integers(len(synthetic)))]
        return recorded[int(rng.integers(len(recorded)))]

    def render(self, category: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
        """``n`` samples of ``category`` and the names of the clips used."""
        if category in self.synthetic:
            return synthetic_noise(category, rng, n, self.sample_rate), [f"synthetic:{category}"]
        clips = self.by_category[category]
        if category == "babble":
            low, high = self.settings.babble_talkers
            talkers = rng.choice(len(clips), size=min(len(clips), int(rng.integers(low, high))), replace=False)
            x = np.zeros(n)
            for k in talkers:
                voice = self._audio(clips[int(k)])
                x += loop_excerpt(rng, voice / (np.std(voice) + 1e-9), n)
            return x, [clips[int(k)].name for k in talkers]
        clip = clips[int(rng.integers(len(clips)))]
        audio = self._audio(clip)
        if len(audio) < EVENT_CLIP_SECONDS * self.sample_rate:
            x = _scatter_events(rng, audio, n, rng.uniform(*self.settings.event_rate_hz), self.sample_rate)
        else:
            x = loop_excerpt(rng, audio, n)
        return x, [clip.name]


def clips_from_folder(folder: str | Path, sample_rate: int) -> list[NoiseClip]:
    """Noise files under ``folder``; a file's first subfolder is its category (``noise/street/a.wav``),
    files directly in ``folder`` are category ``noise``."""
    from sezoo.data.audio import list_audio, read_audio

    folder = Path(folder)
    clips = []
    for path in list_audio(folder, recursive=True):
        parts = path.relative_to(folder).parts
        clips.append(NoiseClip(path.relative_to(folder).as_posix(), parts[0] if len(parts) > 1 else "noise",
                               lambda p=path: read_audio(p, sample_rate).numpy()))
    return clips


# ---------------------------------------------------------------- rooms
ROOM_SIZE_M = ((3.0, 10.0), (2.5, 8.0), (2.4, 4.0))
RT60_S = (0.15, 0.8)
SOURCE_DISTANCE_M = (0.5, 3.0)
MAX_IMAGE_ORDER = 40  # ISM cost grows with the cube of the order; 40 keeps a room under ~0.2 s on one core


def simulate_room(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, dict]:
    """One room impulse response from pyroomacoustics' image source method: a shoebox room, its RT60
    (Sabine absorption), a microphone and a talker at a drawn distance, all drawn from ``rng``."""
    import pyroomacoustics as pra

    size = np.array([rng.uniform(*r) for r in ROOM_SIZE_M])
    rt60 = float(rng.uniform(*RT60_S))
    try:
        absorption, order = pra.inverse_sabine(rt60, size)
    except ValueError:  # the RT60 is too short for so large a room: make the walls as absorbing as allowed
        absorption, order = 0.99, 2
    margin = 0.3
    mic = np.array([rng.uniform(margin, s - margin) for s in size[:2]] + [rng.uniform(1.0, 1.7)])
    for _ in range(100):
        distance = float(rng.uniform(*SOURCE_DISTANCE_M))
        azimuth = rng.uniform(0, 2 * np.pi)
        source = mic + np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), rng.uniform(-0.3, 0.5)])
        if np.all(source > margin) and np.all(source < size - margin):
            break
    else:  # a small room with the microphone in a corner: put the talker at the room's centre
        source = size / 2
        distance = float(np.linalg.norm(source - mic))
    room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(float(absorption)),
                       max_order=int(min(order, MAX_IMAGE_ORDER)))
    room.add_source(source.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float32)
    meta = {"room_m": [round(float(s), 2) for s in size], "rt60_s": round(rt60, 3),
            "distance_m": round(float(np.linalg.norm(source - mic)), 2)}
    return rir / np.abs(rir).max(), meta


class RirBank:
    """Room impulse responses from files (a user's measured RIRs, or `mini`'s simulated training rooms)."""

    def __init__(self, files: list[Path], sample_rate: int):
        if not files:
            raise ValueError("a RIR bank needs at least one file")
        self.files, self.sample_rate = list(files), sample_rate
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        from sezoo.data.audio import read_audio

        k = int(rng.integers(len(self.files)))
        if k not in self._cache:
            self._cache[k] = read_audio(self.files[k], self.sample_rate).numpy()
        return self._cache[k], {"rir": self.files[k].name}


def early_part(rir: np.ndarray, sample_rate: int, ms: float = EARLY_REFLECTIONS_MS) -> np.ndarray:
    """The RIR up to ``ms`` after its direct path (its largest peak), with a 5 ms cosine fade."""
    direct = int(np.abs(rir).argmax())
    end = min(len(rir), direct + int(ms * sample_rate / 1000))
    fade = min(end - direct, int(0.005 * sample_rate))
    early = rir[:end].copy()
    if fade > 1:
        early[end - fade :] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, fade)))
    return early


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` heard through ``rir``, aligned to the direct path (the RIR's largest tap), as long as ``x``.

    Linear convolution by SciPy's overlap-add: speechbrain's ``reverberate`` (which we used first) is a
    circular FFT convolution at unpadded sizes, which wraps the reverberation's end onto the start and
    took 20 ms per call here against about 2 ms (measured, 2-second segments and 0.8-second RIRs).
    """
    from scipy.signal import oaconvolve

    direct = int(np.abs(rir).argmax())
    wet = oaconvolve(np.asarray(x, dtype=np.float64), np.asarray(rir, dtype=np.float64))
    return wet[direct : direct + len(x)]


# ---------------------------------------------------------------- the mixture
@dataclass
class Mixture:
    noisy: np.ndarray
    target: np.ndarray
    meta: dict


RoomSource = Callable[[np.random.Generator], tuple[np.ndarray, dict]]


def mix(speech: np.ndarray, rng: np.random.Generator, noises: NoiseBank, rooms: RoomSource | None = None,
        settings: MixSettings = MixSettings(), sample_rate: int = 16000) -> Mixture:
    """One mixture of ``speech``, every choice drawn from ``rng`` (so a fixed rng gives a fixed mixture)."""
    speech = np.asarray(speech, dtype=np.float64)
    n = len(speech)
    meta: dict = {}
    if rooms is not None and rng.random() < settings.reverb_share:
        rir, meta["room"] = rooms(rng)
        heard, target = reverberate(speech, rir), reverberate(speech, early_part(rir, sample_rate))
    else:
        heard, target = speech, speech
    gain = 10 ** ((rng.uniform(*settings.level_db) - active_level_db(target)) / 20)
    heard, target = heard * gain, target * gain

    category = noises.draw_category(rng)
    noise, used = noises.render(category, rng, n)
    noise = noise / (np.sqrt((noise**2).mean()) + 1e-12)
    meta["noise"], meta["noise_files"] = category, used
    if rng.random() < settings.second_noise_share and len(noises.categories) > 1:
        second = noises.draw_category(rng, exclude=category)
        extra, used2 = noises.render(second, rng, n)
        below = rng.uniform(*settings.second_noise_below_db)
        noise = noise + extra / (np.sqrt((extra**2).mean()) + 1e-12) * 10 ** (-below / 20)
        meta["second_noise"], meta["second_noise_files"], meta["second_noise_below_db"] = second, used2, round(below, 2)

    snr = float(rng.uniform(*settings.snr_db))
    noise = noise * 10 ** ((active_level_db(heard) - snr - rms_db(noise)) / 20)
    noisy = heard + noise
    peak = np.abs(noisy).max()
    if peak > 0.99:  # scale both, so the pair stays consistent and nothing clips
        noisy, target = noisy * 0.99 / peak, target * 0.99 / peak
    meta["snr_db"] = round(snr, 3)
    meta["level_db"] = round(active_level_db(target), 2)
    return Mixture(noisy.astype(np.float32), target.astype(np.float32), meta)
