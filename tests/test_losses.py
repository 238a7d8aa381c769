"""Tests of ckd_lib.losses against float64 re-derivations written here with explicit loops.

The numpy references below never call the code under test; they follow the definitions
(the CKD paper, Zhu et al., arXiv 2404.14109, and the authors' code ZhouXinzzzzz/CKD; Hinton et
al. 2015 for KD; Zhao et al., CVPR 2022 for DKD; Chen et al., CVPR 2021 and mdistiller for
ReviewKD) term by term.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ckd_lib.losses import (
    CKD_NEGATIVES,
    LearnableTemperature,
    ReviewKD,
    ckd_loss,
    ckd_similarity,
    dkd_components,
    dkd_loss,
    hcl_loss,
    kd_loss,
    reviewkd_features,
)

# --------------------------------------------------------------------------------------------
# float64 references (numpy, loops)
# --------------------------------------------------------------------------------------------


def np_logsumexp(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    m = values.max()
    return float(m + math.log(np.exp(values - m).sum()))


def np_log_softmax(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return z - np_logsumexp(z)


def np_unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(math.sqrt(float((v * v).sum())), 1e-12)


def np_ckd(s, t, tau=1.0, negatives="teacher", symmetric=False, chunk_size=None) -> float:
    s = np.asarray(s, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    batch = s.shape[0]
    k = batch if chunk_size is None else chunk_size
    sh = [np_unit(s[i]) for i in range(batch)]
    th = [np_unit(t[i]) for i in range(batch)]
    total = 0.0
    for start in range(0, batch, k):
        idx = list(range(start, min(start + k, batch)))
        n = len(idx)
        m = np.zeros((n, n))
        for a, i in enumerate(idx):
            for b, j in enumerate(idx):
                if negatives == "teacher" or i == j:
                    m[a, b] = float(np.dot(th[i], sh[j]))
                else:
                    m[a, b] = float(np.dot(sh[i], sh[j]))
        for a in range(n):
            row = np_logsumexp([m[a, b] / tau for b in range(n)]) - m[a, a] / tau
            if symmetric:
                col = np_logsumexp([m[b, a] / tau for b in range(n)]) - m[a, a] / tau
                total += 0.5 * (row + col)
            else:
                total += row
    return total / batch


def np_kl_per_sample(zs, zt, temperature) -> np.ndarray:
    out = []
    for a, c in zip(zs, zt, strict=True):
        lps = np_log_softmax(np.asarray(a, dtype=np.float64) / temperature)
        lpt = np_log_softmax(np.asarray(c, dtype=np.float64) / temperature)
        out.append(sum(math.exp(lpt[k]) * (lpt[k] - lps[k]) for k in range(len(a))))
    return np.array(out)


def np_kd(zs, zt, temperature) -> float:
    return float(np_kl_per_sample(zs, zt, temperature).mean() * temperature**2)


def np_dkd_parts(zs, zt, target, temperature):
    """Per-sample (TCKD, NCKD, p_t of the teacher), by subset indexing instead of masking."""
    tckd, nckd, pt = [], [], []
    for a, c, y in zip(zs, zt, target, strict=True):
        a = np.asarray(a, dtype=np.float64) / temperature
        c = np.asarray(c, dtype=np.float64) / temperature
        lps, lpt = np_log_softmax(a), np_log_softmax(c)
        others = [k for k in range(len(a)) if k != int(y)]
        lbs = [lps[int(y)], np_logsumexp(lps[others])]
        lbt = [lpt[int(y)], np_logsumexp(lpt[others])]
        tckd.append(sum(math.exp(lbt[j]) * (lbt[j] - lbs[j]) for j in range(2)))
        lqs, lqt = np_log_softmax(a[others]), np_log_softmax(c[others])
        nckd.append(sum(math.exp(lqt[j]) * (lqt[j] - lqs[j]) for j in range(len(others))))
        pt.append(math.exp(lpt[int(y)]))
    return np.array(tckd), np.array(nckd), np.array(pt)


def np_dkd(zs, zt, target, alpha, beta, temperature) -> float:
    tckd, nckd, _ = np_dkd_parts(zs, zt, target, temperature)
    return float((alpha * tckd.mean() + beta * nckd.mean()) * temperature**2)


def mdistiller_style_dkd(zs, zt, target, alpha, beta, temperature) -> torch.Tensor:
    """mdistiller's arithmetic restated (probability sums, log, 1000 * gt_mask)."""
    gt = torch.zeros_like(zs).scatter_(1, target.unsqueeze(1), 1.0)
    ps, pt = F.softmax(zs / temperature, dim=1), F.softmax(zt / temperature, dim=1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum() / zs.shape[0]
    qt = F.softmax(zt / temperature - 1000.0 * gt, dim=1)
    lqs = F.log_softmax(zs / temperature - 1000.0 * gt, dim=1)
    nckd = (torch.xlogy(qt, qt) - qt * lqs).sum() / zs.shape[0]
    return (alpha * tckd + beta * nckd) * temperature**2


def np_adaptive_pool(x: np.ndarray, size: int) -> np.ndarray:
    """Average pooling for sizes dividing H and W (the only case used below)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, size, size))
    bh, bw = h // size, w // size
    for i in range(size):
        for j in range(size):
            out[:, :, i, j] = x[:, :, i * bh : (i + 1) * bh, j * bw : (j + 1) * bw].mean((2, 3))
    return out


def np_hcl(fs_list, ft_list) -> float:
    total = 0.0
    for fs, ft in zip(fs_list, ft_list, strict=True):
        fs, ft = np.asarray(fs, dtype=np.float64), np.asarray(ft, dtype=np.float64)
        h = fs.shape[2]
        terms = [(1.0, ((fs - ft) ** 2).mean())]
        w = 1.0
        for size in (4, 2, 1):
            if size < h:
                w /= 2
                diff = np_adaptive_pool(fs, size) - np_adaptive_pool(ft, size)
                terms.append((w, (diff**2).mean()))
        total += sum(wt * v for wt, v in terms) / sum(wt for wt, _ in terms)
    return total


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def logits(batch, classes, seed, scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale).to(dtype)


def close(value: torch.Tensor, ref: float, rtol=1e-5, atol=1e-6) -> bool:
    return math.isclose(float(value.detach()), ref, rel_tol=rtol, abs_tol=atol)


CKD_VARIANTS = [
    {},
    {"negatives": "student"},
    {"symmetric": True},
    {"negatives": "student", "symmetric": True},
    {"chunk_size": 3},
    {"chunk_size": 3, "symmetric": True},
    {"chunk_size": 4, "negatives": "student"},
]


# --------------------------------------------------------------------------------------------
# CKD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("variant", CKD_VARIANTS)
def test_ckd_matches_reference(variant, tau):
    s, t = logits(10, 7, 0), logits(10, 7, 1)
    got = ckd_loss(s.double(), t.double(), temperature=tau, **variant)
    assert got.dtype == torch.float64
    assert close(got, np_ckd(s.numpy(), t.numpy(), tau, **variant), rtol=1e-10, atol=1e-12)
    got32 = ckd_loss(s, t, temperature=tau, **variant)
    assert got32.dtype == torch.float32
    assert close(got32, np_ckd(s.numpy(), t.numpy(), tau, **variant), rtol=1e-5)


def test_ckd_default_is_authors_formula():
    """Default: rows teacher anchors, columns students, CE with target i, no centring."""
    s, t = logits(6, 5, 2), logits(6, 5, 3)
    th = t.double() / t.double().norm(dim=1, keepdim=True)
    sh = s.double() / s.double().norm(dim=1, keepdim=True)
    expected = F.cross_entropy(th @ sh.t() / 0.7, torch.arange(6))
    assert close(ckd_loss(s.double(), t.double(), 0.7), float(expected), rtol=1e-12)
    # Roles matter: swapping student and teacher gives the other direction.
    assert not close(ckd_loss(s, t), float(ckd_loss(t, s)), rtol=1e-4)


def test_ckd_positive_only_value_and_gradient():
    s, t = logits(8, 6, 4, dtype=torch.float64), logits(8, 6, 5, dtype=torch.float64)
    tau = 0.5
    ref = np.mean([(1 - np.dot(np_unit(t[i]), np_unit(s[i]))) / tau for i in range(8)])
    s1 = s.clone().requires_grad_()
    loss = ckd_loss(s1, t, tau, positive_only=True)
    assert close(loss, float(ref), rtol=1e-12)
    loss.backward()
    # Gradient equals the CE's positive term -S[i, i] / tau, written independently here.
    s2 = s.clone().requires_grad_()
    pos = (t / t.norm(dim=1, keepdim=True) * (s2 / s2.norm(dim=1, keepdim=True))).sum(1)
    (-pos / tau).mean().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-12, atol=1e-14)


def test_ckd_symmetric_is_mean_of_both_directions():
    s, t = logits(9, 5, 6), logits(9, 5, 7)
    row = ckd_loss(s, t, 0.8)
    col = ckd_loss(t, s, 0.8)  # rows anchored on students, columns over teachers
    torch.testing.assert_close(ckd_loss(s, t, 0.8, symmetric=True), 0.5 * (row + col))


def test_ckd_chunk_size_full_and_weighted_mean():
    s, t = logits(10, 6, 8), logits(10, 6, 9)
    for variant in ({}, {"symmetric": True}, {"negatives": "student"}):
        full = ckd_loss(s, t, **variant)
        for k in (10, 11, 64):
            torch.testing.assert_close(ckd_loss(s, t, chunk_size=k, **variant), full)
        for k in (1, 3, 4, 7):
            per_chunk = [
                (min(k, 10 - i), ckd_loss(s[i : i + k], t[i : i + k], **variant))
                for i in range(0, 10, k)
            ]
            weighted = sum(n * v for n, v in per_chunk) / 10
            torch.testing.assert_close(ckd_loss(s, t, chunk_size=k, **variant), weighted)
    # chunk_size 1: no negatives at all, every CE is over one entry: loss 0.
    assert float(ckd_loss(s, t, chunk_size=1)) == 0.0


def test_ckd_student_negatives_matrix():
    s, t = logits(5, 4, 10, dtype=torch.float64), logits(5, 4, 11, dtype=torch.float64)
    m = ckd_similarity(s, t, negatives="student")
    mt = ckd_similarity(s, t, negatives="teacher")
    for i in range(5):
        for j in range(5):
            if i == j:
                expected = np.dot(np_unit(t[i]), np_unit(s[i]))
            else:
                expected = np.dot(np_unit(s[i]), np_unit(s[j]))
            assert math.isclose(float(m[i, j]), expected, rel_tol=1e-12, abs_tol=1e-14)
            assert math.isclose(
                float(mt[i, j]), np.dot(np_unit(t[i]), np_unit(s[j])), rel_tol=1e-12
            )


def test_ckd_scale_invariance_and_logit_temperature_cancels():
    s, t = logits(7, 5, 12), logits(7, 5, 13)
    a = torch.rand(7, 1, generator=torch.Generator().manual_seed(0)) * 10 + 0.01
    b = torch.rand(7, 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.01
    for variant in [*CKD_VARIANTS, {"positive_only": True}]:
        base = ckd_loss(s, t, 0.5, **variant)
        torch.testing.assert_close(ckd_loss(s * a, t, 0.5, **variant), base)
        torch.testing.assert_close(ckd_loss(s, t * b, 0.5, **variant), base)
        # A logit temperature is one scale for all samples: it cancels too.
        torch.testing.assert_close(ckd_loss(s / 4.0, t / 4.0, 0.5, **variant), base)


@pytest.mark.parametrize("variant", [*CKD_VARIANTS, {"positive_only": True}])
def test_ckd_gradcheck(variant):
    s = logits(5, 4, 14, dtype=torch.float64).requires_grad_()
    t = logits(5, 4, 15, dtype=torch.float64).requires_grad_()
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    variant = {**variant, "chunk_size": 2} if "chunk_size" in variant else variant
    assert torch.autograd.gradcheck(lambda a, b, c: ckd_loss(a, b, c, **variant), (s, t, tau))


def test_ckd_tensor_temperature_equals_float():
    s, t = logits(6, 5, 16), logits(6, 5, 17)
    torch.testing.assert_close(ckd_loss(s, t, torch.tensor(0.3)), ckd_loss(s, t, 0.3))


def test_learnable_temperature_gradient_and_positivity():
    module = LearnableTemperature(init=2.0, min_value=0.01)
    assert math.isclose(float(module().detach()), 2.0, rel_tol=1e-6)
    assert module().dim() == 0
    s, t = logits(8, 5, 18), logits(8, 5, 19)
    ckd_loss(s, t, module()).backward()
    grad = module.log_offset.grad
    assert grad is not None and torch.isfinite(grad) and float(grad) != 0.0
    # Drive tau down hard: it must approach the floor and never cross it.
    opt = torch.optim.SGD(module.parameters(), lr=50.0)
    t_close = s + 0.01 * t  # positives dominate: the loss wants tau -> 0
    for _ in range(200):
        opt.zero_grad()
        ckd_loss(s, t_close, module()).backward()
        opt.step()
        assert float(module().detach()) > 0.01
    assert float(module().detach()) < 0.5
    assert list(module.parameters()) == [module.log_offset]


def test_learnable_temperature_rejects_bad_init():
    with pytest.raises(ValueError, match="init"):
        LearnableTemperature(init=0.005, min_value=0.01)
    with pytest.raises(ValueError, match="min_value"):
        LearnableTemperature(init=1.0, min_value=-1.0)


# --------------------------------------------------------------------------------------------
# KD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_reference(temperature):
    s, t = logits(6, 9, 20), logits(6, 9, 21)
    ref = np_kd(s.numpy(), t.numpy(), temperature)
    assert close(kd_loss(s.double(), t.double(), temperature), ref, rtol=1e-10)
    assert close(kd_loss(s, t, temperature), ref, rtol=1e-5)


def test_kd_matches_mdistiller_formula():
    s, t = logits(6, 9, 22), logits(6, 9, 23)
    expected = (
        F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="none").sum(1).mean() * 16
    )
    torch.testing.assert_close(kd_loss(s, t, 4.0), expected)


def test_kd_zero_when_equal():
    s = logits(5, 8, 24)
    assert abs(float(kd_loss(s, s.clone(), 4.0))) < 1e-6
    big = logits(5, 8, 24, scale=1e4)
    assert abs(float(kd_loss(big, big.clone(), 4.0))) < 1e-3


def test_kd_gradcheck():
    s = logits(4, 5, 25, dtype=torch.float64).requires_grad_()
    t = logits(4, 5, 26, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kd_loss(a, b, 4.0), (s, t))


# --------------------------------------------------------------------------------------------
# DKD
# --------------------------------------------------------------------------------------------


def test_dkd_matches_reference_and_mdistiller():
    s, t = logits(8, 10, 27), logits(8, 10, 28)
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(0))
    ref = np_dkd(s.numpy(), t.numpy(), y.numpy(), 1.0, 8.0, 4.0)
    assert close(dkd_loss(s.double(), t.double(), y, 1.0, 8.0, 4.0), ref, rtol=1e-10)
    assert close(dkd_loss(s, t, y, 1.0, 8.0, 4.0), ref, rtol=1e-5)
    md = mdistiller_style_dkd(s.double(), t.double(), y, 1.0, 8.0, 4.0)
    assert close(md, ref, rtol=1e-9)


def test_dkd_decomposition():
    """Per sample: KL(p_T || p_S) = TCKD + (1 - p_t^T) * NCKD (DKD paper, Eq. 5)."""
    s, t = logits(12, 6, 29), logits(12, 6, 30)
    y = torch.randint(0, 6, (12,), generator=torch.Generator().manual_seed(1))
    tckd, nckd = dkd_components(s.double(), t.double(), y, 2.0)
    kl = np_kl_per_sample(s.numpy(), t.numpy(), 2.0)
    p_t = F.softmax(t.double() / 2.0, dim=1).gather(1, y[:, None]).squeeze(1)
    np.testing.assert_allclose((tckd + (1 - p_t) * nckd).numpy(), kl, rtol=1e-10, atol=1e-12)
    r_tckd, r_nckd, r_pt = np_dkd_parts(s.numpy(), t.numpy(), y.numpy(), 2.0)
    np.testing.assert_allclose(tckd.numpy(), r_tckd, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(nckd.numpy(), r_nckd, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(r_tckd + (1 - r_pt) * r_nckd, kl, rtol=1e-10, atol=1e-12)
    # Batch of one with alpha = 1, beta = 1 - p_t: DKD is exactly KD.
    single = dkd_loss(s[:1].double(), t[:1].double(), y[:1], 1.0, 1 - float(p_t[0]), 2.0)
    torch.testing.assert_close(single, kd_loss(s[:1].double(), t[:1].double(), 2.0))


def test_dkd_exact_for_huge_logits_where_mdistiller_is_not():
    s, t = logits(6, 10, 31, scale=1e4), logits(6, 10, 32, scale=1e4)
    y = torch.arange(6) % 10
    ref = np_dkd(s.numpy(), t.numpy(), y.numpy(), 1.0, 8.0, 4.0)
    got = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    assert torch.isfinite(got)
    assert close(got, ref, rtol=1e-4)
    md = mdistiller_style_dkd(s.double(), t.double(), y, 1.0, 8.0, 4.0)
    assert not (torch.isfinite(md) and close(md, ref, rtol=1e-3))  # their mask is not -inf


def test_dkd_gradcheck():
    s = logits(4, 5, 33, dtype=torch.float64).requires_grad_()
    t = logits(4, 5, 34, dtype=torch.float64).requires_grad_()
    y = torch.tensor([0, 3, 4, 1])
    assert torch.autograd.gradcheck(lambda a, b: dkd_loss(a, b, y, 1.0, 8.0, 4.0), (s, t))


def test_dkd_target_errors():
    s, t = logits(4, 5, 35), logits(4, 5, 36)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        dkd_loss(s, t, torch.tensor([0, 1, 2]), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="1-D"):
        dkd_loss(s, t, torch.zeros(4, 2, dtype=torch.long), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="integer"):
        dkd_loss(s, t, torch.zeros(4), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="2 classes"):
        dkd_loss(s[:, :1], t[:, :1], torch.zeros(4, dtype=torch.long), 1.0, 8.0, 4.0)


# --------------------------------------------------------------------------------------------
# robustness shared by every loss
# --------------------------------------------------------------------------------------------


def _all_losses(s, t, y):
    out = {f"ckd{v}": ckd_loss(s, t, 1.0, **v) for v in CKD_VARIANTS}
    out["ckd_pos"] = ckd_loss(s, t, 1.0, positive_only=True)
    out["kd"] = kd_loss(s, t, 4.0)
    out["dkd"] = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    return out


@pytest.mark.parametrize(
    ("batch", "classes", "scale"),
    [(6, 10, 1e4), (1, 10, 3.0), (1, 10, 1e4), (5, 3, 3.0), (3, 7, 1e4), (64, 100, 1e4)],
)
def test_finite_values_and_gradients(batch, classes, scale):
    s = logits(batch, classes, 40, scale=scale).requires_grad_()
    t = logits(batch, classes, 41, scale=scale)
    t = torch.where(torch.rand_like(t) < 0.3, -t, t)  # mixed signs, exact +-1e4 scale
    y = torch.arange(batch) % classes
    for name, value in _all_losses(s, t, y).items():
        assert value.dim() == 0 and torch.isfinite(value), name
        (grad,) = torch.autograd.grad(value, s)
        assert torch.isfinite(grad).all(), name


def test_batch_of_one_ckd_is_zero():
    s, t = logits(1, 10, 42), logits(1, 10, 43)
    for variant in CKD_VARIANTS:
        assert float(ckd_loss(s, t, **variant)) == 0.0


def test_bf16_autocast_computes_in_float32():
    s, t = logits(8, 10, 44).bfloat16(), logits(8, 10, 45).bfloat16()
    y = torch.arange(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = _all_losses(s, t, y)
        hcl = hcl_loss([s[:, :, None, None]], [t[:, :, None, None]])
    plain = _all_losses(s.float(), t.float(), y)
    for name, value in under.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, plain[name], rtol=1e-6, atol=1e-6)
    assert hcl.dtype == torch.float32


def test_shape_errors_name_the_shapes():
    s = logits(4, 10, 46)
    cases = [
        (s, logits(4, 9, 47), r"\(4, 10\).*\(4, 9\)"),
        (s[0], s[0], r"2-D.*\(10,\)"),
        (s[None], s[None], r"2-D.*\(1, 4, 10\)"),
    ]
    y = torch.zeros(4, dtype=torch.long)
    for a, b, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            ckd_loss(a, b)
        with pytest.raises(ValueError, match=pattern):
            kd_loss(a, b, 4.0)
        with pytest.raises(ValueError, match=pattern):
            dkd_loss(a, b, y, 1.0, 8.0, 4.0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"negatives": "both"}, r"'both'.*'teacher', 'student'"),
        ({"symmetric": "yes"}, "symmetric.*'yes'"),
        ({"positive_only": 1}, "positive_only.*1"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"chunk_size": 2.5}, "chunk_size=2.5"),
        ({"chunk_size": True}, "chunk_size=True"),
        ({"positive_only": True, "symmetric": True}, "positive_only"),
        ({"temperature": 0.0}, "temperature.*0.0"),
        ({"temperature": -1.0}, "temperature.*-1.0"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": torch.ones(2)}, r"0-d.*\(2,\)"),
    ],
)
def test_ckd_option_errors(kwargs, pattern):
    s, t = logits(4, 5, 48), logits(4, 5, 49)
    with pytest.raises(ValueError, match=pattern):
        ckd_loss(s, t, **kwargs)


def test_accepted_negatives_listed():
    assert CKD_NEGATIVES == ("teacher", "student")


# --------------------------------------------------------------------------------------------
# ReviewKD
# --------------------------------------------------------------------------------------------


def test_hcl_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(50)
    shapes = [(2, 3, 8, 8), (2, 4, 4, 4), (2, 5, 2, 2), (2, 6, 1, 1)]
    fs = [torch.randn(*sh, generator=g, dtype=torch.float64) for sh in shapes]
    ft = [torch.randn(*sh, generator=g, dtype=torch.float64) for sh in shapes]
    ref = np_hcl([f.numpy() for f in fs], [f.numpy() for f in ft])
    assert close(hcl_loss(fs, ft), ref, rtol=1e-12)
    # One 1x1 level is a plain MSE; one 4x4 level uses sizes 2 and 1 with weights 1/2, 1/4.
    assert close(hcl_loss(fs[3:], ft[3:]), float(((fs[3] - ft[3]) ** 2).mean()), rtol=1e-12)
    mse = float(((fs[1] - ft[1]) ** 2).mean())
    p2 = float(((F.avg_pool2d(fs[1], 2) - F.avg_pool2d(ft[1], 2)) ** 2).mean())
    p1 = float(((fs[1].mean((2, 3)) - ft[1].mean((2, 3))) ** 2).mean())
    assert close(hcl_loss(fs[1:2], ft[1:2]), (mse + p2 / 2 + p1 / 4) / 1.75, rtol=1e-12)


def test_hcl_loss_errors():
    a = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 3, 2, 2\)"):
        hcl_loss([a], [torch.zeros(2, 3, 2, 2)])
    with pytest.raises(ValueError, match="equally many"):
        hcl_loss([a, a], [a])


class _Stage(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.bn(self.conv(x))  # pre-activation output


class TinyNet(nn.Module):
    """Stand-in following docs/CONTRACTS.md: forward_features -> (logits, feats dict)."""

    def __init__(self, widths, strides, num_classes=10):
        super().__init__()
        self.stem = _Stage(3, widths[0], 1)
        self.stages = nn.ModuleList(
            _Stage(widths[i], widths[i + 1], strides[i]) for i in range(len(strides))
        )
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x):
        x = F.relu(self.stem(x))
        feats, preact = [x], [x]
        for stage in self.stages:
            pre = stage(x)
            x = F.relu(pre)
            preact.append(pre)
            feats.append(x)
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(pooled), {"feats": feats, "preact_feats": preact, "pooled_feat": pooled}

    def forward(self, x):
        return self.forward_features(x)[0]


def test_reviewkd_features_list():
    net = TinyNet([4, 8, 16], [1, 2])
    _, feats = net.forward_features(torch.randn(2, 3, 16, 16))
    student = reviewkd_features(feats)
    teacher = reviewkd_features(feats, preact=True)
    assert [tuple(f.shape) for f in student] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 16, 1, 1)]
    assert student[0] is feats["feats"][1] and teacher[0] is feats["preact_feats"][1]
    torch.testing.assert_close(student[-1].flatten(1), feats["pooled_feat"])
    with pytest.raises(ValueError, match="pooled_feat"):
        reviewkd_features({"feats": feats["feats"]})


@pytest.mark.parametrize(
    ("s_widths", "s_strides", "t_widths", "t_strides"),
    [
        ([4, 8, 12, 16], [1, 2, 2], [6, 12, 24, 32], [1, 2, 2]),  # same sizes, other widths
        ([4, 8, 12, 16], [1, 2, 2], [6, 12, 24, 32], [2, 2, 2]),  # teacher at lower resolution
    ],
)
def test_reviewkd_shapes_and_training(s_widths, s_strides, t_widths, t_strides):
    torch.manual_seed(0)
    student, teacher = TinyNet(s_widths, s_strides), TinyNet(t_widths, t_strides).eval()
    student.train()
    review = ReviewKD.for_models(student, teacher, input_size=(3, 8, 8))
    assert student.training and student.stem.bn.training and not teacher.training
    assert review.mid_channel == min(512, s_widths[-1])
    x = torch.randn(3, 3, 8, 8)
    _, fs = student.forward_features(x)
    with torch.no_grad():
        _, ft = teacher.forward_features(x)
    fused = review(reviewkd_features(fs))
    target = reviewkd_features(ft, preact=True)
    assert [f.shape for f in fused] == [f.shape for f in target]
    loss = hcl_loss(fused, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in review.parameters())
    assert student.fc.weight.grad is None  # the fc is not on the feature path
    assert student.stages[0].conv.weight.grad is not None
    # Level lists given deep -> shallow (mdistiller's SHAPES order) are refused.
    with pytest.raises(ValueError, match="shallow -> deep"):
        review(reviewkd_features(fs)[::-1])


def test_reviewkd_explicit_construction():
    review = ReviewKD(
        in_channels=[8, 16, 16],
        out_channels=[10, 20, 30],
        mid_channel=16,
        shapes=[8, 4, 1],
        out_shapes=[8, (2, 2), 1],
    )
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 16, 1, 1)]
    out = review(feats)
    assert [tuple(f.shape) for f in out] == [(2, 10, 8, 8), (2, 20, 2, 2), (2, 30, 1, 1)]
    assert review.abfs[-1].att_conv is None and review.abfs[0].att_conv is not None
    with pytest.raises(ValueError, match="equal length"):
        ReviewKD([8], [10, 20], 16, [8], [8])


# --------------------------------------------------------------------------------------------
# CUDA-graph friendliness: no host sync, no value-dependent Python branch
# --------------------------------------------------------------------------------------------


def _graph_cases(s, t, y, tau):
    return {
        "ckd": lambda: ckd_loss(s, t, 1.0),
        "ckd_learnable_tau": lambda: ckd_loss(s, t, tau()),
        "ckd_student_sym_chunk": lambda: ckd_loss(
            s, t, 0.5, negatives="student", symmetric=True, chunk_size=3
        ),
        "ckd_positive_only": lambda: ckd_loss(s, t, positive_only=True),
        "kd": lambda: kd_loss(s, t, 4.0),
        "dkd": lambda: dkd_loss(s, t, y, 1.0, 8.0, 4.0),
    }


def test_losses_trace_as_one_graph():
    """torch.compile(fullgraph=True) fails on .item(), host syncs or branches on values."""
    s, t = logits(8, 10, 60).requires_grad_(), logits(8, 10, 61)
    y = torch.arange(8)
    tau = LearnableTemperature()
    for name, fn in _graph_cases(s, t, y, tau).items():
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(), fn(), msg=name)
    review = ReviewKD([8, 16], [8, 16], 16, [4, 1], [4, 1])
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 1, 1)]
    torch._dynamo.reset()
    out = torch.compile(lambda: hcl_loss(review(feats), feats), backend="eager", fullgraph=True)()
    assert torch.isfinite(out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture_and_replay():
    """Capture forward + backward of each loss in a CUDA graph, replay on new data."""
    dev = torch.device("cuda")
    s = logits(16, 10, 62).to(dev).requires_grad_()
    t, y = logits(16, 10, 63).to(dev), (torch.arange(16) % 10).to(dev)
    tau = LearnableTemperature().to(dev)
    for name, fn in _graph_cases(s, t, y, tau).items():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                s.grad = None
                fn().backward()
        torch.cuda.current_stream().wait_stream(side)
        s.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
            out.backward()
        new_s, new_t = logits(16, 10, 64).to(dev), logits(16, 10, 65).to(dev)
        with torch.no_grad():
            s.copy_(new_s)
            t.copy_(new_t)
        graph.replay()
        torch.cuda.synchronize()
        ref_s = new_s.clone().requires_grad_()
        ref = _graph_cases(ref_s, new_t, y, tau)[name]()
        ref.backward()
        torch.testing.assert_close(out, ref.detach(), msg=name)
        torch.testing.assert_close(s.grad, ref_s.grad, msg=name)
