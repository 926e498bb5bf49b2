"""Bits and budgets: what a label and a yes/no answer cost, and paper Table 1.

A full label over C classes carries log2 C bits; a yes/no answer 1 bit. Budgets are
counted in one-bit questions (|T^O|) and split evenly over the query cycles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from pipeline.pool.errors import PoolError




def _log2c(num_classes: int) -> float:
    if int(num_classes) < 2:
        raise PoolError(f"num_classes must be >= 2 for bit accounting, got {num_classes}.")
    return math.log2(int(num_classes))


def label_bits(n: int | float, num_classes: int) -> float:
    """Bits of information in ``n`` full labels over C classes: n * log2 C."""
    return float(n) * _log2c(num_classes)


def one_bit_budget(pool_size: int, initial: int, num_classes: int) -> int:
    """|T^O| = (|P^L| - |I^S|) * log2 C, rounded to the nearest question."""
    if not 0 <= int(initial) <= int(pool_size):
        raise PoolError(
            f"the initial set ({initial}) must be between 0 and the labeled pool size "
            f"({pool_size}); |P^L| counts the initial set plus the one-bit budget."
        )
    return int(round(label_bits(int(pool_size) - int(initial), num_classes)))


def labeled_equivalent(initial: int, one_bit: int, num_classes: int) -> float:
    """|P^L| ~= |I^S| + |T^O| / log2 C: the full-label pool of the same bits."""
    return float(initial) + float(one_bit) / _log2c(num_classes)


def full_label_budget(one_bit: int, num_classes: int) -> int:
    """Full labels with the bits of ``one_bit`` questions: floor(|T^O| / log2 C)."""
    return int(math.floor(float(one_bit) / _log2c(num_classes) + 1e-9))


def cycle_budgets(total: int, query_times: int) -> list[int]:
    """Split ``total`` over ``query_times`` cycles evenly; the remainder goes to early cycles."""
    if int(query_times) < 1:
        raise PoolError(f"query_times must be >= 1, got {query_times}.")
    if int(total) < 0:
        raise PoolError(f"the total budget must be >= 0, got {total}.")
    share, rest = divmod(int(total), int(query_times))
    return [share + (1 if k < rest else 0) for k in range(int(query_times))]


def budget_through(budgets: Sequence[int], cycle: int) -> int:
    """Cumulative budget of cycles 1..cycle (the ``budget`` for check_invariants)."""
    if not 0 <= int(cycle) <= len(budgets):
        raise PoolError(f"cycle {cycle} outside 0..{len(budgets)}.")
    return int(sum(budgets[: int(cycle)]))


@dataclass(frozen=True)
class Table1Row:
    """One column of paper Table 1 (counts in samples/questions, bits in bits)."""

    dataset: str
    num_classes: int
    log2_c: float
    labeled_pool: int  # |P^L|
    labeled_pool_bits: float  # |P^L| * log2 C
    initial: int  # |I^S|
    one_bit: int  # |T^O|
    one_bit_bits: float  # |I^S| * log2 C + |T^O|


def table1() -> list[Table1Row]:
    """The rows of paper Table 1: CIFAR-10, CIFAR-100 and ImageNet."""
    rows = []
    for name, classes, pool_size, initial in (
        ("cifar10", 10, 10_000, 5_000),
        ("cifar100", 100, 10_000, 5_000),
        ("imagenet", 1000, 128_000, 13_000),
    ):
        one_bit = one_bit_budget(pool_size, initial, classes)
        rows.append(
            Table1Row(
                dataset=name,
                num_classes=classes,
                log2_c=_log2c(classes),
                labeled_pool=pool_size,
                labeled_pool_bits=label_bits(pool_size, classes),
                initial=initial,
                one_bit=one_bit,
                one_bit_bits=label_bits(initial, classes) + one_bit,
            )
        )
    return rows


# ---------------------------------------------------------------------------
# Summary and files
# ---------------------------------------------------------------------------


