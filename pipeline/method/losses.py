"""The ObCP loss terms (paper Eq. 2-6) and the one-bit baseline's consistency loss.

Every function is a pure function of tensors and returns a 0-dim float32 tensor (the
per-sample InfoNCE helpers return ``[B]``). Inputs may be float16/bfloat16 (e.g. under
autocast): logits are computed, or cast, to float32 before any exp/log. An empty batch
gives an exact 0 that is still connected to the inputs' graph (so ``backward`` works and
DDP sees every parameter used), never NaN.

Shapes: ``B`` batch, ``D`` embedding dimension, ``K`` queue size, ``N`` hard negatives
per sample, ``C`` classes. Embeddings (``q``, keys, queue) are expected L2-normalised, so
``q·k / τ`` is a cosine similarity divided by the temperature τ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.errors import ObcpError


class LossInputError(ObcpError):
    """Tensors of inconsistent shapes or an invalid temperature passed to a loss."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise LossInputError(message)


def _zero_like_graph(*tensors: Tensor) -> Tensor:
    """An exact float32 0 that depends on ``tensors`` (keeps autograd and DDP happy)."""
    return sum((t.float().sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


def _check_pair(q: Tensor, k_pos: Tensor, tau: float, name: str) -> None:
    _require(tau > 0, f"{name}: the temperature tau must be positive, got {tau}. Set it in params.yaml (MoCo v2 uses 0.2).")
    _require(
        q.dim() == 2 and k_pos.shape == q.shape,
        f"{name}: expected q [B, D] and k_pos [B, D] of the same shape, got {tuple(q.shape)} and "
        f"{tuple(k_pos.shape)}. k_pos must be the key of the same samples' other view.",
    )


def _check_queue(q: Tensor, queue: Tensor, name: str) -> None:
    _require(
        queue.dim() == 2 and queue.shape[1] == q.shape[1],
        f"{name}: expected negatives [K, {q.shape[1]}], got {tuple(queue.shape)}. The queue and the "
        "projection head must have the same dimension.",
    )


def info_nce_extra(
    q: Tensor,
    k_pos: Tensor,
    negatives: Tensor,
    tau: float,
    *,
    negatives_keep: Tensor | None = None,
    extra: Tensor | None = None,
    extra_valid: Tensor | None = None,
) -> Tensor:
    """Per-sample InfoNCE with per-sample masks on the shared negatives and extra negatives.

    ``l_i = −log( e^{q_i·k⁺_i/τ} / (e^{q_i·k⁺_i/τ} + Σ_{k∈Q_i} e^{q_i·k/τ}) )`` where ``Q_i`` is
    the rows ``j`` of ``negatives [K, D]`` with ``negatives_keep[i, j]`` (all if None) plus the
    rows ``n`` of ``extra[i] [N, D]`` with ``extra_valid[i, n]`` (all if None).

    Args:
        q: ``[B, D]`` queries. k_pos: ``[B, D]`` positive keys. negatives: ``[K, D]``.
        tau: temperature τ > 0.
        negatives_keep: ``[B, K]`` bool or None. extra: ``[B, N, D]`` or None.
        extra_valid: ``[B, N]`` bool or None (only with ``extra``).

    Returns:
        ``[B]`` float32 losses (nats). The positive is always in the denominator, so every
        entry is finite and ≥ 0 even when ``Q_i`` is empty (then it is 0).
    """
    _check_pair(q, k_pos, tau, "info_nce")
    _check_queue(q, negatives, "info_nce")
    batch, num_neg = q.shape[0], negatives.shape[0]
    pos = (q.float() * k_pos.float()).sum(1, keepdim=True)  # [B, 1]
    neg = (q.float() @ negatives.float().t()).float()  # [B, K]
    if negatives_keep is not None:
        _require(
            negatives_keep.shape == (batch, num_neg),
            f"info_nce: negatives_keep must be [B, K] = [{batch}, {num_neg}], got {tuple(negatives_keep.shape)}.",
        )
        neg = neg.masked_fill(~negatives_keep.bool(), float("-inf"))
    parts = [pos, neg]
    if extra is not None:
        _require(
            extra.dim() == 3 and extra.shape[0] == batch and extra.shape[2] == q.shape[1],
            f"info_nce: extra negatives must be [B, N, D] = [{batch}, N, {q.shape[1]}], got {tuple(extra.shape)}.",
        )
        ext = torch.einsum("bd,bnd->bn", q.float(), extra.float()).float()  # [B, N]
        if extra_valid is not None:
            _require(
                extra_valid.shape == extra.shape[:2],
                f"info_nce: extra_valid must be [B, N] = {list(extra.shape[:2])}, got {tuple(extra_valid.shape)}.",
            )
            ext = ext.masked_fill(~extra_valid.bool(), float("-inf"))
        parts.append(ext)
    else:
        _require(extra_valid is None, "info_nce: extra_valid was given without extra negatives.")
    logits = torch.cat(parts, dim=1) / tau  # [B, 1 + K (+ N)]
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def info_nce(q: Tensor, k_pos: Tensor, negatives: Tensor, tau: float) -> Tensor:
    """Per-sample InfoNCE of ``q [B, D]`` with positive ``k_pos [B, D]`` and shared
    ``negatives [K, D]``: ``−log softmax([q·k⁺, q·negatives] / τ)[0]`` → ``[B]`` float32."""
    return info_nce_extra(q, k_pos, negatives, tau)


def sup_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of ``logits [B, C]`` against labels ``y [B]``, mean over B; 0 if B = 0."""
    _require(
        logits.dim() == 2 and y.shape == logits.shape[:1],
        f"sup_loss: expected logits [B, C] and labels [B], got {tuple(logits.shape)} and {tuple(y.shape)}.",
    )
    if logits.shape[0] == 0:
        return _zero_like_graph(logits)
    return F.cross_entropy(logits.float(), y.long())


def contrastive_unlabeled(q: Tensor, k_pos: Tensor, queue: Tensor, tau: float) -> Tensor:
    """L_c.u (Eq. 2): InfoNCE with negatives = the queue ``[K, D]``, mean over B; 0 if B = 0."""
    if q.shape[0] == 0:
        _check_pair(q, k_pos, tau, "contrastive_unlabeled")
        return _zero_like_graph(q, k_pos)
    return info_nce(q, k_pos, queue, tau).mean()


def contrastive_labeled(
    q: Tensor, k_pos: Tensor, k_bank: Tensor, bank_valid: Tensor, queue: Tensor, tau: float
) -> Tensor:
    """L_c.l (Eq. 3): ``½[InfoNCE(q, k⁺, M) + InfoNCE(q, k_Ω⁺, M)]``, mean over B; 0 if B = 0.

    ``k_bank [B, D]`` is the label-bank key of another labeled sample of the same class
    (:meth:`pipeline.method.moco.LabelBank.sample_positives`). A sample whose ``bank_valid [B]`` is
    False (its class has no other labeled sample with a key yet) uses the first term alone,
    with weight 1, so it is still pulled towards its own second view.
    """
    _check_pair(q, k_bank, tau, "contrastive_labeled")
    _require(
        bank_valid.shape == q.shape[:1],
        f"contrastive_labeled: bank_valid must be [B] = [{q.shape[0]}], got {tuple(bank_valid.shape)}.",
    )
    if q.shape[0] == 0:
        _check_pair(q, k_pos, tau, "contrastive_labeled")
        return _zero_like_graph(q, k_pos)
    valid = bank_valid.bool()
    k_bank = torch.where(valid[:, None], k_bank, torch.zeros((), dtype=k_bank.dtype, device=k_bank.device))
    own = info_nce(q, k_pos, queue, tau)
    other = info_nce(q, k_bank, queue, tau)
    return torch.where(valid, 0.5 * (own + other), own).mean()


def contrastive_negative(
    q: Tensor, k_pos: Tensor, queue: Tensor, hard: Tensor, hard_valid: Tensor, tau: float
) -> Tensor:
    """L_c.n (Eq. 4): InfoNCE whose negatives Q_i are the queue with n_i entries replaced by
    the sample's hard negatives; mean over B; 0 if B = 0.

    ``hard [B, N, D]`` are label-bank keys of the sample's denied classes
    (:meth:`pipeline.method.moco.LabelBank.sample_negatives`), ``hard_valid [B, N]`` which of them
    exist; ``n_i = hard_valid[i].sum()`` and N ≤ K. The replaced queue entries are the first
    n_i rows (``queue[:n_i]``): the queue is a ring of recent random keys, so which rows are
    dropped is statistically neutral. Implemented by masking those n_i queue logits and
    appending the valid hard logits (no ``[B, K, D]`` copy).
    """
    _check_queue(q, queue, "contrastive_negative")
    _require(
        hard.dim() == 3 and hard.shape[0] == q.shape[0] and hard_valid.shape == hard.shape[:2],
        f"contrastive_negative: expected hard [B, N, D] and hard_valid [B, N], got {tuple(hard.shape)} "
        f"and {tuple(hard_valid.shape)}.",
    )
    num_queue = queue.shape[0]
    _require(
        hard.shape[1] <= num_queue,
        f"contrastive_negative: {hard.shape[1]} hard negatives per sample exceed the queue size "
        f"K = {num_queue}; they replace queue entries, so N must be ≤ K (the paper uses N = K/2).",
    )
    if q.shape[0] == 0:
        _check_pair(q, k_pos, tau, "contrastive_negative")
        return _zero_like_graph(q, k_pos)
    valid = hard_valid.bool()
    n_hard = valid.sum(1)  # [B]
    keep = torch.arange(num_queue, device=q.device)[None, :] >= n_hard[:, None]  # [B, K]
    losses = info_nce_extra(q, k_pos, queue, tau, negatives_keep=keep, extra=hard, extra_valid=valid)
    return losses.mean()


def log1m_softmax(logits: Tensor) -> Tensor:
    """``log(1 − softmax(logits))`` ``[B, C]`` in float32, stable for any logits.

    For a class that is not the row's argmax, p_c ≤ ½ and ``log1p(−p_c)`` is exact. For the
    argmax class, p_c may round to 1, so it is computed as ``logsumexp(other classes) −
    logsumexp(all classes)``. Needs C ≥ 2 (with one class, 1 − p = 0).
    """
    z = logits.float()
    p = torch.softmax(z, dim=1)
    top = z.argmax(dim=1, keepdim=True)  # [B, 1]
    is_top = torch.zeros_like(p, dtype=torch.bool).scatter_(1, top, True)
    lse_all = torch.logsumexp(z, dim=1)
    lse_rest = torch.logsumexp(z.masked_fill(is_top, float("-inf")), dim=1)
    top_value = (lse_rest - lse_all)[:, None]  # [B, 1]
    safe_p = p.masked_fill(is_top, 0.0)  # avoids 0·∞ in the backward of the unused branch
    return torch.where(is_top, top_value, torch.log1p(-safe_p))


def negative_loss(logits: Tensor, denied: Tensor) -> Tensor:
    """L_neg (Eq. 6): ``Σ_{c denied} 1(p_c ≥ 1/C) · (−log(1 − p_c))`` per sample, averaged over
    the samples with at least one denied class; 0 when there are none.

    Args:
        logits: ``[B, C]`` classifier logits (any float dtype). denied: ``[B, C]`` bool.
    """
    _require(
        logits.dim() == 2 and denied.shape == logits.shape,
        f"negative_loss: expected logits [B, C] and denied [B, C] of the same shape, got "
        f"{tuple(logits.shape)} and {tuple(denied.shape)}.",
    )
    num_classes = logits.shape[1]
    _require(num_classes >= 2, f"negative_loss needs at least 2 classes, got C = {num_classes}.")
    if logits.shape[0] == 0:
        return _zero_like_graph(logits)
    denied = denied.bool()
    log1m = log1m_softmax(logits)
    p = torch.softmax(logits.float(), dim=1).detach()
    active = denied & (p >= 1.0 / num_classes)
    per_sample = torch.where(active, -log1m, torch.zeros((), device=log1m.device)).sum(1)  # [B]
    count = denied.any(1).sum().clamp(min=1)
    return per_sample.sum() / count


def denied_consistency(student_logits: Tensor, teacher_logits: Tensor, denied: Tensor) -> Tensor:
    """One-bit baseline (Hu et al. 2020) consistency: ``mean_B Σ_C (p_s − p_t)²``.

    ``p_t`` is the softmax of the teacher logits with the denied classes set to −inf
    (i.e. their probability zeroed and the rest renormalised), detached; ``p_s`` is the
    student's softmax. A row with every class denied (impossible for a valid pool) keeps the
    teacher unmasked. 0 if B = 0.

    Args:
        student_logits, teacher_logits: ``[B, C]``. denied: ``[B, C]`` bool.
    """
    _require(
        student_logits.dim() == 2
        and teacher_logits.shape == student_logits.shape
        and denied.shape == student_logits.shape,
        f"denied_consistency: expected student, teacher logits and denied all [B, C], got "
        f"{tuple(student_logits.shape)}, {tuple(teacher_logits.shape)} and {tuple(denied.shape)}.",
    )
    if student_logits.shape[0] == 0:
        return _zero_like_graph(student_logits)
    denied = denied.bool()
    denied = denied & ~denied.all(1, keepdim=True)
    teacher = teacher_logits.detach().float().masked_fill(denied, float("-inf"))
    p_t = torch.softmax(teacher, dim=1)
    p_s = torch.softmax(student_logits.float(), dim=1)
    return ((p_s - p_t) ** 2).sum(1).mean()
