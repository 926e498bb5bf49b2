"""The state of the method: MoCo dual encoder with a key queue, and the label bank.

:class:`ObCP` follows MoCo's ``builder.py``: a query encoder f, a momentum key encoder
(an EMA copy of f without gradients) and a ring buffer ``queue`` of K unlabeled keys, the
negatives M of paper Eq. 2-4. Unlike MoCo, its ``forward`` runs only the query encoder and
the key side is explicit (:meth:`ObCP.keys`, :meth:`ObCP.enqueue`,
:meth:`ObCP.momentum_update`), because ObCP's loss needs the logits of both views and keys of
labeled and unlabeled samples separately. Under DDP, wrap ``encoder_q`` (or the whole
``ObCP``, whose forward is the only differentiable path) and call the key-side methods on the
``ObCP`` itself; :meth:`ObCP.enqueue` and :meth:`LabelBank.update` are collective (every rank
must call them in the same order).

:class:`LabelBank` is the labeled feature set L of paper Sec. 3.2: the latest key of every
labeled sample with its label, indexed by ``sample_id``. It supplies the extra positive of
Eq. 3 (another labeled sample of the same class) and the hard negatives of Eq. 4 (labeled
samples of a denied class). It is a separate module from :class:`ObCP` so that DDP does not
broadcast its ``[N, D]`` buffers on every forward; save both in the checkpoint.

Not implemented: MoCo's shuffle-BN across GPUs (keys are computed with per-rank batch
statistics, as in most single-node semi-supervised MoCo variants).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.distributed import all_gather_varlen
from pipeline.core.errors import ObcpError
from pipeline.method.models import Encoder


class MocoConfigError(ObcpError):
    """Invalid queue size or momentum for :class:`ObCP`, or a key tensor of the wrong shape."""


class LabelBankError(ObcpError):
    """Invalid sample ids, labels or shapes given to :class:`LabelBank`."""


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Float64 uniforms in [0, 1) drawn on ``generator.device`` (CPU if None), moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=gen_device)
    return u.to(device)


class ObCP(nn.Module):
    """Query encoder, momentum key encoder and the queue of negatives.

    Buffers: ``queue [K, D]`` (initialised with random unit vectors, float32) and
    ``queue_ptr []`` (long, next write position).
    """

    queue: Tensor
    queue_ptr: Tensor

    def __init__(
        self,
        encoder: Encoder,
        *,
        queue_size: int,
        momentum: float = 0.999,
        generator: torch.Generator | None = None,
    ) -> None:
        """
        Args:
            encoder: the query encoder f; the key encoder starts as a deep copy of it.
            queue_size: K, number of negative keys kept (the paper uses 256 on CIFAR).
            momentum: m of the EMA ``θ_k ← m θ_k + (1 − m) θ_q``, in [0, 1].
            generator: CPU generator for the random initial queue (global RNG if None);
                use the same seed on every rank so that all ranks start identical.
        """
        super().__init__()
        if queue_size < 1:
            raise MocoConfigError(
                f"queue_size must be a positive integer, got {queue_size}. Set the contrastive "
                "queue size K (e.g. 256) in params.yaml."
            )
        if not 0.0 <= momentum <= 1.0:
            raise MocoConfigError(
                f"momentum must lie in [0, 1], got {momentum}. The key encoder is an EMA of the "
                "query encoder; MoCo uses 0.999."
            )
        self.m = float(momentum)
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        dim = encoder.proj_dim
        queue = torch.randn(queue_size, dim, generator=generator)
        self.register_buffer("queue", F.normalize(queue, dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def queue_size(self) -> int:
        """K, the number of keys in the queue."""
        return self.queue.shape[0]

    @property
    def dim(self) -> int:
        """D, the dimension of keys and queries."""
        return self.queue.shape[1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Query encoder: ``x [B, 3, H, W]`` → ``(logits [B, C], q [B, D])``, q L2-normalised."""
        return self.encoder_q(x)

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """EMA of the parameters: ``θ_k ← m·θ_k + (1 − m)·θ_q`` (buffers such as BN statistics
        of the key encoder are kept by its own forward passes, as in MoCo). ``momentum``
        overrides m for this step (the one-bit baseline's teacher decays at its own rate)."""
        m = self.m if momentum is None else float(momentum)
        q_params, k_params = list(self.encoder_q.parameters()), list(self.encoder_k.parameters())
        torch._foreach_mul_(k_params, m)  # one fused call per step, not one per tensor
        torch._foreach_add_(k_params, q_params, alpha=1.0 - m)

    @torch.no_grad()
    def keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Key encoder: ``x [B, 3, H, W]`` → ``(logits_k [B, C], k [B, D])``, no gradients.

        The key encoder is in the same train/eval mode as this module.
        """
        return self.encoder_k(x)

    @torch.no_grad()
    def enqueue(self, k: Tensor) -> None:
        """Write the keys ``k [B, D]`` of every rank into the ring buffer (collective).

        Keys are first gathered from all ranks in rank order (ranks may pass different B,
        including 0), then written at ``queue_ptr`` with wrap-around, exactly as if they were
        written one after another: any total batch size works, and when it exceeds K only
        the last K keys remain. Every rank ends with the same queue and pointer.
        """
        if k.dim() != 2 or k.shape[1] != self.dim:
            raise MocoConfigError(
                f"enqueue expects keys of shape [B, {self.dim}], got {tuple(k.shape)}. Pass the "
                "key encoder's normalised projections (the second output of ObCP.keys)."
            )
        k = all_gather_varlen(k.detach()).to(self.queue.dtype)
        total = k.shape[0]
        if total == 0:
            return
        size = self.queue_size
        ptr = int(self.queue_ptr)
        if total > size:
            start = (ptr + total - size) % size
            k = k[-size:]
        else:
            start = ptr
        idx = (start + torch.arange(k.shape[0], device=self.queue.device)) % size
        self.queue[idx] = k.to(self.queue.device)
        self.queue_ptr.fill_((ptr + total) % size)


def _rebuild_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: the per-class index is derived from ``labels``."""
    assert isinstance(module, LabelBank)
    module.rebuild_index()


class LabelBank(nn.Module):
    """The latest key and the label of every labeled sample, indexed by ``sample_id``.

    Persistent buffers (saved in the ``state_dict``): ``keys [N, D]`` float32, ``labels [N]``
    long (−1 = not a member), ``has_key [N]`` bool (a key has been written for the sample while
    it was a member; members without a key yet are never returned as valid).
    Derived, non-persistent buffers, rebuilt by :meth:`set_members` and after
    ``load_state_dict``: ``member_ids [M]`` (members sorted by (label, sample_id)),
    ``member_code [M]`` (``label·N + sample_id``, sorted), ``class_start [C']``,
    ``class_count [C']`` with ``C' = num_classes`` when given, else 1 + the largest member label.

    Random draws: every sampling method takes a ``torch.Generator``; uniforms are drawn in
    float64 on ``generator.device`` (CPU when ``generator`` is None, using the global RNG) and
    moved to the bank's device, so a CPU generator gives the same samples whether the bank
    lives on CPU or GPU. Under DDP give each rank its own generator (e.g. seed + rank).
    """

    keys: Tensor
    labels: Tensor
    has_key: Tensor
    member_ids: Tensor
    member_code: Tensor
    class_start: Tensor
    class_count: Tensor

    def __init__(self, num_samples: int, dim: int, num_classes: int | None = None) -> None:
        """
        Args:
            num_samples: N, number of train samples (``sample_id`` ranges over [0, N)).
            dim: D, key dimension.
            num_classes: C; when given, labels are checked to lie in [0, C) and ``denied`` to
                have C columns. When None, any label ≥ 0 is accepted and a class that no member
                has simply has no members.
        """
        super().__init__()
        if num_samples < 1 or dim < 1 or (num_classes is not None and num_classes < 1):
            raise LabelBankError(
                f"LabelBank needs positive sizes, got num_samples={num_samples}, dim={dim}, "
                f"num_classes={num_classes}. Build it from the train split's size, the encoder's "
                "proj_dim and the dataset's number of classes."
            )
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.register_buffer("keys", torch.zeros(num_samples, dim))
        self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.long))
        self.register_buffer("has_key", torch.zeros(num_samples, dtype=torch.bool))
        empty = torch.zeros(0, dtype=torch.long)
        self.register_buffer("member_ids", empty.clone(), persistent=False)
        self.register_buffer("member_code", empty.clone(), persistent=False)
        self.register_buffer("class_start", torch.zeros(num_classes or 0, dtype=torch.long), persistent=False)
        self.register_buffer("class_count", torch.zeros(num_classes or 0, dtype=torch.long), persistent=False)
        self.register_load_state_dict_post_hook(_rebuild_after_load)

    @property
    def dim(self) -> int:
        """D, the key dimension."""
        return self.keys.shape[1]

    @property
    def num_members(self) -> int:
        """M, the number of labeled samples in the bank."""
        return self.member_ids.shape[0]

    @torch.no_grad()
    def set_members(self, ids: Tensor, labels: Tensor) -> None:
        """Make exactly the samples ``ids [n]`` members, with ``labels [n]`` ≥ 0 (< C if known).

        Called whenever the labeled set changes. Keys already written for samples that stay
        members are kept; new members have no key until :meth:`update` writes one.
        """
        ids = torch.as_tensor(ids).reshape(-1)
        labels = torch.as_tensor(labels).reshape(-1)
        if ids.shape != labels.shape:
            raise LabelBankError(
                f"set_members got {ids.numel()} ids but {labels.numel()} labels; pass one label "
                "per labeled sample_id."
            )
        if ids.numel() > 0:
            if ids.dtype.is_floating_point or labels.dtype.is_floating_point:
                raise LabelBankError(
                    "set_members needs integer sample ids and labels, got "
                    f"{ids.dtype} and {labels.dtype}. Convert them with .long()."
                )
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.num_samples:
                raise LabelBankError(
                    f"sample ids must lie in [0, {self.num_samples}), got range [{lo}, {hi}]. The "
                    "bank is sized by the train split; check the pool's sample_id column."
                )
            if torch.unique(ids).numel() != ids.numel():
                raise LabelBankError(
                    "set_members got duplicate sample ids; each labeled sample must appear once "
                    "(check the pool state for repeated sample_id rows)."
                )
            lmin, lmax = int(labels.min()), int(labels.max())
            upper = self.num_classes if self.num_classes is not None else lmax + 1
            if lmin < 0 or lmax >= upper:
                raise LabelBankError(
                    f"labels must lie in [0, {upper}), got range [{lmin}, {lmax}]. Only "
                    "labeled samples (label ≥ 0) of a known class belong in the bank."
                )
        device = self.labels.device
        self.labels.fill_(-1)
        self.labels[ids.to(device, torch.long)] = labels.to(device, torch.long)
        self.rebuild_index()

    @torch.no_grad()
    def rebuild_index(self) -> None:
        """Recompute the per-class index from ``labels``."""
        n = self.num_samples
        members = torch.nonzero(self.labels >= 0).reshape(-1)
        code, _ = torch.sort(self.labels[members] * n + members)
        self.member_code = code
        self.member_ids = code % n
        count = torch.bincount(code // n, minlength=self.num_classes or 0)
        self.class_count = count
        self.class_start = torch.cumsum(count, 0) - count

    def _class_table(self, num_classes: int) -> tuple[Tensor, Tensor]:
        """``(class_start [C], class_count [C])`` for C = ``num_classes`` columns (zero-padded
        or truncated: classes without members have count 0)."""
        have = self.class_count.shape[0]
        if have >= num_classes:
            return self.class_start[:num_classes], self.class_count[:num_classes]
        pad = self.class_count.new_zeros(num_classes - have)
        return torch.cat([self.class_start, pad]), torch.cat([self.class_count, pad])

    @torch.no_grad()
    def update(self, ids: Tensor, keys: Tensor, *, gather: bool = True) -> None:
        """Store ``keys [B, D]`` for samples ``ids [B]``.

        With ``gather`` (the default) this is collective: ids and keys are first gathered
        from all ranks in rank order. Pass ``gather=False`` when every rank already holds the
        same ids and keys. Only members are written (non-members are ignored, so a mixed batch
        may be passed). If an id occurs several times, the last occurrence in rank order wins.
        Keys are expected L2-normalised (the key encoder's output).
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim or ids.shape != keys.shape[:1]:
            raise LabelBankError(
                f"update expects ids [B] and keys [B, {self.dim}], got {tuple(ids.shape)} and "
                f"{tuple(keys.shape)}. Pass the sample ids of the batch and its key-encoder keys."
            )
        device = self.keys.device
        ids = ids.to(device, torch.long)
        keys = keys.detach().to(device, self.keys.dtype)
        if gather:
            ids, keys = all_gather_varlen(ids), all_gather_varlen(keys)
        member = self.labels[ids] >= 0
        ids, keys = ids[member], keys[member]
        if ids.numel() == 0:
            return
        uniq, inverse = torch.unique(ids, return_inverse=True)
        order = torch.arange(ids.numel(), device=device)
        last = torch.full_like(uniq, -1).scatter_reduce_(0, inverse, order, reduce="amax")
        self.keys[uniq] = keys[last]
        self.has_key[uniq] = True

    @torch.no_grad()
    def sample_positives(
        self, ids: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """For each sample, the key of a uniformly random OTHER member of its class.

        Args:
            ids: ``[B]`` sample ids of the labeled batch (members or not).
            labels: ``[B]`` their labels.
            generator: source of randomness (see the class docstring for its device).

        Returns:
            ``keys [B, D]`` (zeros where invalid) and ``valid [B]`` bool: False when the class
            has no other member, the label is negative, or the drawn member has no key yet.
        """
        device = self.keys.device
        if ids.dim() != 1 or ids.shape != labels.shape:
            raise LabelBankError(
                f"sample_positives expects ids [B] and labels [B], got {tuple(ids.shape)} and "
                f"{tuple(labels.shape)}."
            )
        batch = ids.shape[0]
        u = _uniform((batch,), generator, device)
        ids = ids.to(device, torch.long)
        labels = labels.to(device, torch.long)
        total = self.num_members
        if batch == 0 or total == 0:
            return self.keys.new_zeros(batch, self.dim), torch.zeros(batch, dtype=torch.bool, device=device)
        num_cls = self.class_count.shape[0]
        label_ok = (labels >= 0) & (labels < num_cls)
        cls = labels.clamp(0, num_cls - 1)
        start = self.class_start[cls]
        count = torch.where(label_ok, self.class_count[cls], 0)
        code = cls * self.num_samples + ids
        pos = torch.searchsorted(self.member_code, code)
        is_member = (pos < total) & (self.member_code[pos.clamp(max=total - 1)] == code)
        n_other = count - is_member.long()
        r = torch.minimum(torch.floor(u * n_other).long(), (n_other - 1).clamp(min=0))
        r = r + (is_member & (r >= pos - start)).long()  # skip the sample itself
        chosen = self.member_ids[(start + r).clamp(0, total - 1)]
        valid = label_ok & (n_other >= 1) & self.has_key[chosen]
        out = torch.where(valid[:, None], self.keys[chosen], self.keys.new_zeros(()))
        return out, valid

    @torch.no_grad()
    def sample_negatives(
        self, denied: Tensor, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """For each sample, up to ``n`` distinct members whose label is one of its denied classes.

        Row i draws a uniformly random subset of size ``min(n, T_i)`` from the ``T_i`` members
        of its denied classes (without replacement; Floyd's algorithm, vectorised over the
        batch with a loop over the ``n`` slots). Valid slots come first.

        Args:
            denied: ``[B, C]`` bool, True where the oracle answered *no* for that class.
            n: N, the number of hard negatives wanted per sample (K/2 in the paper).
            generator: source of randomness (see the class docstring for its device).

        Returns:
            ``keys [B, n, D]`` (zeros where invalid) and ``valid [B, n]`` bool: False for slots
            beyond ``T_i`` and for drawn members that have no key yet.
        """
        device = self.keys.device
        if denied.dim() != 2 or (self.num_classes is not None and denied.shape[1] != self.num_classes):
            expected = "C" if self.num_classes is None else self.num_classes
            raise LabelBankError(
                f"sample_negatives expects denied [B, {expected}] bool, got {tuple(denied.shape)}. "
                "Pass the pool's denied-class mask of the batch."
            )
        if n < 0:
            raise LabelBankError(f"the number of hard negatives must be ≥ 0, got {n}.")
        batch, num_cls = denied.shape
        u = _uniform((batch, n), generator, device)
        denied = denied.to(device, torch.bool)
        total = self.num_members
        if batch == 0 or n == 0 or total == 0 or num_cls == 0:
            return (
                self.keys.new_zeros(batch, n, self.dim),
                torch.zeros(batch, n, dtype=torch.bool, device=device),
            )
        class_start, class_count = self._class_table(num_cls)
        per_class = denied.long() * class_count[None, :]  # [B, C]
        cum = torch.cumsum(per_class, 1)  # [B, C]
        pool = cum[:, -1]  # T_i, [B]
        # Floyd: a uniform n-subset of [0, max(T_i, n)); slots >= T_i are invalid.
        span = torch.clamp(pool, min=n).to(torch.float64)
        picks = torch.empty(batch, n, dtype=torch.long, device=device)
        for s in range(n):
            j = span - n + s  # [B], float64, exact for ids < 2^53
            t = torch.floor(u[:, s] * (j + 1)).clamp(max=j)
            t_long = t.long()
            seen = (picks[:, :s] == t_long[:, None]).any(1)
            picks[:, s] = torch.where(seen, j.long(), t_long)
        picks, _ = torch.sort(picks, dim=1)
        in_pool = picks < pool[:, None]
        cls = torch.searchsorted(cum, picks, right=True).clamp(max=num_cls - 1)  # [B, n]
        offset = picks - (torch.gather(cum, 1, cls) - torch.gather(per_class, 1, cls))
        pos = (class_start[cls] + offset).clamp(0, total - 1)
        chosen = self.member_ids[pos]  # [B, n]
        valid = in_pool & self.has_key[chosen]
        out = torch.where(valid[..., None], self.keys[chosen], self.keys.new_zeros(()))
        return out, valid
