"""Fixtures shared by test modules.

``tiny_study``: the ``tiny`` profile executed once per session by the local runner (about two
minutes on 2 cores): the notebooks test checks what it left behind, and the SLURM test compares
its own results with it (the same runs through ``--executor slurm`` must give the same numbers).
"""

from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> LocalStudy:
    results_dir = tmp_path_factory.mktemp("tiny_local")
    lines = []
    with open(results_dir / "kernel.log", "w") as log:
        runner = Runner(load_profile("tiny"), results_dir=str(results_dir), log=lines.append,
                        stdout=log, stderr=log, sync_pairs=False)
        code = runner.run()
    return LocalStudy(results_dir, runner, code, lines, (results_dir / "kernel.log").read_text())
