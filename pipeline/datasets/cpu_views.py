"""The CPU backend of the views: one compiled numba kernel per view kind.

Same arithmetic as the torch backend in :mod:`pipeline.datasets.augment` (which runs on
GPUs), per sample in one pass, without holding the GIL: the loader's thread builds the
next batch's views on another core while the training step runs. Inputs are
``x [B, 3, H, W]`` float32 in [0, 1] (contiguous); outputs ``[B, 3, h, w]`` float32,
normalised with ``mean``/``std`` [3].
"""
from __future__ import annotations

import math

import numba
import numpy as np

_GRAY_R, _GRAY_G, _GRAY_B = 0.2989, 0.587, 0.114


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
def strong_views(x, boxes, flip, jitter, jitter_on, gray_on, blur_sigma, blur_radius, mean, std, out):
    """MoCo v2 views.

    boxes [B, 4] int64 (top, left, crop_h, crop_w); flip, jitter_on, gray_on [B] bool;
    jitter [B, 4] float32 factors; blur_sigma [B] float32 (0: no blur); out [B, 3, h, w].
    """
    n, _, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    y = np.empty((3, oh, ow), np.float32)
    for b in range(n):
        top, left, ch, cw = boxes[b, 0], boxes[b, 1], boxes[b, 2], boxes[b, 3]
        for i in range(oh):  # bilinear crop-resize, border padding (grid_sample semantics)
            sy = min(max(top + (i + 0.5) * ch / oh - 0.5, 0.0), height - 1.0)
            y0 = int(math.floor(sy))
            y1 = min(y0 + 1, height - 1)
            wy = sy - y0
            for j in range(ow):
                jj = ow - 1 - j if flip[b] else j
                sx = min(max(left + (jj + 0.5) * cw / ow - 0.5, 0.0), width - 1.0)
                x0 = int(math.floor(sx))
                x1 = min(x0 + 1, width - 1)
                wx = sx - x0
                for c in range(3):
                    v = ((1 - wy) * ((1 - wx) * x[b, c, y0, x0] + wx * x[b, c, y0, x1])
                         + wy * ((1 - wx) * x[b, c, y1, x0] + wx * x[b, c, y1, x1]))
                    y[c, i, j] = _clamp01(v)
        if jitter_on[b]:
            _jitter(y, jitter[b, 0], jitter[b, 1], jitter[b, 2], jitter[b, 3])
        if gray_on[b]:
            for i in range(oh):
                for j in range(ow):
                    g = _luma(y, i, j)
                    y[0, i, j], y[1, i, j], y[2, i, j] = g, g, g
        if blur_sigma[b] > 0:
            _blur(y, blur_sigma[b], blur_radius)
        for c in range(3):
            for i in range(oh):
                for j in range(ow):
                    out[b, c, i, j] = (y[c, i, j] - mean[c]) / std[c]


@numba.njit(nogil=True, cache=True)
def weak_views(x, top, left, pad, flip, mean, std, out):
    """Integer translation of ``x`` reflect-padded by ``pad`` + optional flip.

    top, left [B] int64 offsets into the padded image; flip [B] bool; out [B, 3, h, w]."""
    n, _, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for b in range(n):
        for i in range(oh):
            si = _reflect(top[b] + i - pad, height)
            for j in range(ow):
                jj = ow - 1 - j if flip[b] else j
                sj = _reflect(left[b] + jj - pad, width)
                for c in range(3):
                    out[b, c, i, j] = (x[b, c, si, sj] - mean[c]) / std[c]
