"""Pool state: which training samples are labeled, how, and what was denied.

The pool is a :class:`pandas.DataFrame` with one row per training sample:

==============  ========  ===========================================================
column          dtype     meaning
==============  ========  ===========================================================
sample_id       int64     row of the sample in the train split (stable id)
status          str       ``initial`` (I^S), ``yes`` (one-bit *yes*), ``full`` (full
                          label, full-label baseline) or ``unlabeled``
label           int64     the known class, ``-1`` while unknown
negatives       list[int] classes the oracle denied (*no* answers), sorted, unique
labeled_cycle   int64     0 for ``initial``, k for a sample labeled in cycle k, -1 if
                          unlabeled
==============  ========  ===========================================================

A question's answer is recorded entirely in the pool: *yes* sets the label, *no* adds
a negative. Hence the number of one-bit questions answered so far is
``#yes + sum(len(negatives))``, and the bits spent are
``|initial + full| * log2 C + questions`` (paper Table 1).

The module also holds the budget arithmetic of paper Table 1:
``|P^L| ~= |I^S| + |T^O| / log2 C``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.pool.errors import PoolError, PoolFileError, PoolInvariantError  # noqa: F401
from pipeline.core.io import read_parquet, write_parquet
from pipeline.pool.budget import budget_through, label_bits

STATUSES: tuple[str, ...] = ("initial", "yes", "full", "unlabeled")
POOL_COLUMNS: tuple[str, ...] = ("sample_id", "status", "label", "negatives", "labeled_cycle")
_MAX_LISTED = 10


# ---------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------


def _as_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise PoolError(
            f"labels must be a non-empty 1-D integer array [N], got shape {labels.shape} and "
            f"dtype {labels.dtype}. Pass the train split's class index per sample_id, "
            "e.g. index.parquet's `label` column for split == 'train'."
        )
    if labels.min() < 0:
        raise PoolError(
            f"labels must be class indices >= 0; found {int(labels.min())}. Check that the "
            "dataset index was built from the train split and that unknown labels were not "
            "encoded as -1."
        )
    return labels.astype(np.int64, copy=False)


def _resolve_size(size: int | float, num_samples: int) -> int:
    if isinstance(size, (bool, np.bool_)):
        raise PoolError(f"initial pool size must be a count or a fraction, got {size!r}.")
    if isinstance(size, (int, np.integer)):
        count = int(size)
    elif isinstance(size, (float, np.floating)):
        if not 0.0 < float(size) <= 1.0:
            raise PoolError(
                f"a fractional initial pool size must lie in (0, 1], got {size}. Give a "
                "fraction of the train split (e.g. 0.1) or an integer count (e.g. 5000)."
            )
        count = int(round(float(size) * num_samples))
    else:
        raise PoolError(f"initial pool size must be an int or a float, got {type(size).__name__}.")
    if not 1 <= count <= num_samples:
        raise PoolError(
            f"initial pool size resolves to {count} samples, but the train split has "
            f"{num_samples}; it must be between 1 and {num_samples}. Lower `size` or check "
            "the dataset."
        )
    return count


def _balanced_quota(available: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` over classes as equally as possible, capped by ``available`` [K].

    Classes that run out hand their share to the others (water filling); the last
    indivisible remainder goes to a seeded random subset of the classes still open.
    """
    quota = np.zeros_like(available)
    remaining = total
    while remaining > 0:
        open_classes = np.flatnonzero(quota < available)
        share = remaining // open_classes.size
        if share == 0:
            extra = rng.permutation(open_classes)[:remaining]
            quota[extra] += 1
            break
        add = np.minimum(share, available[open_classes] - quota[open_classes])
        quota[open_classes] += add
        remaining -= int(add.sum())
    return quota


def initial_pool(
    labels: np.ndarray, size: int | float, *, class_balanced: bool, seed: int
) -> pd.DataFrame:
    """Draw the initial fully labeled set I^S and return the cycle-0 pool.

    Args:
        labels: [N] int, the true class of every train sample (index = sample_id).
        size: number of initial samples, or a fraction of N in (0, 1] (rounded).
        class_balanced: if True, take as equal a count per class as possible
            (classes with too few samples give their share to the others).
        seed: the draw depends only on (labels, size, class_balanced, seed).

    Returns:
        The pool DataFrame (module docstring), rows ordered by sample_id = 0..N-1.
    """
    labels = _as_labels(labels)
    num_samples = labels.size
    count = _resolve_size(size, num_samples)
    rng = np.random.default_rng(seed)
    if class_balanced:
        _, inverse, available = np.unique(labels, return_inverse=True, return_counts=True)
        by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(available)[:-1])
        available = available.astype(np.int64)
        quota = _balanced_quota(available, count, rng)
        chosen = np.concatenate(
            [rng.permutation(ids)[:q] for ids, q in zip(by_class, quota.tolist())]
        )
    else:
        chosen = rng.choice(num_samples, size=count, replace=False)
    is_initial = np.zeros(num_samples, dtype=bool)
    is_initial[chosen] = True
    return pd.DataFrame(
        {
            "sample_id": np.arange(num_samples, dtype=np.int64),
            "status": np.where(is_initial, "initial", "unlabeled"),
            "label": np.where(is_initial, labels, -1).astype(np.int64),
            "negatives": [[] for _ in range(num_samples)],
            "labeled_cycle": np.where(is_initial, 0, -1).astype(np.int64),
        }
    )


def labeled_pool(num_samples: int, sample_ids: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """The cycle-0 pool whose initial set I^S is `sample_ids` [n] with known `labels` [n]
    (given by a person or an initial-labels CSV; the rest unlabeled)."""
    ids = np.asarray(sample_ids, dtype=np.int64).ravel()
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if ids.shape != labels.shape or ids.size == 0:
        raise PoolError(f"labeled_pool: {ids.size} sample ids and {labels.size} labels; give one label per sample.")
    if (labels < 0).any() or (ids < 0).any() or (ids >= num_samples).any():
        raise PoolError(f"labeled_pool: sample ids must lie in 0..{num_samples - 1} and labels be >= 0.")
    _check_unique(ids, "labeled_pool")
    label = np.full(num_samples, -1, dtype=np.int64)
    label[ids] = labels
    known = label >= 0
    return pd.DataFrame(
        {
            "sample_id": np.arange(num_samples, dtype=np.int64),
            "status": np.where(known, "initial", "unlabeled"),
            "label": label,
            "negatives": [[] for _ in range(num_samples)],
            "labeled_cycle": np.where(known, 0, -1).astype(np.int64),
        }
    )


# ---------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------


def _listed(ids: Sequence[int] | np.ndarray) -> str:
    ids = [int(i) for i in np.asarray(ids).ravel()[: _MAX_LISTED + 1]]
    shown = ", ".join(str(i) for i in ids[:_MAX_LISTED])
    return shown + (", ..." if len(ids) > _MAX_LISTED else "")


def _violation(what: str, ids: np.ndarray) -> str:
    return f"{what}: {len(ids)} sample(s), sample_id {_listed(ids)}"


def queries_answered(pool: pd.DataFrame) -> int:
    """Number of one-bit questions whose answers the pool holds: #yes + total negatives."""
    yes = int((pool["status"] == "yes").sum())
    return yes + int(sum(len(n) for n in pool["negatives"]))


def labels_spent(pool: pd.DataFrame) -> int:
    """Labels spent after the initial set: one-bit questions answered + full labels given."""
    return queries_answered(pool) + int((pool["status"] == "full").sum())


def check_invariants(
    pool: pd.DataFrame,
    num_classes: int,
    *,
    num_samples: int | None = None,
    budget: int | None = None,
) -> None:
    """Raise :class:`PoolInvariantError` listing every violated invariant, else return.

    Checked: the columns are there; each sample_id exactly once (and equal to
    0..num_samples-1 if given); status is known; label >= 0 iff status != unlabeled;
    label < num_classes; labeled_cycle is 0 / >= 1 / -1 for initial / yes,full /
    unlabeled; negatives are sorted, unique, valid classes, never contain the label and
    never cover every class; and, if ``budget`` is given, the labels spent after the
    initial set (one-bit questions answered + full labels) do not exceed it. ``budget``
    is cumulative: the sum of the cycle budgets up to the current cycle.
    """
    missing = [c for c in POOL_COLUMNS if c not in pool.columns]
    if missing:
        raise PoolInvariantError(
            f"pool lacks column(s) {missing}; a pool has columns {list(POOL_COLUMNS)}. "
            "Build it with pipeline.pool.pools.initial_pool and update it with apply_answers / "
            "apply_full_labels."
        )
    problems: list[str] = []
    ids = pool["sample_id"].to_numpy()
    if not np.issubdtype(ids.dtype, np.integer):
        problems.append(f"sample_id has dtype {ids.dtype}, expected int64")
        ids = np.asarray(pd.to_numeric(pool["sample_id"], errors="coerce").fillna(-1), np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.append(_violation("sample_id appears more than once", uniq[counts > 1]))
    if num_samples is not None:
        outside = uniq[(uniq < 0) | (uniq >= num_samples)]
        if outside.size:
            problems.append(_violation(f"sample_id outside 0..{num_samples - 1}", outside))
        present = np.zeros(num_samples, dtype=bool)
        present[uniq[(uniq >= 0) & (uniq < num_samples)]] = True
        if not present.all():
            problems.append(_violation("sample_id missing from the pool", np.flatnonzero(~present)))

    status = pool["status"].astype(str).to_numpy()
    label = pool["label"].to_numpy().astype(np.int64)
    cycle = pool["labeled_cycle"].to_numpy().astype(np.int64)
    bad_status = ~np.isin(status, STATUSES)
    if bad_status.any():
        problems.append(_violation(f"status not one of {list(STATUSES)}", ids[bad_status]))
    unlabeled = status == "unlabeled"
    known = ~unlabeled & ~bad_status
    if (unlabeled & (label != -1)).any():
        problems.append(_violation("unlabeled sample with a label != -1", ids[unlabeled & (label != -1)]))
    if (known & (label < 0)).any():
        problems.append(_violation("labeled sample with label < 0", ids[known & (label < 0)]))
    if (label >= num_classes).any():
        problems.append(_violation(f"label >= num_classes ({num_classes})", ids[label >= num_classes]))
    expected_cycle_ok = np.where(
        status == "initial", cycle == 0, np.where(unlabeled, cycle == -1, cycle >= 1)
    )
    if (~expected_cycle_ok & ~bad_status).any():
        problems.append(
            _violation(
                "labeled_cycle inconsistent with status (initial: 0, yes/full: >= 1, "
                "unlabeled: -1)",
                ids[~expected_cycle_ok & ~bad_status],
            )
        )

    unsorted, invalid, own, all_denied = [], [], [], []
    for sid, lab, is_known, negs in zip(ids.tolist(), label.tolist(), known.tolist(), pool["negatives"]):
        if len(negs) == 0:
            continue
        negs = [int(c) for c in negs]
        if any(a >= b for a, b in zip(negs, negs[1:])):
            unsorted.append(sid)
        if min(negs) < 0 or max(negs) >= num_classes:
            invalid.append(sid)
        if is_known and lab in negs:
            own.append(sid)
        if len(set(negs)) >= num_classes:
            all_denied.append(sid)
    if unsorted:
        problems.append(_violation("negatives not sorted / not unique", np.array(unsorted)))
    if invalid:
        problems.append(_violation(f"negatives outside 0..{num_classes - 1}", np.array(invalid)))
    if own:
        problems.append(_violation("label among the sample's own negatives", np.array(own)))
    if all_denied:
        problems.append(_violation("every class denied (contradictory answers)", np.array(all_denied)))

    if budget is not None:
        spent = labels_spent(pool)
        if spent > budget:
            problems.append(
                f"{spent} labels spent after the initial set (one-bit questions + full "
                f"labels) exceed the budget of {budget}"
            )
    if problems:
        raise PoolInvariantError(
            f"the pool violates {len(problems)} invariant(s): "
            + "; ".join(problems)
            + ". The pool was built or updated outside pipeline.pool.pools, or an artifact is "
            "corrupt; rebuild it from the previous cycle's pool."
        )


# ---------------------------------------------------------------------------
# Updates
# ---------------------------------------------------------------------------


def _positions(pool: pd.DataFrame, sample_ids: np.ndarray, what: str) -> np.ndarray:
    index = pd.Index(pool["sample_id"].to_numpy())
    pos = index.get_indexer(sample_ids)
    if (pos < 0).any():
        raise PoolError(
            f"{what}: sample_id {_listed(sample_ids[pos < 0])} not in the pool. Ask only "
            "about samples of the train split's pool."
        )
    return pos


def _check_cycle(cycle: int) -> int:
    if int(cycle) < 1:
        raise PoolError(f"cycle must be >= 1 for query updates (0 is the initial pool), got {cycle}.")
    return int(cycle)


def _check_unique(sample_ids: np.ndarray, what: str) -> None:
    uniq, counts = np.unique(sample_ids, return_counts=True)
    if (counts > 1).any():
        raise PoolError(
            f"{what}: sample_id {_listed(uniq[counts > 1])} appears more than once; a "
            "sample is asked at most once per cycle."
        )


def apply_answers(
    pool: pd.DataFrame, queries: pd.DataFrame, cycle: int, *, num_classes: int | None = None
) -> pd.DataFrame:
    """Return a new pool with the one-bit answers of ``cycle`` applied.

    Args:
        pool: the pool before the cycle (not modified).
        queries: DataFrame[sample_id int, asked_class int, answer bool], one row per
            question of this cycle.
        cycle: the query cycle (>= 1); *yes* samples get ``labeled_cycle = cycle``.
        num_classes: if given, asked classes must be < num_classes.

    *yes* → status ``yes``, label = asked class. *no* → asked class added to negatives.
    Raises :class:`PoolError` if a question targets a sample that is not unlabeled,
    repeats a sample, or asks about an already-denied class.
    """
    cycle = _check_cycle(cycle)
    missing = [c for c in ("sample_id", "asked_class", "answer") if c not in queries.columns]
    if missing:
        raise PoolError(f"queries lack column(s) {missing}; expected sample_id, asked_class, answer.")
    sample_ids = queries["sample_id"].to_numpy().astype(np.int64)
    asked = queries["asked_class"].to_numpy().astype(np.int64)
    answer_col = queries["answer"]
    if len(queries) and (answer_col.isna().any() or not pd.api.types.is_bool_dtype(answer_col.dtype)):
        raise PoolError(
            f"queries' answer column must be bool without missing values, got dtype "
            f"{answer_col.dtype}. Convert yes/no to True/False (pipeline.oracle.sheets.read_answers does)."
        )
    answers = answer_col.to_numpy().astype(bool)
    _check_unique(sample_ids, "apply_answers")
    bad_class = (asked < 0) | ((asked >= num_classes) if num_classes is not None else False)
    if np.any(bad_class):
        raise PoolError(
            f"apply_answers: asked_class out of range for sample_id {_listed(sample_ids[bad_class])}."
        )
    pos = _positions(pool, sample_ids, "apply_answers")
    status = pool["status"].to_numpy()[pos]
    not_unlabeled = status != "unlabeled"
    if not_unlabeled.any():
        raise PoolError(
            f"apply_answers: sample_id {_listed(sample_ids[not_unlabeled])} is already labeled "
            "(status initial/yes/full); only unlabeled samples may be asked."
        )
    old_negatives = pool["negatives"].to_numpy()[pos]
    repeated = np.array([int(c) in set(n) for c, n in zip(asked.tolist(), old_negatives)], dtype=bool)
    if repeated.any():
        raise PoolError(
            f"apply_answers: sample_id {_listed(sample_ids[repeated])} is asked about a class "
            "the oracle already denied; choose the question with pipeline.selection.strategies.asked_classes."
        )

    new = pool.copy()
    new_status = new["status"].to_numpy().astype(object)
    new_label = new["label"].to_numpy().astype(np.int64)
    new_cycle = new["labeled_cycle"].to_numpy().astype(np.int64)
    new_negatives = new["negatives"].to_numpy().copy()
    yes_pos = pos[answers]
    new_status[yes_pos] = "yes"
    new_label[yes_pos] = asked[answers]
    new_cycle[yes_pos] = cycle
    for p, c in zip(pos[~answers].tolist(), asked[~answers].tolist()):
        new_negatives[p] = sorted([int(x) for x in new_negatives[p]] + [int(c)])
    new["status"] = pd.Series(new_status, index=new.index).astype(pool["status"].dtype)
    new["label"] = new_label
    new["labeled_cycle"] = new_cycle
    new["negatives"] = pd.Series(list(new_negatives), index=new.index, dtype=object)
    return new


def apply_full_labels(
    pool: pd.DataFrame,
    sample_ids: np.ndarray,
    labels: np.ndarray,
    cycle: int,
    *,
    num_classes: int | None = None,
) -> pd.DataFrame:
    """Return a new pool where ``sample_ids`` [n] got full labels ``labels`` [n] in ``cycle``.

    For the full-label baseline: status ``full``, label set, labeled_cycle = cycle.
    The samples must be unlabeled and the label must not be among their negatives.
    """
    cycle = _check_cycle(cycle)
    sample_ids = np.asarray(sample_ids, dtype=np.int64).ravel()
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if sample_ids.shape != labels.shape:
        raise PoolError(
            f"apply_full_labels: {sample_ids.size} sample ids but {labels.size} labels; give one "
            "label per sample."
        )
    _check_unique(sample_ids, "apply_full_labels")
    bad = (labels < 0) | ((labels >= num_classes) if num_classes is not None else False)
    if np.any(bad):
        raise PoolError(f"apply_full_labels: label out of range for sample_id {_listed(sample_ids[bad])}.")
    pos = _positions(pool, sample_ids, "apply_full_labels")
    not_unlabeled = pool["status"].to_numpy()[pos] != "unlabeled"
    if not_unlabeled.any():
        raise PoolError(
            f"apply_full_labels: sample_id {_listed(sample_ids[not_unlabeled])} is already "
            "labeled; only unlabeled samples may be labeled."
        )
    negs = pool["negatives"].to_numpy()[pos]
    denied = np.array([int(l) in set(n) for l, n in zip(labels.tolist(), negs)], dtype=bool)
    if denied.any():
        raise PoolError(
            f"apply_full_labels: the label of sample_id {_listed(sample_ids[denied])} is among "
            "its denied classes; the oracle contradicts itself."
        )
    new = pool.copy()
    new_status = new["status"].to_numpy().astype(object)
    new_label = new["label"].to_numpy().astype(np.int64)
    new_cycle = new["labeled_cycle"].to_numpy().astype(np.int64)
    new_status[pos] = "full"
    new_label[pos] = labels
    new_cycle[pos] = cycle
    new["status"] = pd.Series(new_status, index=new.index).astype(pool["status"].dtype)
    new["label"] = new_label
    new["labeled_cycle"] = new_cycle
    return new


def denied_matrix(pool: pd.DataFrame, sample_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """[n, C] bool: True where the oracle denied class c for sample_ids[i]."""
    sample_ids = np.asarray(sample_ids, dtype=np.int64).ravel()
    pos = _positions(pool, sample_ids, "denied_matrix")
    negatives = pool["negatives"].to_numpy()[pos]
    denied = np.zeros((sample_ids.size, num_classes), dtype=bool)
    rows = np.repeat(np.arange(sample_ids.size), [len(n) for n in negatives])
    cols = np.fromiter((int(c) for n in negatives for c in n), dtype=np.int64, count=rows.size)
    denied[rows, cols] = True
    return denied


def bits_used(pool: pd.DataFrame, num_classes: int, one_bit_queries: int | None = None) -> float:
    """Bits spent by the pool: |initial + full| * log2 C + one-bit questions.

    ``one_bit_queries`` is the number of one-bit questions asked so far (e.g. the
    ledger's row count). The pool determines it (``queries_answered``); if given, it
    must agree, else :class:`PoolInvariantError` (ledger and pool out of sync).
    """
    derived = queries_answered(pool)
    if one_bit_queries is not None and int(one_bit_queries) != derived:
        raise PoolInvariantError(
            f"{one_bit_queries} one-bit questions claimed, but the pool records {derived} "
            "answers (#yes + denied classes). The ledger and the pool are out of sync; rerun "
            "the cycle from its previous pool."
        )
    status = pool["status"]
    full_labels = int(status.isin(["initial", "full"]).sum())
    return label_bits(full_labels, num_classes) + derived


@dataclass(frozen=True)
class PoolSummary:
    """Counts of a pool state (samples, questions)."""

    num_samples: int
    initial: int
    yes: int
    full: int
    unlabeled: int
    labeled: int  # initial + yes + full
    with_negatives: int  # unlabeled samples with >= 1 denied class
    negatives: int  # denied classes in total (= *no* answers)
    questions: int  # one-bit questions answered = yes + negatives

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def summary(pool: pd.DataFrame) -> PoolSummary:
    """Count the pool's samples by status and its answered questions."""
    status = pool["status"]
    counts = status.value_counts()
    n_neg = pool["negatives"].map(len).to_numpy()
    unlabeled = (status == "unlabeled").to_numpy()
    get = lambda s: int(counts.get(s, 0))  # noqa: E731
    return PoolSummary(
        num_samples=len(pool),
        initial=get("initial"),
        yes=get("yes"),
        full=get("full"),
        unlabeled=get("unlabeled"),
        labeled=get("initial") + get("yes") + get("full"),
        with_negatives=int(((n_neg > 0) & unlabeled).sum()),
        negatives=int(n_neg.sum()),
        questions=get("yes") + int(n_neg.sum()),
    )


def _normalized(pool: pd.DataFrame) -> pd.DataFrame:
    """The pool's columns in canonical order and dtypes (negatives as lists of int)."""
    return pd.DataFrame(
        {
            "sample_id": pool["sample_id"].to_numpy().astype(np.int64),
            "status": pool["status"].astype(str).to_numpy(),
            "label": pool["label"].to_numpy().astype(np.int64),
            "negatives": [[int(c) for c in n] for n in pool["negatives"]],
            "labeled_cycle": pool["labeled_cycle"].to_numpy().astype(np.int64),
        }
    )


def write_pool(
    path: str | os.PathLike,
    pool: pd.DataFrame,
    num_classes: int,
    *,
    num_samples: int | None = None,
    budget: int | None = None,
) -> None:
    """Check the invariants, then write the pool atomically as parquet."""
    check_invariants(pool, num_classes, num_samples=num_samples, budget=budget)
    write_parquet(path, _normalized(pool))


def read_pool(path: str | os.PathLike) -> pd.DataFrame:
    """Read a pool written by :func:`write_pool` (negatives as python lists of int)."""
    frame = read_parquet(path, what="pool file", error=PoolFileError,
                         fix="init_pool writes cycle_000, the active stage later cycles (`dvc repro`).")
    missing = [c for c in POOL_COLUMNS if c not in frame.columns]
    if missing:
        raise PoolFileError(
            f"pool file {path} lacks column(s) {missing}; it was not written by "
            "pipeline.pool.pools.write_pool. Delete it and rerun the stage that writes it."
        )
    negatives = frame["negatives"].map(
        lambda n: [] if n is None else [int(c) for c in n]
    )
    frame = _normalized(frame.assign(negatives=negatives))
    return frame
