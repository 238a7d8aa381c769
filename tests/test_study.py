"""The study layer: parameter checks, profiles, run designs, the runner's skip logic, workers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ckd_lib import recipes, results
from ckd_lib.config import RunConfig
from ckd_lib.study import designs, params, plan
from ckd_lib.study.__main__ import main as study_main
from ckd_lib.study.devices import WorkerError, parse_devices, run_groups_on_devices
from ckd_lib.study.profiles import load_profile
from ckd_lib.study.runner import Runner, resolve_parameters, sync_paired_notebook

CELL = textwrap.dedent('''\
    epochs: int = 3  # epochs per run
    lr: float = 0.05  # learning rate
    pairs: list[str] = ["a->b",
                        "c->d"]  # pairs to run
    names: dict[str, str] = {}  # stand-ins
    fast: bool = False  # go fast
    ''')

DATA = "synthetic:num_classes=4,num_train=64,num_test=32"


# -- parameters --------------------------------------------------------------------------------
def test_parse_parameters_reads_names_types_defaults_and_help():
    declared = params.parse_parameters(CELL)
    assert list(declared) == ["epochs", "lr", "pairs", "names", "fast"]
    assert declared["pairs"].annotation == "list[str]"
    assert declared["pairs"].default == ["a->b", "c->d"]
    assert declared["pairs"].help == "pairs to run"
    assert declared["names"].annotation == "dict[str, str]"


@pytest.mark.parametrize("line, message", [
    ("epochs = 3  # epochs", "annotate"),
    ("epochs: int = 3", "trailing comment"),
    ("epochs: int = 1 + 2  # epochs", "literal"),
    ("epochs: int | None = 3  # epochs", "not supported"),
    ("epochs: int = 3  # epochs (1 = one)", "'='"),
    ("epochs: int = 'x'  # epochs", "does not fit"),
    ("print('hi')", "only"),
])
def test_parse_parameters_rejects_what_papermill_cannot_document(line, message):
    with pytest.raises(params.ParameterError, match=message):
        params.parse_parameters(line + "\n", "nb")


@pytest.mark.parametrize("value, annotation, ok", [
    (3, "int", True), (True, "int", False), (3, "float", True), (3.5, "int", False),
    ("x", "str", True), (["a", "b"], "list[str]", True), (["a", 1], "list[str]", False),
    ([1, 2.5], "list[float]", True), ({"a": "b"}, "dict[str, str]", True),
    ({"a": 1}, "dict[str, str]", False), ([], "list[int]", True), (None, "str", False),
    (False, "bool", True), (0, "bool", False), ({"k": [1]}, "dict[str, list[int]]", True),
])
def test_matches(value, annotation, ok):
    assert params.matches(value, annotation) is ok


def test_check_parameters_names_the_bad_name_and_the_bad_type():
    declared = params.parse_parameters(CELL)
    with pytest.raises(params.ParameterError) as error:
        params.check_parameters({"epoch": 3}, declared, "20_same_arch", origin="profile demo")
    text = str(error.value)
    assert "profile demo, notebook 20_same_arch" in text
    assert "unknown parameter 'epoch'" in text
    assert "epochs: int = 3  # epochs per run" in text  # the accepted names, with types
    with pytest.raises(params.ParameterError) as error:
        params.check_parameters({"epochs": "three"}, declared, "20_same_arch")
    assert "parameter 'epochs' must be int, got 'three' (str)" in str(error.value)


# -- profiles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "demo", "quick", "paper"])
def test_shipped_profiles_are_valid(name):
    profile = load_profile(name)
    jobs = Runner(profile, results_dir="/nonexistent").plan()
    assert [j.name for j in jobs] == list(profile.notebooks)
    assert profile.report == "90_report" and jobs[-1].name == "90_report"
    for job in jobs:
        if "profile" in job.declared:
            assert job.parameters["profile"] == name


def test_demo_profile_is_the_cpu_demo():
    demo = load_profile("demo")
    assert demo.common["dataset"] == "fashion_mnist"
    pairs = demo.notebooks["20_same_arch"]["pairs"]
    assert len(pairs) <= 2
    paper = load_profile("paper")
    assert paper.common.get("seeds", [0, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    assert "dataset" not in paper.common or paper.common["dataset"] == "cifar100"


def write_profile(tmp_path, text) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_profile_errors_name_the_problem(tmp_path):
    with pytest.raises(params.ParameterError, match="unknown key"):
        load_profile(write_profile(tmp_path, "notebooks: {a: {}}\nextra: 1\n"))
    with pytest.raises(params.ParameterError, match="set by the runner"):
        load_profile(write_profile(tmp_path, "notebooks: {a: {profile: x}}\n"))
    with pytest.raises(params.ParameterError, match="not found"):
        load_profile("no_such_profile")


def test_common_parameters_must_be_declared_somewhere():
    profile = load_profile("tiny")
    declared = {n: params.notebook_parameters(Path("notebooks") / f"{n}.py")
                for n in profile.notebooks}
    profile.common["epoch_scal"] = 0.5
    with pytest.raises(params.ParameterError, match="epoch_scal"):
        resolve_parameters(profile, declared, "results", None)


def test_cli_rejects_a_bad_name_and_a_bad_type(tmp_path, capsys):
    path = write_profile(tmp_path, """\
        notebooks:
          20_same_arch: {seed: 1, epoch_scale: fast}
        """)
    assert study_main(["--profile", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert "notebook 20_same_arch" in err and "unknown parameter 'seed'" in err
    assert "parameter 'epoch_scale' must be float, got 'fast' (str)" in err
    assert "seeds: list[int]" in err  # the accepted names are listed


# -- designs -----------------------------------------------------------------------------------
def test_tables_split_the_recipe_pairs():
    same = plan.table_pairs("same_arch")
    cross = plan.table_pairs("cross_arch")
    assert len(same) == 6 and len(cross) == 5
    assert same + cross == recipes.pairs("cifar100", "CKD")
    assert ("resnet32x4", "resnet8x4") in same and ("resnet32x4", "ShuffleV1") in cross
    assert plan.table_pairs("same_arch", ["wrn_40_2->wrn_40_1"]) == [("wrn_40_2", "wrn_40_1")]
    with pytest.raises(plan.StudyError, match="not in the same_arch table"):
        plan.table_pairs("same_arch", ["vgg13->MobileNetV2"])


def test_scale_schedule():
    assert plan.scale_schedule(240, [150, 180, 210], 1.0) == (240, [150, 180, 210])
    assert plan.scale_schedule(240, [150, 180, 210], 0.125) == (30, [19, 22, 26])
    assert plan.scale_schedule(240, [150, 180, 210], 0.0084) == (2, [1, 2, 2])
    assert plan.scale_schedule(480, [], 0.0001) == (1, [])


def make_settings(tmp_path, **kw) -> plan.Settings:
    base = dict(profile="t", results_dir=str(tmp_path), dataset=DATA, epoch_scale=0.0084,
                substitute={"resnet56": "resnet8", "resnet20": "resnet8"})
    base.update(kw)
    return plan.Settings(**base)


def fake_teacher(settings, model="resnet8") -> str:
    path = Path(settings.paths.runs) / "teacher.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    settings.record_teachers([{"dataset": settings.dataset, "model": model,
                               "checkpoint": str(path)}])
    return str(path)


def test_settings_config_applies_the_profile_to_the_recipe(tmp_path):
    settings = make_settings(tmp_path)
    with pytest.raises(plan.StudyError, match="10_teachers"):
        settings.config("resnet56", "resnet20", "CKD")
    checkpoint = fake_teacher(settings)
    ckd = settings.config("resnet56", "resnet20", "CKD", seed=3)
    assert (ckd.teacher, ckd.student, ckd.dataset) == ("resnet8", "resnet8", DATA)
    assert (ckd.epochs, ckd.schedule, ckd.seed, ckd.label) == (4, "cosine", 3, "same_arch")
    assert ckd.teacher_checkpoint == checkpoint and ckd.out_dir == str(settings.paths.runs)
    assert ckd.loss_params()["cl_weight"] == 10 and not ckd.progress
    dkd = settings.config("resnet56", "resnet20", "DKD")
    assert dkd.epochs == 2 and dkd.milestones == [1, 2, 2]
    assert dkd.loss_params()["warmup_epochs"] == 1 and dkd.loss_params()["beta"] == 2
    ce = settings.config("resnet56", "resnet20", "CE")
    assert ce.teacher is None and ce.teacher_checkpoint is None
    groups = plan.group_configs([ce, dkd, ckd, settings.config("resnet56", "resnet20", "KD")])
    assert [[c.method for c in g] for g in groups] == [["CE"], ["DKD", "KD"], ["CKD"]]
    teacher = settings.teacher_config("resnet56")
    assert (teacher.student, teacher.method, teacher.teacher, teacher.label) == (
        "resnet8", "CE", None, "teacher")
    paper = plan.Settings(profile="p", results_dir=str(tmp_path))
    assert paper.is_paper_setting and not paper.deviations()
    assert any("NOT CIFAR-100" in line for line in settings.deviations())


def test_ablation_rows(tmp_path):
    settings = make_settings(tmp_path)
    fake_teacher(settings)
    rows = designs.ablation_rows(settings, ("resnet56", "resnet20"), seeds=[0],
                                 temperatures=[1.0, 2.0], cl_weights=[10.0, 50.0],
                                 batch_sizes=[32, 64], chunk_sizes=[16, 64],
                                 variants=list(designs.VARIANTS))
    names = [r.name for r in rows]
    # the recipe's values (tau 1, cl_weight 10, batch 64) are the baseline, not repeated;
    # a chunk is only used below the batch size
    assert names == ["baseline", "tau=2", "cl_weight=50", "batch=32", "batch=32 chunk=16",
                     "batch=64 chunk=16", *designs.VARIANTS]
    by = {r.name: r.config for r in rows}
    assert by["baseline"].label == "same_arch"
    assert by["tau=2"].label == "ablation tau=2"
    assert by["batch=32 chunk=16"].loss_params()["chunk_size"] == 16
    assert by["batch=32"].batch_size == 32 and by["batch=32"].lr == by["baseline"].lr
    assert by["student_negatives"].loss_params()["negatives"] == "student"
    kdckd = by["KD+CKD"].loss_params()
    assert by["KD+CKD"].method == "KD+CKD" and kdckd["ce_weight"] == 0.1
    assert kdckd["cl_weight"] == 10 and kdckd["kd_weight"] == 0.9
    review = by["CKD+ReviewKD"]
    assert review.loss_params()["warmup_epochs"] == 1  # 20 epochs scaled with the schedule
    with pytest.raises(plan.StudyError, match="unknown ablation variant"):
        designs.ablation_rows(settings, ("resnet56", "resnet20"), variants=["nope"])


def test_matched_budget_rows(tmp_path):
    settings = make_settings(tmp_path)
    fake_teacher(settings)
    rows = designs.matched_budget_rows(settings, [("resnet56", "resnet20")], seeds=[0])
    by = {r.name: r.config for r in rows}
    own, moved = by["CKD (own recipe)"], by["CKD @ KD's budget"]
    assert (own.epochs, own.schedule) == (4, "cosine")
    assert (moved.epochs, moved.schedule, moved.milestones) == (2, "step", [1, 2, 2])
    assert moved.batch_size == own.batch_size  # equal batches: equal epochs are equal steps
    assert moved.lr == own.lr and moved.label == "matched_budget"
    kd = by["KD @ CKD's budget"]
    assert (kd.epochs, kd.schedule, kd.method, kd.lr) == (4, "cosine", "KD", 0.05)
    assert by["KD (own recipe)"].label == "same_arch"
    assert not [name for name in by if "own batch" in name]  # only where batches differ


def test_summary_means_and_stds():
    records = []
    for seed, best in ((0, 70.0), (1, 72.0)):
        records.append({"run_id": f"r{seed}", "config": {"teacher": "t", "student": "s",
                                                         "method": "CKD", "seed": seed,
                                                         "epochs": 4, "schedule": "cosine",
                                                         "batch_size": 64},
                        "best": {"top1": best}, "last": {"top1": best - 1},
                        "train_seconds": 10.0, "epochs_done": 4})
    table = plan.summary(records + records[:1])  # a run listed twice counts once
    row = table.iloc[0]
    assert row["n"] == 2 and row["best top-1"] == "71.00 ± 1.41"
    assert row["last top-1"] == "70.00 ± 1.41"


# -- devices -----------------------------------------------------------------------------------
def test_parse_devices():
    assert parse_devices("0,1") == ["0", "1"]
    assert parse_devices(["cuda:1", "cpu", 2]) == ["1", "cpu", "2"]
    assert parse_devices("") == [] and parse_devices(None) == []
    with pytest.raises(ValueError, match="not accepted"):
        parse_devices("gpu0")


def tiny_config(tmp_path, **kw) -> RunConfig:
    base = dict(student="resnet8", method="CE", dataset=DATA, epochs=1, lr=0.05,
                schedule="cosine", batch_size=32, seed=0, out_dir=str(tmp_path / "runs"),
                progress=False, eval_batch_size=32)
    base.update(kw)
    return RunConfig(**base)


def test_cpu_workers_train_independent_groups(tmp_path):
    groups = [[tiny_config(tmp_path, seed=0)], [tiny_config(tmp_path, seed=1),
                                                tiny_config(tmp_path, seed=1, lr=0.1)]]
    lines = []
    run_groups_on_devices(groups, ["cpu", "cpu"], tmp_path / "work", log=lines.append)
    for group in groups:
        for config in group:
            record = results.completed_record(config.out_dir, config.run_id(),
                                              config.config_hash())
            assert record is not None and record["config"]["device"] == "auto"
    epoch_lines = [line for line in lines if "epoch 1/1" in line]
    assert len(epoch_lines) == 3
    assert {line.split("]")[0] for line in epoch_lines} == {"[cpu#0", "[cpu#1"}


def test_a_failing_worker_is_reported_with_its_log(tmp_path):
    bad = tiny_config(tmp_path, batch_size=1000)  # larger than the training set: fails at load
    with pytest.raises(WorkerError) as error:
        run_groups_on_devices([[bad]], ["cpu"], tmp_path / "work", log=lambda line: None)
    assert "batch_size=1000 is larger than the training set" in str(error.value)


# -- runner ------------------------------------------------------------------------------------
NOTEBOOK = '''\
# %%
import json
import os
from pathlib import Path

# %% tags=["parameters"]
profile: str = "x"  # profile
results_dir: str = "results"  # results
value: int = 1  # a value
fail: bool = False  # raise an error

# %%
# the runner passes a profile outside notebooks/profiles by its path (its name is the stem)
out = Path(results_dir) / Path(profile).stem / "{name}.txt"
out.parent.mkdir(parents=True, exist_ok=True)
with open(out, "a") as handle:
    handle.write(json.dumps(value) + "\\n")
if fail:
    raise RuntimeError("asked to fail")
'''


def make_study(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("a", "b"):
        (notebooks / f"{name}.py").write_text(NOTEBOOK.replace("{name}", name))
    return notebooks


def runner_for(tmp_path, notebooks, text, **kw):
    profile = load_profile(write_profile(tmp_path, text))
    lines = []
    runner = Runner(profile, results_dir=str(tmp_path / "results"), notebooks=notebooks,
                    log=lines.append, stdout=open("/dev/null", "w"),
                    stderr=open("/dev/null", "w"), **kw)
    return runner, lines


def executions(tmp_path, name) -> list[int]:
    path = tmp_path / "results" / "p" / f"{name}.txt"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.notebooks
def test_runner_skips_what_is_up_to_date_and_reruns_what_changed(tmp_path):
    notebooks = make_study(tmp_path)
    text = "notebooks:\n  a: {value: 1}\n  b: {value: 2}\n"
    runner, lines = runner_for(tmp_path, notebooks, text)
    assert runner.run() == 0
    assert executions(tmp_path, "a") == [1] and executions(tmp_path, "b") == [2]
    executed = tmp_path / "results" / "p" / "executed"
    assert (executed / "a.ipynb").is_file() and (executed / "b.log").is_file()
    assert (notebooks / "a.ipynb").is_file()  # the paired notebook beside the script
    # the second run executes nothing
    runner, lines = runner_for(tmp_path, notebooks, text)
    assert runner.run() == 0
    assert executions(tmp_path, "a") == [1] and executions(tmp_path, "b") == [2]
    assert sum("up to date, skipped" in line for line in lines) == 2
    # a changed parameter of a re-executes a, and b after it (its upstream changed)
    runner, lines = runner_for(tmp_path, notebooks, text.replace("value: 1", "value: 5"))
    assert runner.run() == 0
    assert executions(tmp_path, "a") == [1, 5] and executions(tmp_path, "b") == [2, 2]
    # a changed source of b re-executes b only; --only and --force
    (notebooks / "b.py").write_text(NOTEBOOK.replace("{name}", "b") + "\n# %%\nvalue\n")
    runner, _ = runner_for(tmp_path, notebooks, text.replace("value: 1", "value: 5"))
    assert runner.run() == 0
    assert executions(tmp_path, "a") == [1, 5] and executions(tmp_path, "b") == [2, 2, 2]
    runner, _ = runner_for(tmp_path, notebooks, text.replace("value: 1", "value: 5"), force=True)
    assert runner.run(only=["b"]) == 0
    assert executions(tmp_path, "a") == [1, 5] and executions(tmp_path, "b") == [2, 2, 2, 2]


@pytest.mark.notebooks
def test_runner_stops_at_the_first_failure_and_continues_there(tmp_path):
    notebooks = make_study(tmp_path)
    text = "notebooks:\n  a: {fail: true}\n  b: {}\n"
    runner, lines = runner_for(tmp_path, notebooks, text)
    assert runner.run() == 1
    assert executions(tmp_path, "a") == [1] and executions(tmp_path, "b") == []
    failure = next(line for line in lines if line.startswith("FAILED"))
    assert "notebook a" in failure and "RuntimeError: asked to fail" in failure
    manifest = json.loads((tmp_path / "results/p/executed/manifest.json").read_text())
    assert manifest["notebooks"]["a"]["status"] == "failed"
    runner, lines = runner_for(tmp_path, notebooks, text.replace("fail: true", "fail: false"))
    assert runner.run() == 0
    assert executions(tmp_path, "a") == [1, 1] and executions(tmp_path, "b") == [1]


def test_runner_validates_every_notebook_before_running(tmp_path):
    notebooks = make_study(tmp_path)
    runner, _ = runner_for(tmp_path, notebooks, "notebooks:\n  a: {}\n  b: {valeu: 3}\n")
    with pytest.raises(params.ParameterError, match="unknown parameter 'valeu'"):
        runner.run()
    assert executions(tmp_path, "a") == []  # nothing ran
    runner, _ = runner_for(tmp_path, notebooks, "notebooks:\n  a: {}\n  c: {}\n")
    with pytest.raises(params.ParameterError, match=r"\['c'\] not found"):
        runner.plan()


def test_sync_paired_notebook_keeps_outputs_of_unchanged_cells(tmp_path):
    import nbformat

    source = tmp_path / "n.py"
    source.write_text("# %%\nx = 1\n\n# %%\ny = 2\n")
    target = sync_paired_notebook(source)
    nb = nbformat.read(target, as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="kept\n")]
    nbformat.write(nb, target)
    source.write_text("# %%\nx = 1\n\n# %%\ny = 3\n")
    nb = nbformat.read(sync_paired_notebook(source), as_version=4)
    assert nb.cells[1].source == "y = 3"
    assert nb.cells[0].outputs[0]["text"] == "kept\n"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_cli_lists_a_profile():
    out = subprocess.run([sys.executable, "-m", "ckd_lib.study", "--profile", "demo", "--list"],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert "20_same_arch" in out.stdout
    assert "seeds: list[int] = [0, 1, 2, 3, 4]  <- profile" in out.stdout


# -- teachers ----------------------------------------------------------------------------------
def test_teachers_load_from_a_cifar_teachers_folder(tmp_path):
    import torch

    from ckd_lib.models import create_model, save_checkpoint
    from ckd_lib.study import teachers

    settings = make_settings(tmp_path, substitute={"resnet56": "resnet8"})
    torch.manual_seed(0)
    folder = tmp_path / "cifar_teachers"
    save_checkpoint(create_model("resnet8", num_classes=4), folder / "resnet8_vanilla" /
                    "ckpt_epoch_240.pth", accuracy=12.5, epoch=240)
    (entry,) = teachers.prepare_teachers(settings, ["resnet56", "resnet56"], teachers_dir=folder,
                                         train_missing=False)
    assert entry["source"].startswith("loaded from") and entry["run_id"] is None
    assert entry["stored_accuracy"] == 12.5 and 0 <= entry["measured_top1"] <= 100
    assert entry["test_size"] == 32 and entry["literature_top1"] == 72.34
    assert entry["verdict"].startswith("not comparable: dataset is synthetic")
    assert settings.teacher_checkpoint("resnet8") == entry["checkpoint"]
    with pytest.raises(plan.StudyError, match="train_missing is false"):
        teachers.prepare_teachers(settings, ["vgg13"], teachers_dir=folder, train_missing=False)


def test_teacher_verdicts():
    from ckd_lib.study.teachers import literature_teacher, verdict

    paper = plan.Settings(profile="p")
    published, source = literature_teacher("resnet32x4")
    assert published == 79.42 and "RepDistiller" in source
    entry = {"model": "resnet32x4", "recipe": "resnet32x4", "measured_top1": 79.0,
             "run_id": None}
    assert verdict(paper, entry, published, 1.0).startswith("OK")
    entry["measured_top1"] = 76.0
    assert verdict(paper, entry, published, 1.0).startswith("DIFFERS by -3.42")
    assert verdict(paper, entry, None, 1.0) == "no published number"
    short = plan.Settings(profile="q", epoch_scale=0.125)
    assert "shortened schedule" in verdict(short, {**entry, "run_id": "r"}, published, 1.0)


def test_devices_reach_the_notebooks_that_declare_them():
    profile = load_profile("demo")
    declared = {n: params.notebook_parameters(Path("notebooks") / f"{n}.py")
                for n in profile.notebooks}
    values = resolve_parameters(profile, declared, "out", ["0", "1"])
    assert values["20_same_arch"]["devices"] == ["0", "1"]
    assert "devices" not in values["00_environment"]
    assert values["20_same_arch"]["results_dir"] == "out"
    assert values["20_same_arch"]["seeds"] == [0, 1, 2, 3, 4]  # its own entry beats common
    assert values["21_cross_arch"]["seeds"] == [0]  # common


def test_settings_train_on_cpu_workers(tmp_path):
    settings = make_settings(tmp_path, devices=["cpu"], epoch_scale=0.0042)
    configs = [settings.config("resnet56", "resnet20", "CE", seed=s) for s in (0, 1)]
    records = settings.train(configs + configs[:1])  # a run asked twice trains once
    assert [r["run_id"] for r in records] == [c.run_id() for c in configs + configs[:1]]
    assert list((settings.paths.logs / "groups").glob("group-*.log"))


@pytest.mark.notebooks
def default_sigint() -> None:
    """In a child before it starts: SIGINT at its default (Python then raises KeyboardInterrupt
    on it), not the ignored SIGINT a background job inherits."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def slow_study(tmp_path):
    """Notebooks a (quick) and b (sleeps ten minutes once started) and their profile."""
    notebooks = make_study(tmp_path)
    slow = NOTEBOOK.replace("{name}", "b").replace('raise RuntimeError("asked to fail")',
                                                   "import time; time.sleep(600)")
    (notebooks / "b.py").write_text(slow)
    return notebooks, write_profile(tmp_path, "notebooks:\n  a: {}\n  b: {fail: true}\n")


def test_the_study_command_stops_on_sigterm_saying_so(tmp_path):
    import signal
    import time

    _, profile = slow_study(tmp_path)
    env = {**os.environ, "CKD_STUDY_ROOT": str(tmp_path)}  # its notebooks/
    command = [sys.executable, "-m", "ckd_lib.study", "--profile", str(profile),
               "--results-dir", str(tmp_path / "results")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not executions(tmp_path, "b"):
        time.sleep(0.5)  # b has started and sleeps
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (out[-2000:], err[-2000:])
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM: run the same command")
    # no traceback of the runner's (the kernel, shut down mid-cell, may log one of ipykernel's
    # own: a Ctrl-C does the same)
    assert "ckd_lib/" not in err and "Terminated" not in err, err
    entries = json.loads((tmp_path / "results/p/executed/manifest.json").read_text())
    assert entries["notebooks"]["a"]["status"] == "complete"
    assert entries["notebooks"]["b"]["status"] != "complete"


def test_ctrl_c_while_the_study_command_starts_is_one_line(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "ckd_lib.study", "--profile", "demo",
                             "--check", "--results-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    time.sleep(1.0)  # still importing (torch alone takes seconds)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (-signal.SIGINT, 130), err
    assert "Traceback" not in err and "interrupted: run the same command again" in err, err


def test_an_interrupted_study_continues_where_it_stopped(tmp_path):
    import signal
    import time

    notebooks, profile = slow_study(tmp_path)
    script = (f"import sys; from ckd_lib.study.profiles import load_profile; "
              f"from ckd_lib.study.runner import Runner; "
              f"sys.exit(Runner(load_profile({str(profile)!r}), results_dir="
              f"{str(tmp_path / 'results')!r}, notebooks={str(notebooks)!r}).run())")
    # the child's SIGINT as a terminal gives it, whatever this process inherited (a test suite
    # started in the background, `nohup make test &`, ignores SIGINT, and so would the child)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    manifest = tmp_path / "results/p/executed/manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not executions(tmp_path, "b"):
        time.sleep(0.5)  # b has started (it wrote its line) and now sleeps
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    entries = json.loads(manifest.read_text())["notebooks"]
    assert entries["a"]["status"] == "complete" and entries["b"]["status"] != "complete"
    runner, lines = runner_for(tmp_path, notebooks, "notebooks:\n  a: {}\n  b: {}\n")
    assert runner.run() == 0
    assert executions(tmp_path, "a") == [1] and executions(tmp_path, "b") == [1, 1]
    assert any(line.startswith("[1/2] a: up to date") for line in lines)
