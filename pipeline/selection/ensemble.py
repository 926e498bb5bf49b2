"""``varratio``: the variation ratio of an ensemble's votes.

Beluch, Genewein, Nürnberger & Köhler, "The power of ensembles for active learning in image
classification" (CVPR 2018). E models vote (each its argmax class); the variation ratio is
1 − f_m / E, f_m the count of the most common vote: 0 when the ensemble is unanimous, and
highest where the votes split evenly.

An arm of it trains E = `baselines.ensemble` models (`Strategy.ensemble`): its own (member
0, the one evaluated and the one whose prediction picks a one-bit question's class) and
E − 1 members that continue, cycle after cycle, from the shared stage-1 checkpoint with
seeds of their own (`pipeline.loop.baselines.train_members`): their own data order and
augmentations. The scoring pass reads every member's softmax (`ensemble_probs` [E, n, C]).

Differs from the authors' setup: their members are trained from independent random
initialisations and the ensemble's averaged softmax is what they evaluate; ours share the
stage-1 weights (every arm does) and differ in stage 2 only, and the arm is evaluated on
member 0 alone, like every other arm. Ties of the variation ratio (common with small E) go
to the lower sample id.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection import strategies as _builtins  # noqa: F401  (the first built-ins register first)
from pipeline.selection.base import Candidates, ScoreStrategy
from pipeline.selection.bayesian import check_samples


def variation_ratio(samples: np.ndarray) -> np.ndarray:
    """[n] 1 − (count of the modal vote) / E for member softmax samples [E, n, C]."""
    e, n, c = samples.shape
    votes = samples.argmax(axis=2)  # [E, n]
    counts = np.zeros((n, c), np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(n), (e, n)), votes), 1)
    return 1.0 - counts.max(axis=1) / e


class VarRatio(ScoreStrategy):
    """1 − f_m / E over the E members' votes."""

    name = "varratio"
    needs = frozenset({"probs", "ensemble_probs"})
    ensemble = True

    def own_params(self, params: Any) -> dict[str, Any]:
        return {"ensemble": params.baselines.ensemble}

    def score(self, c: Candidates) -> np.ndarray:
        return variation_ratio(check_samples(c.ensemble_probs, len(c), "the ensemble's softmax (ensemble_probs)",
                                             self.name))


STRATEGIES.register(VarRatio())
