"""A profile is what a user names, in every client: the runner, papermill's CLI, JupyterLab.

Notebooks leave their parameters at None and resolve them from the profile; what is given
explicitly overrides it. Checked here: the profile chain (``extends``) and its resolution order;
that every shipped profile gives every parameter of its notebooks; that one notebook executed by
the runner and by papermill's own command line with only ``-p profile tiny`` writes identical
records, and that an explicit ``-p`` changes exactly that field; that ``papermill
--help-notebook`` says where values come from; and that the generated ``.ipynb`` files open in
Jupyter without being modified (their kernel's ``language_info`` is already there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest

from ckd_lib import results
from ckd_lib.study.notebook import parameters
from ckd_lib.study.params import ParameterError, notebook_parameters
from ckd_lib.study.profiles import available_profiles, load_profile
from ckd_lib.study.runner import Runner, language_info, sync_paired_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
BIN = Path(sys.executable).parent


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_profile_extends_another_and_states_only_its_departures(tmp_path):
    write(tmp_path, "base", """\
        common: {seeds: [0, 1, 2], dataset: cifar100, epoch_scale: 1.0}
        notebooks:
          20_same_arch: {seeds: [0, 1, 2, 3, 4], methods: [CE]}
          30_ablations: {pair: "a->b"}
        """)
    child = load_profile(write(tmp_path, "child", """\
        extends: base
        common: {seeds: [0]}
        notebooks:
          20_same_arch: {methods: [CKD]}
        """))
    declared = {"seeds": None, "dataset": None, "methods": None, "epoch_scale": None}
    values = child.values_for("20_same_arch", declared)
    # the child's common beats the base's notebook section; the child's section beats both
    assert values == {"seeds": [0], "dataset": "cifar100", "methods": ["CKD"],
                      "epoch_scale": 1.0}
    assert list(child.notebooks) == ["20_same_arch"]
    assert child.origin_of("20_same_arch", "dataset") == "base"
    assert child.origin_of("20_same_arch", "methods") == "child"
    write(tmp_path, "loop_a", "extends: loop_b\nnotebooks: {00_environment: {}}\n")
    write(tmp_path, "loop_b", "extends: loop_a\nnotebooks: {00_environment: {}}\n")
    with pytest.raises(ParameterError, match="cycle"):
        load_profile(tmp_path / "loop_a.yaml")


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_gives_every_parameter_of_its_notebooks(name):
    profile = load_profile(name)
    jobs = Runner(profile, results_dir="/nonexistent").plan()
    for job in jobs:
        missing = [k for k, v in job.parameters.items() if v is None]
        assert not missing, (job.name, missing)
    assert jobs[-1].name == profile.report == "90_report"


def test_every_notebook_defaults_to_a_profile_that_runs_it_on_a_cpu():
    for path in NOTEBOOKS:
        declared = notebook_parameters(path)
        default = declared["profile"].default
        assert path.stem in load_profile(default).notebooks, (path.stem, default)
        assert all(p.default is None for n, p in declared.items()
                   if n not in ("profile", "results_dir")), path.stem


def test_a_profile_that_does_not_run_the_notebook_names_the_ones_that_do():
    with pytest.raises(ParameterError, match=r"profile 'demo' does not run 70_imagenet; profiles "
                                             r"that do: \['imagenet', 'imagenet_demo'\]"):
        parameters("70_imagenet", {"profile": "demo", "results_dir": "results"})


def test_explicit_values_override_and_are_type_checked():
    p = parameters("20_same_arch", {"profile": "tiny", "results_dir": "x", "seeds": [7]})
    assert p.seeds == [7] and p.overrides == {"seeds": [7]}
    assert p.origin("seeds") == "given" and p.origin("dataset") == "profile tiny"
    assert p.origin("pairs") == "profile tiny" and p.origin("data_root") == "profile paper"
    with pytest.raises(ParameterError, match="parameter 'seeds' must be list\\[int\\]"):
        parameters("20_same_arch", {"profile": "tiny", "results_dir": "x", "seeds": "seven"})


def test_help_notebook_says_where_the_values_come_from(tmp_path):
    source = tmp_path / "20_same_arch.py"
    shutil.copy(ROOT / "notebooks" / source.name, source)
    notebook = sync_paired_notebook(source)  # as `make setup` writes it
    out = subprocess.run([str(BIN / "papermill"), "--help-notebook", str(notebook)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'profile: str (default "demo")' in out.stdout
    assert "giving each parameter left None" in out.stdout
    assert "seeds: list[int] (default None)" in out.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_generated_notebooks_open_without_being_modified(tmp_path, path):
    """Open and save through Jupyter's contents manager (jupytext's, as JupyterLab uses it):
    the file stays byte for byte the same, and it already holds the kernel's language_info."""
    from jupytext import TextFileContentsManager

    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "notebooks").mkdir()
    source = tmp_path / "notebooks" / path.name
    shutil.copy(path, source)
    target = sync_paired_notebook(source)
    before = target.read_bytes()
    assert nbformat.reads(before.decode(), as_version=4).metadata["language_info"] == \
        language_info()
    manager = TextFileContentsManager(root_dir=str(tmp_path))
    name = f"notebooks/{target.name}"
    model = manager.get(name)
    manager.save(model, name)
    assert target.read_bytes() == before
    assert source.read_text() == path.read_text()


def test_a_notebook_without_language_info_is_repaired_once_and_not_backed_up(tmp_path):
    """An .ipynb with the script's cells but no language_info (written by an older sync or
    another tool), newer than its script: the sync adds the kernel's language_info and keeps
    the outputs, makes no .bak (nothing was edited), and the next sync leaves it untouched."""
    source = tmp_path / "00_environment.py"
    shutil.copy(ROOT / "notebooks" / "00_environment.py", source)
    target = sync_paired_notebook(source)
    nb = nbformat.read(target, as_version=4)
    del nb.metadata["language_info"]
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="kept\n")]
    nbformat.write(nb, target)
    os.utime(source, (1, 1))  # the script older than the notebook
    sync_paired_notebook(source)
    repaired = nbformat.read(target, as_version=4)
    assert repaired.metadata["language_info"] == language_info()
    assert [o.get("text") for c in repaired.cells if c.cell_type == "code"
            for o in c.outputs] == ["kept\n"]
    assert not target.with_suffix(".ipynb.bak").exists()
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    sync_paired_notebook(source)
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before


def papermill_cli(notebook: str, out: Path, *args: str) -> str:
    """Execute a notebook with papermill's own command line; returns the executed notebook's
    text (its outputs included)."""
    source = out.parent / f"{notebook}.ipynb"
    nb = jupytext.read(ROOT / "notebooks" / f"{notebook}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nbformat.write(nb, source)
    proc = subprocess.run([str(BIN / "papermill"), str(source), str(out), "--cwd", str(ROOT),
                           "--no-progress-bar", *args], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out.read_text()


def comparable(record: dict, results_dir: Path) -> dict:
    """What must agree between two executions: the config (the teacher's checkpoint is a path
    under the results folder, so that prefix is dropped), the history's losses and accuracies,
    the best and last epochs."""
    config = dict(record["config"])
    for key in ("teacher_checkpoint", "out_dir"):
        if config.get(key):
            config[key] = str(config[key]).replace(str(results_dir), "<results>")
    return {"config": config, "best": record["best"], "last": record["last"],
            "history": [{k: v for k, v in h.items() if k.startswith(("loss_", "test_"))}
                        for h in record["history"]]}


def by_cell(folder: Path, results_dir: Path) -> dict:
    out = {}
    for record in results.load_records(folder):
        config = record["config"]
        out[(config["label"], config["student"], config["method"], config["seed"])] = \
            comparable(record, results_dir)
    return out


@pytest.mark.notebooks
def test_papermill_with_only_the_profile_equals_the_runner(tmp_path):
    runner_dir, cli = tmp_path / "runner", tmp_path / "cli"
    runner = Runner(load_profile("tiny"), results_dir=str(runner_dir), log=lambda line: None,
                    stdout=open(tmp_path / "r.log", "w"), stderr=open(tmp_path / "r.err", "w"),
                    sync_pairs=False, export_report=False)
    assert runner.run(["10_teachers", "20_same_arch"]) == 0
    runs = runner_dir / "tiny" / "runs"
    before = {p: p.read_bytes() for p in runs.glob("*/record.json")}
    # the same notebook from papermill's command line, only the profile named: the same runs
    # (every one found finished, nothing trained, no record touched)
    out = papermill_cli("20_same_arch", tmp_path / "again.ipynb", "-p", "profile", "tiny",
                        "-p", "results_dir", str(runner_dir))
    assert "5 run(s)" not in out and "4 run(s) in 3 group(s); 4 already done; 0 group(s)" in out
    assert {p: p.read_bytes() for p in runs.glob("*/record.json")} == before
    # and in a fresh folder, trained from scratch: the same configs and the same numbers
    cli.mkdir()
    for name in ("10_teachers", "20_same_arch"):
        papermill_cli(name, cli / f"{name}.out.ipynb", "-p", "profile", "tiny",
                      "-p", "results_dir", str(cli))
    expected = by_cell(runs, runner_dir)
    assert by_cell(cli / "tiny" / "runs", cli) == expected and len(expected) == 5
    # an explicit value changes exactly that field, and the banner says it was given
    out = papermill_cli("20_same_arch", cli / "seed1.ipynb", "-p", "profile", "tiny",
                        "-p", "results_dir", str(cli), "-p", "seeds", "[1]")
    assert "OVERRIDES (given explicitly, not the profile's): seeds=[1]" in out
    records = results.load_records(cli / "tiny" / "runs")
    configs = {(r["config"]["student"], r["config"]["method"], r["config"]["seed"]): r["config"]
               for r in records if r["config"]["label"] == "same_arch"}
    seed1 = {k[:2]: v for k, v in configs.items() if k[2] == 1}
    seed0 = {k[:2]: v for k, v in configs.items() if k[2] == 0}
    assert seed1.keys() == seed0.keys() and len(seed1) == 4
    for key, config in seed1.items():
        assert {k for k in config if config[k] != seed0[key][k]} == {"seed"}, key
