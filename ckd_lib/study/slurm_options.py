"""The cluster options of a study: a profile's ``slurm:`` section and ``--slurm KEY=VALUE``.

Why here and checked at load time: a profile is validated before anything runs, and a bad cluster
option must be refused, naming the key and the accepted ones, before a single job is submitted.
Nothing is specific to one cluster: every option has a neutral default or is left to the
cluster's own default (partition, account, ...). This module does not import submitit, so a
profile loads without it.

    slurm:
      partition: gpu          # sbatch --partition (default: the cluster's)
      account: my_project     # --account
      qos: normal             # --qos
      time_min: 720           # time limit of every job, minutes; runs longer than that
                              #   checkpoint on the signal and requeue themselves
      gpus_per_task: 1        # GPUs per process (0: a CPU cluster); a multi-process run
                              #   (nproc_per_node: 8) asks --gpus-per-node=8, one per process
      cpus_per_task: 8        # CPUs per process (DataLoader workers + 1)
      mem_gb: 64              # --mem per job (default: the cluster's)
      constraint: "a100|h100" # --constraint
      sbatch: {exclusive: true, mail-type: END}   # any other sbatch option
      setup: ["module load cuda/12.4"]             # shell lines before the job's command
      max_requeues: 50        # time-limit requeues of one job before it gives up
      signal_delay_s: 120     # the requeue signal comes this long before the time limit
      lock_wait_s: 360        # how long a job waits for a run another process holds
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ckd_lib.study.params import ParameterError
from ckd_lib.yamlio import parse_value

SBATCH_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
# sbatch options the study sets itself (per job); the extra "sbatch" mapping may not set them.
MANAGED = ("job-name", "output", "error", "array", "dependency", "signal", "ntasks-per-node",
           "nodes", "open-mode", "wckey")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 1440
    gpus_per_task: int = 1
    cpus_per_task: int = 4
    mem_gb: float | None = None
    constraint: str | None = None
    sbatch: dict = field(default_factory=dict)
    setup: list = field(default_factory=list)
    max_requeues: int = 50
    signal_delay_s: int = 120
    lock_wait_s: int = 360
    array_parallelism: int = 256

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, data, where: str, base: SlurmOptions | None = None) -> SlurmOptions:
        """``base`` (default: the defaults) with ``data``'s keys; every problem is one
        :class:`ParameterError` naming ``where``, the key and what is accepted."""
        if data is None:
            return base or cls()
        if not isinstance(data, dict):
            raise ParameterError(f"{where}: expected a mapping of options {cls.keys()}, got "
                                 f"{data!r}")
        unknown = sorted(set(data) - set(cls.keys()))
        if unknown:
            raise ParameterError(f"{where}: unknown option(s) {unknown}; accepted: {cls.keys()}")
        for key, value in data.items():
            _check(key, value, where)
        return dataclasses.replace(base or cls(), **data)

    def with_overrides(self, items: list[str]) -> SlurmOptions:
        """``--slurm KEY=VALUE`` items (values read as YAML) on top of these options."""
        data = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ParameterError(f"--slurm expects KEY=VALUE, got {item!r}; keys: "
                                     f"{self.keys()}")
            data[key.strip()] = parse_value(value)
        return self.from_mapping(data, "--slurm", base=self)

    def sbatch_parameters(self, processes: int, name: str) -> dict:
        """submitit ``SlurmExecutor`` parameters of a job of ``processes`` tasks on one node.

        Every task sees every GPU of the job (``--gpus-per-node``, not ``--gpus-per-task``):
        the engine picks its GPU by LOCAL_RANK, as under torchrun."""
        params = {"job_name": name, "time": self.time_min, "nodes": 1,
                  "ntasks_per_node": processes, "cpus_per_task": self.cpus_per_task,
                  "signal_delay_s": self.signal_delay_s,
                  "array_parallelism": self.array_parallelism}
        if self.gpus_per_task:
            params["gpus_per_node"] = self.gpus_per_task * processes
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        if self.mem_gb:
            params["mem"] = f"{int(round(self.mem_gb * 1024))}MB"
        if self.setup:
            params["setup"] = list(self.setup)
        if self.sbatch:
            params["additional_parameters"] = dict(self.sbatch)
        return params


def _check(key: str, value, where: str) -> None:
    def bad(accepted: str):
        raise ParameterError(f"{where}: {key}={value!r} is not accepted; {key} must be "
                             f"{accepted}")

    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key in ("partition", "account", "qos", "constraint"):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            bad("a non-empty string (or null: the cluster's default)")
    elif key in ("time_min", "cpus_per_task", "max_requeues", "array_parallelism"):
        if not is_int or value < 1:
            bad("a positive integer")
    elif key in ("gpus_per_task", "signal_delay_s", "lock_wait_s"):
        if not is_int or value < 0:
            bad("an integer >= 0")
    elif key == "mem_gb":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            bad("a positive number of GB (or null)")
    elif key == "setup":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad("a list of shell lines")
    elif key == "sbatch":
        if not isinstance(value, dict):
            bad("a mapping of sbatch options, e.g. {exclusive: true, mail-type: END}")
        for name, option in value.items():
            if not isinstance(name, str) or not SBATCH_NAME.match(name) or name in MANAGED:
                bad(f"a mapping of sbatch long option names (lower case, dashes; not "
                    f"{list(MANAGED)}, which the study sets per job); got option {name!r}")
            if not isinstance(option, (str, int, float, bool)):
                bad(f"a mapping of sbatch options to strings, numbers or true; got "
                    f"{name}: {option!r}")
