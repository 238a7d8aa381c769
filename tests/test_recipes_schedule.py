"""Recipes equal the shipped recipes.csv; lr and warm-up follow the reference formulas."""

import csv
import math
from pathlib import Path

import pytest
import torch

from ckd_lib.config import RunConfig
from ckd_lib.engine.optim import TensorLrSGD
from ckd_lib.engine.schedule import learning_rate, warmup_factor
from ckd_lib.recipes import all_recipes, get_recipe, pairs

PROJECT_RECIPES = Path(__file__).resolve().parents[1] / "ckd_lib" / "resources" / "recipes.csv"


def csv_rows():
    with open(PROJECT_RECIPES, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("row", csv_rows(), ids=lambda r: f"{r['dataset']}-{r['teacher']}-"
                         f"{r['student']}-{r['method']}")
def test_get_recipe_equals_csv_row(row):
    teacher = None if row["method"] == "teacher" else row["teacher"]
    recipe = get_recipe(row["dataset"], teacher, row["student"], row["method"])
    assert recipe.lr == float(row["lr"])
    assert recipe.batch_size == int(row["batch"])
    assert recipe.weight_decay == float(row["weight_decay"])
    assert recipe.epochs == (int(row["epochs"]) if row["epochs"] else None)
    assert recipe.source == row["source"]
    for item in row["loss_params"].split(";"):
        key, value = item.split("=")
        got = recipe.loss_params[key]
        assert str(got) == value or (not isinstance(got, str) and float(got) == float(value))
    if row["schedule"].startswith("step_x0.1_at_"):
        expected = [int(m) for m in row["schedule"][len("step_x0.1_at_"):].split("_")]
        assert recipe.schedule == "step" and list(recipe.milestones) == expected
    elif row["schedule"] == "cosine_to_0_per_epoch":
        assert recipe.schedule == "cosine"


def test_all_rows_parsed_and_eleven_cifar_pairs():
    derived = PROJECT_RECIPES.with_name("recipes_derived.csv")
    with open(derived, newline="") as handle:
        derived_rows = list(csv.DictReader(handle))
    assert len(all_recipes()) == len(csv_rows()) + len(derived_rows)
    # derived rows are labelled as such, never passed off as published configs
    assert all(r.source.startswith("derived") for r in all_recipes()[len(csv_rows()):])
    assert len(pairs("cifar100", "CKD")) == 11


def test_unknown_recipe_lists_what_exists():
    with pytest.raises(ValueError, match="cells with recipes on cifar100"):
        get_recipe("cifar100", "resnet32x4", "resnet8x4", "FitNet")
    with pytest.raises(ValueError, match="datasets with recipes"):
        get_recipe("mnist", "a", "b", "CKD")


def test_from_recipe_fills_config():
    cfg = RunConfig.from_recipe("cifar100", "wrn_40_2", "wrn_40_1", "CKD", seed=3)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.schedule) == (480, 0.05, 32, "cosine")
    assert cfg.loss_params()["cl_weight"] == 50 and cfg.loss_params()["temperature"] == 2
    assert cfg.seed == 3
    teacher = RunConfig.from_recipe("cifar100", None, "resnet56", "teacher")
    assert teacher.method == "CE" and teacher.teacher is None and teacher.epochs == 240


def _torch_scheduler_lrs(make_scheduler, epochs, base_lr):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_step_schedule_equals_multisteplr_and_mdistiller_formula():
    cfg = RunConfig(student="resnet8", method="CE", epochs=240, lr=0.05, schedule="step",
                    milestones=[150, 180, 210])
    ours = [learning_rate(cfg, e) for e in range(240)]
    ref = _torch_scheduler_lrs(
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [150, 180, 210], 0.1), 240, 0.05)
    assert ours == pytest.approx(ref, rel=1e-12)
    # mdistiller: epoch counted from 1, steps = number of milestones strictly below it
    for epoch1 in range(1, 241):
        steps = sum(epoch1 > m for m in (150, 180, 210))
        assert ours[epoch1 - 1] == pytest.approx(0.05 * 0.1**steps, rel=1e-12)
    assert ours[149] == 0.05 and ours[150] == pytest.approx(0.005)


def test_cosine_schedule_equals_cosineannealinglr_per_epoch():
    cfg = RunConfig(student="resnet8", method="CE", epochs=480, lr=0.05, schedule="cosine")
    ours = [learning_rate(cfg, e) for e in range(480)]
    ref = _torch_scheduler_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=480, eta_min=0), 480, 0.05)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert ours[0] == 0.05 and ours[-1] == pytest.approx(0.05 * (1 + math.cos(math.pi * 479 / 480))
                                                         / 2)


def test_warmup_factor_is_linear_then_one():
    assert [warmup_factor(20, e) for e in (0, 9, 18, 19, 20, 100)] == [
        0.05, 0.5, 0.95, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0 and warmup_factor(None, 3) == 1.0


def test_tensor_lr_sgd_equals_torch_sgd_in_float64():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3, dtype=torch.float64)
    b0 = torch.randn(3, dtype=torch.float64)
    xs = [torch.randn(4, 5, dtype=torch.float64) for _ in range(6)]
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01, 0.2]

    def run(make_opt, set_lr):
        w = torch.nn.Parameter(w0.clone())
        b = torch.nn.Parameter(b0.clone())
        opt = make_opt(w, b)
        for x, lr in zip(xs, lrs, strict=True):
            set_lr(opt, lr)
            opt.zero_grad()
            ((x @ w + b).sin().sum()).backward()
            opt.step()
        return w.detach(), b.detach()

    def torch_opt(w, b):
        return torch.optim.SGD([{"params": [w], "weight_decay": 5e-4},
                                {"params": [b], "weight_decay": 0.0}], lr=0.1, momentum=0.9)

    def torch_set(opt, lr):
        for group in opt.param_groups:
            group["lr"] = lr

    lr_tensor = torch.zeros((), dtype=torch.float64)
    ours = run(lambda w, b: TensorLrSGD([([w], 5e-4), ([b], 0.0)], lr=lr_tensor, momentum=0.9),
               lambda opt, lr: lr_tensor.fill_(lr))
    ref = run(torch_opt, torch_set)
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-13, atol=1e-14)


def test_tensor_lr_sgd_state_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    opt = TensorLrSGD([([p], 0.0)], lr=torch.tensor(0.1), momentum=0.9)
    p.grad = torch.ones(3)
    opt.step()
    state = opt.state_dict()
    q = torch.nn.Parameter(torch.ones(3))
    other = TensorLrSGD([([q], 0.0)], lr=torch.tensor(0.1), momentum=0.9)
    other.load_state_dict(state)
    torch.testing.assert_close(other.groups[0][1][0], torch.ones(3))


def test_integer_and_float_loss_weights_are_the_same_run():
    a = RunConfig(student="resnet8", teacher="resnet20", loss={"cl_weight": 100})
    b = RunConfig(student="resnet8", teacher="resnet20", loss={"cl_weight": 100.0})
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != RunConfig(student="resnet8", teacher="resnet20",
                                        loss={"cl_weight": 50}).config_hash()
