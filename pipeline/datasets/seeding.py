"""Counter-based randomness for data order and augmentation.

Everything random in the loaders is a pure function of integers, never of a hidden
generator state, so that any epoch can be reproduced in a fresh process:

- the order of epoch ``e`` is a permutation drawn from ``SeedSequence([tag, seed, e])``;
- the augmentation of sample ``i`` in view slot ``v`` of epoch ``e`` uses uniforms
  ``hash(seed, e, v, i, k)``, ``k = 0, 1, ...`` (SplitMix64 finaliser).

Because augmentation randomness is keyed by ``sample_id`` rather than by batch
position, a sample is augmented identically whatever batch, rank or world size it
lands in.
"""
from __future__ import annotations

import numpy as np

_ORDER_TAG = 0x0BC9_0DE5  # separates order streams from any other SeedSequence use
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _check_non_negative(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value}")


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """Random permutation of ``range(n)`` for one epoch: ``[n]`` int64, a function of (seed, epoch)."""
    _check_non_negative(n=n, seed=seed, epoch=epoch)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_ORDER_TAG, seed, epoch])))
    return rng.permutation(n).astype(np.int64)


def sample_uniforms(seed: int, epoch: int, stream: int, ids: np.ndarray, count: int) -> np.ndarray:
    """Uniforms in [0, 1) keyed by sample: ``[B, count]`` float64.

    ``ids`` is ``[B]`` (non-negative sample ids); ``stream`` separates independent
    uses (e.g. the view slot). Row ``b`` depends only on (seed, epoch, stream, ids[b]).
    """
    _check_non_negative(seed=seed, epoch=epoch, stream=stream, count=count)
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {ids.shape}")
    if ids.size and int(ids.min()) < 0:
        raise ValueError("ids must be non-negative")
    with np.errstate(over="ignore"):
        key = _mix(np.array([seed], dtype=np.uint64) + _GOLDEN)
        key = _mix(key ^ (np.uint64(epoch) + _GOLDEN))
        key = _mix(key ^ (np.uint64(stream) + _GOLDEN))
        per_sample = _mix(key ^ (ids.astype(np.uint64) + _GOLDEN))  # [B]
        counters = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]  # [1, count]
        bits = _mix(per_sample[:, None] + counters)  # [B, count]
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
