"""Measured annotation cost: seconds per yes/no question and per full label, and bits per second.

The paper's premise is that a yes/no question is cheaper than a full label; its accounting
charges 1 bit for a yes/no answer and log2 C bits for a label. The answer store's
``seconds`` column (the page's timing, Label Studio's ``lead_time``; pipeline.oracle.answers)
measures what they cost a person. Every row that is an answer counts as an act of the
person (a correction too); withdrawals (undo) and rows without a time are left out of the
times. Per kind:

- ``answers``: answer rows; ``timed``: those with seconds;
- ``median_seconds``, ``mean_seconds``, ``p90_seconds``, ``total_seconds`` over the timed ones;
- ``bits_per_answer``: 1 (yes/no) or log2 C (full label);
- ``bits_per_second``: bits_per_answer × timed / total_seconds (the information rate).

``ratio_full_to_yes_no`` is median seconds per full label ÷ per yes/no question. One-bit
questions buy more bits per second than full labels exactly when it exceeds log2 C
(``break_even``), because a full label carries log2 C times the bits of a yes/no answer.
Bits measure what an answer could tell, not what it tells a given model.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.oracle.answers import LABEL_QUESTION

KINDS = ("yes_no", "full_label")


def _kind_stats(rows: pd.DataFrame, bits: float) -> dict:
    seconds = rows["seconds"].dropna().to_numpy(dtype=np.float64)
    total = float(seconds.sum())
    sources = rows["source"].astype(str).str.split(" ").str[0].value_counts().to_dict()

    def r(v: float) -> float | None:
        return None if v is None or math.isnan(v) else round(float(v), 4)

    return {
        "answers": int(len(rows)), "timed": int(seconds.size),
        "median_seconds": r(float(np.median(seconds))) if seconds.size else None,
        "mean_seconds": r(float(seconds.mean())) if seconds.size else None,
        "p90_seconds": r(float(np.percentile(seconds, 90))) if seconds.size else None,
        "total_seconds": r(total), "bits_per_answer": round(bits, 4),
        "bits_per_second": r(bits * seconds.size / total) if total > 0 else None,
        "sources": {str(k): int(v) for k, v in sources.items()},
    }


def annotation_cost(store: pd.DataFrame, num_classes: int) -> dict:
    """The cost report of an answer store (module docstring), JSON-ready."""
    is_label = (store["asked_class"] == LABEL_QUESTION) & (store["label"] >= 0)
    is_yes_no = (store["asked_class"] >= 0) & store["answer"].notna()
    log2c = math.log2(num_classes)
    out = {"num_classes": int(num_classes),
           "yes_no": _kind_stats(store[is_yes_no.to_numpy()], 1.0),
           "full_label": _kind_stats(store[is_label.to_numpy()], log2c)}
    a, b = out["yes_no"]["median_seconds"], out["full_label"]["median_seconds"]
    out["ratio_full_to_yes_no"] = round(b / a, 4) if a and b else None
    out["break_even"] = round(log2c, 4)
    ratio = out["ratio_full_to_yes_no"]
    out["verdict"] = (
        "not enough timed answers of both kinds to compare" if ratio is None else
        f"a full label took {ratio:.2f}x the time of a yes/no question (median); it carries log2 {num_classes} = "
        f"{log2c:.2f} bits, so yes/no questions give "
        + ("more" if ratio > log2c else "fewer" if ratio < log2c else "as many")
        + " bits per second of annotator time"
    )
    return out


def cost_markdown(doc: dict) -> str:
    """The report as a markdown table plus its verdict."""
    lines = ["| kind | answers | timed | median s | mean s | p90 s | bits/answer | bits/s |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, title in (("yes_no", "yes/no question"), ("full_label", "full label")):
        k = doc[kind]
        cell = lambda v: "—" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
        lines.append(f"| {title} | {k['answers']} | {k['timed']} | {cell(k['median_seconds'])} | "
                     f"{cell(k['mean_seconds'])} | {cell(k['p90_seconds'])} | {cell(k['bits_per_answer'])} | "
                     f"{cell(k['bits_per_second'])} |")
    return "\n".join(lines) + f"\n\n{doc['verdict']}.\n"
