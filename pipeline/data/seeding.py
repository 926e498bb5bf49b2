"""Counter-based randomness for data order and augmentation.

Everything random in the loaders is a pure function of integers, never of a hidden
generator state, so that any epoch can be reproduced in a fresh process:

- the order of epoch ``e`` is a permutation drawn from ``SeedSequence([tag, seed, e])``;
- the augmentation of sample ``i`` in view slot ``v`` of epoch ``e`` uses uniforms
  ``hash(seed, e, v, i, k)``, ``k = 0, 1, ...`` (SplitMix64 finaliser), compiled so
  that the view kernels draw them per sample without holding the GIL.

Because augmentation randomness is keyed by ``sample_id`` rather than by batch
position, a sample is augmented identically whatever batch, rank or world size it
lands in.
"""
from __future__ import annotations

import numba
import numpy as np

_ORDER_TAG = 0x0BC9_0DE5  # separates order streams from any other SeedSequence use
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / (1 << 53)


def _check_non_negative(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value}")


@numba.njit(nogil=True, cache=True, inline="always")
def _mix(z):
    """SplitMix64 finaliser of a uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def stream_key(seed: int, epoch: int, stream: int):
    """The uint64 key of one (seed, epoch, stream); pass it to :func:`sample_key`."""
    key = _mix(np.uint64(seed) + _GOLDEN)
    key = _mix(key ^ (np.uint64(epoch) + _GOLDEN))
    return _mix(key ^ (np.uint64(stream) + _GOLDEN))


@numba.njit(nogil=True, cache=True, inline="always")
def sample_key(key, sample_id):
    """The uint64 key of one sample within a stream."""
    return _mix(key ^ (np.uint64(sample_id) + _GOLDEN))


@numba.njit(nogil=True, cache=True, inline="always")
def uniform(skey, k):
    """The ``k``-th uniform in [0, 1) of a sample key (53 random bits)."""
    bits = _mix(skey + np.uint64(k + 1) * _GOLDEN)
    return np.float64(bits >> np.uint64(11)) * _TO_UNIT


@numba.njit(nogil=True, cache=True)
def _fill_uniforms(seed, epoch, stream, ids, out):
    key = stream_key(seed, epoch, stream)
    for b in range(out.shape[0]):
        skey = sample_key(key, ids[b])
        for k in range(out.shape[1]):
            out[b, k] = uniform(skey, k)


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """Random permutation of ``range(n)`` for one epoch: ``[n]`` int64, a function of (seed, epoch)."""
    _check_non_negative(n=n, seed=seed, epoch=epoch)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_ORDER_TAG, seed, epoch])))
    return rng.permutation(n).astype(np.int64)


def sample_uniforms(seed: int, epoch: int, stream: int, ids: np.ndarray, count: int) -> np.ndarray:
    """Uniforms in [0, 1) keyed by sample: ``[B, count]`` float64.

    ``ids`` is ``[B]`` (non-negative sample ids); ``stream`` separates independent
    uses (e.g. the view slot). Row ``b`` depends only on (seed, epoch, stream, ids[b]);
    the compiled view kernels draw the same numbers per sample with :func:`uniform`.
    """
    _check_non_negative(seed=seed, epoch=epoch, stream=stream, count=count)
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {ids.shape}")
    if ids.size and int(ids.min()) < 0:
        raise ValueError("ids must be non-negative")
    out = np.empty((ids.size, count), np.float64)
    _fill_uniforms(seed, epoch, stream, ids.astype(np.int64), out)
    return out
