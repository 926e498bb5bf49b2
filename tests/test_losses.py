"""Loss terms against hand-computed values, edge cases and float64 references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import ObcpError
from pipeline.method.losses import (
    LossInputError,
    contrastive_labeled,
    contrastive_negative,
    contrastive_unlabeled,
    denied_consistency,
    info_nce,
    info_nce_extra,
    log1m_softmax,
    negative_loss,
    sup_loss,
)

E = math.exp
t = torch.tensor


def lse(*xs: float) -> float:
    return math.log(sum(E(x) for x in xs))


# A tiny fixture: B = 2, D = 2, K = 2.
Q = t([[1.0, 0.0], [0.0, 1.0]])
K_POS = t([[0.6, 0.8], [0.0, 1.0]])
NEG = t([[1.0, 0.0], [-1.0, 0.0]])


def test_info_nce_by_hand() -> None:
    tau = 0.5
    # sample 0: q·k+ = 0.6, q·neg = (1, -1); divided by tau: 1.2 | 2, -2
    l0 = lse(1.2, 2.0, -2.0) - 1.2
    # sample 1: q·k+ = 1, q·neg = (0, 0): 2 | 0, 0
    l1 = lse(2.0, 0.0, 0.0) - 2.0
    got = info_nce(Q, K_POS, NEG, tau)
    assert got.shape == (2,) and got.dtype == torch.float32
    torch.testing.assert_close(got, t([l0, l1]))
    torch.testing.assert_close(contrastive_unlabeled(Q, K_POS, NEG, tau), t((l0 + l1) / 2))


def test_info_nce_matches_cross_entropy_with_target_zero() -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    k = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    neg = F.normalize(torch.randn(7, 4, generator=g), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ neg.t()], 1) / 0.2
    ref = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long), reduction="none")
    torch.testing.assert_close(info_nce(q, k, neg, 0.2), ref)


def test_contrastive_labeled_by_hand() -> None:
    tau = 0.5
    k_bank = t([[0.0, 1.0], [9.0, 9.0]])  # row 1 is garbage and must be ignored
    valid = t([True, False])
    own0 = lse(1.2, 2.0, -2.0) - 1.2
    other0 = lse(0.0, 2.0, -2.0) - 0.0  # q0·k_bank0 = 0
    own1 = lse(2.0, 0.0, 0.0) - 2.0
    expected = (0.5 * (own0 + other0) + own1) / 2
    torch.testing.assert_close(contrastive_labeled(Q, K_POS, k_bank, valid, NEG, tau), t(expected))


def test_contrastive_negative_by_hand() -> None:
    queue = t([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # K = 3
    hard = t([[[0.8, 0.6], [5.0, 5.0]], [[0.0, -1.0], [0.6, 0.8]]])  # [B=2, N=2, D=2]
    hard_valid = t([[True, False], [True, True]])
    # sample 0: drops queue[0], keeps queue[1:] -> dots -1, 0; adds hard (0.8); positive 0.6
    l0 = lse(0.6, -1.0, 0.0, 0.8) - 0.6
    # sample 1: drops queue[0:2], keeps queue[2] -> dot 1; adds hard -1, 0.8; positive 1
    l1 = lse(1.0, 1.0, -1.0, 0.8) - 1.0
    got = contrastive_negative(Q, K_POS, queue, hard, hard_valid, 1.0)
    torch.testing.assert_close(got, t((l0 + l1) / 2))


def test_contrastive_negative_without_hard_is_unlabeled_loss() -> None:
    hard = torch.zeros(2, 1, 2)
    valid = torch.zeros(2, 1, dtype=torch.bool)
    torch.testing.assert_close(
        contrastive_negative(Q, K_POS, NEG, hard, valid, 0.3), contrastive_unlabeled(Q, K_POS, NEG, 0.3)
    )


def test_negative_loss_by_hand() -> None:
    logits = t([[2.0, 1.0, 0.0], [0.0, 0.5, 0.0], [1.0, 2.0, 3.0]])
    denied = t([[True, False, True], [False, True, False], [False, False, False]])
    z0 = lse(2.0, 1.0, 0.0)
    p00, p02 = E(2.0 - z0), E(0.0 - z0)
    assert p00 >= 1 / 3 and p02 < 1 / 3  # class 2 of sample 0 is below the 1/C threshold
    p11 = E(0.5) / (2 + E(0.5))
    assert p11 >= 1 / 3
    # sample 2 has no denied class: excluded from the average (2 samples, not 3)
    expected = (-math.log(1 - p00) + -math.log(1 - p11)) / 2
    torch.testing.assert_close(negative_loss(logits, denied), t(expected))


def test_negative_loss_zero_without_denied_classes() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    loss = negative_loss(logits, torch.zeros(4, 5, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 5))


def test_denied_consistency_by_hand() -> None:
    student = t([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    teacher = t([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    denied = t([[False, False, True], [False, False, False]])
    ps0 = [E(1.0) / (E(1.0) + 2), 1 / (E(1.0) + 2), 1 / (E(1.0) + 2)]
    pt0 = [1 / (1 + E(1.0)), E(1.0) / (1 + E(1.0)), 0.0]
    row0 = sum((a - b) ** 2 for a, b in zip(ps0, pt0))
    row1 = 0.0  # both uniform
    torch.testing.assert_close(denied_consistency(student, teacher, denied), t((row0 + row1) / 2))


def test_denied_consistency_teacher_is_detached() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    denied = torch.zeros(3, 4, dtype=torch.bool)
    denied[0, 1] = True
    denied_consistency(student, teacher, denied).backward()
    assert teacher.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_denied_consistency_all_denied_row_stays_finite() -> None:
    loss = denied_consistency(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool))
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_sup_loss_by_hand() -> None:
    logits = t([[2.0, 0.0], [0.0, 1.0]])
    y = t([0, 1])
    expected = ((lse(2.0, 0.0) - 2.0) + (lse(0.0, 1.0) - 1.0)) / 2
    torch.testing.assert_close(sup_loss(logits, y), t(expected))


# ---- edge cases: empty batches, huge logits, half precision -------------------------------


def _empty_cases() -> list[tuple[str, object]]:
    d, k, c = 4, 6, 3
    q = torch.zeros(0, d, requires_grad=True)
    kp = torch.zeros(0, d)
    queue = F.normalize(torch.randn(k, d), dim=1)
    logits = torch.zeros(0, c, requires_grad=True)
    return [
        ("sup", lambda: (sup_loss(logits, torch.zeros(0, dtype=torch.long)), logits)),
        ("cu", lambda: (contrastive_unlabeled(q, kp, queue, 0.2), q)),
        ("cl", lambda: (contrastive_labeled(q, kp, torch.zeros(0, d), torch.zeros(0, dtype=torch.bool), queue, 0.2), q)),
        (
            "cn",
            lambda: (
                contrastive_negative(q, kp, queue, torch.zeros(0, 2, d), torch.zeros(0, 2, dtype=torch.bool), 0.2),
                q,
            ),
        ),
        ("neg", lambda: (negative_loss(logits, torch.zeros(0, c, dtype=torch.bool)), logits)),
        ("cons", lambda: (denied_consistency(logits, torch.zeros(0, c), torch.zeros(0, c, dtype=torch.bool)), logits)),
    ]


@pytest.mark.parametrize("name,make", _empty_cases())
def test_empty_batch_gives_zero_with_graph(name: str, make) -> None:
    loss, leaf = make()
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert leaf.grad is not None and leaf.grad.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_large_logits_are_finite(dtype: torch.dtype) -> None:
    logits = t([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]]).to(dtype).requires_grad_(True)
    denied = t([[True, False, False], [False, True, True], [True, True, False]])
    y = t([1, 0, 2])
    teacher = logits.detach().flip(1)
    losses = {
        "neg": negative_loss(logits, denied),
        "sup": sup_loss(logits, y),
        "cons": denied_consistency(logits, teacher, denied),
    }
    for name, loss in losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), name
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all(), name
    # sample 0: p_0 = 1 exactly in float32; −log(1 − p_0) = z_0 − log(e^{z_1} + e^0) = z_0
    # (z_0 is 1e4 rounded to dtype); sample 1: p_1 = p_2 = 1/2 → 2·log 2; sample 2: the same.
    expected = (logits[0, 0].item() + 4 * math.log(2)) / 3
    torch.testing.assert_close(losses["neg"], t(expected, dtype=torch.float32), rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_contrastive_terms_accept_half_precision(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    q32 = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    k32 = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    queue32 = F.normalize(torch.randn(16, 8, generator=g), dim=1)
    hard32 = F.normalize(torch.randn(4, 3, 8, generator=g), dim=2)
    valid = t([[True, True, False], [False, False, False], [True, True, True], [True, False, False]])
    q, k, queue, hard = (x.to(dtype) for x in (q32, k32, queue32, hard32))
    q.requires_grad_(True)
    tau = 0.07  # logits up to 1/0.07 ≈ 14
    pairs = [
        (contrastive_unlabeled(q, k, queue, tau), contrastive_unlabeled(q32, k32, queue32, tau)),
        (
            contrastive_labeled(q, k, k.flip(0), valid[:, 0], queue, tau),
            contrastive_labeled(q32, k32, k32.flip(0), valid[:, 0], queue32, tau),
        ),
        (
            contrastive_negative(q, k, queue, hard, valid, tau),
            contrastive_negative(q32, k32, queue32, hard32, valid, tau),
        ),
    ]
    for low, ref in pairs:
        assert low.dtype == torch.float32 and torch.isfinite(low)
        torch.testing.assert_close(low, ref, rtol=0.05, atol=0.05)
        (grad,) = torch.autograd.grad(low, q)
        assert torch.isfinite(grad).all()


def test_contrastive_labeled_ignores_nan_in_invalid_bank_keys() -> None:
    q = Q.clone().requires_grad_(True)
    k_bank = t([[0.0, 1.0], [float("nan"), float("nan")]])
    loss = contrastive_labeled(q, K_POS, k_bank, t([True, False]), NEG, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all()


# ---- errors --------------------------------------------------------------------------------


def test_bad_inputs_raise_loss_input_error() -> None:
    with pytest.raises(LossInputError) as info:
        info_nce(Q, K_POS[:1], NEG, 0.2)
    assert isinstance(info.value, ObcpError)
    with pytest.raises(LossInputError):
        info_nce(Q, K_POS, torch.zeros(3, 5), 0.2)
    with pytest.raises(LossInputError):
        info_nce(Q, K_POS, NEG, 0.0)
    with pytest.raises(LossInputError):  # more hard negatives than queue entries
        contrastive_negative(Q, K_POS, NEG, torch.zeros(2, 3, 2), torch.ones(2, 3, dtype=torch.bool), 0.2)
    with pytest.raises(LossInputError):
        negative_loss(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(LossInputError):
        negative_loss(torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.bool))
    with pytest.raises(LossInputError):
        sup_loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(LossInputError):
        denied_consistency(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.bool))


# ---- properties against explicit float64 references -----------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    batch=st.integers(1, 5),
    dim=st.integers(1, 6),
    queue_size=st.integers(1, 8),
    n_hard=st.integers(0, 8),
    tau=st.floats(0.05, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_contrastive_negative_equals_explicit_replaced_queue(
    batch: int, dim: int, queue_size: int, n_hard: int, tau: float, seed: int
) -> None:
    n_hard = min(n_hard, queue_size)
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    k = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    queue = F.normalize(torch.randn(queue_size, dim, generator=g), dim=1)
    hard = F.normalize(torch.randn(batch, n_hard, dim, generator=g), dim=2)
    valid = torch.rand(batch, n_hard, generator=g) < 0.6
    got = contrastive_negative(q, k, queue, hard, valid, tau)

    qn, kn, mn, hn, vn = (x.double().numpy() for x in (q, k, queue, hard, valid))
    losses = []
    for i in range(batch):
        replacements = hn[i][vn[i].astype(bool)]
        negatives = np.concatenate([replacements, mn[len(replacements):]], axis=0)  # Q_i, [K, D]
        assert negatives.shape[0] == queue_size
        logits = np.concatenate([[qn[i] @ kn[i]], negatives @ qn[i]]) / tau
        losses.append(np.logaddexp.reduce(logits) - logits[0])
    assert abs(got.item() - float(np.mean(losses))) < 1e-4


@settings(max_examples=50, deadline=None)
@given(
    batch=st.integers(1, 6),
    classes=st.integers(2, 7),
    scale=st.sampled_from([0.1, 3.0, 60.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_negative_loss_matches_float64_reference(batch: int, classes: int, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=g) * scale
    denied = torch.rand(batch, classes, generator=g) < 0.4
    got = negative_loss(logits, denied)

    z = logits.double().numpy()
    total, count = 0.0, 0
    for i in range(batch):
        lse_all = np.logaddexp.reduce(z[i])
        row = 0.0
        for c in range(classes):
            if not denied[i, c]:
                continue
            p_c = math.exp(z[i, c] - lse_all)
            if p_c >= 1.0 / classes:
                lse_rest = np.logaddexp.reduce(np.delete(z[i], c))
                row += -(lse_rest - lse_all)
        if denied[i].any():
            total, count = total + row, count + 1
    expected = total / count if count else 0.0
    assert math.isclose(got.item(), expected, rel_tol=1e-4, abs_tol=1e-4)


@settings(max_examples=50, deadline=None)
@given(classes=st.integers(2, 6), scale=st.sampled_from([1.0, 30.0, 1e4]), seed=st.integers(0, 2**31 - 1))
def test_log1m_softmax_is_stable(classes: int, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(3, classes, generator=g) * scale).requires_grad_(True)
    got = log1m_softmax(logits)
    z = logits.detach().double().numpy()
    for i in range(3):
        for c in range(classes):
            ref = np.logaddexp.reduce(np.delete(z[i], c)) - np.logaddexp.reduce(z[i])
            assert math.isclose(got[i, c].item(), ref, rel_tol=1e-4, abs_tol=1e-4)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    assert torch.isfinite(grad).all()


def test_info_nce_extra_masks_match_dropping_rows() -> None:
    g = torch.Generator().manual_seed(7)
    q = F.normalize(torch.randn(1, 3, generator=g), dim=1)
    k = F.normalize(torch.randn(1, 3, generator=g), dim=1)
    neg = F.normalize(torch.randn(5, 3, generator=g), dim=1)
    extra = F.normalize(torch.randn(1, 2, 3, generator=g), dim=2)
    keep = t([[True, False, True, False, True]])
    ev = t([[False, True]])
    got = info_nce_extra(q, k, neg, 0.4, negatives_keep=keep, extra=extra, extra_valid=ev)
    explicit = torch.cat([neg[keep[0]], extra[0, ev[0]]])
    torch.testing.assert_close(got, info_nce(q, k, explicit, 0.4))
