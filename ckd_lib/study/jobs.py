"""What a SLURM job of the study runs: one unit of the plan, or the notebooks after the runs.

submitit pickles these callables and calls them on a node. They carry everything the node needs
(the configs as plain data, the plugins and study paths of the submitting process), since
``sbatch`` need not pass the environment on.

Preemption and time limits (:class:`UnitJob`). SLURM sends the requeue signal (submitit asks for
``--signal=USR2@<signal_delay_s>``; also sent on preemption) to every task. submitit's own handler
would call :meth:`UnitJob.checkpoint` at once, from inside the handler, which could fall between a
backward pass and its optimizer step. So during training the job's handler replaces submitit's
and only asks the engine to stop (``ckd_lib.engine.stop``); the engine finishes its step, writes
every run's checkpoint with its position inside the epoch and raises ``RunInterrupted``; then the
job calls submitit's handler itself, which calls :meth:`checkpoint` (the same unit again: its state
is on disk), dumps it, requeues the job with ``scontrol requeue`` and exits. The requeued job
resumes exactly where the engine stopped. SIGTERM (``scancel``, preemption without requeue) also
checkpoints, but the job then ends without requeueing itself. Any other error fails the job, which
is never requeued for it; a diverged run is recorded and is no failure.
"""

from __future__ import annotations

import os
import signal
import time

from ckd_lib.engine import stop

ENVIRONMENT = ("CKD_PLUGINS", "CKD_STUDY_ROOT", "CKD_DATA_ROOT", "TORCH_HOME",
               "CKD_BENCHMARKS_DIR", "OMP_WAIT_POLICY")


def job_environment() -> dict:
    """The variables of this (submitting) process that the jobs must see as well."""
    return {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}


def _enter(environment: dict) -> None:
    os.environ.update(environment)
    from ckd_lib.methods.plugins import load_env_plugins

    load_env_plugins()


def _distributed_from_slurm() -> None:
    """A multi-task job's rendezvous, from SLURM's variables to torchrun's (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which the engine reads. Every task keeps every GPU
    of the node visible: the engine selects cuda:LOCAL_RANK."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def requeue_signal() -> signal.Signals:
    """The signal submitit has SLURM send before the time limit (USR2 unless configured)."""
    from submitit import JobEnvironment

    return getattr(signal, "SIG" + JobEnvironment.USR_SIG)


def train_unit(unit: dict, lock_wait: float) -> dict:
    """Train (resume, or skip) the unit's runs; ``{run_id: status}``."""
    from ckd_lib.errors import RunDivergedError

    if unit["task"] == "detection":
        from ckd_lib.detection.config import DetectionConfig
        from ckd_lib.detection.engine import train_detection

        out = {}
        for data, run in zip(unit["configs"], unit["runs"], strict=True):
            try:
                out[run["run_id"]] = train_detection(DetectionConfig.from_dict(data),
                                                     lock_wait=lock_wait)["status"]
            except RunDivergedError:  # recorded as diverged: a result, not a failure
                out[run["run_id"]] = "diverged"
        return out
    from ckd_lib.config import RunConfig
    from ckd_lib.engine import train

    records = train([RunConfig.from_dict(d) for d in unit["configs"]], lock_wait=lock_wait,
                    allow_diverged=True)
    return {r["run_id"]: r["status"] for r in records}


class UnitJob:
    """One unit of a plan (``ckd_lib.study.planning.Unit`` as a dict); see the module docstring."""

    def __init__(self, unit: dict, environment: dict, lock_wait: float = 360.0):
        self.unit = unit
        self.environment = environment
        self.lock_wait = lock_wait
        self._requeue = False

    def __call__(self) -> dict:
        self._requeue = False
        _enter(self.environment)
        _distributed_from_slurm()
        usr = self._usr = requeue_signal()
        submitit_handler = signal.getsignal(usr)
        old = {sig: signal.signal(sig, self._on_signal) for sig in (usr, signal.SIGTERM)}
        try:
            return train_unit(self.unit, self.lock_wait)
        except stop.RunInterrupted as interrupted:
            print(f"{interrupted}", flush=True)
            if not self._requeue:
                raise
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if int(os.environ.get("SLURM_PROCID", "0")) != 0:
                time.sleep(120)  # rank 0 requeues the whole job, which ends this task
                raise
            if callable(submitit_handler):  # not under submitit: nothing requeues, end here
                submitit_handler(usr, None)  # checkpoint() + scontrol requeue + exit
            raise
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            stop.clear()

    def _on_signal(self, signum, frame) -> None:
        """A flag only: the engine stops at its next step boundary (never save from here)."""
        if signum == self._usr:
            self._requeue = True
        stop.request_stop(f"received {signal.Signals(signum).name}")

    def checkpoint(self, *args, **kwargs):
        """What submitit requeues: the same unit; the engine's checkpoints hold the progress."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(UnitJob(self.unit, self.environment, self.lock_wait))


class NotebooksJob:
    """Execute the profile's notebooks once every run is done (the engine skips them all),
    then the report: what ``--executor local`` does, on a node (50_efficiency times its GPU)."""

    def __init__(self, profile: str, results_dir: str, environment: dict,
                 only: list[str] | None = None):
        self.profile = profile
        self.results_dir = results_dir
        self.environment = environment
        self.only = only

    def __call__(self) -> int:
        from ckd_lib.study.plan import StudyError
        from ckd_lib.study.profiles import load_profile
        from ckd_lib.study.runner import Runner

        _enter(self.environment)
        runner = Runner(load_profile(self.profile), results_dir=self.results_dir)
        if runner.run(self.only) != 0:
            raise StudyError(f"the notebooks of profile {self.profile} failed (see above)")
        if runner.profile.rehearsal is not None:  # its step times, for --plan
            from ckd_lib.study.rehearse import finish_after_jobs

            finish_after_jobs(runner)
        return 0
