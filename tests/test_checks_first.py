"""What would fail inside a notebook after others ran fails first: in ``--check``, in the runner
before its first notebook, and in papermill's own command line.

``--check`` executes the notebooks in plan mode up to their training calls (every config they
would train is validated) and each other notebook's parameters cell; the runner does the same
before it executes anything. papermill given a parameter the notebook does not declare stops
with that name and the declared ones; a bad value ends in one line on top of its error, not in
the middle of a 60-line traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_bad_input import REPO, refused, run

PLUGIN = """\
from ckd_lib.methods import register_method
register_method("NOREC", ["ce", "kd"])
"""


def bad_profile(tmp_path, notebooks: str, plugins: str = "") -> str:
    (tmp_path / "norec.py").write_text(PLUGIN)
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: tiny\n{plugins}notebooks:\n{notebooks}  90_report: {{}}\n")
    return str(path)


CASES = {
    "an unknown method": ("  20_same_arch: {methods: [CE, NOPE]}\n",
                          ["notebook 20_same_arch", "method='NOPE' is not accepted",
                           "CE, KD, DKD, CKD"]),
    "a plugin method without a recipe": (
        "  20_same_arch: {methods: [CE, NOREC]}\n",
        ["method NOREC (", "norec.py) has no recipe and borrows none", "recipe_from='CKD'"]),
    "a negative epoch_scale": ("  00_environment: {}\n  20_same_arch: {epoch_scale: -1}\n",
                               ["notebook 20_same_arch", "epoch_scale=-1 must be positive"]),
    "a bad pair in a notebook that trains nothing": (
        "  50_efficiency: {pair: resnet56}\n",
        ["notebook 50_efficiency", "pair 'resnet56' is not written as 'teacher->student'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_refuses_what_a_notebook_would_refuse_later(tmp_path, case):
    notebooks, fragments = CASES[case]
    profile = bad_profile(tmp_path, "  10_teachers: {}\n" + notebooks,
                          f"plugins: [{tmp_path / 'norec.py'}]\n")
    refused(run("ckd_lib.study", "--profile", profile, "--results-dir", tmp_path / "results",
                "--check"), "checking", *fragments)
    assert not (tmp_path / "results").exists()


def test_the_runner_checks_every_notebook_before_the_first_runs(tmp_path):
    profile = bad_profile(tmp_path, "  00_environment: {}\n  10_teachers: {}\n"
                                    "  20_same_arch: {methods: [CE, NOPE]}\n")
    refused(run("ckd_lib.study", "--profile", profile, "--results-dir", tmp_path / "results"),
            "checking notebook 20_same_arch", "'NOPE'")
    assert not (tmp_path / "results" / "bad" / "executed").exists()  # nothing ran


def papermill(tmp_path, *parameters) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CKD_PLUGINS", None)
    args = [a for name, value in parameters for a in ("-p", name, value)]
    return subprocess.run([sys.executable, "-m", "papermill", "notebooks/20_same_arch.ipynb",
                           str(tmp_path / "out.ipynb"), "-p", "profile", "tiny",
                           "-p", "results_dir", str(tmp_path / "results"), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def error_block(proc) -> list[str]:
    """What papermill's CLI says about the notebook's error: the lines after its header."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    text = proc.stdout + proc.stderr
    header = 'Exception encountered at "In ['
    assert header in text, text[-3000:]
    return text.split(header, 1)[1].splitlines()[1:]


@pytest.mark.notebooks
@pytest.mark.parametrize("parameters, first", [
    ([("epochs", "abc")], ["ParameterError: notebook 20_same_arch declares no parameter "
                           "'epochs'", "its parameters: profile, results_dir, dataset"]),
    ([("seeds", "abc")], ["ParameterError: given, notebook 20_same_arch: parameter 'seeds' "
                          "must be list[int], got 'abc'"]),
])
def test_papermill_stops_on_an_undeclared_or_bad_parameter_in_one_line(tmp_path, parameters,
                                                                         first):
    block = error_block(papermill(tmp_path, *parameters))
    assert all(fragment in block[0] for fragment in first), block[:3]
    assert not any(line.startswith(("Cell In[", "---->", "File ")) for line in block), block
    assert not (tmp_path / "results" / "tiny" / "runs").exists()  # nothing trained
