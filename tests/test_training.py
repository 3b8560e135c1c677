"""End to end on a tiny generated corpus: train, resume, export, evaluate, enhance."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sezoo.cli import main as sezoo_main
from sezoo.export import load_exported
from sezoo.metrics.cost import count_params
from sezoo.metrics.dnsmos import DNSMOS_KEYS

from conftest import load_recipe as _recipe
from conftest import FAST_TRAINER, TINY_MODEL, speech_like


def test_run_folder_holds_config_results_checkpoint_and_export(trained):
    run_dir, results, _ = trained
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert set(saved["metrics"]) == set(saved["input_metrics"]) == {"pesq_wb", "stoi", "si_sdr", "sdr"}
    assert saved["n_test_files"] == 2 and saved["cost"]["params"] > 0
    assert "max_epochs: 1" in (run_dir / "config.yaml").read_text()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["sezoo_config"]["model"]["channels"] == 16
    model = load_exported(run_dir)
    assert count_params(model) == saved["cost"]["params"] and not model.training


def test_resume_continues_from_last_checkpoint(trained):
    run_dir, _, args = trained
    _recipe("dyncp").main([*args, "trainer.max_epochs=2", "run.resume=true"])
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 4  # 2 steps per epoch, not restarted
    earlier = (run_dir / "logs" / "metrics.0.csv").read_text()  # the first epoch's log rows are kept
    assert "val/loss" in earlier.splitlines()[0] and (run_dir / "logs" / "metrics.csv").exists()


def test_run_folder_moved_elsewhere_resumes_twice_from_its_newest_checkpoint(trained, tmp_path):
    """A run carried to another machine or folder (a GPU lease, a copied run) keeps resuming from its newest
    checkpoint. Lightning's version counter once wrote last-v1.ckpt beside the carried last.ckpt (whose
    recorded path named the old folder), so the next resume went back to the older checkpoint."""
    import shutil
    run_dir, _, args = trained
    moved = tmp_path / "elsewhere"
    shutil.copytree(run_dir.parent.parent, moved)
    args = [a for a in args if not a.startswith("run.dir=")] + [f"run.dir={moved}", "run.resume=true"]
    last = moved / "dyncp" / "t" / "checkpoints" / "last.ckpt"
    start = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    for extra in (1, 2):
        _recipe("dyncp").main([*args, f"trainer.max_epochs={start // 2 + extra}"])
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == start + 2 * extra
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_test_only_retests_a_finished_run_and_keeps_its_provenance(trained, tmp_path):
    """run.test_only=true re-tests a run's exported weights (a run trained elsewhere on a cut test split):
    on the same split it reproduces the run's own test, and the run's config and training record stay."""
    import shutil
    from safetensors.torch import load_file
    run_dir, _, args = trained
    copy = tmp_path / "runs"
    shutil.copytree(run_dir.parent.parent, copy)
    args = [a for a in args if not a.startswith("run.dir=")] + [f"run.dir={copy}"]
    folder = copy / "dyncp" / "t"
    # The run's own record as it stands (other tests resume the shared run, so not the fixture's first results)
    results = json.loads((folder / "results.json").read_text())
    config, weights = (folder / "config.yaml").read_text(), load_file(folder / "model.safetensors")
    again = _recipe("dyncp").main([*args, "run.test_only=true", "trainer.max_epochs=7"])
    assert again["n_test_files"] == results["n_test_files"] == 2
    assert again["metrics"] == pytest.approx(results["metrics"], abs=1e-5)
    assert again["input_metrics"] == pytest.approx(results["input_metrics"], abs=1e-5)
    assert (again["command"], again["selection"], again["checkpoint"]) == (
        results["command"], results["selection"], results["checkpoint"])
    assert "run.test_only=true" in again["retested"]
    assert (folder / "config.yaml").read_text() == config  # max_epochs=7 was never trained
    assert "val/loss" in (folder / "logs" / "metrics.0.csv").read_text().splitlines()[0]  # the training's log stays
    assert all(torch.equal(v, load_file(folder / "model.safetensors")[k]) for k, v in weights.items())
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        _recipe("dyncp").main([*args, "run.test_only=true", "run.name=never-trained"])


def test_evaluate_cli_json(trained, tiny_corpus, tmp_path):
    run_dir, _, _ = trained
    out = tmp_path / "eval.json"
    test = tiny_corpus / "mini" / "test"
    assert sezoo_main(["evaluate", "--model", str(run_dir), "--noisy", str(test / "noisy"),
                       "--clean", str(test / "clean"), "--json", str(out), "--quiet", "--dnsmos"]) == 0
    report = json.loads(out.read_text())
    assert report["n_files"] == 2 and len(report["per_file"]) == 2
    assert set(report["metrics"]) == set(report["input_metrics"]) == {"pesq_wb", "stoi", "si_sdr", "sdr", *DNSMOS_KEYS}
    assert set(report["cost"]) >= {"macs_per_second", "params", "model_bytes", "rtf"}
    assert report["cost"]["macs_per_second"] > 0 and report["cost"]["rtf"] > 0


def test_enhance_file_and_folder_keep_input_rate(trained, tmp_path):
    run_dir, _, _ = trained
    rng = np.random.default_rng(0)
    stereo = np.stack([speech_like(rng, 1.0, 48000)] * 2, axis=1)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", stereo, 48000)
    sf.write(tmp_path / "in" / "b.wav", speech_like(rng, 0.5), 16000)
    with pytest.warns(UserWarning):
        assert sezoo_main(["enhance", "--model", str(run_dir), str(tmp_path / "in" / "a.wav"), str(tmp_path / "a_out.wav")]) == 0
    info = sf.info(str(tmp_path / "a_out.wav"))
    assert info.samplerate == 48000 and info.channels == 1 and abs(info.frames - 48000) <= 1
    assert sezoo_main(["enhance", "--model", str(run_dir), str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "b.wav"]


def test_bad_model_path_is_a_clear_error(tmp_path, capsys):
    assert sezoo_main(["enhance", "--model", str(tmp_path), "x.wav", "y.wav"]) == 2
    assert "no exported model" in capsys.readouterr().err


def test_bad_override_exits_with_the_key(tiny_corpus):
    with pytest.raises(Exception, match="trainer.max_epoch"):
        _recipe("dyncp").main(["trainer.max_epoch=1"])


def test_report_table_from_results(trained, capsys):
    run_dir, _, _ = trained
    results = json.loads((run_dir / "results.json").read_text())
    assert sezoo_main(["report", str(run_dir), "--baseline", str(run_dir)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].count("|") == table[1].count("|") == table[2].count("|") == 11
    assert f"| t | {results['metrics']['pesq_wb']:.3f} |" in table[3] and table[3].endswith("+0.0% | +0.00% |")


def test_wandb_logs_offline_without_a_login(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    args = [*TINY_MODEL, *FAST_TRAINER, "logger.wandb=true", "trainer.limit_val_batches=1",
            f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=w"]
    _recipe("dyncp").main(args)
    assert list((tmp_path / "dyncp" / "w" / "wandb").glob("offline-run-*"))


def test_recorded_commands_name_no_machine_folders(tmp_path, monkeypatch):
    from sezoo.training import recipe_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEZOO_DATA", str(tmp_path / "data"))
    command = recipe_command("dyncp", [f"init_from={tmp_path}/runs/dyncp/a-dense", f"data.root={tmp_path}/data/x",
                                       "trainer.max_epochs=3", "run.dir=/elsewhere/runs"])
    assert command == ("python recipes/dyncp/train.py init_from=runs/dyncp/a-dense 'data.root=$SEZOO_DATA/x' "
                       "trainer.max_epochs=3 run.dir=/elsewhere/runs")


def test_lr_decay_is_per_epoch_and_carries_across_a_resume(tiny_corpus, tmp_path):
    args = [*TINY_MODEL, *FAST_TRAINER, f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=d",
            "optim.lr=0.001", "optim.lr_decay=0.5", "trainer.max_epochs=1"]
    last = tmp_path / "dyncp" / "d" / "checkpoints" / "last.ckpt"
    _recipe("dyncp").main(args)
    lr = lambda: torch.load(last, map_location="cpu", weights_only=True)["optimizer_states"][0]["param_groups"][0]["lr"]  # noqa: E731
    assert lr() == pytest.approx(0.0005)
    _recipe("dyncp").main([*args, "trainer.max_epochs=3", "run.resume=true"])
    assert lr() == pytest.approx(0.000125)  # three epochs in all: 0.001 * 0.5**3
    with pytest.raises(ValueError, match="optim.lr_decay=1.5"):
        _recipe("dyncp").main([*args, "optim.lr_decay=1.5", "run.name=bad"])


def test_resume_continues_the_run_config_with_only_the_new_overrides(tiny_corpus, tmp_path):
    """A resumed run is the run it names: its own config.yaml, with what this command line sets on top.
    A resume once rebuilt the config from the recipe's defaults, so a setting the first command gave
    (here the learning-rate decay) fell back to its default without a word, and config.yaml said so."""
    from omegaconf import OmegaConf

    first = [*TINY_MODEL, *FAST_TRAINER, f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=c",
             "optim.lr=0.001", "optim.lr_decay=0.5", "trainer.max_epochs=1"]
    run_dir = tmp_path / "dyncp" / "c"
    _recipe("dyncp").main(first)
    again = [a for a in first if not a.startswith(("optim.", "trainer.max_epochs="))]
    _recipe("dyncp").main([*again, "trainer.max_epochs=2", "run.resume=true"])
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.optim.lr_decay == 0.5 and saved.trainer.max_epochs == 2 and saved.run.resume
    optimizer = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["optimizer_states"][0]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(0.00025)  # decayed twice, not held at the first epoch's


def test_last_checkpoint_is_the_last_epoch_even_when_validation_got_worse(tiny_corpus, tmp_path, monkeypatch):
    """Lightning 2.6 writes ``save_last=True``'s last.ckpt only when the monitored checkpoint improves:
    a resumed run then went back to its best epoch, and a stage testing "last" tested the best."""
    from sezoo.training import SEModule

    def worse_every_epoch(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch), batch_size=1)

    monkeypatch.setattr(SEModule, "validation_step", worse_every_epoch)
    args = [*TINY_MODEL, *FAST_TRAINER, f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=w",
            "trainer.max_epochs=3"]
    results = _recipe("dyncp").main(args)
    folder = tmp_path / "dyncp" / "w" / "checkpoints"
    epoch = lambda name: torch.load(folder / name, map_location="cpu", weights_only=True)["epoch"]  # noqa: E731
    assert (epoch("best.ckpt"), epoch("last.ckpt")) == (0, 2)
    assert results["checkpoint"].endswith("best.ckpt") and results["selection"]["best"] == 0.0


def test_a_run_name_yaml_reads_as_a_boolean_is_refused_by_name(tiny_corpus, tmp_path):
    from sezoo.config import ConfigError

    args = [*TINY_MODEL, *FAST_TRAINER, f"data.root={tiny_corpus}", f"run.dir={tmp_path}", "run.name=off"]
    with pytest.raises(ConfigError, match="run.name=False"):
        _recipe("dyncp").main(args)
    assert not (tmp_path / "dyncp").exists()  # refused before anything was written
