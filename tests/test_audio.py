import numpy as np
import pytest
import soundfile as sf
import torch

from sezoo.data.audio import AudioError, pair_folders, read_audio, write_audio


def test_resamples_other_rates(tmp_path):
    t = np.arange(48000) / 48000
    sf.write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 48000)
    with pytest.warns(UserWarning, match="resampled to 16000"):
        x = read_audio(tmp_path / "a.wav", 16000)
    assert x.shape == (16000,) and x.dtype == torch.float32
    spectrum = np.abs(np.fft.rfft(x.numpy()))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins: the tone survives at its frequency


def test_downmixes_stereo_with_a_warning(tmp_path):
    stereo = np.stack([np.full(1000, 0.2), np.full(1000, 0.4)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    with pytest.warns(UserWarning, match="2 channels downmixed"):
        x = read_audio(tmp_path / "s.wav", 16000)
    assert torch.allclose(x, torch.full((1000,), 0.3))


@pytest.mark.parametrize("case, message", [
    ("unreadable", "cannot be read as audio"),
    ("empty", "holds no samples"),
    ("nan", "NaN or infinite"),
    ("short", "shorter than one analysis frame"),
])
def test_refuses_bad_files_naming_them(tmp_path, case, message):
    path = tmp_path / f"{case}.wav"
    if case == "unreadable":
        path.write_bytes(b"RIFF....not really a wav")
    elif case == "empty":
        sf.write(path, np.zeros(0), 16000)
    elif case == "nan":
        data = np.zeros(1000, dtype=np.float32)
        data[10] = np.nan
        sf.write(path, data, 16000, subtype="FLOAT")
    else:
        sf.write(path, np.zeros(100), 16000)
    with pytest.raises(AudioError, match=message) as info:
        read_audio(path, 16000, min_samples=512)
    assert str(path) in str(info.value)


def test_pairs_by_name_and_refuses_unpaired(tmp_path):
    for name in ("a.wav", "b.wav"):
        write_audio(tmp_path / "noisy" / name, np.zeros(600), 16000)
    write_audio(tmp_path / "clean" / "a.wav", np.zeros(600), 16000)
    with pytest.raises(AudioError, match=r"1 in .*noisy have no clean file \(e.g. b.wav\)"):
        pair_folders(tmp_path / "noisy", tmp_path / "clean")
    write_audio(tmp_path / "clean" / "b.wav", np.zeros(600), 16000)
    assert [p[0].name for p in pair_folders(tmp_path / "noisy", tmp_path / "clean")] == ["a.wav", "b.wav"]
