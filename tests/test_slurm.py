"""The study on a cluster: plan mode, the cost plan, the SLURM options, and a real SLURM.

The pure parts (options, cost arithmetic, squeue parsing, the plan of the tiny profile) need no
cluster. The rest runs on a real one-node SLURM that ``tests/slurm_cluster.py`` starts in a
temporary folder (skipped, saying why, when Debian's slurmctld/slurmd/munge are not installed or
the tests do not run as root; CI installs them): the tiny profile through ``--executor slurm``
end to end, compared with the local executor's run of the same profile (``tiny_study``), and one
multi-task job whose DDP rendezvous comes from SLURM.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ckd_lib import results
from ckd_lib.config import RunConfig
from ckd_lib.engine.bookkeeping import RunBook, RunLock
from ckd_lib.study import cost, planning, slurm
from ckd_lib.study.__main__ import main as study_main
from ckd_lib.study.jobs import UnitJob
from ckd_lib.study.params import ParameterError
from ckd_lib.study.paths import StudyPaths
from ckd_lib.study.profiles import load_profile
from ckd_lib.study.runner import Runner
from ckd_lib.study.slurm_options import SlurmOptions

# one worker builds the session's tiny study for every module of this group (conftest)
pytestmark = pytest.mark.xdist_group("tiny_study")

ROOT = Path(__file__).resolve().parents[1]
CPU_CLUSTER = ["--slurm", "gpus_per_task=0", "--slurm", "cpus_per_task=1", "--slurm",
               "time_min=10", "--slurm", "lock_wait_s=0"]


def line(status: str, run_id: str) -> str:
    """A run's line in ``--status`` (status column, run id)."""
    return f"{status:<13} {run_id}"


def study(*args) -> tuple[int, str]:
    """``python -m ckd_lib.study ARGS`` in this process (the imports are paid once)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = study_main([str(a) for a in args])
    return code, out.getvalue()


# -- options --------------------------------------------------------------------------------------
def test_slurm_options_name_the_bad_key_and_what_is_accepted(tmp_path):
    with pytest.raises(ParameterError, match=r"unknown option\(s\) \['gpus'\]; accepted: "
                                             r"\['partition'"):
        SlurmOptions.from_mapping({"gpus": 1}, "here")
    for data, fragment in [({"time_min": 0}, "time_min must be a positive integer"),
                           ({"gpus_per_task": "one"}, "gpus_per_task must be an integer >= 0"),
                           ({"partition": ""}, "partition must be a non-empty string"),
                           ({"sbatch": {"dependency": "x"}}, "which the study sets per job"),
                           ({"sbatch": {"Bad Name": 1}}, "'Bad Name'"),
                           ({"setup": "module load x"}, "a list of shell lines")]:
        with pytest.raises(ParameterError, match=fragment):
            SlurmOptions.from_mapping(data, "here")
    profile = tmp_path / "p.yaml"
    profile.write_text("notebooks:\n  00_environment: {}\nslurm:\n  partition: gpu\n  gpu: 2\n")
    with pytest.raises(ParameterError, match=r"p.yaml\), slurm: unknown option\(s\) \['gpu'\]"):
        load_profile(profile)
    profile.write_text("notebooks:\n  00_environment: {}\nslurm:\n  partition: gpu\n")
    options = load_profile(profile).slurm.with_overrides(["time_min=30", "sbatch={exclusive: "
                                                          "true}", "gpus_per_task=2"])
    params = options.sbatch_parameters(processes=4, name="job")
    assert params["partition"] == "gpu" and params["time"] == 30
    assert params["ntasks_per_node"] == 4 and params["gpus_per_node"] == 8  # all GPUs per task
    assert params["additional_parameters"] == {"exclusive": True}
    assert "gpus_per_node" not in SlurmOptions(gpus_per_task=0).sbatch_parameters(1, "cpu")
    with pytest.raises(ParameterError, match="--slurm expects KEY=VALUE"):
        options.with_overrides(["time_min"])
    child = tmp_path / "child.yaml"  # a profile's options extend those of its parent
    child.write_text("extends: p\nslurm:\n  time_min: 60\n")
    assert (load_profile(child).slurm.partition, load_profile(child).slurm.time_min) == ("gpu", 60)


def test_bad_cluster_options_end_the_command_in_one_line_before_any_submission(tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_text("notebooks:\n  00_environment: {}\nslurm:\n  partitions: gpu\n")
    for args, fragments in [
            (["--profile", profile], ["cluster.yaml", "'partitions'", "accepted: ['partition'"]),
            (["--profile", "tiny", "--slurm", "time_min=soon"], ["time_min='soon'", "positive"]),
            (["--profile", "tiny", "--devices", "0"], ["--devices", "slurm:"])]:
        code, out = study(*args, "--executor", "slurm", "--results-dir", tmp_path / "r")
        errors = [text for text in out.splitlines() if text.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in out, out
        assert all(f in errors[0] for f in fragments), errors
    assert not (tmp_path / "r").exists()  # nothing planned, nothing submitted


def test_squeue_and_sacct_lines_are_read_per_job_and_array_task():
    text = "17|RUNNING|None\n20_0|PENDING|Dependency\n20_1|CANCELLED by 0|\n21.batch|FAILED\n"
    assert slurm.parse_table(text) == {"17": ("RUNNING", "None"), "20_0": ("PENDING", "Dependency"),
                                       "20_1": ("CANCELLED", "")}
    assert slurm._span(["20_0", "20_1", "20_2"]) == "20_[0-2]" and slurm._span(["5"]) == "5"


def test_a_unit_is_done_pending_running_failed_or_missing_by_records_queue_and_locks(tmp_path):
    def unit(name):
        run = {"run_id": name, "config_hash": "h", "out_dir": str(tmp_path),
               "teacher_checkpoint": None}
        return planning.Unit("nb", "classification", [{}], [run])

    plan = planning.Plan("p", [unit(n) for n in ("done", "queued", "orphan", "gone", "held",
                                                  "new")])
    book = slurm.JobBook(tmp_path / "jobs.json")
    for i, u in enumerate(plan.units[:5]):
        book.add(u.key, str(i + 1))
    lock = RunLock([RunBook(tmp_path, "held", "h").lock_path]).acquire()
    try:
        states = slurm.survey(plan, book, {"done": "complete"}, {
            "1": ("COMPLETED", ""), "2": ("PENDING", "Dependency"),
            "3": ("PENDING", slurm.NEVER), "5": ("FAILED", "")})
    finally:
        lock.release()
    got = {u.run_ids[0]: (states[u.key].state, states[u.key].detail) for u in plan.units}
    assert got["done"] == ("done", "") and got["queued"] == ("pending", "Dependency")
    assert got["orphan"] == ("failed", slurm.NEVER)  # waits for a failed job: replaced
    assert got["gone"] == ("failed", "ended") and got["new"] == ("missing", "")
    assert got["held"][0] == "running" and f"process {os.getpid()}" in got["held"][1]
    assert states[plan.units[4].key].job_id is None  # trained outside the study's jobs


# -- the cost plan --------------------------------------------------------------------------------
def _unit(notebook, methods, *, teacher="resnet32x4", student="resnet8x4", dataset="cifar100",
          batch_size=64, epochs=240, task="classification") -> planning.Unit:
    configs = [{"dataset": dataset, "teacher": teacher, "student": student, "method": m,
                "batch_size": batch_size, "epochs": epochs, "train_subset": None}
               for m in methods]
    runs = [{"run_id": f"{notebook}-{i}-{m}", "config_hash": "", "out_dir": "",
             "teacher_checkpoint": None} for i, m in enumerate(methods)]
    return planning.Unit(notebook, task, configs, runs)


def test_gpu_hours_come_only_from_the_committed_measurements():
    data = json.loads((ROOT / "benchmarks" / "bench_h200_run2.json").read_text())
    one, three = data["rows"]["fast path (defaults)"], data["rows"]["fast path, 3 students"]
    two_train = (one["train_s_per_epoch"] + three["train_s_per_epoch"]) / 2  # halfway, 2 students
    two_eval = (one["eval_s_per_epoch"] + three["eval_s_per_epoch"]) / 2
    plan = planning.Plan("x", [
        _unit("20", ["KD", "DKD"]),                                  # measured pair, 2 students
        _unit("20", ["CKD"], epochs=480),                            # measured, 1 student
        _unit("21", ["KD"], teacher="wrn_40_2", student="wrn_16_2"),  # another pair
        _unit("30", ["CKD"] * 4, epochs=480),                        # more students than measured
        _unit("30", ["CKD+ReviewKD"]),                               # a feature method
        _unit("30", ["CKD"], batch_size=128),                        # another batch size
        _unit("70", ["CKD"], teacher="ResNet34", student="ResNet18", dataset="imagenet",
              batch_size=512, epochs=200)])
    rows, total, used = cost.cost_table(plan, cost.measured_rates())
    imagenet = json.loads((ROOT / "benchmarks" / "imagenet_h200.json").read_text())
    expected = {"20": (240 * (two_train + two_eval) + 480 * (one["train_s_per_epoch"]
                                                             + one["eval_s_per_epoch"])) / 3600,
                "70": 200 * 1_281_167 / imagenet["engine_images_per_s"] / 3600}
    by_name = {row.name: row for row in rows}
    assert by_name["20"].hours == pytest.approx(expected["20"])
    assert by_name["70"].hours == pytest.approx(expected["70"])
    assert (by_name["21"].unmeasured_runs, by_name["30"].unmeasured_jobs) == (1, 3)
    assert total.runs == 11 and total.unmeasured_runs == 7
    assert [r.source for r in used] == ["bench_h200_run2.json", "imagenet_h200.json"]
    text = cost.format_cost(plan)
    assert "NVIDIA H200" in text and "n/m: 1 run(s) in 1 job(s)" in text
    assert f"{expected['20']:,.1f}" in text


def test_the_plan_of_the_tiny_profile_is_every_run_and_trains_none(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)
    runner = Runner(load_profile("tiny"), results_dir=str(tmp_path))
    plan = planning.collect(runner)
    # planning plots nowhere, but leaves no Agg behind for the kernels papermill starts later
    # (they would inherit it and the executed notebooks and the report would lose their figures)
    assert "MPLBACKEND" not in os.environ
    assert plan.notebooks == ["10_teachers", "20_same_arch", "21_cross_arch", "30_ablations",
                              "40_matched_budget", "60_visualisations"]  # those that train
    ids = [run_id for unit in plan.units for run_id in unit.run_ids]
    assert len(ids) == len(set(ids)) == 22  # a run two notebooks share is planned once
    teacher = plan.units[0]
    assert teacher.notebook == "10_teachers" and plan.dependencies(teacher) == []
    students = [u for u in plan.units if plan.dependencies(u)]
    assert {plan.dependencies(u)[0] for u in students} == {teacher.key}
    assert {r["teacher_checkpoint"] for u in students for r in u.runs} == set(teacher.outputs())
    assert not (tmp_path / "tiny" / "runs").exists()  # nothing trained, no teacher index
    assert planning.Plan.from_json(json.loads(json.dumps(plan.to_json()))).units == plan.units


def test_multi_gpu_and_detection_runs_are_planned_as_multi_task_jobs_after_their_teacher(
        tmp_path):
    imagenet = planning.collect(Runner(load_profile("imagenet"), results_dir=str(tmp_path)))
    assert imagenet.units and {u.processes for u in imagenet.units} == {8}  # nproc_per_node
    coco = planning.collect(Runner(load_profile("coco_demo"), results_dir=str(tmp_path)))
    teacher, *students = coco.units
    assert {u.task for u in coco.units} == {"detection"} and len(students) == 3
    assert teacher.configs[0]["label"] == "coco teacher" and coco.dependencies(teacher) == []
    distilled = [u for u in students if u.configs[0]["method"] != "baseline"]
    assert distilled and all(coco.dependencies(u) == [teacher.key] for u in distilled)


# -- a real SLURM ---------------------------------------------------------------------------------
def squeue(job_ids, fields="%T|%r") -> dict[str, list[str]]:
    bases = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--array",
                          f"--format=%i|{fields}", f"--jobs={bases}"], capture_output=True,
                         text=True, check=True).stdout
    return {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines() if line}


def wait_for(condition, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ended(job_ids) -> bool:
    states = squeue(job_ids)
    return all(j in states and states[j][0] not in slurm.PENDING + slurm.RUNNING
               for j in job_ids)


def test_a_multi_task_job_is_one_ddp_run_with_its_plugin(cluster, tmp_path, monkeypatch):
    """Two tasks of one job rendezvous from SLURM's variables; the plugin comes with the job
    (sbatch passes on only SLURM_CONF and what submitit sets)."""
    monkeypatch.delenv("CKD_PLUGINS", raising=False)
    plugin = ROOT / "docs" / "examples" / "foo_method.py"
    config = RunConfig(student="resnet8", method="CKD", teacher="resnet8",
                       dataset="synthetic:num_classes=4,num_train=64,num_test=32",
                       teacher_checkpoint="untrained", epochs=1, schedule="cosine", milestones=[],
                       batch_size=16, device="cpu",
                       out_dir=str(tmp_path / "runs"), progress=False).to_dict()
    config.update(method="FOO", loss={})  # registered by the plugin, which this process lacks
    unit = {"notebook": "test", "task": "classification", "configs": [config], "runs": [],
            "processes": 2}
    options = SlurmOptions(gpus_per_task=0, cpus_per_task=1, time_min=5,
                           sbatch={"export": "SLURM_CONF,SUBMITIT_EXECUTOR"})
    submitter = slurm.Submitter(StudyPaths.of("ddp", tmp_path), options, {})
    environment = {"CKD_PLUGINS": str(plugin)}
    (job,) = submitter.submit_jobs("ckd-test-ddp", 2, [], [UnitJob(unit, environment, 0)])
    wait_for(lambda: ended([job]), 240, f"job {job}")
    logs = submitter.folder / "logs"
    assert squeue([job])[job][0] == "COMPLETED", slurm.log_tail(logs, job)
    (record,) = results.load_records(tmp_path / "runs")
    assert record["status"] == "complete" and record["config"]["method"] == "FOO"
    assert record["distributed"]["world_size"] == 2
    assert [p["path"] for p in record["provenance"]["plugins"]] == [str(plugin)]
    assert (logs / f"{job}_1_log.out").is_file()  # the second task ran in the same job


def test_the_tiny_profile_through_slurm(cluster, tiny_study, tmp_path):
    """Submission, a dependency, a requeue on the signal, a failed job, the status and the
    later invocations, then the report: equal to the local executor's."""
    assert tiny_study.code == 0
    results_dir = tmp_path / "results"
    root = results_dir / "tiny"
    submit = ["--profile", "tiny", "--results-dir", results_dir, "--executor", "slurm",
              *CPU_CLUSTER]
    status = ["--profile", "tiny", "--results-dir", results_dir, "--status"]
    book_path = root / "slurm" / "jobs.json"

    # 1. submission returns at once, one job per unit, teachers first
    started = time.monotonic()
    code, out = study(*submit)
    assert code == 0, out
    assert time.monotonic() - started < 60, out
    plan = planning.Plan.load(root / "slurm" / "plan.json")
    book = json.loads(book_path.read_text())
    jobs = {key: entries[-1]["job_id"] for key, entries in book["units"].items()}
    assert set(jobs) == {u.key for u in plan.units} and len(set(jobs.values())) == len(jobs)
    teacher = plan.units[0]
    teacher_job = jobs[teacher.key]
    students = [u for u in plan.units if plan.dependencies(u) == [teacher.key]]
    assert len(students) == 8
    assert any("_" in jobs[u.key] for u in students)  # units alike: one array
    dependency = squeue([jobs[u.key] for u in students], "%E")
    assert all(dependency[jobs[u.key]][0].startswith(f"afterok:{teacher_job}") for u in students)

    # 2. a run taken by another live process (this test) makes its job fail, not wait
    locked = next(u for u in students if u.notebook == "20_same_arch" and len(u.runs) == 2)
    run = locked.runs[0]
    lock = RunLock([RunBook(run["out_dir"], run["run_id"], run["config_hash"]).lock_path])
    lock.acquire()

    # 3. the requeue signal mid-run: checkpoint, requeue, resume (same job id)
    teacher_run = teacher.runs[0]
    teacher_lock = RunBook(teacher_run["out_dir"], teacher_run["run_id"], "").lock_path
    wait_for(teacher_lock.exists, 120, "the teacher job to start training", poll=0.02)
    subprocess.run(["scancel", "--signal=USR2", teacher_job], check=True)
    teacher_log = root / "slurm" / "logs" / f"{teacher_job}_0_log.out"
    wait_for(lambda: "Requeued job" in teacher_log.read_text(), 60, "the job to requeue itself")
    wait_for(lambda: squeue([teacher_job])[teacher_job][0] in ("PENDING", "RUNNING"), 60,
             "the teacher job back in the queue")
    code, out = study(*status)
    assert code == 0, out
    assert any(f"{line(s, teacher_run['run_id'])}  job {teacher_job}" in out
               for s in ("pending", "running")), out
    assert "(Dependency)" in out and "failed" not in out, out
    # the students wait for the teacher
    assert {squeue([jobs[u.key]])[jobs[u.key]][1] for u in students} == {"Dependency"}
    # 4. the same command now submits nothing: every unit is pending or running
    code, out = study(*submit)
    assert code == 0 and "submitted 0 run job(s)" in out, out
    assert json.loads(book_path.read_text()) == book
    if squeue([teacher_job])[teacher_job] == ["PENDING", "BeginTime"]:
        # SLURM 22.05 holds a requeued job for about two minutes; the test does not wait
        subprocess.run(["scontrol", "update", f"JobId={teacher_job}", "StartTime=now"],
                       check=True)
    wait_for(lambda: ended(list(jobs.values())), 300, "every run job to end", poll=2)

    # 5. a unit whose run another live process holds counts as running, outside the jobs, and
    #    is not submitted again (the per-run lock); its job failed
    code, out = study(*status)
    assert code == 0, out
    holder = f"lock held by process {os.getpid()}"
    for r in locked.run_ids:
        assert f"{line('running', r)}  {holder}" in out, out
    assert line("done", teacher_run["run_id"]) in out, out
    code, out = study(*submit)
    assert code == 0 and "submitted 0 run job(s)" in out and "train outside" in out, out
    # 6. once the lock is free, the status shows the failure with the end of the job's log
    lock.release()
    code, out = study(*status)
    assert code == 0, out
    for r in locked.run_ids:
        assert f"{line('failed', r)}  job {jobs[locked.key]} (FAILED)" in out, out
    assert f"is being trained by process {os.getpid()}" in out, out
    # 7. once it is free, only that unit is submitted again, and a new notebooks job
    code, out = study(*submit)
    assert code == 0 and "submitted 1 run job(s)" in out, out
    book = json.loads(book_path.read_text())
    assert [k for k, entries in book["units"].items() if len(entries) == 2] == [locked.key]
    notebooks_job = book["notebooks"][-1]["job_id"]
    assert squeue([book["notebooks"][0]["job_id"]])[book["notebooks"][0]["job_id"]][0] == \
        "CANCELLED"
    wait_for(lambda: ended([notebooks_job]), 400, "the notebooks job", poll=2)
    assert squeue([notebooks_job])[notebooks_job][0] == "COMPLETED", \
        slurm.log_tail(root / "slurm" / "logs", notebooks_job)

    # the notebooks trained nothing: every record is a planned run
    records = results.load_records(root / "runs")
    assert sorted(r["run_id"] for r in records) == \
        sorted(i for u in plan.units for i in u.run_ids)
    assert {r["status"] for r in records} == {"complete"}
    # the teacher, stopped and requeued, ends with the weights of the uninterrupted local run
    log = teacher_log.read_text()
    assert "received SIGUSR2: 1 run(s) stopped at epoch" in log and "Requeued job" in log
    assert "resumed 1 run(s) at epoch" in log
    mine = torch.load(root / "runs" / teacher_run["run_id"] / "model_last.pth", weights_only=True)
    local = torch.load(tiny_study.root / "runs" / teacher_run["run_id"] / "model_last.pth",
                       weights_only=True)
    assert mine["model"].keys() == local["model"].keys()
    assert all(torch.equal(mine["model"][k], local["model"][k]) for k in local["model"])
    # the dependency held: no student started before the teacher's job had ended
    times = squeue(list(jobs.values()), "%S|%e")
    assert all(times[jobs[u.key]][0] >= times[teacher_job][1] for u in students)
    # the report's numbers are the local executor's
    keys = ["table", "teacher", "student", "method", "label", "settings"]
    numbers = ["n", "best_top1_mean", "last_top1_mean", "last_top5_mean",
               "teacher_evaluated_top1_mean"]
    here = pd.read_csv(root / "summary.csv")
    there = pd.read_csv(tiny_study.root / "summary.csv")
    assert len(here) == len(there) > 20
    merged = there.merge(here, on=keys, suffixes=("_local", "_slurm"))
    assert len(merged) == len(there)
    for column in numbers:
        assert merged[f"{column}_local"].fillna(-1).tolist() == \
            merged[f"{column}_slurm"].fillna(-1).tolist(), column

    # 8. everything done: the same command submits nothing and finds the report up to date
    code, out = study(*submit)
    assert code == 0 and "every run is done" in out, out
    assert out.count("up to date, skipped") == len(load_profile("tiny").notebooks), out
    assert json.loads(book_path.read_text()) == book
