import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from sezoo.data import mini
from sezoo.data.audio import read_audio
from sezoo.data.mixing import active_level_db, rms_db

from conftest import speech_like

PACKAGE_FOLDERS = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison", "fr": "fr_CA_f_June",
                   "it": "it_IT_m_Carlo", "ru": "ru_RU_f_IvrvoiceRU"}
KLETTRES = ("fr", "de", "da", "lt")  # fr and lt are test speakers, de a validation speaker
NOISE_FILES = {  # path under /usr/share -> seconds
    **{f"games/lincity-ng/sounds/{scene}{k}.wav": 1.5 for scene in ("TraficHigh", "TraficLow", "DirtTrack", "RailTrain",
                                                                     "Harbor") for k in (1, 2)},
    "games/lincity-ng/sounds/MarketFull1.wav": 2.5,
    "games/minetest/games/minetest_game/mods/doors/sounds/doors_door_open.ogg": 0.4,
    "games/minetest/games/minetest_game/mods/env_sounds/sounds/env_sounds_water.1.ogg": 3.0,
    "games/megaglest/tilesets/forest/sounds/rain.ogg": 3.0,
    "games/megaglest/tilesets/meadow/sounds/rain.ogg": 3.0,  # the same file in another tileset: counted once
    "games/widelands/data/sound/smiths/smith_01.ogg": 2.0,
}


def _encode_g722(path, signal):
    import G722

    pcm = (np.clip(signal, -1, 1) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(G722.G722(16000, 64000).encode(pcm))


def _write(path, signal, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal, sr)


def _lay_out_sources(base, folder_of):
    """Stand-ins for the Debian packages, laid out as they lay themselves out under /usr/share;
    ``folder_of(lang)`` names the folder under asterisk/sounds/ that holds a language's prompts."""
    rng = np.random.default_rng(0)
    for lang in PACKAGE_FOLDERS:
        for i in range(10):
            _encode_g722(base / "asterisk" / "sounds" / folder_of(lang) / f"prompt-{i:02d}.g722", speech_like(rng, 1.2))
        _encode_g722(base / "asterisk" / "sounds" / folder_of(lang) / "digits" / "1.g722", speech_like(rng, 0.4))  # too short
    for name in ("reno_project-system", "macroform-cold_day", "manolo_camp-morning_coffee"):
        _encode_g722(base / "asterisk" / "moh" / f"{name}.g722", 0.1 * rng.standard_normal(48000))
    for lang in KLETTRES:  # 44.1 kHz letters, quiet between them
        for i in range(8):
            letter = np.concatenate([np.zeros(4000), speech_like(rng, 0.5, sr=44100), np.zeros(4000)])
            _write(base / "klettres" / lang / "alpha" / f"{chr(97 + i)}.ogg", letter, 44100)
    for i in range(8):  # a language recorded with its own noise: not fit for targets
        noisy_letter = speech_like(rng, 0.6, sr=44100) + 0.05 * rng.standard_normal(26460)
        _write(base / "klettres" / "cs" / "alpha" / f"{chr(97 + i)}.ogg", noisy_letter, 44100)
    for rel, seconds in NOISE_FILES.items():
        if rel.endswith("meadow/sounds/rain.ogg"):  # a byte-identical copy, as MegaGlest ships it
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_bytes((base / rel.replace("meadow", "forest")).read_bytes())
        else:
            _write(base / rel, 0.1 * rng.standard_normal(int(seconds * 22050)), 22050)
    return base


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Laid out as the -g722 packages lay it out: en_US_f_Allison/ ..., and no en/ es/ fr/ links
    (those come from the recommended asterisk-core-sounds-LANG packages, which we do not install)."""
    return _lay_out_sources(tmp_path_factory.mktemp("share"), PACKAGE_FOLDERS.get)


def _build(sources, root, seed=0):
    return mini.build_mini(root, seed=seed, share=sources, flite_voices=(), train_rooms=3, progress=False)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    return _build(sources, tmp_path_factory.mktemp("data"))


def test_build_is_deterministic_for_a_seed(sources, built, tmp_path):
    again = json.loads((_build(sources, tmp_path / "b") / "manifest.json").read_text())
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["files"] == again["files"] and manifest["digest"] == again["digest"]
    assert manifest["digest"] != json.loads((_build(sources, tmp_path / "c", seed=1) / "manifest.json").read_text())["digest"]
    assert (built / "ATTRIBUTION.md").read_text().count("GPL-2+") >= 3


def test_held_out_speakers_noise_scenes_and_split_layout(built):
    info = mini.info(built)
    composition = info["split_composition"]
    assert info["test_voices_in_train"] == 0 and info["val_voices_in_train"] == 0
    assert info["test_noise_files_in_train"] == 0
    assert set(composition["test"]["voices"]) == {"ivr-ru", "klettres-fr", "klettres-lt"}
    assert "klettres-de" in composition["val"]["voices"]
    assert "klettres-cs" not in composition["train"]["voices"] + composition["val"]["voices"] + composition["test"]["voices"]
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["klettres"]["cs"]["dynamic_range_db"] < mini.KLETTRES_MIN_DYNAMIC_RANGE_DB
    # recorded voices: allison, june, carlo, ivr-ru and four KLettres speakers; both sexes
    assert info["recorded_voices"] == 8 and info["recorded_voices_by_sex"]["male"] >= 1
    assert set(info["languages"]) >= {"en", "es", "fr", "it", "ru", "de"}
    # training material for mixing on the fly, fixed val/test pairs
    assert len(list((built / "train" / "speech").glob("*.wav"))) == composition["train"]["utterances"]
    assert {p.name for p in (built / "train" / "noise").iterdir()} >= {"traffic", "babble", "music"}
    assert len(list((built / "train" / "rir").glob("*.wav"))) == info["training_rooms"] == 3
    assert not any("digits" in u["uid"] for u in manifest["utterances"])
    # a scene's variants share a split; an identical file shipped twice is one clip
    traffic: dict[str, set] = {}
    for n in manifest["noise"]:
        if n["category"] == "traffic":
            traffic.setdefault(n["name"].rstrip("0123456789"), set()).add(n["split"])
    assert len(traffic) == 5 and all(len(splits) == 1 for splits in traffic.values())
    assert set().union(*traffic.values()) == {"train", "val", "test"}
    assert sum(n["category"] == "nature" and "rain" in n["name"] for n in manifest["noise"]) == 1
    assert -5.0 <= info["snr_db"]["min"] and info["snr_db"]["max"] <= 20.0


def test_fixed_mixtures_have_their_recorded_snr_and_rooms(built):
    utts = [u for u in json.loads((built / "manifest.json").read_text())["utterances"] if u["split"] != "train"]
    assert any("room" in u for u in utts) and any("room" not in u for u in utts)
    for u in utts:
        clean = read_audio(built / u["split"] / "clean" / f"{u['uid']}.wav", 16000).numpy()
        noisy = read_audio(built / u["split"] / "noisy" / f"{u['uid']}.wav", 16000).numpy()
        assert active_level_db(clean) == pytest.approx(u["level_db"], abs=0.1)
        if "room" not in u:  # dry: the noise is exactly what the mixture adds to the target
            snr = active_level_db(clean) - rms_db(noisy - clean)
            assert snr == pytest.approx(u["snr_db"], abs=0.3)  # 16-bit storage rounds a little


def test_voices_found_where_their_packages_put_them_or_under_the_language(sources, built, tmp_path):
    """The package layout (no alternatives links) and the language-folder layout (Asterisk's tarballs,
    other distributions, or the links) give the very same corpus."""
    assert not any((sources / "asterisk" / "sounds" / lang).exists() for lang in PACKAGE_FOLDERS)
    assert mini.missing_packages(sources, ()) == []
    by_language = _lay_out_sources(tmp_path / "os", lambda lang: lang)
    assert mini.info(built)["digest"] == mini.info(_build(by_language, tmp_path / "b"))["digest"]
    (sources / "asterisk" / "sounds" / "fr_CA_f_June").rename(sources / "asterisk" / "sounds" / "elsewhere")
    try:
        assert mini.missing_packages(sources, ()) == ["asterisk-core-sounds-fr-g722"]
    finally:
        (sources / "asterisk" / "sounds" / "elsewhere").rename(sources / "asterisk" / "sounds" / "fr_CA_f_June")


def test_missing_packages_name_the_apt_command(tmp_path):
    with pytest.raises(mini.MissingSources, match=r"apt-get install -y --no-install-recommends "
                                                  r"asterisk-core-sounds-en-g722 .*klettres-data .*megaglest-data"):
        mini.build_mini(tmp_path, share=tmp_path / "none", flite_voices=())


def test_an_old_corpus_is_refused_with_the_rebuild_command(tmp_path):
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "manifest.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(FileNotFoundError, match="version 1.*sezoo data prepare mini"):
        mini.info(tmp_path / "mini")


def test_cli_info_json(built):
    out = subprocess.run([sys.executable, "-m", "sezoo.cli", "data", "info", "mini", "--root", str(built.parent), "--json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert set(info) >= {"speech_minutes", "recorded_speech_minutes", "recorded_voices", "languages",
                         "real_noise_categories", "split_composition", "splits"}
    assert set(info["splits"]) == {"train", "val", "test"}
    assert set(info["real_noise_categories"]) >= {"music", "babble", "traffic", "nature", "domestic", "crowd", "machinery"}
