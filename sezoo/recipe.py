"""The recipe contract: a recipe declares what it is; this module runs it the same way for all.

A recipe's ``train.py`` is a declaration::

    RECIPE = Recipe(
        name="tinylstm",
        paper=Paper(title=..., citation=...),
        stages={"fp32": None, "pruned": "fp32", "int8": "pruned", "skip": "int8"},
        build=build_stage,              # the stage's config -> StageBuild(module, callbacks, ...)
        run_names={"int8": "pruned-int8"},
    )
    main = RECIPE.main
    if __name__ == "__main__":
        RECIPE.cli()

and gets, with no code of its own:

- the config: the shared defaults, the recipe's ``config.yaml``, the presets ``data=NAME`` and
  ``variant=NAME`` (``variants/NAME.yaml``), then the command line, all checked (:mod:`sezoo.config`);
- the stages as data: ``{stage: the stage it starts from}``. ``stage=NAME`` runs one stage, which
  starts from ``init_from=<run folder or zoo name>`` when it has a previous stage; ``stage=all`` runs
  the chain that ends in the last declared stage, each stage from the run folder of the one before,
  into ``<run.name>-<stage>`` folders (``run_names`` renames a stage's suffix);
- training, testing and export (:func:`sezoo.training.fit_and_test`), with the paper and licence the
  recipe declares written into every ``results.json`` (and so into every zoo entry it publishes);
- one error policy (:meth:`Recipe.cli`): a config, data or model error is one ``error:`` line that
  names the key, file or value, exit status 2, never a traceback (``SEZOO_DEBUG=1`` shows it).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sezoo.config import ConfigError, apply_overrides, load_config, load_presets
from sezoo.zoo.entry import Paper

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass
class StageBuild:
    """What a recipe's ``build`` returns for one stage."""
    module: object                      # the SEModule subclass, its ``model`` the network to export
    callbacks: list = field(default_factory=list)  # shared callbacks (UtilizationLoss, QAT, ...)
    operating_points: dict[str, dict] | None = None  # name -> set_operating_point kwargs, tested and exported each
    checkpoint: str = "best"  # which checkpoint is tested and exported: "best" (by val/loss) or "last"


class Recipe:
    """A recipe: name, paper, stages as data, and how to build a stage from its config.

    Args:
        name: the folder under ``recipes/`` and the zoo prefix (``dyncp``).
        paper: the publication the recipe reproduces (cards and entries cite it).
        stages: ``{stage: previous stage or None}``, in order; ``stage=all`` runs the chain ending
            in the last one.
        build: ``cfg -> StageBuild`` for ``cfg.stage``. It receives the stage's own copy of the
            config and may fill stage-dependent defaults in it (e.g. the stage's epochs).
        licence: the licence of the weights the recipe trains (the data's terms are added to it).
        run_names: ``{stage: folder suffix}`` for ``stage=all``, or a callable ``(stage, cfg) -> suffix``;
            default: the stage's name.
        folder: where ``config.yaml`` and ``variants/`` are (default ``recipes/<name>``).
    """

    def __init__(self, name: str, paper: Paper, stages: Mapping[str, str | None], build: Callable[[DictConfig], StageBuild],
                 licence: str = "Apache-2.0", run_names: Mapping[str, str] | Callable[[str, DictConfig], str] | None = None,
                 folder: str | Path | None = None):
        stages = dict(stages)
        if not stages:
            raise ValueError(f"recipe {name}: declare at least one stage")
        for stage, previous in stages.items():
            if previous is not None and previous not in stages:
                raise ValueError(f"recipe {name}: stage {stage!r} starts from {previous!r}, which is not a stage")
            if stage == "all":
                raise ValueError(f"recipe {name}: 'all' is reserved for the whole chain")
        self.name, self.paper, self.stages, self.build, self.licence = name, paper, stages, build, licence
        self.run_names = run_names or {}
        self.folder = Path(folder) if folder else RECIPES_DIR / name

    # ------------------------------------------------------------------ config
    @property
    def chain(self) -> list[str]:
        """The stages ``stage=all`` runs: the last declared stage and its ancestors, first first."""
        chain, stage = [], list(self.stages)[-1]
        while stage is not None:
            chain.insert(0, stage)
            stage = self.stages[stage]
        return chain

    def config(self, argv: list[str]) -> DictConfig:
        from sezoo.data.datamodule import DATA_PRESETS

        presets = {"data": DATA_PRESETS}
        if (self.folder / "variants").is_dir():
            presets["variant"] = load_presets(self.folder / "variants")
        cfg = load_config(self.folder / "config.yaml", argv, presets=presets)
        if cfg.get("stage") not in (*self.stages, "all"):
            raise ConfigError(f"stage={cfg.get('stage')!r}: choose from {', '.join(self.stages)}, all")
        if cfg.run.resume and cfg.stage != "all":
            cfg = self._resumed(cfg, argv, presets)
        return cfg

    def _resumed(self, cfg: DictConfig, argv: list[str], presets: dict) -> DictConfig:
        """``run.resume=true``: the run's own ``config.yaml`` (over the recipe's, for keys added since),
        then this command line. Rebuilding from the defaults would silently drop what the first command
        set and a resume does not repeat, e.g. a learning-rate decay."""
        from sezoo.training import run_folder

        saved = run_folder(cfg, self.name) / "config.yaml"
        if not saved.exists():
            return cfg
        base = OmegaConf.merge(load_config(self.folder / "config.yaml"), OmegaConf.load(saved))
        print(f"run.resume: continuing {saved.parent} with its config.yaml and this command's overrides")
        return apply_overrides(base, argv, presets)

    def suffix(self, stage: str, cfg: DictConfig) -> str:
        if callable(self.run_names):
            return self.run_names(stage, cfg)
        return self.run_names.get(stage, stage)

    # ------------------------------------------------------------------ running
    def run_stage(self, cfg: DictConfig, command: str) -> dict:
        """Train, test and export one stage (``cfg.stage``)."""
        from sezoo.data.datamodule import SEDataModule
        from sezoo.training import fit_and_test

        previous = self.stages[cfg.stage]
        if previous is not None and not cfg.get("init_from"):
            raise ConfigError(f"stage={cfg.stage} starts from a {previous} run: set init_from=<its run folder or zoo "
                              f"name>, or run stage=all")
        built = self.build(cfg)
        datamodule = SEDataModule(cfg.data, min_samples=built.module.model.min_samples)
        return fit_and_test(cfg, built.module, datamodule, self, built.callbacks, command=command,
                            operating_points=built.operating_points, checkpoint=built.checkpoint)

    def main(self, argv: list[str]) -> dict:
        """Run ``train.py`` with these command-line overrides; returns the last stage's results."""
        from sezoo.training import recipe_command

        cfg = self.config(argv)
        command = recipe_command(self.name, argv)
        if cfg.stage != "all":
            return self.run_stage(cfg, command)
        from sezoo.training import run_folder

        base = cfg.run.name or time.strftime("%Y%m%d-%H%M%S")
        previous_run, results = cfg.get("init_from"), {}
        for stage in self.chain:
            staged = cfg.copy()
            staged.stage, staged.run.name = stage, f"{base}-{self.suffix(stage, cfg)}"
            if "init_from" in staged:
                staged.init_from = previous_run
            results = self.run_stage(staged, command)
            previous_run = str(run_folder(staged, self.name))
        return results

    def cli(self, argv: list[str] | None = None) -> None:
        """``python recipes/<name>/train.py``: :meth:`main` under the one error policy."""
        sys.exit(run_cli(self.main, sys.argv[1:] if argv is None else argv))


def recipe_errors() -> tuple[type[BaseException], ...]:
    """The errors a user causes (config, data, model settings, weights), reported without a traceback."""
    return (ConfigError, FileNotFoundError, KeyError, ValueError, NotADirectoryError, OmegaConfBaseException)


def run_cli(main: Callable[[list[str]], object], argv: list[str]) -> int:
    try:
        main(argv)
    except recipe_errors() as err:
        if os.environ.get("SEZOO_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
