"""``vaal``: Variational Adversarial Active Learning.

Sinha, Ebrahimi & Darrell, "Variational Adversarial Active Learning" (ICCV 2019). A VAE
learns a latent space of labeled and unlabeled images together, and a discriminator learns
to tell labeled latents from unlabeled ones while the VAE tries to fool it (its adversarial
loss labels both sets "labeled"). The candidates the discriminator is surest are unlabeled
(lowest D(μ)) are asked first: score = 1 − D(μ(x)).

Trained at selection time, every cycle, from scratch and seeded by the query
(`Candidates.seed`), on the clean views of the labeled set and the candidates
(`Candidates.images`): `baselines.vaal_epochs` passes over the candidates, each step a VAE
step (MSE reconstruction + β·KL on both sets, β = 1, + the adversarial BCE with weight 1)
then a discriminator step (BCE, labeled 1, unlabeled 0), Adam with learning rate 5·10⁻⁴ for
both, latent size `baselines.vaal_latent`, as in the authors' solver. Task-agnostic: it
never reads the classifier.

Differs from the authors' code (sinhasam/vaal): they train the VAE and discriminator in the
same iterations as the task model (100 epochs of the whole train set, batch 128, one VAE
and one discriminator step per task step); here they are trained when the cycle selects,
for `vaal_epochs` passes with batch 64. Their VAE (conv 128-256-512-1024, 32×32 inputs) is
scaled to the image size and narrowed for CPUs: stride-2 4×4 convolutions of 32, 64, 128,
256 channels until the side is at most 4, a mirrored decoder, and the reconstruction
resized to the input where the sides are not powers of two. Their discriminator (four
hidden layers of 512) is kept.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection import strategies as _builtins  # noqa: F401  (the first built-ins register first)
from pipeline.selection.base import Candidates, SelectionError, Strategy


class Vaal(Strategy):
    """1 − D(μ(x)) of a VAE + discriminator trained on labeled vs candidate images each cycle."""

    name = "vaal"
    needs = frozenset({"images"})
    per_sample = False

    def own_params(self, params: Any) -> dict[str, Any]:
        return {"vaal_epochs": params.baselines.vaal_epochs, "vaal_latent": params.baselines.vaal_latent}

    def scores(self, cands: Candidates, k: int) -> np.ndarray:
        self.check(cands)
        if cands.labeled_ids is None or len(cands.labeled_ids) == 0:
            raise SelectionError("vaal needs the labeled samples' ids (Candidates.labeled_ids), and at least one.")
        if len(cands) == 0:
            return np.zeros(0)
        from pipeline.selection.vaal_model import vaal_scores  # torch: only when a vaal arm selects

        s = cands.settings
        return vaal_scores(cands.images, cands.ids, np.asarray(cands.labeled_ids, np.int64),
                           epochs=s.get("vaal_epochs", 10), latent=s.get("vaal_latent", 32), seed=cands.seed)


STRATEGIES.register(Vaal())
