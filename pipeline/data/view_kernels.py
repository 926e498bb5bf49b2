"""Compiled numba code of the views: per-sample random parameters and the CPU kernels.

Every random choice of a view (crop box, flip, jitter factors, grayscale, blur sigma,
shift) is a function of the sample's uniforms (:func:`~pipeline.data.seeding.uniform`
keyed by seed, epoch, view slot and sample id), drawn here per sample:

- :func:`strong_params` / :func:`weak_params` return them as arrays for the torch
  backend in :mod:`pipeline.data.augment` (GPU tensors);
- :func:`strong_views` / :func:`weak_views` draw them and make the views in one pass
  per sample (CPU tensors), with the same arithmetic as the torch ops.

Nothing here holds the GIL, so the loader's thread makes the next batch on another core
while the training step runs (a thread holding the GIL for 0.1 ms in every 1 ms slows
a small model's step by ~6 % on 2 cores). Inputs are the decoded pixels ``x [B, 3, H, W]``
uint8 (any strides: FFCV's ``[B, H, W, 3]`` buffer, permuted), read as ``x / 255`` in
float32 like the torch backend; outputs ``[B, 3, h, w]`` float32, normalised with
``mean``/``std`` [3].
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from pipeline.data.seeding import sample_key, stream_key, uniform

RRC_TRIES = 10
# Which uniform of a sample drives what (index k of `uniform(skey, k)`).
_U_CROP = 0  # 4 per try: area, log aspect ratio, top, left
_U_FLIP = 4 * RRC_TRIES
_U_JITTER_P, _U_JITTER = _U_FLIP + 1, _U_FLIP + 2  # 4: brightness, contrast, saturation, hue
_U_GRAY = _U_FLIP + 6
_U_BLUR_P, _U_BLUR = _U_FLIP + 7, _U_FLIP + 8


class StrongSpec(NamedTuple):
    """The fixed parameters of a strong view (from ``AugmentConfig`` and the image size)."""

    scale_lo: float
    scale_hi: float
    log_ratio_lo: float
    log_ratio_hi: float
    ratio_lo: float
    ratio_hi: float
    hflip: bool
    jitter_p: float
    jitter_lo: tuple[float, float, float, float]  # brightness, contrast, saturation factors; hue shift
    jitter_hi: tuple[float, float, float, float]
    gray_p: float
    blur_p: float
    blur_lo: float  # sigma range in output pixels
    blur_hi: float
    blur_radius: int


_GRAY_R, _GRAY_G, _GRAY_B = 0.2989, 0.587, 0.114


@numba.njit(nogil=True, cache=True, inline="always")
def _unit(x, b, c, i, j):
    """Pixel (b, c, i, j) of uint8 ``x`` in [0, 1], as float32 (``x.float() / 255`` in torch)."""
    return np.float32(x[b, c, i, j]) / np.float32(255.0)


@numba.njit(nogil=True, cache=True, inline="always")
def _clamp01(v):
    return min(max(v, 0.0), 1.0)


@numba.njit(nogil=True, cache=True, inline="always")
def _luma(y, i, j):
    return _GRAY_R * y[0, i, j] + _GRAY_G * y[1, i, j] + _GRAY_B * y[2, i, j]


@numba.njit(nogil=True, cache=True, inline="always")
def _reflect(i, n):
    if i < 0:
        i = -i
    if i >= n:
        i = 2 * (n - 1) - i
    return i


@numba.njit(nogil=True, cache=True)
def _hue_shift(y, shift):
    """In place: rotate the hue of ``y [3, h, w]`` by ``shift`` turns (HSV round trip)."""
    _, h, w = y.shape
    for i in range(h):
        for j in range(w):
            r, g, b = y[0, i, j], y[1, i, j], y[2, i, j]
            maxc = max(r, g, b)
            minc = min(r, g, b)
            delta = maxc - minc
            sat = delta / maxc if maxc > 0 else 0.0
            if delta == 0:
                hue = 0.0
            else:
                rc, gc, bc = (maxc - r) / delta, (maxc - g) / delta, (maxc - b) / delta
                if maxc == r:
                    hue = bc - gc
                elif maxc == g:
                    hue = 2.0 + rc - bc
                else:
                    hue = 4.0 + gc - rc
                hue = (hue / 6.0) % 1.0
            hue = (hue + shift) % 1.0
            h6 = hue * 6.0
            sector = math.floor(h6)
            f = h6 - sector
            s6 = int(sector) % 6
            v = maxc
            p = _clamp01(v * (1 - sat))
            q = _clamp01(v * (1 - sat * f))
            t = _clamp01(v * (1 - sat * (1 - f)))
            if s6 == 0:
                r, g, b = v, t, p
            elif s6 == 1:
                r, g, b = q, v, p
            elif s6 == 2:
                r, g, b = p, v, t
            elif s6 == 3:
                r, g, b = p, q, v
            elif s6 == 4:
                r, g, b = t, p, v
            else:
                r, g, b = v, p, q
            y[0, i, j], y[1, i, j], y[2, i, j] = r, g, b


@numba.njit(nogil=True, cache=True)
def _jitter(y, bright, contrast, sat, hue):
    """In place on ``y [3, h, w]``: brightness, contrast, saturation, hue (this order)."""
    _, h, w = y.shape
    total = 0.0
    for i in range(h):
        for j in range(w):
            for c in range(3):
                y[c, i, j] = _clamp01(y[c, i, j] * bright)
            total += _luma(y, i, j)
    mean = total / (h * w)
    for i in range(h):
        for j in range(w):
            for c in range(3):
                y[c, i, j] = _clamp01(contrast * y[c, i, j] + (1 - contrast) * mean)
            gray = _luma(y, i, j)
            for c in range(3):
                y[c, i, j] = _clamp01(sat * y[c, i, j] + (1 - sat) * gray)
    _hue_shift(y, hue)


@numba.njit(nogil=True, cache=True)
def _blur(y, sigma, radius):
    """In place on ``y [3, h, w]``: separable Gaussian blur, reflect padding."""
    _, h, w = y.shape
    k = np.empty(2 * radius + 1, np.float32)
    for t in range(-radius, radius + 1):
        k[t + radius] = math.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    tmp = np.empty_like(y)
    for c in range(3):
        for i in range(h):
            for j in range(w):
                acc = 0.0
                for t in range(-radius, radius + 1):
                    acc += k[t + radius] * y[c, i, _reflect(j + t, w)]
                tmp[c, i, j] = acc
        for i in range(h):
            for j in range(w):
                acc = 0.0
                for t in range(-radius, radius + 1):
                    acc += k[t + radius] * tmp[c, _reflect(i + t, h), j]
                y[c, i, j] = acc


@numba.njit(nogil=True, cache=True)
def _rrc_box(skey, height, width, spec):
    """torchvision's ``RandomResizedCrop.get_params``: (top, left, h, w) in pixels, with
    the same fallback (the central crop of clamped aspect ratio) when no try fits."""
    area = float(height * width)
    for t in range(RRC_TRIES):
        u = _U_CROP + 4 * t
        target = area * (spec.scale_lo + (spec.scale_hi - spec.scale_lo) * uniform(skey, u))
        aspect = math.exp(spec.log_ratio_lo + (spec.log_ratio_hi - spec.log_ratio_lo) * uniform(skey, u + 1))
        w = int(np.rint(math.sqrt(target * aspect)))
        h = int(np.rint(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(math.floor(uniform(skey, u + 2) * (height - h + 1)))
            left = int(math.floor(uniform(skey, u + 3) * (width - w + 1)))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < spec.ratio_lo:
        w, h = width, int(np.rint(width / spec.ratio_lo))
    elif in_ratio > spec.ratio_hi:
        h, w = height, int(np.rint(height * spec.ratio_hi))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@numba.njit(nogil=True, cache=True)
def _strong_sample(skey, height, width, spec, box, factors):
    """One sample's strong-view parameters: fills ``box [4]`` (top, left, h, w) and
    ``factors [4]`` (float32); returns (flip, jitter_on, gray_on, blur sigma)."""
    box[0], box[1], box[2], box[3] = _rrc_box(skey, height, width, spec)
    flip = spec.hflip and uniform(skey, _U_FLIP) < 0.5
    jitter_on = uniform(skey, _U_JITTER_P) < spec.jitter_p
    for f in range(4):
        lo, hi = spec.jitter_lo[f], spec.jitter_hi[f]
        factors[f] = np.float32(lo + (hi - lo) * uniform(skey, _U_JITTER + f))
    gray_on = uniform(skey, _U_GRAY) < spec.gray_p
    sigma = 0.0
    if uniform(skey, _U_BLUR_P) < spec.blur_p:
        sigma = spec.blur_lo + (spec.blur_hi - spec.blur_lo) * uniform(skey, _U_BLUR)
    return flip, jitter_on, gray_on, np.float32(sigma)


@numba.njit(nogil=True, cache=True)
def strong_params(seed, epoch, slot, ids, height, width, spec):
    """Parameters of the strong views of samples ``ids [B]``: boxes [B, 4] int64 (top,
    left, h, w), flip [B] bool, factors [B, 4] float32, jitter_on, gray_on [B] bool,
    sigma [B] float32 (0: no blur)."""
    n = ids.shape[0]
    key = stream_key(seed, epoch, slot)
    boxes = np.empty((n, 4), np.int64)
    factors = np.empty((n, 4), np.float32)
    flip = np.empty(n, np.bool_)
    jitter_on = np.empty(n, np.bool_)
    gray_on = np.empty(n, np.bool_)
    sigma = np.empty(n, np.float32)
    for b in range(n):
        flip[b], jitter_on[b], gray_on[b], sigma[b] = _strong_sample(
            sample_key(key, ids[b]), height, width, spec, boxes[b], factors[b])
    return boxes, flip, factors, jitter_on, gray_on, sigma


@numba.njit(nogil=True, cache=True)
def strong_views(x, seed, epoch, slot, ids, spec, mean, std, out):
    """MoCo v2 views of ``x`` (see :func:`strong_params`) into ``out [B, 3, h, w]``."""
    n, _, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    key = stream_key(seed, epoch, slot)
    y = np.empty((3, oh, ow), np.float32)
    box = np.empty(4, np.int64)
    factors = np.empty(4, np.float32)
    for b in range(n):
        flip, jitter_on, gray_on, sigma = _strong_sample(sample_key(key, ids[b]), height, width, spec, box, factors)
        top, left, ch, cw = box[0], box[1], box[2], box[3]
        for i in range(oh):  # bilinear crop-resize, border padding (grid_sample semantics)
            sy = min(max(top + (i + 0.5) * ch / oh - 0.5, 0.0), height - 1.0)
            y0 = int(math.floor(sy))
            y1 = min(y0 + 1, height - 1)
            wy = sy - y0
            for j in range(ow):
                jj = ow - 1 - j if flip else j
                sx = min(max(left + (jj + 0.5) * cw / ow - 0.5, 0.0), width - 1.0)
                x0 = int(math.floor(sx))
                x1 = min(x0 + 1, width - 1)
                wx = sx - x0
                for c in range(3):
                    v = ((1 - wy) * ((1 - wx) * _unit(x, b, c, y0, x0) + wx * _unit(x, b, c, y0, x1))
                         + wy * ((1 - wx) * _unit(x, b, c, y1, x0) + wx * _unit(x, b, c, y1, x1)))
                    y[c, i, j] = _clamp01(v)
        if jitter_on:
            _jitter(y, factors[0], factors[1], factors[2], factors[3])
        if gray_on:
            for i in range(oh):
                for j in range(ow):
                    g = _luma(y, i, j)
                    y[0, i, j], y[1, i, j], y[2, i, j] = g, g, g
        if sigma > 0:
            _blur(y, sigma, spec.blur_radius)
        for c in range(3):
            for i in range(oh):
                for j in range(ow):
                    out[b, c, i, j] = (y[c, i, j] - mean[c]) / std[c]


@numba.njit(nogil=True, cache=True, inline="always")
def _weak_sample(skey, span_h, span_w, hflip):
    """(top, left, flip) of one weak view: offsets into the padded image."""
    top = int(math.floor(uniform(skey, 0) * span_h))
    left = int(math.floor(uniform(skey, 1) * span_w))
    return top, left, hflip and uniform(skey, 2) < 0.5


@numba.njit(nogil=True, cache=True)
def weak_params(seed, epoch, slot, ids, span_h, span_w, hflip):
    """top, left [B] int64 (offsets into the padded image; ``span`` = padded − output + 1)
    and flip [B] bool of the weak views of samples ``ids [B]``."""
    n = ids.shape[0]
    key = stream_key(seed, epoch, slot)
    top = np.empty(n, np.int64)
    left = np.empty(n, np.int64)
    flip = np.empty(n, np.bool_)
    for b in range(n):
        top[b], left[b], flip[b] = _weak_sample(sample_key(key, ids[b]), span_h, span_w, hflip)
    return top, left, flip


@numba.njit(nogil=True, cache=True)
def weak_views(x, seed, epoch, slot, ids, pad, hflip, mean, std, out):
    """Integer translation of ``x`` reflect-padded by ``pad`` + optional flip (see
    :func:`weak_params`) into ``out [B, 3, h, w]``."""
    n, _, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    key = stream_key(seed, epoch, slot)
    for b in range(n):
        top, left, flip = _weak_sample(sample_key(key, ids[b]), height + 2 * pad - oh + 1,
                                       width + 2 * pad - ow + 1, hflip)
        for i in range(oh):
            si = _reflect(top + i - pad, height)
            for j in range(ow):
                jj = ow - 1 - j if flip else j
                sj = _reflect(left + jj - pad, width)
                for c in range(3):
                    out[b, c, i, j] = (_unit(x, b, c, si, sj) - mean[c]) / std[c]
