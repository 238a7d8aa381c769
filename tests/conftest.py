"""Fixtures shared by test modules.

``tiny_study``: the ``tiny`` profile executed once per session by the local runner (about two
minutes on 2 cores): the notebooks test checks what it left behind, and the SLURM test compares
its own results with it (the same runs through ``--executor slurm`` must give the same numbers).

``cluster`` (per test module): a real one-node SLURM (``tests/slurm_cluster.py``) for the
modules that submit jobs, skipped, saying why, where it cannot start.

``isolated_registry`` (every test): a method or plugin a test registers is gone after it, so that
tests do not see each other's methods (in the report's order and colours, or in ``CKD_PLUGINS``
passed on to kernels) whatever order they run in.

``make test`` runs the modules on up to four pytest-xdist workers (``--dist loadgroup``): a
session fixture is built once per worker, so the modules that share an expensive one are one
``xdist_group`` and go to one worker: ``tiny_study`` (test_audit, test_notebooks, test_slurm, and
test_rehearse, whose SLURM cluster must not run beside test_slurm's) and ``report_study`` (the
study of test_report.py, read by test_report_pages and test_report_browser).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckd_lib.methods import plugins, registry
from ckd_lib.study.profiles import load_profile
from ckd_lib.study.runner import Runner


@dataclass
class LocalStudy:
    results_dir: Path
    runner: Runner
    code: int
    lines: list
    kernel_output: str

    @property
    def root(self) -> Path:
        return self.results_dir / self.runner.profile.name


@pytest.fixture(autouse=True)
def isolated_registry():
    terms, methods = dict(registry._TERMS), dict(registry._METHODS)
    loaded, env = dict(plugins._LOADED), os.environ.get(plugins.ENV_VAR)
    yield
    registry._TERMS.clear()
    registry._TERMS.update(terms)
    registry._METHODS.clear()
    registry._METHODS.update(methods)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    if env is None:
        os.environ.pop(plugins.ENV_VAR, None)
    else:
        os.environ[plugins.ENV_VAR] = env


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> LocalStudy:
    results_dir = tmp_path_factory.mktemp("tiny_local")
    lines = []
    with open(results_dir / "kernel.log", "w") as log:
        runner = Runner(load_profile("tiny"), results_dir=str(results_dir), log=lines.append,
                        stdout=log, stderr=log, sync_pairs=False)
        code = runner.run()
    return LocalStudy(results_dir, runner, code, lines, (results_dir / "kernel.log").read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from slurm_cluster import SlurmCluster, skip_reason

    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    saved = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.environ())
    try:
        yield cluster
    finally:
        cluster.stop()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
