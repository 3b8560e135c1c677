"""The SE training base that recipes reuse: a LightningModule, the trainer, the run folder.

A recipe supplies the network (``model``: noisy waveform [B, T] -> enhanced [B, T]) and the loss; the
base does the rest the same way for every recipe: quality metrics through torchmetrics at validation
and test (input metrics too at test), cost through :class:`~sezoo.callbacks.CostMeter`, the resolved
config in every checkpoint, ``results.json`` and an exported model in the run folder.
"""
from __future__ import annotations

import json
import netrc
import os
import shlex
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric

from sezoo.callbacks.cost_meter import CostMeter
from sezoo.config import ConfigError, save_config
from sezoo.export import export_model
from sezoo.metrics.dnsmos import DNSMOS_KEYS, dnsmos_available
from sezoo.metrics.quality import QUALITY_KEYS, quality
from sezoo.report import print_results
from sezoo.weights import load_weights


class SEModule(L.LightningModule):
    """``lr_decay``: the learning rate is multiplied by it after every epoch (1.0: constant). An epoch-wise
    factor, not a schedule over ``max_epochs``, so that a run resumed with a larger ``max_epochs`` goes on
    decaying from where it stopped."""

    def __init__(self, model: nn.Module, loss: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0,
                 config: dict | None = None, dnsmos: bool = False, lr_decay: float = 1.0):
        super().__init__()
        if not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"optim.lr_decay={lr_decay}: a factor per epoch in (0, 1], 1.0 for a constant rate")
        self.model, self.loss_fn = model, loss
        self.lr, self.weight_decay, self.lr_decay = lr, weight_decay, lr_decay
        self.config = config or {}
        self.sample_rate = getattr(model, "sample_rate", 16000)
        # DNSMOS at test only and on request: it costs seconds per utterance on a CPU.
        if dnsmos and not dnsmos_available():
            raise RuntimeError("DNSMOS needs librosa, onnxruntime and speechmos (pip install -e .)")
        self.with_dnsmos = dnsmos
        self._score_cache: dict[str, dict[str, float]] = {}
        test_keys = QUALITY_KEYS + (DNSMOS_KEYS if self.with_dnsmos else ())
        self.metrics = nn.ModuleDict({
            f"{split}_{who}_{key}": MeanMetric(nan_strategy="ignore")
            for split, whos, keys in (("val", ("output",), QUALITY_KEYS), ("test", ("output", "input"), test_keys))
            for who in whos for key in keys
        })

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.model(noisy)

    def compute_loss(self, estimate: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss; recipes override it to add their own terms."""
        return self.loss_fn(estimate, clean)

    def training_step(self, batch, batch_idx):
        noisy, clean, _ = batch
        loss = self.compute_loss(self(noisy), clean, noisy)
        self.log("train/loss", loss, prog_bar=True, batch_size=noisy.shape[0])
        return loss

    def _score(self, split: str, who: str, estimate: torch.Tensor, clean: torch.Tensor, key: str | None = None) -> dict[str, float]:
        """Quality of one utterance into the epoch means. ``key``: cache the scores under it (the noisy
        input's scores are the same at every operating point a run tests)."""
        scores = self._score_cache.get(key) if key else None
        if scores is None:
            scores = quality(estimate[0], clean[0], self.sample_rate, with_dnsmos=self.with_dnsmos and split == "test")
            if key:
                self._score_cache[key] = scores
        for metric, value in scores.items():
            self.metrics[f"{split}_{who}_{metric}"].update(torch.tensor(value, dtype=torch.float32))
        return scores

    def validation_step(self, batch, batch_idx):
        noisy, clean, _ = batch
        estimate = self(noisy)
        self.log("val/loss", self.compute_loss(estimate, clean, noisy), prog_bar=True, batch_size=1, sync_dist=True)
        self._score("val", "output", estimate, clean)

    def test_step(self, batch, batch_idx):
        noisy, clean, names = batch
        self._score("test", "output", self(noisy), clean)
        self._score("test", "input", noisy, clean, key=f"{names[0]}:{noisy.shape[-1]}")

    def _log_metrics(self, split: str) -> None:
        for name, metric in self.metrics.items():
            if name.startswith(split + "_") and metric.update_called:
                _, who, key = name.split("_", 2)
                prefix = f"{split}/" if who == "output" else f"{split}/input/"
                self.log(prefix + key, metric.compute(), prog_bar=(split == "val" and key == "pesq_wb"))
                metric.reset()

    def on_validation_epoch_end(self):
        self._log_metrics("val")

    def on_test_epoch_end(self):
        self._log_metrics("test")

    def param_groups(self) -> list[dict]:
        """Adam's parameter groups; recipes override it to give some parameters their own rate."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": self.lr}]

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.param_groups(), weight_decay=self.weight_decay)
        if self.lr_decay == 1.0:
            return optimizer
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sezoo_config"] = self.config


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def run_folder(cfg: DictConfig, recipe: str) -> Path:
    if isinstance(cfg.run.name, bool):  # YAML 1.1: off/on/no/yes/true/false are booleans, not names
        raise ConfigError(f"run.name={cfg.run.name}: the value was read as a boolean (YAML reads off, on, no, yes, "
                          f"true and false so); choose another name, or quote it: run.name='\"off\"'")
    name = cfg.run.name or f"{cfg.get('stage', 'run')}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.run.dir) / recipe / name


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback] = ()) -> L.Trainer:
    metrics = run_dir / "logs" / "metrics.csv"
    if (cfg.run.resume or cfg.run.get("test_only")) and metrics.exists():  # Lightning's CSV logger deletes it: keep the earlier rows
        metrics.rename(metrics.with_name(f"metrics.{len(list(metrics.parent.glob('metrics.*.csv')))}.csv"))
    loggers = [CSVLogger(str(run_dir), name="logs", version="")]
    if cfg.logger.wandb:
        offline = not _wandb_logged_in()  # never prompt: offline unless the user is logged in
        loggers.append(WandbLogger(project=cfg.logger.project, name=run_dir.name, save_dir=str(run_dir),
                                   offline=offline, config=OmegaConf.to_container(cfg, resolve=True)))
    # No version counter: a resumed run (above all one carried from another folder or machine, whose
    # checkpoint records the old paths) must overwrite best/last.ckpt, or the next resume reads a stale one.
    best = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor="val/loss",
                           mode="min", save_top_k=1, enable_version_counter=False)
    # Not save_last=True: Lightning 2.6 writes that last.ckpt only when the monitored checkpoint improves,
    # so a resumed run went back to its best epoch (also met by openclimatefix/pvnet, PR #544, fixed the
    # same way). A checkpoint without a monitor is written every epoch.
    last = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", save_top_k=1,
                           enable_version_counter=False)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return L.Trainer(default_root_dir=str(run_dir), logger=loggers,
                     callbacks=[best, last, CostMeter(cfg.data.sample_rate), *callbacks], **trainer_kwargs)


def _resume_path(cfg: DictConfig, run_dir: Path) -> str | None:
    if cfg.run.resume:
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.exists():
            return str(last)
        print(f"run.resume: no checkpoint at {last}; starting from scratch")
    return None


def portable(value: str) -> str:
    """A path as it reads on any machine: relative to the working folder (the repository), or under
    ``$SEZOO_DATA``; other values unchanged."""
    if not value.startswith("/"):
        return value
    path = Path(value)
    data = os.environ.get("SEZOO_DATA")
    for base, prefix in ((Path(data) if data else None, "$SEZOO_DATA/"), (Path.cwd(), "")):
        if base is not None and path.is_relative_to(base.resolve()):
            return prefix + (path.relative_to(base.resolve()).as_posix() or ".")
    return value


def recipe_command(recipe: str, argv: list[str]) -> str:
    """The command line that reproduces a run, as README tables and model cards quote it: paths are
    written relative to the repository or ``$SEZOO_DATA``, never as this machine's absolute folders."""
    args = [f"{a.split('=', 1)[0]}={portable(a.split('=', 1)[1])}" if "=" in a else a for a in argv]
    return " ".join(["python", f"recipes/{recipe}/train.py", *[shlex.quote(a) for a in args]])


def _trained_run(run_dir: Path) -> dict:
    """``run.test_only``: the finished run's own results.json (its training command and checkpoint choice)."""
    path = run_dir / "results.json"
    if not (path.exists() and (run_dir / "model.safetensors").exists()):
        raise FileNotFoundError(f"run.test_only=true: {run_dir} holds no finished run (results.json and "
                                f"model.safetensors); name the trained run with run.dir= and run.name=")
    return json.loads(path.read_text())


def fit_and_test(cfg: DictConfig, module: SEModule, datamodule: L.LightningDataModule, recipe,
                 callbacks: list[L.Callback] = (), command: str = "",
                 operating_points: dict[str, dict] | None = None, checkpoint: str = "best") -> dict:
    """Train, test the best checkpoint, and write config.yaml, results.json and the exported model.

    ``recipe``: the :class:`~sezoo.recipe.Recipe` (its name, paper and licence go into results.json).
    ``operating_points`` (name -> ``model.set_operating_point`` kwargs): after the default test, each
    point is tested too and written as a sub-folder ``<run>/<name>/`` with its own results.json and
    export (the same weights), e.g. the utilization factors of a slimmable model.
    ``checkpoint``: test and export the ``"best"`` checkpoint by validation loss, or the ``"last"`` (for a
    stage whose schedule must have finished, e.g. pruning to a target sparsity).
    """
    from sezoo.data.datamodule import DATA_TERMS, data_label

    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint={checkpoint!r}: 'best' or 'last'")
    L.seed_everything(cfg.seed, workers=True)
    run_dir = run_folder(cfg, recipe.name)
    test_only = bool(cfg.run.get("test_only"))
    if test_only:  # the run's own config.yaml and provenance stay; only the test is redone
        trained = _trained_run(run_dir)
        load_weights(module.model, run_dir)
    else:
        save_config(cfg, run_dir / "config.yaml")
    module.config = OmegaConf.to_container(cfg, resolve=True)
    trainer = build_trainer(cfg, run_dir, list(callbacks))
    if not test_only:
        trainer.fit(module, datamodule=datamodule, ckpt_path=_resume_path(cfg, run_dir))
    selected = checkpoint
    checkpoint, last = trainer.checkpoint_callbacks[:2]  # build_trainer's: the best by val/loss, the last epoch
    best = None if test_only else (checkpoint.best_model_path if selected == "best" else last.best_model_path) or None
    data_terms = DATA_TERMS.get(cfg.data.name, "trained on data whose own terms apply")
    context = {
        "recipe": recipe.name, "callbacks": callbacks, "command": command or recipe_command(recipe.name, []),
        "about": {
            "data": data_label(cfg.data),
            "stage": cfg.get("stage"),
            "init_from": portable(str(cfg.init_from)) if cfg.get("init_from") else None,
            "paper": {"title": recipe.paper.title, "citation": recipe.paper.citation, "url": recipe.paper.url},
            "licence": f"weights {recipe.licence}; {data_terms}",
            # The score the checkpoint was chosen on, so that studies compare runs from results.json alone.
            "selection": {"monitor": checkpoint.monitor, "mode": checkpoint.mode, "steps": trainer.global_step,
                          "best": None if checkpoint.best_model_score is None else float(checkpoint.best_model_score)},
        },
    }
    if test_only:  # what trained the weights, as the training run recorded it, and what tested them now
        context["command"] = trained["command"]
        context["about"].update({k: trained[k] for k in ("checkpoint", "selection", "init_from") if k in trained})
        context["about"]["retested"] = command or recipe_command(recipe.name, [])
    results = _test_and_export(trainer, module, datamodule, best, run_dir, **context)
    for name, point in (operating_points or {}).items():
        module.model.set_operating_point(**point)
        _test_and_export(trainer, module, datamodule, best, run_dir / name, operating_point=point, **context)
    if trainer.is_global_zero:
        print(f"run folder: {run_dir}")
    return results


def _test_and_export(trainer: L.Trainer, module: SEModule, datamodule, best: str | None, folder: Path, recipe: str,
                     callbacks, command: str, about: dict, operating_point: dict | None = None) -> dict:
    tested = trainer.test(module, datamodule=datamodule, ckpt_path=best)[0]
    if not trainer.is_global_zero:
        return {}
    cost_meter = next(c for c in trainer.callbacks if isinstance(c, CostMeter))
    results = {
        "recipe": recipe,
        "run": folder.name,
        "checkpoint": portable(best) if best else None,
        # What was tested: limit_test_batches may cut the split (test batches hold one utterance).
        "n_test_files": min(len(datamodule.datasets["test"]), int(sum(trainer.num_test_batches)) * trainer.world_size),
        "metrics": {k: tested[f"test/{k}"] for k in QUALITY_KEYS + DNSMOS_KEYS if f"test/{k}" in tested},
        "input_metrics": {k: tested[f"test/input/{k}"] for k in QUALITY_KEYS + DNSMOS_KEYS if f"test/input/{k}" in tested},
        "cost": cost_meter.last,
        "command": command,
        **about,
    }
    if operating_point is not None:
        results["operating_point"] = operating_point
    if "test/util/mean" in tested:  # dynamic models: mean utilization over the test utterances
        results["utilization"] = {k.removeprefix("test/util/"): v for k, v in tested.items() if k.startswith("test/util/")}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    # A stage may have changed the model's architecture (pruned units removed): the export records the
    # kwargs of the model it tests, which the model itself recorded when it was built.
    extra = {"recipe": recipe, "results": results, "operating_point": operating_point}
    for callback in callbacks:  # e.g. QAT: the quantizer ranges the deployed model needs
        extra.update(getattr(callback, "export_metadata", lambda _: {})(module))
    export_model(module.model, folder, extra=extra)
    print_results(results)
    return results
