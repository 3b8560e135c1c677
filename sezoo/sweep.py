"""``sezoo sweep``: a W&B-format sweep run on this machine, without a W&B server.

The W&B sweep engine itself (the ``sweeps`` package, what W&B's servers run) proposes every run:
grid, random or bayes, from the same ``sweep.yaml`` that ``wandb sweep`` + ``wandb agent`` take. What
W&B's agent does around it is done here, because the agent needs a W&B login and a server: turn a
proposal into the YAML's ``command`` (its ``${env}``, ``${interpreter}``, ``${program}``, ``${args...}``
macros, with W&B's own argument formats from ``wandb.sdk.launch.sweeps.utils``), run the recipe's own
training in its own run folder, read back the metric, keep the sweep's state on disk.

Layout: ``<run.dir>/<recipe>/sweeps/<name>/`` holds ``sweep.json`` (the config and every run: its
parameters, state, exit status) and one run folder per run (``r000/``, ``r001/``, ...), each an ordinary
run folder (``results.json``, checkpoints, ``train.log``) that ``sezoo compare`` and ``sezoo report`` read.

A killed sweep resumes: finished runs are never repeated, a run that was cut off continues from its
last checkpoint (``run.resume=true``), and new proposals follow. One sweep folder takes one
``sezoo sweep`` at a time (a lock, released by the kernel even when the process is killed).
"""
from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

STATE_FILE = "sweep.json"
RESULTS_TABLE = "results.md"
FINISHED, RUNNING, FAILED = "finished", "running", "failed"


def _engine():
    """The ``sweeps`` package, imported on use: it pins numpy < 2 in its metadata yet runs under numpy 2,
    so it is installed without its dependencies (``make install`` does this) and is not a core requirement."""
    try:
        with warnings.catch_warnings():  # its pydantic models still spell v1 config keys
            warnings.simplefilter("ignore", UserWarning)
            import sweeps
    except ImportError as err:
        raise RuntimeError("sezoo sweep needs the W&B sweep engine: pip install --no-deps sweeps==0.3.0 "
                           "(its numpy<2 pin is stricter than it needs; `make install` does this)") from err
    return sweeps


# ---------------------------------------------------------------- the sweep file
def load_sweep_config(path: str | Path) -> dict:
    """The sweep YAML, checked against W&B's own sweep schema (errors name the file and the key)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sweep file (e.g. recipes/dyncp/sweep.yaml)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        hint = (" (a ${macro} cannot open a flow list [...]: write `command:` as a block list, one `- ${macro}` "
                "per line)" if "${" in path.read_text() else "")
        raise ValueError(f"{path}: not valid YAML: {err}{hint}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a sweep file is a YAML mapping (program, method, metric, parameters)")
    for key in ("program", "method", "parameters"):
        if key not in config:
            raise ValueError(f"{path}: missing key {key!r} (see https://docs.wandb.ai/guides/sweeps/sweep-config-keys)")
    sweeps = _engine()
    import jsonschema

    try:
        sweeps.SweepConfig(config)
    except jsonschema.ValidationError as err:
        where = "".join(f"{p}: " for p in err.absolute_path)  # the engine re-raises some errors without a path
        raise ValueError(f"{path}: {where}{err.message}") from None
    return config


def resolve_program(config: dict, sweep_file: Path) -> Path:
    """``program`` as W&B's agent reads it (relative to where the sweep runs), or, failing that,
    relative to the repository that holds the sweep file (``recipes/<name>/sweep.yaml``)."""
    program = Path(config["program"])
    for candidate in (program, sweep_file.resolve().parents[2] / program):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"{sweep_file}: program {config['program']!r} not found (relative to {Path.cwd()} "
                            f"or to the repository of the sweep file)")


def build_command(config: dict, program: Path, args: dict) -> list[str]:
    """The YAML's ``command`` with W&B's macros filled in, as ``wandb agent`` fills them (default
    ``${env} ${interpreter} ${program} ${args}``). The interpreter (and a literal ``python``) is this
    Python, so that the runs see the same environment as ``sezoo`` whether or not it is activated."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    variables = create_sweep_command_args({"args": {k: {"value": v} for k, v in args.items()}})
    variables.update(env=[], interpreter=[sys.executable], program=[str(program)])
    command = []
    for chunk in config.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            macro = chunk[2:-1]
            if macro not in variables or macro in ("args_dict", "args_json_file"):
                raise ValueError(f"sweep command: macro {chunk} is not supported here (use ${{args_no_hyphens}}, "
                                 f"${{args}}, ${{program}}, ${{interpreter}}, ${{env}})")
            command += [str(v) for v in variables[macro]]
        else:
            command.append(sys.executable if chunk in ("python", "python3") else chunk)
    return command


# ---------------------------------------------------------------- state
@dataclass
class SweepRunRecord:
    id: str
    params: dict
    state: str = RUNNING
    returncode: int | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None


class SweepState:
    """``sweep.json``: written whole, through a temporary file, after every change (a kill never leaves
    half a file)."""

    def __init__(self, folder: Path, config: dict, sweep_file: str):
        self.folder, self.path = folder, folder / STATE_FILE
        self.config, self.sweep_file, self.runs = config, sweep_file, []
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved["config"] != config:
                raise ValueError(f"{self.path}: a different sweep already lives here (its config differs from "
                                 f"{sweep_file}); choose another --name, or delete that folder to start over")
            self.runs = [SweepRunRecord(**r) for r in saved["runs"]]

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sweep_file": self.sweep_file, "config": self.config,
                                   "runs": [r.__dict__ for r in self.runs]}, indent=1))
        os.replace(tmp, self.path)

    def next_id(self) -> str:
        return f"r{len(self.runs):03d}"


def _lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"{folder}: another `sezoo sweep` is running on this sweep; wait for it, or stop it") from None
    return handle


# ---------------------------------------------------------------- a run's metrics
def run_history(run_dir: Path) -> tuple[list[dict], dict]:
    """What the run logged (Lightning's CSV logs, every resumed segment) and its summary: the last value
    of each logged key plus the test results of ``results.json`` as ``test/...`` and ``cost/...``."""
    history: list[dict] = []
    for csv_file in sorted((run_dir / "logs").glob("metrics*.csv"), key=lambda p: (p.name != "metrics.csv", p.name)):
        with open(csv_file, newline="") as f:
            for row in csv.DictReader(f):
                values = {k: float(v) for k, v in row.items() if v not in ("", None) and _is_float(v)}
                if values:
                    history.append(values)
    history.sort(key=lambda row: row.get("step", 0))
    summary = {k: v for row in history for k, v in row.items()}
    results = run_dir / "results.json"
    if results.exists():
        r = json.loads(results.read_text())
        summary.update({f"test/{k}": v for k, v in r["metrics"].items() if v is not None})
        summary.update({f"cost/{k}": v for k, v in r["cost"].items()})
    return history, summary


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def metric_value(run_dir: Path, metric: dict | None) -> float | None:
    """The sweep metric of a run as W&B reads it: its best logged value (by the goal), else the summary."""
    if not metric:
        return None
    history, summary = run_history(run_dir)
    values = [row[metric["name"]] for row in history if metric["name"] in row]
    if not values:
        return summary.get(metric["name"])
    return (min if metric.get("goal", "minimize") == "minimize" else max)(values)


# ---------------------------------------------------------------- the sweep
@dataclass
class Sweep:
    """One sweep folder; :meth:`run` proposes and runs until the budget or the grid ends."""
    sweep_file: Path
    name: str | None = None
    runs_dir: Path = Path("runs")

    def __post_init__(self):
        self.sweep_file = Path(self.sweep_file)
        self.config = load_sweep_config(self.sweep_file)
        self.program = resolve_program(self.config, self.sweep_file)
        self.recipe = self.program.parent.name
        self.name = self.name or self.sweep_file.stem
        self.folder = Path(self.runs_dir) / self.recipe / "sweeps" / self.name

    def run_dir(self, run_id: str) -> Path:
        return self.folder / run_id

    def command(self, record: SweepRunRecord, resume: bool) -> list[str]:
        args = dict(record.params)
        # Where the run goes is the sweep's, not the YAML's: run.dir / recipe / run.name is the run folder.
        args.update({"run.dir": str(self.runs_dir), "run.name": f"sweeps/{self.name}/{record.id}"})
        if resume:
            args["run.resume"] = True
        return build_command(self.config, self.program, args)

    def _as_engine_runs(self, state: SweepState) -> list:
        sweeps = _engine()
        runs = []
        for r in state.runs:
            history, summary = run_history(self.run_dir(r.id)) if r.state == FINISHED else ([], {})
            runs.append(sweeps.SweepRun(name=r.id, state=r.state, history=history, summary_metrics=summary,
                                        config={k: {"value": v} for k, v in r.params.items()}))
        return runs

    def propose(self, state: SweepState) -> dict | None:
        """The engine's next parameters, or None when a grid is exhausted."""
        sweeps = _engine()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proposal = sweeps.next_run(self.config, self._as_engine_runs(state))
        if proposal is None:
            return None
        return {k: v["value"] for k, v in proposal.config.items()}

    def run(self, count: int | None = None, parallel: int = 1, retry_failed: bool = False,
            dry_run: bool = False, log=print) -> SweepState:
        """Run the sweep until ``count`` runs have started in this call (resumed ones included), the
        YAML's ``run_cap`` is reached, or a grid is exhausted; ``parallel`` trainings at a time."""
        if parallel < 1:
            raise ValueError(f"--parallel {parallel}: at least 1")
        if count is None and self.config["method"] in ("random", "bayes") and "run_cap" not in self.config:
            raise ValueError(f"{self.sweep_file}: a {self.config['method']} sweep never ends by itself; "
                             f"give --count N (or run_cap in the YAML)")
        if dry_run:
            state = SweepState(self.folder, self.config, str(self.sweep_file))
            for _ in range(count or 1000):
                params = self.propose(state)
                if params is None:
                    break
                record = SweepRunRecord(state.next_id(), params, state=FINISHED)
                state.runs.append(record)
                log(" ".join(self.command(record, resume=False)))
            return state
        lock = _lock(self.folder)
        try:
            return self._run(count, parallel, retry_failed, log)
        finally:
            lock.close()

    def _run(self, count, parallel, retry_failed, log) -> SweepState:
        state = SweepState(self.folder, self.config, str(self.sweep_file))
        pending = [r for r in state.runs if r.state == RUNNING or (retry_failed and r.state == FAILED)]
        for r in pending:
            log(f"sweep {self.name}: {r.id} was cut off; resuming it from its last checkpoint" if r.state == RUNNING
                else f"sweep {self.name}: retrying {r.id}, which failed")
        run_cap = self.config.get("run_cap")
        active: dict[str, subprocess.Popen] = {}
        started = 0

        def budget_left() -> bool:
            return (count is None or started < count) and (run_cap is None or len(state.runs) < run_cap or pending)

        exhausted = False
        while True:
            while len(active) < parallel and budget_left() and (pending or not exhausted):
                if pending:
                    record, resume = pending.pop(0), True
                    record.state, record.returncode, record.ended = RUNNING, None, None
                else:
                    params = self.propose(state)
                    if params is None:
                        exhausted = True
                        break
                    record, resume = SweepRunRecord(state.next_id(), params), False
                    state.runs.append(record)
                state.save()
                active[record.id] = self._start(record, resume)
                started += 1
                log(f"sweep {self.name}: {record.id} started ({_params_text(record.params)})")
            if not active:
                break
            time.sleep(0.5)
            for run_id, proc in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[run_id]
                record = next(r for r in state.runs if r.id == run_id)
                finished = proc.returncode == 0 and (self.run_dir(run_id) / "results.json").exists()
                record.state, record.returncode, record.ended = (FINISHED if finished else FAILED), proc.returncode, time.time()
                state.save()
                log(f"sweep {self.name}: {run_id} {record.state}" + ("" if finished else
                    f" (exit status {proc.returncode}; see {self.run_dir(run_id) / 'train.log'})"))
        (self.folder / RESULTS_TABLE).write_text(markdown(self) + "\n")
        return state

    def _start(self, record: SweepRunRecord, resume: bool) -> subprocess.Popen:
        run_dir = self.run_dir(record.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(run_dir / "train.log", "a")
        log_file.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command(record, resume))}\n")
        log_file.flush()
        env = dict(os.environ, WANDB_RUN_GROUP=f"sweep-{self.recipe}-{self.name}", PYTHONUNBUFFERED="1")
        return subprocess.Popen(self.command(record, resume), stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """Linux: a training ends when its sweep is killed (else it would train on, orphaned, while the resumed
    sweep starts the same run again). prctl(PR_SET_PDEATHSIG, SIGTERM) has no Python binding."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


# ---------------------------------------------------------------- results
def sweep_rows(folder: str | Path) -> list[dict]:
    """One row per run of a sweep folder: its swept parameters (those that vary), state, metric, test
    quality and cost."""
    folder = Path(folder)
    saved = json.loads((folder / STATE_FILE).read_text())
    config, runs = saved["config"], saved["runs"]
    varying = [k for k, spec in config["parameters"].items() if "value" not in spec]
    rows = []
    for r in runs:
        run_dir = folder / r["id"]
        row = {"id": r["id"], "run_dir": str(run_dir), "state": r["state"], **{k: r["params"].get(k) for k in varying}}
        results = run_dir / "results.json"
        if r["state"] == FINISHED and results.exists():
            res = json.loads(results.read_text())
            row.update(metric=metric_value(run_dir, config.get("metric")), **res["metrics"],
                       macs_per_second=res["cost"]["macs_per_second"], model_bytes=res["cost"]["model_bytes"])
        rows.append(row)
    return rows


def markdown(sweep: Sweep | str | Path) -> str:
    folder = sweep.folder if isinstance(sweep, Sweep) else Path(sweep)
    saved = json.loads((folder / STATE_FILE).read_text())
    metric = saved["config"].get("metric", {}).get("name")
    rows = sweep_rows(folder)
    varying = [k for k, spec in saved["config"]["parameters"].items() if "value" not in spec]
    head = ["run", *varying, "state", *([f"{metric} (best)"] if metric else []), "PESQ-WB", "STOI", "SI-SDR (dB)",
            "MMAC/s", "deployable bytes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        done = "pesq_wb" in row
        cells = [row["id"], *[str(row[k]) for k in varying], row["state"]]
        if metric:
            cells.append(f"{row['metric']:.4g}" if done and row["metric"] is not None else "")
        cells += ([f"{row['pesq_wb']:.3f}", f"{row['stoi']:.3f}", f"{row['si_sdr']:.2f}",
                   f"{row['macs_per_second'] / 1e6:.2f}", f"{row['model_bytes']:,}"] if done else [""] * 5)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
