"""The method registry: terms and methods, parameters, recipes borrowed, plugins, objectives.

The expected defaults below are the published values written out by hand (mdistiller and the
CKD code for CIFAR-100; the CKD detection configs), not read from the registry; the composed
objectives are checked against sums computed here in float64; the pinned run ids in
``tests/data/run_ids_before_registry.json`` were written by the code before the registry
existed, so a changed hash of an existing config shows.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ckd_lib.config import RunConfig
from ckd_lib.detection.config import DetectionConfig
from ckd_lib.engine.objective import Objective
from ckd_lib.errors import ConfigError, InputError
from ckd_lib.methods import (
    Param,
    TermContext,
    TermModule,
    all_method_names,
    get_method,
    load_plugin,
    main_methods,
    method_color,
    method_names,
    register_method,
    register_term,
)
from ckd_lib.methods.registry import MORE_COLORS, PALETTE, TEACHER_COLOR
from ckd_lib.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]
FOO = REPO / "docs" / "examples" / "foo_method.py"
PINNED = json.loads((Path(__file__).parent / "data" / "run_ids_before_registry.json").read_text())

CKD_DEFAULTS = {"cl_weight": 10.0, "temperature": 1.0, "negatives": "teacher",
                "symmetric": False, "positive_only": False, "chunk_size": None,
                "learnable_temperature": False, "negatives_scope": "local"}
EXPECTED = {
    "CE": {"ce_weight": 1.0},
    "KD": {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0},
    "DKD": {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
            "warmup_epochs": 20},
    "CKD": {"ce_weight": 1.0, **CKD_DEFAULTS},
    "KD+CKD": {"ce_weight": 0.1, "kd_weight": 0.9, "kd_temperature": 4.0, **CKD_DEFAULTS},
    "CKD+ReviewKD": {"ce_weight": 1.0, **CKD_DEFAULTS, "reviewkd_weight": 1.0,
                     "warmup_epochs": 20},
}
EXPECTED_DETECTION = {
    "baseline": {},
    "KD": {"kd_weight": 1.0, "kd_temperature": 1.0},
    "DKD": {"dkd_weight": 1.0, "alpha": 1.0, "beta": 0.25, "temperature": 1.0},
    "CKD": {"ckd_weight": 0.1, "temperature": 1.0},
    "ReviewKD": {"reviewkd_weight": 1.0},
    "ReviewKD+KD": {"kd_weight": 1.0, "kd_temperature": 1.0, "reviewkd_weight": 1.0},
    "ReviewKD+DKD": {"dkd_weight": 1.0, "alpha": 1.0, "beta": 0.25, "temperature": 1.0,
                     "reviewkd_weight": 1.0},
    "ReviewKD+CKD": {"ckd_weight": 0.1, "temperature": 1.0, "reviewkd_weight": 1.0},
}


def test_builtin_methods_have_the_published_defaults():
    assert method_names("classification")[:6] == list(EXPECTED)
    assert main_methods() == ["CE", "KD", "DKD", "CKD"]
    for name, expected in EXPECTED.items():
        assert get_method(name).resolve({}) == expected, name
    assert method_names("detection")[:8] == list(EXPECTED_DETECTION)
    for name, expected in EXPECTED_DETECTION.items():
        assert get_method(name, "detection").resolve({}) == expected, name


def test_existing_configs_keep_their_run_ids():
    """Classification ids of every recipe cell and of ablation-style variants are unchanged."""
    for key, (run_id, loss, *data) in PINNED["classification"].items():
        if data:
            config = RunConfig.from_dict(data[0])
        else:
            dataset, teacher, student, method = key.split("|")
            config = RunConfig.from_recipe(dataset, None if teacher == "None" else teacher,
                                           student, method)
        assert config.run_id() == run_id, key
        assert config.loss_params() == loss, key


def test_detection_ids_changed_only_by_typing_the_loss_values():
    """Detection configs hash their loss parameters as declared types now (temperature=1 and
    1.0 were two runs); with the recipes' values written as floats the old hash is found."""
    import hashlib

    for key, (run_id, old_hash) in PINNED["detection"].items():
        teacher, student, method = key.split("|")
        config = DetectionConfig.from_recipe(None if teacher == "None" else teacher, student,
                                             method, data_root="/data/coco")
        content = config.hash_content()
        raw = get_recipe("coco", None if teacher == "None" else teacher, student,
                         method).loss_params
        content["loss"] = {k: raw.get(k, v) for k, v in content["loss"].items()}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode())
        assert digest.hexdigest()[:12] == old_hash, key
        assert config.run_id().startswith(run_id[:-6]), key


def test_equal_values_of_declared_parameters_hash_alike_and_bad_ones_are_refused():
    base = dict(student="resnet8", dataset="synthetic", teacher="resnet8",
                teacher_checkpoint="untrained", method="DKD")
    a = RunConfig.from_dict({**base, "loss": {"beta": 2, "warmup_epochs": 5}})
    b = RunConfig.from_dict({**base, "loss": {"beta": 2.0, "warmup_epochs": 5.0}})
    assert a.run_id() == b.run_id()
    with pytest.raises(ConfigError, match=r"loss.beta=-2 is not accepted; it must be a number "
                                          r">= 0"):
        RunConfig.from_dict({**base, "loss": {"beta": -2}}).validate()
    with pytest.raises(ConfigError, match="loss.alpha=True is not accepted"):
        RunConfig.from_dict({**base, "loss": {"alpha": True}}).validate()
    with pytest.raises(ConfigError, match="loss.warmup_epochs=2.5"):
        RunConfig.from_dict({**base, "loss": {"warmup_epochs": 2.5}}).validate()
    with pytest.raises(ConfigError, match="positive_only=True uses no negatives"):
        RunConfig.from_dict({**base, "method": "CKD", "loss": {"positive_only": True,
                                                                "symmetric": True}}).validate()


def test_param_forms_and_checks():
    p = Param("gamma", float, 2.0, "exponent")
    assert p.check(3) == 3.0 and isinstance(p.check(3), float)
    assert p.check("1e-3") == pytest.approx(0.001)
    for bad in (-1, "x", None, float("nan"), False):
        with pytest.raises(InputError, match="gamma"):
            p.check(bad)
    assert Param("n", int, None, minimum=2, optional=True).form() == "an integer >= 2 or null"
    assert Param("t", float, 1.0, positive=True).form() == "a number > 0"
    assert Param("k", str, "a", choices=("a", "b")).form() == "one of ['a', 'b']"
    with pytest.raises(InputError):
        Param("bad", float, -1.0)  # a default outside its own constraint


def test_registration_mistakes_are_refused():
    with pytest.raises(ValueError, match="not registered"):
        register_method("X1", ["no_such_term"], source="test")
    with pytest.raises(ValueError, match="does not apply to detection"):
        register_method("X2", ["ce"], task="detection", source="test")
    with pytest.raises(ValueError, match=r"\['temperature'\] are declared by several terms"):
        register_method("X3", ["kd", "ckd"], source="test")
    with pytest.raises(ValueError, match="already registered by ckd_lib"):
        register_method("CKD", ["ce"], source="someone else")
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_term("Bad Name", compute=lambda i, p: 0, source="test")
    with pytest.raises(ConfigError, match=r"method='NOPE' is not accepted: 'NOPE' is not one of "
                                          r"CE, KD, DKD, CKD"):
        get_method("NOPE")


def test_colours_are_fixed_per_method_and_stable_across_processes():
    assert method_color("CKD") == "#d55e00"
    name = "SomeUnknownMethod"
    assert method_color(name) not in {method_color(m) for m in all_method_names()}
    code = "from ckd_lib.methods import method_color; print(method_color('SomeUnknownMethod'))"
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin"},
                          cwd=REPO).stdout.strip() for seed in (1, 2)}
    assert out == {method_color(name)}


def test_a_method_borrows_the_recipe_its_registration_names():
    ckd = get_recipe("cifar100", "resnet32x4", "resnet8x4", "CKD")
    borrowed = get_recipe("cifar100", "resnet32x4", "resnet8x4", "KD+CKD")
    assert ckd.borrowed_from is None
    assert borrowed.borrowed_from == "CKD" and "borrowed by KD+CKD" in borrowed.source
    assert (borrowed.epochs, borrowed.schedule, borrowed.lr, borrowed.batch_size) == \
        (ckd.epochs, ckd.schedule, ckd.lr, ckd.batch_size)
    # KD+CKD sets its own CE weight (0.1): the CKD recipe's 1.0 does not replace it
    assert borrowed.loss_params == {"cl_weight": 100, "temperature": 1}
    kd = get_recipe("cifar100", "resnet32x4", "resnet8x4", "KD")
    assert kd.borrowed_from is None and kd.epochs == 240  # explicit rows win


def _names_hitting(colour: str, count: int) -> list[str]:
    """Method names whose CRC-32 start lands on ``colour`` (a built-in's)."""
    pool = PALETTE + MORE_COLORS
    names = (f"P{i}" for i in range(100000))
    return [n for n in names if pool[zlib.crc32(n.encode()) % len(pool)] == colour][:count]


def test_every_method_has_a_colour_no_other_method_has():
    """Plugin methods without a colour never take a built-in's, nor each other's, however many;
    the colours are the same in every process (the registry's order decides ties)."""
    ckd = method_color("CKD")
    names = _names_hitting(ckd, 3) + [f"M{i}" for i in range(25)]
    for name in names:
        register_method(name, ["ce"], source="test-plugin.py")
    colours = {m: method_color(m) for m in all_method_names()}
    shared = [m for m in colours if m not in ("CE", "baseline")]
    assert len({colours[m] for m in shared}) == len(shared)
    assert colours["CE"] == colours["baseline"] not in {colours[m] for m in shared}
    assert colours["CKD"] == ckd == "#d55e00" and TEACHER_COLOR not in colours.values()
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours.values())
    with pytest.raises(ValueError, match=r"color #D55E00 is CKD's \(ckd_lib\)"):
        register_method("Mine", ["ce"], color="#D55E00", source="test-plugin.py")
    with pytest.raises(ValueError, match=r"color='purple'; give '#rrggbb'"):
        register_method("Mine", ["ce"], color="purple", source="test-plugin.py")


def test_a_borrowed_recipe_passes_on_only_the_loss_values_its_method_declares():
    register_method("TAKES", ["ce", "ckd"], recipe_from="CKD", recipe_params=["cl_weight"],
                    source="test-plugin.py")
    register_method("KEEPS", ["ce", "ckd"], recipe_from="CKD", source="test-plugin.py")
    for teacher, student, cl_weight in (("resnet32x4", "resnet8x4", 100),
                                        ("resnet56", "resnet20", 10)):
        ckd = get_recipe("cifar100", teacher, student, "CKD")
        assert ckd.loss_params["cl_weight"] == cl_weight  # the published per-pair value
        takes = get_recipe("cifar100", teacher, student, "TAKES")
        keeps = get_recipe("cifar100", teacher, student, "KEEPS")
        assert takes.loss_params == {"cl_weight": cl_weight}
        # the same defaults as CKD, yet nothing passes on: the rule is declared, not inferred
        assert keeps.loss_params == {} and keeps.not_passed == ckd.loss_params
        assert RunConfig.from_recipe("cifar100", teacher, student, "KEEPS").loss_params()[
            "cl_weight"] == 10.0
        assert f"passed on (its recipe_params): cl_weight={cl_weight};" in takes.borrowing()
        assert f"not passed (KEEPS's defaults stand): ce_weight=1.0, cl_weight={cl_weight}" \
            in keeps.borrowing()
    with pytest.raises(ValueError, match=r"recipe_params \['gamma'\] are not its parameters"):
        register_method("BAD", ["ce", "ckd"], recipe_from="CKD", recipe_params=["gamma"],
                        source="test-plugin.py")
    with pytest.raises(ValueError, match="without recipe_from"):
        register_method("BAD", ["ce", "ckd"], recipe_params=["cl_weight"], source="t.py")
    from ckd_lib.report.provenance import borrowed_recipes

    rules = borrowed_recipes(["CKD", "TAKES", "KEEPS", "KD+CKD", "gone"])
    assert list(rules) == ["KD+CKD", "KEEPS", "TAKES"]
    assert "only cl_weight of CKD's per-pair loss values" in rules["TAKES"]
    assert "none of CKD's per-pair loss values" in rules["KEEPS"]
    assert "a plugin, test-plugin.py" in rules["KEEPS"] and "ckd_lib" in rules["KD+CKD"]


def test_print_config_says_what_a_borrowed_recipe_passed_on():
    proc = subprocess.run([sys.executable, "-m", "ckd_lib.train", "--plugin", str(FOO),
                           "--recipe", "cifar100", "resnet32x4", "resnet8x4", "FOO",
                           "--set", "teacher_checkpoint=untrained", "--print-config"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert first.startswith("# FOO borrows CKD's recipe of resnet32x4->resnet8x4")
    assert "not passed (FOO's defaults stand): ce_weight=1.0, cl_weight=100" in first
    assert yaml.safe_load("\n".join(rest))[0]["loss"] == {}


# -- objectives composed from terms ------------------------------------------------------------
def np_log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_kd_plus_ckd_is_the_weighted_sum_of_its_terms_in_float64():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=g)
    method = get_method("KD+CKD")
    objective = Objective(method, method.resolve({"cl_weight": 3.0}),
                          TermContext("classification"))
    terms = objective(s, t, y, torch.ones((), dtype=torch.float64))
    S, T_, Y = s.numpy(), t.numpy(), y.numpy()
    ce = -np_log_softmax(S)[np.arange(6), Y].mean()
    log_ps, log_pt = np_log_softmax(S / 4.0), np_log_softmax(T_ / 4.0)
    kd = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean() * 16.0
    # CKD (teacher anchors, tau 1): row i = cosines of t_i with every s_j, target j = i
    t_hat = T_ / np.linalg.norm(T_, axis=1, keepdims=True)
    s_hat = S / np.linalg.norm(S, axis=1, keepdims=True)
    ckd = -np_log_softmax(t_hat @ s_hat.T)[np.arange(6), np.arange(6)].mean()
    assert list(terms) == ["ce", "kd", "ckd"]
    assert terms["ce"].item() == pytest.approx(0.1 * ce, rel=1e-12)
    assert terms["kd"].item() == pytest.approx(0.9 * kd, rel=1e-12)
    assert terms["ckd"].item() == pytest.approx(3.0 * ckd, rel=1e-10)


def test_the_warmup_factor_scales_only_the_warmup_terms():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    method = get_method("DKD")
    objective = Objective(method, method.resolve({}), TermContext("classification"))
    full = objective(s, t, y, torch.tensor(1.0))
    half = objective(s, t, y, torch.tensor(0.5))
    assert objective.warmup_epochs == 20
    assert torch.equal(full["ce"], half["ce"])
    assert half["dkd"].item() == pytest.approx(0.5 * full["dkd"].item(), rel=1e-6)


class ScaledTerm(TermModule):
    """A term with a trainable scale (what used to be silently never optimised)."""

    def __init__(self, params, context):
        super().__init__(params)
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, inputs):
        return self.scale * (inputs.student_logits - inputs.teacher_logits).pow(2).mean()

    def param_groups(self, weight_decay):
        return [([self.scale], 0.0)]


def test_a_terms_own_parameters_are_trained(tmp_path):
    register_term("test_scaled", needs=["teacher_logits"], module=ScaledTerm, source="test")
    register_method("TEST_SCALED", ["ce", "test_scaled"], source="test")
    from ckd_lib.engine.trainer import GroupTrainer

    config = RunConfig(student="resnet8", method="TEST_SCALED",
                       dataset="synthetic:num_classes=3,num_train=32,num_test=16",
                       teacher="resnet8", teacher_checkpoint="untrained", epochs=1,
                       schedule="cosine", batch_size=16, lr=0.1, device="cpu",
                       out_dir=str(tmp_path),
                       progress=False).validate()
    trainer = GroupTrainer([config])
    trainer.run()
    (student,) = trainer.students
    assert student.objective.parts["test_scaled"].scale.item() != 1.0
    groups = student.optimizer.groups
    assert any(p is student.objective.parts["test_scaled"].scale and decay == 0.0
               for params, _, decay in groups for p in params)


# -- the worked plugin, end to end -------------------------------------------------------------
def foo_reference(s, t, gamma):
    log_ps, log_pt = np_log_softmax(s), np_log_softmax(t)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1)
    top = t.argmax(axis=1)
    weight = (1.0 - np.exp(log_ps[np.arange(len(s)), top])) ** gamma
    return (weight * kl).mean()


def test_the_foo_example_plugin_computes_its_documented_formula():
    load_plugin(str(FOO))
    method = get_method("FOO")
    assert method.terms == ("ce", "foo") and method.recipe_from == "CKD"
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    y = torch.randint(0, 4, (7,), generator=g)
    objective = Objective(method, method.resolve({"gamma": 1.5, "foo_weight": 2.0}),
                          TermContext("classification"))
    terms = objective(s, t, y, torch.ones(()))
    expected = 2.0 * foo_reference(s.double().numpy(), t.double().numpy(), 1.5)
    assert terms["foo"].item() == pytest.approx(expected, rel=1e-5)
    assert get_method("FOO", "detection").resolve({}) == {"foo_weight": 0.1, "gamma": 2.0}
    recipe = get_recipe("cifar100", "wrn_40_2", "wrn_16_2", "FOO")
    assert recipe.borrowed_from == "CKD" and recipe.epochs == 480


def test_the_plugin_through_the_training_command_line(tmp_path):
    config = dict(student="resnet8", method="FOO", dataset="synthetic:num_classes=4,num_train=32,"
                  "num_test=16", teacher="resnet8", teacher_checkpoint="untrained", epochs=1,
                  schedule="cosine", batch_size=16, device="cpu",
                  out_dir=str(tmp_path / "runs"), progress=False, loss={"gamma": 1})
    path = tmp_path / "foo.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "ckd_lib.train", "--plugin", str(FOO),
                           "--config", str(path)], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/record.json")]
    assert record["config"]["method"] == "FOO" and "loss_foo" in record["history"][0]
    assert math.isfinite(record["history"][0]["loss_foo"])
    (plugin,) = record["provenance"]["plugins"]
    import hashlib

    assert plugin["sha256"] == hashlib.sha256(FOO.read_bytes()).hexdigest()
    listing = subprocess.run([sys.executable, "-m", "ckd_lib.train", "--plugin", str(FOO),
                              "--list-methods"], capture_output=True, text=True, timeout=300,
                             cwd=REPO)
    assert ("FOO (classification): ce + foo; FOO borrows CKD's recipe of each pair"
            in listing.stdout)
    assert "takes none of CKD's per-pair loss values" in listing.stdout
    assert "gamma: a number >= 0 (default 2.0)" in listing.stdout


def test_a_detection_distiller_runs_a_plugin_term():
    from ckd_lib.detection.distill import DetectionDistiller
    from ckd_lib.detection.models import build_detector

    load_plugin(str(FOO))
    torch.manual_seed(0)
    sizes = dict(train_min_sizes=(64,), test_min_size=64, max_size=96, roi_batch_per_image=32)
    student = build_detector("resnet18", num_classes=4, **sizes)
    teacher = build_detector("resnet18", num_classes=4, **sizes)
    distiller = DetectionDistiller(student, teacher, "FOO", {"gamma": 0.0}).train()
    images = [torch.rand(3, 80, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])}]
    losses = distiller(images, targets)
    assert "loss_foo" in losses and torch.isfinite(losses["loss_foo"])
    losses["loss_foo"].backward()
    assert student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
