"""Search mixed-precision bit plans for a GRU with NSGA-II (Miccini et al., tinyML 2024).

``python recipes/gruquant/search.py task=se init_from=runs/gruquant/mini-fp32 [key=value ...]``
``python recipes/gruquant/search.py task=vad``  (``vad``, ``noise``, ``adding`` train their fp32 model first)
``python recipes/gruquant/search.py task=se --export-plan``  (after a search: the plan train.py fine-tunes)

The genome is one bit width per quantizer site of the task's model (every operator of every GRU
step, the input and the head); NSGA-II (pymoo: sampling, two-point crossover, polynomial mutation,
non-dominated sorting; nothing hand-written) minimises two objectives: the task's validation metric
after a short QAT fine-tune from the fp32 weights (the shared ``QuantizationAwareTraining`` callback
in a Lightning Trainer, the same batches for every genome), and the weights' size in bits
(sum of elements x bits; biases stay int32; activation buffers are reported beside it).

Everything lands in ``runs/gruquant/search/<run.name or task>/``: ``search.json`` (the config, every
evaluation by genome, each generation's genomes; rewritten atomically after every evaluation),
``data.pt`` (the task's tensors), ``fp32.safetensors``. Run the same command again after a kill: the
search replays NSGA-II from its seed with the stored evaluations (pymoo's generator is the
algorithm's own, so the replay proposes the same genomes) and evaluates only what is missing. The
uniform 2..8-bit models are evaluated first, by the same function.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `recipes` is a namespace package

import lightning as L  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from recipes.gruquant.tasks import Task, make_task  # noqa: E402
from sezoo.callbacks import QuantizationAwareTraining  # noqa: E402
from sezoo.config import load_config, load_presets  # noqa: E402
from sezoo.data.datamodule import data_root  # noqa: E402
from sezoo.nn.quant import quant_sites  # noqa: E402

FOLDER = Path(__file__).resolve().parent
STATE = "search.json"
# What an evaluation's result depends on: a search folder refuses to continue under other values.
EVALUATION_KEYS = ("task", "init_from", "seed", "finetune", "tasks")


def config(argv: list[str]) -> DictConfig:
    return load_config(FOLDER / "search.yaml", argv, presets={"variant": load_presets(FOLDER / "search_variants")})


def search_folder(cfg: DictConfig) -> Path:
    return Path(cfg.run.dir) / "gruquant" / "search" / (cfg.run.name or cfg.task)


def genome_key(genome) -> str:
    return "-".join(str(int(b)) for b in genome)


# ---------------------------------------------------------------------------- training
class TaskModule(L.LightningModule):
    """A task's model, trained on the task's loss (fp32 training and every QAT fine-tune)."""

    def __init__(self, task: Task, model: torch.nn.Module, lr: float, split: dict | None = None):
        super().__init__()
        self.task, self.model, self.lr, self.split = task, model, lr, split

    def training_step(self, batch, batch_idx):
        loss = self.task.loss(self.model, batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self):
        if self.split is not None:  # fp32 training: the validation metric after every epoch
            self.model.eval()
            self.log(f"val/{self.task.metric}", self.task.evaluate(self.model, self.split), prog_bar=True)
            self.model.train()

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


def _loader(split: dict, batch_size: int, seed: int):
    dataset = torch.utils.data.StackDataset(**split)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       generator=torch.Generator().manual_seed(seed))


def _trainer(**kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, **kw)


def train_fp32(task: Task, data: dict, settings) -> torch.nn.Module:
    """The float model of ``vad``, ``noise`` and ``adding``, trained from scratch."""
    torch.manual_seed(0)
    model = task.build_model()
    module = TaskModule(task, model, settings.lr, data["val"])
    _trainer(max_epochs=settings.epochs, gradient_clip_val=5.0).fit(module, _loader(data["train"], 32, 0))
    return model.eval()


# ---------------------------------------------------------------------------- one evaluation
class Evaluator:
    """Builds the task, its data and its fp32 model once (per worker process); evaluates genomes."""

    def __init__(self, cfg: DictConfig, folder: Path):
        from safetensors.torch import load_file

        self.cfg, self.folder = cfg, folder
        self.task = make_task(cfg, data_root(cfg.data.root))
        self.data = torch.load(folder / "data.pt", weights_only=True)
        self.model = self.task.build_model()
        self.fp32 = load_file(str(folder / "fp32.safetensors"))
        self.model.load_state_dict(self.fp32)
        self.sites = list(quant_sites(self.model))

    def __call__(self, genome: list[int]) -> dict:
        start = time.perf_counter()
        f = self.cfg.finetune
        model = self.model
        model.load_state_dict(self.fp32)
        for site in quant_sites(model).values():
            site.quantizer = None  # fresh ranges for every genome
        qat = QuantizationAwareTraining(dict(zip(self.sites, (int(b) for b in genome))), start_step=0,
                                        freeze_step=int(f.steps * f.freeze_fraction))
        if f.steps > 0:
            torch.manual_seed(self.cfg.seed)
            module = TaskModule(self.task, model.train(), f.lr)
            _trainer(max_steps=f.steps, callbacks=[qat], gradient_clip_val=5.0).fit(
                module, _loader(self.data["train"], f.batch_size, self.cfg.seed))
        else:  # post-training quantization: ranges from the first validation batch
            qat.attach(model)
        model.eval()
        for site in quant_sites(model).values():
            if site.quantizer is not None:
                site.quantizer.enabled, site.quantizer.observing = True, False
        return {"val": self.task.evaluate(model, self.data["val"]), "test": self.task.evaluate(model, self.data["test"]),
                "seconds": round(time.perf_counter() - start, 2)}


_WORKER: Evaluator | None = None


def _init_worker(cfg_container: dict, folder: str, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import warnings
    warnings.filterwarnings("ignore")
    _WORKER = Evaluator(OmegaConf.create(cfg_container), Path(folder))


def _evaluate(genome: list[int]) -> dict:
    return _WORKER(genome)


# ---------------------------------------------------------------------------- sizes
def site_sizes(model: torch.nn.Module) -> dict[str, dict]:
    """Per site: ``kind`` and ``elements`` (a weight site: its parameter's elements; an activation
    site: the width of one step's vector, i.e. the buffer a target holds for it)."""
    sites = quant_sites(model)
    widths: dict[str, int] = {}
    hooks = [site.register_forward_hook(lambda m, a, out, name=name: widths.__setitem__(name, int(out.shape[-1])))
             for name, site in sites.items()]
    example = torch.zeros(1, 2048) if hasattr(model, "stft") else torch.zeros(1, 3, model.gru.layers[0].input_size)
    QuantizationAwareTraining({"*": 8}).attach(model)  # the step loop, so that every site runs
    with torch.no_grad():
        model.eval()(example)
    for hook in hooks:
        hook.remove()
    for site in sites.values():
        site.quantizer = None
    params = dict(model.named_parameters())
    sizes = {}
    for name, site in sites.items():
        if site.param:
            owner = name.rpartition(".")[0]
            sizes[name] = {"kind": "weight", "elements": params[f"{owner}.{site.param}" if owner else site.param].numel()}
        else:
            sizes[name] = {"kind": "activation", "elements": widths[name]}
    covered = {f"{n.rpartition('.')[0]}.{s.param}".lstrip(".") for n, s in sites.items() if s.param}
    sizes["_other_parameters"] = {"kind": "int32", "elements": sum(p.numel() for n, p in params.items() if n not in covered)}
    return sizes


def size_bits(sizes: dict, sites: list[str], genome) -> tuple[int, int]:
    """(weights in bits: quantized weights at their widths + the rest (biases) at 32, activation buffers in bits)."""
    bits = dict(zip(sites, genome))
    weights = sum(sizes[s]["elements"] * bits[s] for s in sites if sizes[s]["kind"] == "weight")
    activations = sum(sizes[s]["elements"] * bits[s] for s in sites if sizes[s]["kind"] == "activation")
    return int(weights + 32 * sizes["_other_parameters"]["elements"]), int(activations)


# ---------------------------------------------------------------------------- the search
class Search:
    def __init__(self, cfg: DictConfig):
        self.cfg, self.folder = cfg, search_folder(cfg)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / STATE
        self.task = make_task(cfg, data_root(cfg.data.root))
        evaluation = {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
                      for k in EVALUATION_KEYS}
        if self.path.exists():
            self.state = json.loads(self.path.read_text())
            if self.state["evaluation"] != evaluation:
                changed = sorted(k for k in evaluation if self.state["evaluation"].get(k) != evaluation[k])
                raise ValueError(f"{self.path}: this search was run with other {', '.join(changed)}; its evaluations "
                                 f"would not compare. Use another run.name=, or delete the folder to start over")
        else:
            self.state = {"evaluation": evaluation, "evaluations": {}, "generations": [], "uniform": {}}
        self.state["search"] = OmegaConf.to_container(cfg.search, resolve=True)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.path)

    def prepare(self) -> None:
        """The task's data and fp32 model, once per folder."""
        from safetensors.torch import save_file

        if not (self.folder / "data.pt").exists():
            print(f"{self.task.name}: making the data", flush=True)
            torch.save(self.task.make_data(), self.folder / "data.pt.tmp")
            os.replace(self.folder / "data.pt.tmp", self.folder / "data.pt")
        data = torch.load(self.folder / "data.pt", weights_only=True)
        if not (self.folder / "fp32.safetensors").exists():
            if self.task.name == "se":
                model = self.task.build_model()
            else:
                print(f"{self.task.name}: training the fp32 model", flush=True)
                model = train_fp32(self.task, data, self.cfg.tasks[self.task.name])
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(self.folder / "fp32.safetensors"))
        if "fp32" not in self.state:
            from safetensors.torch import load_file

            model = self.task.build_model()
            model.load_state_dict(load_file(str(self.folder / "fp32.safetensors")))
            model.eval()
            self.state["sites"] = list(quant_sites(model))
            self.state["sizes"] = site_sizes(model)
            self.state["fp32"] = {"val": self.task.evaluate(model, data["val"]), "test": self.task.evaluate(model, data["test"]),
                                  "size_bits": 32 * sum(p.numel() for p in model.parameters())}
            self.save()

    def evaluate(self, genomes: list[list[int]], pool) -> list[dict]:
        """Every genome's result, from the store or computed (in parallel); stored as each one finishes."""
        sites, sizes = self.state["sites"], self.state["sizes"]
        missing = {genome_key(g): g for g in genomes if genome_key(g) not in self.state["evaluations"]}
        futures = {pool.submit(_evaluate, list(map(int, g))): key for key, g in missing.items()}
        for future in as_completed(futures):
            key = futures[future]
            genome = [int(b) for b in key.split("-")]
            weights, activations = size_bits(sizes, sites, genome)
            self.state["evaluations"][key] = {"genome": genome, **future.result(), "size_bits": weights,
                                              "activation_bits": activations}
            self.save()
            result = self.state["evaluations"][key]
            print(f"  {len(self.state['evaluations']):4d} {key}  val {self.task.metric} {result['val']:.4f}  "
                  f"{weights / 8192:.1f} KiB  ({result['seconds']:.0f} s)", flush=True)
        return [self.state["evaluations"][genome_key(g)] for g in genomes]

    def run(self) -> dict:
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.evaluator import Evaluator as PymooEvaluator
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.pntx import TwoPointCrossover
        from pymoo.operators.mutation.pm import PolynomialMutation
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling
        from pymoo.problems.static import StaticProblem

        self.prepare()
        s, sites = self.cfg.search, self.state["sites"]
        low, high = int(s.bits[0]), int(s.bits[1])
        if not 2 <= low <= high <= 16:
            raise ValueError(f"search.bits={list(s.bits)}: need 2 <= low <= high <= 16")
        if s.crossover != "two_point":
            raise ValueError(f"search.crossover={s.crossover!r}: only two_point (the paper group's) is wired")
        workers = max(1, int(s.workers))
        context = multiprocessing.get_context("spawn")
        cfg_container = OmegaConf.to_container(self.cfg, resolve=True)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(cfg_container, str(self.folder), 1 if workers > 1 else torch.get_num_threads())) as pool:
            uniform = [[int(b)] * len(sites) for b in self.cfg.uniform]
            print(f"{self.task.name}: {len(sites)} sites; uniform {list(self.cfg.uniform)} bits", flush=True)
            self.evaluate(uniform, pool)
            self.state["uniform"] = {str(g[0]): genome_key(g) for g in uniform}
            self.save()

            problem = Problem(n_var=len(sites), n_obj=2, xl=low, xu=high, vtype=int)
            sampling = IntegerRandomSampling()
            if s.get("initial", "random") == "uniform":
                # The uniform plans (already evaluated) join the first population, the rest is drawn at
                # random. NSGA-II's crossover can then splice the wide plans' sensitive sites into the
                # narrow ones from generation 1 instead of waiting for random draws to find them.
                seeded = [g for g in uniform if low <= g[0] <= high][: int(s.population)]
                # Drawn from the search's seed here, not through pymoo's sampling: pymoo 0.6.2's operators
                # take their generator from the algorithm, and called on their own draw from an unseeded
                # one, which a resumed search could not replay.
                drawn = np.random.default_rng(int(self.cfg.seed)).integers(
                    low, high + 1, size=(int(s.population) - len(seeded), len(sites)))
                sampling = np.vstack([np.array(seeded, dtype=float).reshape(-1, len(sites)), drawn])
            elif s.get("initial", "random") != "random":
                raise ValueError(f"search.initial={s.initial!r}: random | uniform")
            algorithm = NSGA2(pop_size=int(s.population), sampling=sampling,
                              crossover=TwoPointCrossover(prob=float(s.crossover_prob)),
                              mutation=PolynomialMutation(prob=float(s.mutation_prob), eta=float(s.mutation_eta),
                                                          repair=RoundingRepair()),
                              eliminate_duplicates=True)
            algorithm.setup(problem, termination=("n_gen", int(s.generations)), seed=int(self.cfg.seed), verbose=False)
            generation = 0
            while algorithm.has_next():
                population = algorithm.ask()
                genomes = np.clip(np.rint(population.get("X")), low, high).astype(int).tolist()
                replayed = generation < len(self.state["generations"])
                if not replayed:
                    print(f"{self.task.name}: generation {generation + 1}/{s.generations}", flush=True)
                results = self.evaluate(genomes, pool)
                objectives = np.array([[self.task.objective(r["val"]), r["size_bits"]] for r in results], dtype=float)
                PymooEvaluator().eval(StaticProblem(problem, F=objectives), population)
                algorithm.tell(infills=population)
                keys = [genome_key(g) for g in genomes]
                if replayed and self.state["generations"][generation] != keys:
                    raise RuntimeError(f"{self.path}: the replay proposed other genomes at generation {generation + 1} "
                                       f"than the stored run (a different pymoo version?); use another run.name=")
                if not replayed:
                    self.state["generations"].append(keys)
                    self.save()
                generation += 1
        self.state["done"] = True
        self.save()
        return self.state


def confirm(cfg: DictConfig, steps: int, saving: float | None = None, seeds: int = 2) -> dict:
    """The chosen plan (``--export-plan``'s rule) against uniform 8-bit, both fine-tuned ``steps`` QAT
    steps from the fp32 model at each of ``seeds`` seeds, scored on the validation and test splits.

    The search ranks thousands of steps' worth of genomes on 30 steps each: a screen. Whether the plan
    it picked matches 8-bit is a question for the same, longer fine-tune of both; the test split, which
    no choice looked at, answers it. Written to ``confirm.json`` in the search folder."""
    from recipes.gruquant.report import export_plan

    folder = search_folder(cfg)
    plan = export_plan(folder, saving)
    state = json.loads((folder / STATE).read_text())
    int8 = [8] * len(state["sites"])
    runs = []
    for seed in range(seeds):
        evaluator = Evaluator(OmegaConf.merge(cfg, {"seed": seed, "finetune": {"steps": steps}}), folder)
        runs.append({"seed": seed, "int8": evaluator(int8), "plan": evaluator(plan["genome"])})
        print(f"{state['evaluation']['task']} seed {seed}: int8 val {runs[-1]['int8']['val']:.4g} test "
              f"{runs[-1]['int8']['test']:.4g} | plan val {runs[-1]['plan']['val']:.4g} test {runs[-1]['plan']['test']:.4g}",
              flush=True)
    mean = {who: {split: float(np.mean([r[who][split] for r in runs])) for split in ("val", "test")}
            for who in ("int8", "plan")}
    out = {"task": state["evaluation"]["task"], "steps": steps, "rule": plan["rule"], "genome": plan["genome"],
           "size_bits": plan["size_bits"], "int8_size_bits": plan["int8"]["size_bits"], "saving": plan["saving"],
           "runs": runs, "mean": mean}
    (folder / "confirm.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-plan", action="store_true",
                        help="write plan.json: the smallest searched plan at or above uniform 8-bit's validation metric")
    parser.add_argument("--saving", type=float, default=None,
                        help="with --export-plan: instead, the best-metric plan at least this fraction smaller than "
                             "uniform 8-bit (its full fine-tune decides whether it reaches 8-bit's metric)")
    parser.add_argument("--confirm", type=int, metavar="STEPS", default=None,
                        help="fine-tune the exported plan and uniform 8-bit STEPS QAT steps each (two seeds) and "
                             "compare them on val and test (confirm.json)")
    parser.add_argument("overrides", nargs="*", help="key=value (search.yaml)")
    args = parser.parse_args(argv)
    cfg = config(args.overrides)
    if args.saving is not None and not ((args.export_plan or args.confirm) and 0.0 < args.saving < 1.0):
        parser.error(f"--saving {args.saving}: a fraction in (0, 1), with --export-plan or --confirm")
    if args.confirm is not None:
        if args.confirm < 1:
            parser.error(f"--confirm {args.confirm}: a number of fine-tuning steps (e.g. 300)")
        return confirm(cfg, args.confirm, args.saving)
    if args.export_plan:
        from recipes.gruquant.report import export_plan

        return export_plan(search_folder(cfg), args.saving)
    return Search(cfg).run()


if __name__ == "__main__":
    from sezoo.recipe import run_cli

    sys.exit(run_cli(main, sys.argv[1:]))
