import json
import subprocess
import sys

import numpy as np
import pytest

from sezoo.data import mini
from sezoo.data.audio import read_audio

from conftest import speech_like


def _encode_g722(path, signal):
    import G722

    pcm = (np.clip(signal, -1, 1) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(G722.G722(16000, 64000).encode(pcm))


PACKAGE_FOLDERS = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison", "fr": "fr_CA_f_June"}


def _lay_out_sources(base, folder_of):
    """Stand-ins for the Debian packages: G.722 prompts per voice and two music-on-hold tracks;
    ``folder_of(lang)`` names the folder under sounds/ that holds a language's prompts."""
    rng = np.random.default_rng(0)
    for lang in ("en", "es", "fr"):
        for i in range(24):
            _encode_g722(base / "sounds" / folder_of(lang) / f"prompt-{i:02d}.g722", speech_like(rng, 1.2))
        _encode_g722(base / "sounds" / folder_of(lang) / "digits" / "1.g722", speech_like(rng, 0.4))  # too short: skipped
    for name in ("reno_project-system", "macroform-cold_day"):
        _encode_g722(base / "moh" / f"{name}.g722", 0.1 * rng.standard_normal(48000))
    return base


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Laid out as the -g722 packages lay it out: en_US_f_Allison/ ..., and no en/ es/ fr/ links
    (those come from the recommended asterisk-core-sounds-LANG packages, which we do not install)."""
    return _lay_out_sources(tmp_path_factory.mktemp("os"), PACKAGE_FOLDERS.get)


def _build(sources, root, seed=0):
    return mini.build_mini(root, seed=seed, sounds_dir=sources / "sounds", moh_dir=sources / "moh",
                           flite_voices=(), progress=False)


def test_build_is_deterministic_and_splits_by_prompt(sources, tmp_path):
    a = _build(sources, tmp_path / "a")
    b = _build(sources, tmp_path / "b")
    manifest_a = json.loads((a / "manifest.json").read_text())
    manifest_b = json.loads((b / "manifest.json").read_text())
    assert manifest_a["files"] == manifest_b["files"] and manifest_a["digest"] == manifest_b["digest"]
    assert (a / "train" / "noisy").is_dir() and (a / "ATTRIBUTION.md").read_text().count("CC-BY-SA-3.0") >= 3
    assert manifest_a["digest"] != json.loads((_build(sources, tmp_path / "c", seed=1) / "manifest.json").read_text())["digest"]

    utts = manifest_a["utterances"]
    assert not any("digits" in u["prompt"] for u in utts)
    by_split = {s: {u["prompt"] for u in utts if u["split"] == s} for s in ("train", "val", "test")}
    assert by_split["train"] and by_split["test"]
    assert not by_split["train"] & by_split["test"] and not by_split["train"] & by_split["val"]
    # a prompt's three languages land together
    for prompt in by_split["test"]:
        assert {u["voice"] for u in utts if u["prompt"] == prompt} == {"allison", "june"}
    info = mini.info(a)
    assert info["recorded_voices"] == 2 and info["test_prompts_in_train"] == 0
    assert -5.0 <= info["snr_db"]["min"] and info["snr_db"]["max"] <= 20.0


def test_mixtures_have_the_recorded_snr(sources, tmp_path):
    folder = _build(sources, tmp_path)
    for u in json.loads((folder / "manifest.json").read_text())["utterances"][:6]:
        clean = read_audio(folder / u["split"] / "clean" / f"{u['uid']}.wav", 16000).numpy()
        noisy = read_audio(folder / u["split"] / "noisy" / f"{u['uid']}.wav", 16000).numpy()
        noise = noisy - clean
        snr = mini.active_level_db(clean) - 10 * np.log10((noise.astype(np.float64) ** 2).mean())
        assert snr == pytest.approx(u["snr_db"], abs=0.3)  # 16-bit storage rounds a little


def test_every_noise_category_generates_finite_audio(sources):
    bank = mini.NoiseBank(sources / "moh", {"train": [], "val": [], "test": []})
    rng = np.random.default_rng(0)
    for category in ("music", "stationary", "nonstationary", "tonal"):
        x = bank.make(category, "test", rng, 16000)
        assert x.shape == (16000,) and np.isfinite(x).all() and x.std() > 0


def test_voices_found_where_their_packages_put_them_or_under_the_language(sources, tmp_path):
    """The package layout (no alternatives links) and the language-folder layout (Asterisk's tarballs,
    other distributions, or the links) give the very same corpus."""
    assert not any((sources / "sounds" / lang).exists() for lang in PACKAGE_FOLDERS)
    assert mini.missing_packages(sources / "sounds", sources / "moh", ()) == []
    by_language = _lay_out_sources(tmp_path / "os", lambda lang: lang)
    from_packages = mini.info(_build(sources, tmp_path / "a"))
    from_languages = mini.info(_build(by_language, tmp_path / "b"))
    assert from_packages["recorded_voices"] == 2 and from_packages["splits"]["train"] > 0
    assert from_packages["digest"] == from_languages["digest"]
    (sources / "sounds" / "fr_CA_f_June").rename(sources / "sounds" / "elsewhere")
    try:
        assert mini.missing_packages(sources / "sounds", sources / "moh", ()) == ["asterisk-core-sounds-fr-g722"]
    finally:
        (sources / "sounds" / "elsewhere").rename(sources / "sounds" / "fr_CA_f_June")


def test_missing_packages_name_the_apt_command(tmp_path):
    with pytest.raises(mini.MissingSources, match=r"apt-get install -y asterisk-core-sounds-en-g722 .*asterisk-moh-opsound-g722"):
        mini.build_mini(tmp_path, sounds_dir=tmp_path / "none", moh_dir=tmp_path / "none", flite_voices=())


def test_cli_info_json(sources, tmp_path):
    _build(sources, tmp_path)
    out = subprocess.run([sys.executable, "-m", "sezoo.cli", "data", "info", "mini", "--root", str(tmp_path), "--json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert set(info) >= {"speech_minutes", "voices", "recorded_voices", "noise_categories", "splits"}
    assert set(info["splits"]) == {"train", "val", "test"}
