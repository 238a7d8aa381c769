"""The plugin contract: what a loss term must return, and what a plugin may not do at import.

A plugin's mistake must end in one line that names the term and the plugin's file:line, on the
first step (not in autograd, 39 lines later, naming neither), with exit status 2 and no file of a
finished run touched; a NaN from a plugin's term is blamed on that term, not on ``ce``; a plugin
that calls sys.exit() or raises while it loads is an error naming it.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from test_bad_input import refused, run, snapshot, tiny_config

from ckd_lib.engine.objective import Objective
from ckd_lib.methods import TermContext, get_method, load_plugin
from ckd_lib.methods.contract import TermError

HEADER = "import sys, torch\nfrom ckd_lib.methods import register_method, register_term\n"


def plugin(tmp_path, name: str, body: str, register: bool = True) -> tuple:
    """A plugin file defining term ``name`` by ``def {name}(inputs, params)`` in ``body``;
    returns its path and the ``file:line`` of that def."""
    text = HEADER + textwrap.dedent(body)
    if register:
        text += (f"register_term({name!r}, compute={name}, needs=['labels'])\n"
                 f"register_method({name.upper()!r}, ['ce', {name!r}], recipe_from='CKD')\n")
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    line = next((i for i, x in enumerate(text.splitlines(), 1) if x.startswith(f"def {name}(")),
                None)
    return path, f"{path}:{line}"


def train(tmp_path, path, method, **changes):
    config = tiny_config(tmp_path, method=method, teacher=None, teacher_checkpoint=None,
                         **changes)
    return run("ckd_lib.train", "--plugin", path, "--config", config)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """A finished run, in the folder every refused command below writes to."""
    folder = tmp_path_factory.mktemp("contract")
    proc = run("ckd_lib.train", "--config", tiny_config(folder))
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.mark.parametrize("name, body, fragments", [
    ("vector", """
        def vector(inputs, params):
            return torch.nn.functional.cross_entropy(inputs.student_logits, inputs.labels,
                                                     reduction="none")
        """, ["returned a tensor of shape [16], not a scalar"]),
    ("pyfloat", """
        def pyfloat(inputs, params):
            return float(inputs.student_logits.mean())
        """, ["returned float", "not a tensor"]),
    ("failing", """
        def check(x):
            raise ValueError("expected 4-d features")

        def failing(inputs, params):
            return check(inputs.student_logits)
        """, ["raised ValueError: expected 4-d features at ", "failing.py:5"]),
])
def test_a_broken_term_is_one_line_naming_it_and_its_file_line(tmp_path, finished_runs, name,
                                                                body, fragments):
    before = snapshot(finished_runs / "runs")
    path, where = plugin(tmp_path, name, body)
    proc = train(tmp_path, path, name.upper(), out_dir=str(finished_runs / "runs"))
    refused(proc, f"term {name!r} (plugin {where})", *fragments)
    assert "epoch 1/" not in proc.stdout  # refused on the first step, before an epoch ends
    assert snapshot(finished_runs / "runs") == before


def test_a_nan_from_a_plugin_term_is_blamed_on_that_term(tmp_path):
    path, _ = plugin(tmp_path, "late", """
        calls = [0]

        def late(inputs, params):
            calls[0] += 1
            value = 1e-3 * inputs.student_logits.float().pow(2).mean()
            return value * float("nan") if calls[0] == 3 else value
        """)
    proc = train(tmp_path, path, "LATE")
    line = refused(proc, "loss term late is nan", code=3)
    assert "ce" not in line.split("loss term", 1)[1].split("(")[0]
    (record,) = (tmp_path / "runs").glob("*/record.json")
    assert json.loads(record.read_text())["diverged"]["what"] == "loss term late is nan"


@pytest.mark.parametrize("body, module, fragments", [
    ("sys.exit(0)\n", "ckd_lib.study", ["called sys.exit(0) while loading",
                                        "(quits.py, line 3)"]),
    ("raise ValueError('no GPU here')\n", "ckd_lib.train",
     ["failed to load: ValueError: no GPU here", "(quits.py, line 3)"]),
])
def test_a_plugin_that_exits_or_raises_while_loading_is_an_error_naming_it(tmp_path, body,
                                                                            module, fragments):
    path = tmp_path / "quits.py"
    path.write_text(HEADER + body)
    args = ["--list-methods"] if module == "ckd_lib.train" else ["--profile", "tiny", "--check"]
    refused(run(module, "--plugin", path, *args), f"plugin '{path}'", *fragments)


# -- the contract, in-process: every kind of wrong value -------------------------------------------
WRONG = {
    "an int tensor": ("torch.zeros((), dtype=torch.long)", "torch.int64 tensor"),
    "another device": ("torch.zeros((), device='meta')", "on meta, but the student's logits "
                                                         "are on cpu"),
    "no gradient": ("torch.tensor(0.5)", "carries no gradient"),
    "a first NaN": ("inputs.student_logits.sum() * float('nan')", "returned nan on the first"),
    "a shape [1]": ("inputs.student_logits.sum().reshape(1)", "shape [1], not a scalar"),
    "None": ("None", "returned NoneType None, not a tensor"),
    "a sys.exit": ("sys.exit(0)", "called sys.exit(0) at "),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_each_wrong_value_is_refused_on_the_first_call(tmp_path, case):
    expression, said = WRONG[case]
    path, where = plugin(tmp_path, "wrong", f"""
        def wrong(inputs, params):
            return {expression}
        """)
    load_plugin(str(path))
    objective = Objective(get_method("WRONG"), get_method("WRONG").resolve(),
                          TermContext("classification"))
    logits = torch.randn(4, 5, requires_grad=True)
    with pytest.raises(TermError) as caught:
        objective(logits, None, torch.arange(4), torch.ones(()))
    assert f"term 'wrong' (plugin {where})" in str(caught.value) and said in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_a_term_is_checked_once_and_its_first_non_finite_step_is_kept():
    from ckd_lib.methods.contract import FirstNonFinite

    first = FirstNonFinite(("ce", "x", "y"))
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    first.update([one, one, one])
    assert first.names() == []
    first.update([one, nan, one])
    first.update([nan, nan, nan])  # the step after: every term follows through the weights
    assert first.names() == ["x"]


def test_the_detection_distiller_checks_a_plugin_term_too(tmp_path):
    from ckd_lib.detection.distill import DetectionDistiller
    from ckd_lib.detection.models import build_detector

    path = tmp_path / "det.py"
    path.write_text(HEADER + "def det(inputs, params):\n    return 0.25\n"
                    "register_term('det', compute=det, tasks=['detection'], "
                    "needs=['teacher_logits'])\n"
                    "register_method('DET', ['det'], task='detection')\n")
    load_plugin(str(path))
    torch.manual_seed(0)
    student, teacher = (build_detector("resnet18", num_classes=3, train_min_sizes=(64,),
                                       test_min_size=64, max_size=64) for _ in range(2))
    distiller = DetectionDistiller(student, teacher, "DET").train()
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    with pytest.raises(TermError, match=r"term 'det' \(plugin .*det.py:3\) returned float"):
        distiller(images, targets)
