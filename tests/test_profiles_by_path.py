"""A profile given by its path: its report's commands work as shown, the index describes it,
and a file named like another profile's results folder is refused before anything runs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

from test_bad_input import REPO, refused, run

from ckd_lib.study.profiles import claim_results, load_profile

PROFILE = """\
description: A profile given by its path, for the test.
extends: tiny
notebooks:
  90_report: {}
"""


def test_a_profile_by_path_is_reproducible_by_the_commands_its_report_shows(tmp_path):
    mine = tmp_path / "elsewhere" / "mybyp.yaml"
    mine.parent.mkdir()
    mine.write_text(PROFILE)
    results = tmp_path / "results"
    proc = run("ckd_lib.study", "--profile", mine, "--results-dir", results)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert json.loads((results / "mybyp" / "profile.json").read_text())["reference"] == str(mine)
    report = (results / "mybyp" / "report.html").read_text()
    shown = re.findall(r'class="ckd-cmd">([^<]+)<', report)
    assert f"make reproduce PROFILE={mine}" in shown, shown
    study = next(c for c in shown if c.startswith("python -m ckd_lib.study"))
    assert study == f"python -m ckd_lib.study --profile {mine} --only 90_report"
    # the commands as shown: the runner's finds its profile (and its notebook up to date) ...
    again = run(*shlex.split(study)[2:], "--results-dir", results)
    assert again.returncode == 0 and "up to date, skipped" in again.stdout, again.stderr
    # ... and make hands the profile's path to the runner unchanged
    make = subprocess.run(["make", "-n", *shlex.split(shown[0])[1:]], cwd=REPO,
                          capture_output=True, text=True)
    assert f"-m ckd_lib.study --profile {mine} " in make.stdout, make.stdout + make.stderr
    index = (results / "report.html").read_text()
    assert "A profile given by its path, for the test." in index and str(mine) in index


def test_a_profile_inside_the_project_is_shown_by_its_relative_path(tmp_path):
    from ckd_lib.study.profiles import results_command_form

    example = REPO / "docs" / "examples" / "foo_profile.yaml"
    claim_results(load_profile(example), tmp_path)
    assert results_command_form("foo_profile", tmp_path) == "docs/examples/foo_profile.yaml"
    assert results_command_form("tiny", tmp_path) == "tiny"  # no profile.json: the name


def test_a_file_named_like_a_built_in_profile_is_refused(tmp_path):
    demo = tmp_path / "demo.yaml"
    demo.write_text(PROFILE)
    refused(run("ckd_lib.study", "--profile", demo, "--results-dir", tmp_path / "r", "--check"),
            f"profile file {demo} is named like the built-in profile demo",
            "results/demo/", "rename the file")
    assert not (tmp_path / "r").exists()
    # the built-in file itself, by its path, is the built-in profile
    shipped = REPO / "notebooks" / "profiles" / "demo.yaml"
    assert load_profile(shipped).reference == "demo"


def test_another_file_of_the_same_name_is_refused_its_results_folder(tmp_path):
    first, second = tmp_path / "a" / "same.yaml", tmp_path / "b" / "same.yaml"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text(PROFILE)
    results = tmp_path / "results"
    claim_results(load_profile(first), results)  # what the runner does before the first notebook
    before = (results / "same" / "profile.json").read_bytes()
    refused(run("ckd_lib.study", "--profile", second, "--results-dir", results, "--check"),
            f"holds the results of profile {first}, not of {second}", "rename")
    assert (results / "same" / "profile.json").read_bytes() == before
    assert run("ckd_lib.study", "--profile", first, "--results-dir", results,
               "--check").returncode == 0
