"""`sezoo sweep`: W&B-format sweeps proposed by the W&B sweep engine, run here offline, resumable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import FAST_TRAINER, REPO, TINY_MODEL, load_recipe
from sezoo.sweep import STATE_FILE, Sweep, build_command, load_sweep_config, sweep_rows

pytest.importorskip("sweeps", reason="the W&B sweep engine: pip install --no-deps sweeps==0.3.0 (make install does)")
RECIPES = ("dyncp", "tinylstm", "dynslim", "sparsity")


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_sweep_proposes_runs_its_recipe_accepts(recipe):
    """Each sweep.yaml passes W&B's schema, and every run the engine proposes is a valid config of the recipe."""
    sweep = Sweep(REPO / "recipes" / recipe / "sweep.yaml")
    commands = []
    sweep.run(dry_run=True, log=commands.append)
    grid = 1
    for spec in sweep.config["parameters"].values():
        grid *= len(spec.get("values", [None]))
    assert len(commands) == grid >= 3
    train = load_recipe(recipe)
    for line in commands:
        argv = line.split()[2:]
        assert argv[-1].startswith("run.name=sweeps/sweep/r")
        train.RECIPE.config(argv)  # raises on an unknown key, a bad type or an unknown variant


def test_command_macros_as_wandb_agent_fills_them(tmp_path):
    program = tmp_path / "train.py"
    args = {"a.b": 0.5, "flag": False}
    assert build_command({"command": ["${env}", "python", "${program}", "${args_no_hyphens}"]}, program, args) == \
        [sys.executable, str(program), "a.b=0.5", "flag=False"]
    assert build_command({}, program, args) == [sys.executable, str(program), "--a.b=0.5", "--flag=False"]
    assert build_command({"command": ["${interpreter}", "${program}", "${args_no_boolean_flags}"]}, program, args) == \
        [sys.executable, str(program), "--a.b=0.5"]
    with pytest.raises(ValueError, match=r"\$\{args_json_file\}"):
        build_command({"command": ["${program}", "${args_json_file}"]}, program, args)


def test_bad_sweep_files_name_file_and_key(tmp_path):
    broken = tmp_path / "flow.yaml"
    broken.write_text("program: x.py\nmethod: grid\nparameters: {a: {values: [1]}}\ncommand: [${env}, ${program}]\n")
    with pytest.raises(ValueError, match=r"(?s)flow\.yaml: not valid YAML.*block list"):
        load_sweep_config(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("program: x.py\nmethod: gird\nparameters: {a: {values: [1]}}\n")
    with pytest.raises(ValueError, match=r"wrong\.yaml: 'gird' is not one of"):
        load_sweep_config(wrong)
    missing = tmp_path / "missing.yaml"
    missing.write_text("method: grid\nparameters: {a: {values: [1]}}\n")
    with pytest.raises(ValueError, match="missing key 'program'"):
        load_sweep_config(missing)
    endless = tmp_path / "random.yaml"
    endless.write_text(f"program: {REPO / 'recipes/dyncp/train.py'}\nmethod: random\n"
                       "parameters: {a: {values: [1, 2]}}\n")
    with pytest.raises(ValueError, match="--count"):
        Sweep(endless, runs_dir=tmp_path).run()


@pytest.fixture
def keep_sweep(trained, tiny_corpus, tmp_path) -> Path:
    """The bar's sweep: the DynCP keep ratio, 3 values, tiny model, a few steps, from the tiny dense run."""
    run, _, _ = trained
    fixed = [*TINY_MODEL, *[a for a in FAST_TRAINER if not a.startswith("stage=")], "stage=gated",
             f"init_from={run}", f"data.root={tiny_corpus}"]
    parameters = {"utilization.target": {"values": [0.25, 0.5, 0.75]}}
    parameters.update({k: {"value": yaml.safe_load(v)} for k, v in (a.split("=", 1) for a in fixed)})
    config = {"program": str(REPO / "recipes/dyncp/train.py"), "method": "grid",
              "metric": {"name": "val/loss", "goal": "minimize"}, "parameters": parameters,
              "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]}
    path = tmp_path / "keep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sweep_cli(sweep_file: Path, runs: Path) -> list[str]:
    return [sys.executable, "-m", "sezoo.cli", "sweep", str(sweep_file), "--runs-dir", str(runs)]


def _state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"runs": []}


def test_killed_sweep_resumes_without_repeating_a_finished_run(keep_sweep, tmp_path):
    runs = tmp_path / "runs"
    folder = runs / "dyncp" / "sweeps" / "keep"
    env = dict(os.environ, WANDB_MODE="disabled")
    sweep = subprocess.Popen(_sweep_cli(keep_sweep, runs), cwd=tmp_path, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it while the second run trains, the first one finished
        states = {r["id"]: r["state"] for r in _state(folder)["runs"]}
        if states.get("r000") == "finished" and states.get("r001") == "running":
            break
        assert sweep.poll() is None, sweep.stdout.read()
        time.sleep(0.2)
    else:
        pytest.fail("the sweep did not reach its second run")
    time.sleep(2)  # r001 is training now
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    first_log = (folder / "r000" / "train.log").read_text()

    done = subprocess.run(_sweep_cli(keep_sweep, runs), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "r001 was cut off; resuming it" in done.stdout
    state = _state(folder)
    assert [(r["id"], r["state"], r["params"]["utilization.target"]) for r in state["runs"]] == \
        [("r000", "finished", 0.25), ("r001", "finished", 0.5), ("r002", "finished", 0.75)]
    assert (folder / "r000" / "train.log").read_text() == first_log  # never run again
    resumed = (folder / "r001" / "train.log").read_text()
    assert resumed.count("\n# ") == 2 and "run.resume=True" in resumed.split("\n# ")[-1]

    rows = sweep_rows(folder)
    assert [row["utilization.target"] for row in rows] == [0.25, 0.5, 0.75]
    for row in rows:
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert row["pesq_wb"] == results["metrics"]["pesq_wb"] and row["metric"] is not None
    assert "| r002 | 0.75 | finished |" in done.stdout  # the gathered table

    again = subprocess.run(_sweep_cli(keep_sweep, runs), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and len(_state(folder)["runs"]) == 3  # a finished grid starts nothing

    other = keep_sweep.with_name("keep.yaml")
    config = yaml.safe_load(other.read_text())
    config["parameters"]["utilization.target"]["values"] = [0.1]
    other.write_text(yaml.safe_dump(config))
    clash = subprocess.run(_sweep_cli(other, runs), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert clash.returncode == 2 and "a different sweep already lives here" in clash.stderr

    # ... and `sezoo compare` over the sweep's runs and a zoo model: one PNG, one table, the front marked
    out = tmp_path / "cmp"
    compared = subprocess.run([sys.executable, "-m", "sezoo.cli", "compare", str(folder), "dyncp/mini2-causal-dense",
                               "--out", str(out / "pareto.png"), "--table", str(out / "table.md"),
                               "--json", str(out / "points.json")], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
    assert compared.returncode == 0, compared.stderr
    import matplotlib.image

    assert matplotlib.image.imread(out / "pareto.png").shape[:2] == (676, 1040)
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + 4 and table[0].startswith("| model | source |")
    assert {line.split(" | ")[1] for line in table[2:]} == {"sweep", "zoo"}
    points = json.loads((out / "points.json").read_text())
    assert [p["label"].split(" ")[0] for p in points] == ["keep/r000", "keep/r001", "keep/r002", "dyncp/mini2-causal-dense"]
    assert points[0]["metrics"]["pesq_wb"] == rows[0]["pesq_wb"]
    assert any(p["front"] for p in points)


def test_pareto_front_keeps_only_undominated_points():
    from sezoo.compare import Point, markdown, pareto_front

    def point(label, macs, pesq):
        return Point(label, "run", "r", label, {"pesq_wb": pesq, "stoi": 0.8, "si_sdr": 5.0}, {"pesq_wb": 1.2},
                     macs * 1e6, 1000)

    points = [point("a", 10, 1.5), point("b", 20, 1.4), point("c", 30, 1.8), point("d", 5, 1.2), point("e", 30, 1.7)]
    assert [p.label for p in pareto_front(points, "macs", "pesq_wb")] == ["d", "a", "c"]
    rows = markdown(points).splitlines()[2:]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == ["d", "a", "b", "c", "e"]
    assert [r.rstrip(" |").endswith("yes") for r in rows] == [True, True, False, True, False]
