"""The analyses behind the visualisation and efficiency notebooks, against independent truth."""

import numpy as np
import pytest
import torch

from ckd_lib import analysis
from ckd_lib.analysis.correlation import class_mean_logits, correlation_difference
from ckd_lib.analysis.efficiency import saved_tensor_bytes
from ckd_lib.data import load_dataset
from ckd_lib.models import create_model


def test_class_mean_logits_matches_a_loop():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 4)), rng.integers(0, 4, size=50)
    expected = np.stack([logits[labels == c].mean(axis=0) for c in range(4)])
    np.testing.assert_allclose(class_mean_logits(logits, labels, 4), expected)


def test_correlation_difference_of_identical_logits_is_zero():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(200, 6)), rng.integers(0, 6, size=200)
    for kind in ("mean_logits", "pearson"):
        diff = correlation_difference(logits, logits.copy(), labels, 6, kind=kind)
        assert diff["matrix"].shape == (6, 6)
        assert np.allclose(diff["matrix"], 0) and diff["mean"] == 0 and diff["max"] == 0


def test_correlation_difference_finds_a_known_offset():
    # the student's logit of class 2 is 1.5 higher on the samples of class 0 only: the
    # difference matrix is 1.5 at (0, 2) and 0 elsewhere (the diagonal is zeroed anyway)
    rng = np.random.default_rng(2)
    teacher = rng.normal(size=(90, 3))
    labels = np.repeat([0, 1, 2], 30)
    student = teacher.copy()
    student[labels == 0, 2] += 1.5
    diff = correlation_difference(student, teacher, labels, 3)["matrix"]
    expected = np.zeros((3, 3))
    expected[0, 2] = 1.5
    np.testing.assert_allclose(diff, expected, atol=1e-12)
    student[labels == 1, 1] += 7.0  # a diagonal entry: excluded by definition
    assert correlation_difference(student, teacher, labels, 3)["max"] == pytest.approx(1.5)


def test_correlation_difference_rejects_mismatched_logits():
    with pytest.raises(ValueError, match="one shape"):
        correlation_difference(np.zeros((4, 3)), np.zeros((4, 5)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="kind"):
        correlation_difference(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(4, dtype=int),
                               kind="other")


def test_tsne_shape_determinism_and_separation():
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=10, size=(3, 20))
    labels = np.repeat([0, 1, 2], 40)
    features = centres[labels] + rng.normal(size=(120, 20))
    a = analysis.tsne_embedding(features, seed=0, perplexity=15)
    b = analysis.tsne_embedding(features, seed=0, perplexity=15)
    assert a.shape == (120, 2)
    np.testing.assert_array_equal(a, b)
    # independent truth: well separated clusters stay separated (nearest neighbour's class)
    dist = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(1)] == labels).mean() > 0.95
    with pytest.raises(ValueError, match="at least 4"):
        analysis.tsne_embedding(features[:3])


def test_stratified_sample_is_balanced_sorted_and_seeded():
    labels = np.repeat(np.arange(5), [30, 40, 50, 60, 70])
    idx = analysis.stratified_sample(labels, 50, seed=1)
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [10] * 5
    np.testing.assert_array_equal(idx, analysis.stratified_sample(labels, 50, seed=1))
    assert len(analysis.stratified_sample(labels, 0)) == len(labels)
    only = analysis.stratified_sample(labels, 0, classes=[1, 3])
    assert set(labels[only]) == {1, 3}


def test_collect_outputs_match_the_model():
    data = load_dataset("synthetic:num_classes=4,num_train=16,num_test=12", "test")
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4).eval()
    out = analysis.collect_outputs(model, data, device="cpu", batch_size=5)
    assert out["logits"].shape == (12, 4) and out["labels"].tolist() == data.labels.tolist()
    assert out["features"].shape[0] == 12
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = model((data.images.float() / 255 - mean) / std)
    np.testing.assert_allclose(out["logits"], direct.numpy(), rtol=1e-4, atol=1e-4)


def test_saved_tensor_bytes_counts_what_autograd_keeps():
    x = torch.randn(1000, requires_grad=True)
    # exp saves its output (1000 float32 = 4000 bytes); the parameter-like input is excluded
    assert saved_tensor_bytes(lambda: x.exp().sum().backward()) == 4000
    w = torch.randn(1000, requires_grad=True)
    y = torch.randn(1000)
    # w * y saves both operands; excluding w leaves y
    assert saved_tensor_bytes(lambda: (w * y).sum().backward(), exclude=[w]) == 4000


@pytest.mark.parametrize("method", ["CE", "KD", "DKD", "CKD", "CKD+ReviewKD"])
def test_time_training_step_runs_every_method(method):
    row = analysis.time_training_step(method, "resnet8", "resnet8", batch_size=8,
                                      num_classes=10, device="cpu", steps=1, warmup=1)
    assert row["method"] == method and row["ms_per_iter"] > 0
    assert row["saved_activations_mb"] > 0 and row["peak_memory_mb"] is None
    assert (row["teacher"] is None) == (method == "CE")


def test_time_loss_rows():
    rows = analysis.time_loss([8, 16], num_classes=10, device="cpu", repeats=1)
    assert [(r["loss"], r["batch_size"]) for r in rows] == [("CKD", 8), ("KD", 8), ("CKD", 16),
                                                            ("KD", 16)]
    assert all(r["ms"] > 0 for r in rows)
