"""Folders with a few bad files among good ones: every good file is processed, each bad one is
refused with its reason, and the command exits 1 (``--strict``: 2, at the first bad file)."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from sezoo.cli import main as sezoo_main

from conftest import make_pairs


@pytest.fixture
def messy(tmp_path, tiny_corpus):
    """Two good pairs, one of them with a silent clean reference, and five kinds of bad file."""
    root = tmp_path / "messy"
    make_pairs(root, 2, seed=7)
    noisy, clean = root / "noisy", root / "clean"
    sf.write(clean / "silent.wav", np.zeros(24000, np.float32), 16000)  # make_pairs: 1.5 s
    shutil.copy(noisy / "utt07000.wav", noisy / "silent.wav")
    for folder in (noisy, clean):
        (folder / "garbage.wav").write_bytes(b"RIFF not really a wave file")
        sf.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(noisy / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(clean / "nan.wav", np.zeros(16000, np.float32), 16000)
    sf.write(noisy / "short.wav", np.zeros(16000, np.float32), 16000)
    sf.write(clean / "short.wav", np.zeros(8000, np.float32), 16000)
    sf.write(noisy / "lonely.wav", np.zeros(16000, np.float32), 16000)
    return root


def test_evaluate_scores_the_good_files_and_lists_the_bad(trained, messy, tmp_path, capsys):
    run_dir, _, _ = trained
    out = tmp_path / "eval.json"
    code = sezoo_main(["evaluate", "--model", str(run_dir), "--noisy", str(messy / "noisy"),
                       "--clean", str(messy / "clean"), "--json", str(out), "--quiet"])
    assert code == 1
    report = json.loads(out.read_text())  # strict JSON: no NaN anywhere
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert report["n_files"] == 3 and sorted(f["name"] for f in report["per_file"]) == ["silent.wav", "utt07000.wav", "utt07001.wav"]
    skipped = {s["file"].split("/")[-2] + "/" + s["file"].split("/")[-1]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"noisy/garbage.wav", "noisy/empty.wav", "noisy/nan.wav", "noisy/short.wav", "noisy/lonely.wav"}
    assert "cannot be read as audio" in skipped["noisy/garbage.wav"] and "no samples" in skipped["noisy/empty.wav"]
    assert "NaN" in skipped["noisy/nan.wav"] and "differs in length" in skipped["noisy/short.wav"]
    assert "no clean file" in skipped["noisy/lonely.wav"]
    silent = next(f for f in report["per_file"] if f["name"] == "silent.wav")
    assert silent["metrics"]["si_sdr"] is None and silent["metrics"]["sdr"] is None
    assert "silent" in silent["undefined"]["sdr"]
    good = [f["metrics"]["si_sdr"] for f in report["per_file"] if f["name"] != "silent.wav"]
    assert report["metrics"]["si_sdr"] == pytest.approx(sum(good) / 2)  # the undefined value is left out
    err = capsys.readouterr().err
    assert "skipped" in err and "garbage.wav" in err and "5 file(s) skipped" in err


def test_evaluate_strict_stops_at_the_first_bad_file(trained, messy, capsys):
    run_dir, _, _ = trained
    code = sezoo_main(["evaluate", "--model", str(run_dir), "--noisy", str(messy / "noisy"),
                       "--clean", str(messy / "clean"), "--quiet", "--strict"])
    assert code == 2 and "lonely.wav: no clean file" in capsys.readouterr().err


def test_enhance_folder_writes_every_good_file(trained, messy, tmp_path, capsys):
    run_dir, _, _ = trained
    out = tmp_path / "out"
    assert sezoo_main(["enhance", "--model", str(run_dir), str(messy / "noisy"), str(out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["lonely.wav", "short.wav", "silent.wav", "utt07000.wav", "utt07001.wav"]
    err = capsys.readouterr().err
    assert all(name in err for name in ("garbage.wav", "empty.wav", "nan.wav")) and "3 file(s) skipped" in err
    assert sezoo_main(["enhance", "--model", str(run_dir), str(messy / "noisy"), str(tmp_path / "o2"), "--strict"]) == 2
    assert "empty.wav: the file holds no samples" in capsys.readouterr().err  # sorted: empty.wav comes first
