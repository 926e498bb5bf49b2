"""Batched, seed-keyed image views for contrastive training (torch, any device).

FFCV reads and decodes; the random part of every view happens here, on a whole
batch, with parameters drawn from :func:`~pipeline.data.seeding.uniform`
keyed by (seed, epoch, view slot, sample_id). A sample therefore gets the same
augmentation whatever batch, rank or device it lands on, and any epoch can be
replayed in a fresh process. (FFCV 1.0.2's own random transforms draw from numba's
per-thread ``np.random`` state, which the loader never seeds, so they cannot be
replayed.)

View kinds (input ``[B, 3, H, W]`` uint8, output ``[B, 3, h, w]``):

- ``raw``: the decoded pixels, uint8, untouched (for checks and export);
- ``clean``: center crop to the output size, scaled to [0, 1], normalised;
- ``weak``: translation by up to ``translate`` of the side (reflect padding, exact
  integer shifts), horizontal flip if allowed, normalised;
- ``strong``: MoCo v2's family (``RandomResizedCrop(scale=(0.2, 1))``, colour jitter
  (0.4, 0.4, 0.4, 0.1) with p = 0.8 in the fixed order brightness, contrast,
  saturation, hue, grayscale with p = 0.2, Gaussian blur with p = 0.5 for images of
  at least 64 px with sigma in [0.1, 2.0] x side/224, flip if allowed), normalised.

Two backends compute the same views: torch ops on a whole batch (GPU tensors), and
compiled numba kernels (:mod:`pipeline.data.view_kernels`, CPU tensors), which release
the GIL so that the loader thread prepares the next batch while the model trains. Both
draw each sample's random parameters with the same compiled code.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data import view_kernels
from pipeline.data.errors import LoaderConfigError

VIEW_KINDS: tuple[str, ...] = ("raw", "clean", "weak", "strong")
BACKENDS: tuple[str, ...] = ("auto", "numba", "torch")  # auto: numba for CPU tensors, torch on GPUs
_GRAY = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the views. Probabilities in [0, 1]; sizes as fractions of the side."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hflip: bool = True
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float | None = None  # None: 0.5 when the output side is >= blur_min_side, else 0
    blur_min_side: int = 64
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in pixels at 224 px, scaled with the output size
    translate: float = 0.125  # weak view: largest shift as a fraction of the side

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise LoaderConfigError(
                f"mean and std need 3 values each with std > 0, got mean={self.mean}, std={self.std}."
            )
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise LoaderConfigError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}.")
        for name in ("jitter_p", "gray_p", "translate"):
            if not 0 <= getattr(self, name) <= 1:
                raise LoaderConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}.")


def check_views(views: Sequence[str]) -> list[str]:
    """Validate a list of view kinds; at least one, each in :data:`VIEW_KINDS`."""
    views = list(views)
    unknown = [v for v in views if v not in VIEW_KINDS]
    if not views or unknown:
        raise LoaderConfigError(
            f"Invalid views {views}: give at least one of {list(VIEW_KINDS)} per requested view, "
            "e.g. ['strong', 'strong'] for contrastive pairs or ['clean'] for evaluation."
        )
    return views


class ViewMaker:
    """Turn a decoded batch into the requested views.

    ``input_hw`` is the decoded size ``(H, W)``; ``output_hw`` the size of every
    float view. When they differ and ``resize`` is true (fixed-size data asked at
    another size), ``clean``/``weak`` start from the image resized to ``output_hw``;
    otherwise (the decoded square of variable-size data) from its center crop.
    """

    def __init__(self, views: Sequence[str], *, input_hw: tuple[int, int], output_hw: tuple[int, int],
                 resize: bool, config: AugmentConfig, seed: int, backend: str = "auto"):
        if backend not in BACKENDS:
            raise LoaderConfigError(f"Unknown view backend {backend!r}; use one of {list(BACKENDS)}.")
        self.backend = backend
        self.views = check_views(views)
        self.input_hw = input_hw
        self.output_hw = output_hw
        self.resize = resize
        self.config = config
        self.seed = seed
        side = min(output_hw)
        blur_p = config.blur_p if config.blur_p is not None else (0.5 if side >= config.blur_min_side else 0.0)
        self.blur_p = blur_p
        self.blur_sigma = (config.blur_sigma[0] * side / 224, config.blur_sigma[1] * side / 224)
        same = tuple(input_hw) == tuple(output_hw)
        self.pad = int(round(config.translate * side)) if (same or resize) else 0
        self._mean = np.asarray(config.mean, dtype=np.float32)
        self._std = np.asarray(config.std, dtype=np.float32)
        b, c, s, h = (float(v) for v in config.jitter)
        self._strong_spec = view_kernels.StrongSpec(
            scale_lo=float(config.crop_scale[0]), scale_hi=float(config.crop_scale[1]),
            log_ratio_lo=math.log(config.crop_ratio[0]), log_ratio_hi=math.log(config.crop_ratio[1]),
            ratio_lo=float(min(config.crop_ratio)), ratio_hi=float(max(config.crop_ratio)), hflip=bool(config.hflip),
            jitter_p=float(config.jitter_p), jitter_lo=(max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h),
            jitter_hi=(1 + b, 1 + c, 1 + s, h), gray_p=float(config.gray_p), blur_p=float(blur_p),
            blur_lo=self.blur_sigma[0], blur_hi=self.blur_sigma[1],
            blur_radius=_blur_radius(self.blur_sigma[1], *output_hw),
        )
        if not resize and (output_hw[0] > input_hw[0] or output_hw[1] > input_hw[1]):
            raise LoaderConfigError(f"Output size {output_hw} is larger than the decoded size {input_hw}.")

    def __call__(self, images: torch.Tensor, ids: np.ndarray, epoch: int) -> list[torch.Tensor]:
        """``images [B, 3, H, W]`` uint8 (any strides) → one tensor per view (uint8 for
        ``raw``, else float32 ``[B, 3, h, w]``)."""
        ids = np.asarray(ids, dtype=np.int64)
        compiled = self._compiled(images)
        resized = self.resize and tuple(self.input_hw) != tuple(self.output_hw)
        unit = base = None  # images in [0, 1] and the clean/weak views' source, for torch ops
        out = []
        for slot, kind in enumerate(self.views):
            if kind == "raw":
                out.append(images.clone())
            elif compiled and kind == "strong":
                out.append(self._kernel(view_kernels.strong_views, images, epoch, slot, ids, self._strong_spec))
            elif compiled and kind == "weak" and not resized:
                out.append(self._kernel(view_kernels.weak_views, images, epoch, slot, ids,
                                        self._weak_pad(*self.input_hw), bool(self.config.hflip)))
            else:
                if unit is None:
                    unit = images.float().div_(255.0)
                if kind == "strong":
                    out.append(self._strong(unit, ids, epoch, slot))
                    continue
                if base is None:
                    base = unit if not resized else F.interpolate(
                        unit, size=self.output_hw, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
                if kind == "clean":
                    out.append(self._normalise(_center_crop(base, self.output_hw)))
                else:
                    out.append(self._weak(base, ids, epoch, slot))
        return out

    def _compiled(self, x: torch.Tensor) -> bool:
        """Use the numba kernels (CPU tensors), else torch ops (any device)."""
        return self.backend == "numba" or (self.backend == "auto" and x.device.type == "cpu")

    def _kernel(self, kernel, images: torch.Tensor, epoch: int, slot: int, ids: np.ndarray, *args) -> torch.Tensor:
        """Run a view kernel of :mod:`view_kernels` on the uint8 pixels, straight from the
        decoder's buffer (the kernel scales them to [0, 1])."""
        out = torch.empty((images.shape[0], 3, *self.output_hw), dtype=torch.float32)
        kernel(images.numpy(), self.seed, epoch, slot, ids, *args, self._mean, self._std, out.numpy())
        return out

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.config.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _weak_pad(self, height: int, width: int) -> int:
        """Reflect padding of the weak view's source: reflection needs pad < side."""
        return max(0, min(self.pad, height - 1, width - 1))

    def _weak(self, x: torch.Tensor, ids: np.ndarray, epoch: int, slot: int) -> torch.Tensor:
        """Torch ops: exact integer translation (reflect padding) + optional flip of ``x``
        in [0, 1], normalised: ``[B, 3, h, w]``."""
        pad = self._weak_pad(x.shape[-2], x.shape[-1])
        oh, ow = self.output_hw
        top, left, flip = view_kernels.weak_params(self.seed, epoch, slot, ids, x.shape[-2] + 2 * pad - oh + 1,
                                                   x.shape[-1] + 2 * pad - ow + 1, bool(self.config.hflip))
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad > 0 else x
        return self._normalise(_gather_crops(x, top, left, (oh, ow), flip))

    def _strong(self, x: torch.Tensor, ids: np.ndarray, epoch: int, slot: int) -> torch.Tensor:
        """Torch ops: MoCo v2 view of ``x [B, 3, H, W]`` in [0, 1], normalised."""
        spec = self._strong_spec
        boxes, flip, factors, jitter_on, gray_on, sigma = view_kernels.strong_params(
            self.seed, epoch, slot, ids, x.shape[-2], x.shape[-1], spec)
        y = crop_resize(x, *boxes.T, self.output_hw, flip)
        on = np.flatnonzero(jitter_on)
        if len(on):
            y[on] = color_jitter(y[on], torch.as_tensor(factors[on], dtype=y.dtype, device=y.device))
        on = np.flatnonzero(gray_on)
        if len(on):
            y[on] = grayscale(y[on]).expand(-1, 3, -1, -1)
        on = np.flatnonzero(sigma > 0)
        if len(on):
            y[on] = gaussian_blur(y[on], sigma[on], max_sigma=spec.blur_hi)
        return self._normalise(y)


def crop_resize(x: torch.Tensor, top: np.ndarray, left: np.ndarray, crop_h: np.ndarray, crop_w: np.ndarray,
                output_hw: tuple[int, int], flip: np.ndarray) -> torch.Tensor:
    """Bilinear crop-and-resize of per-sample boxes (pixels) with optional flip: ``[B, 3, h, w]``."""
    height, width = x.shape[-2:]
    sign = np.where(flip, -1.0, 1.0)
    theta = np.zeros((len(top), 2, 3), dtype=np.float32)
    theta[:, 0, 0] = sign * crop_w / width
    theta[:, 0, 2] = (2 * left + crop_w) / width - 1
    theta[:, 1, 1] = crop_h / height
    theta[:, 1, 2] = (2 * top + crop_h) / height - 1
    theta_t = torch.from_numpy(theta).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta_t, [x.shape[0], x.shape[1], *output_hw], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of ``[B, 3, H, W]``: ``[B, 1, H, W]``."""
    r, g, b = x.unbind(dim=1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (in this order) on ``[B, 3, H, W]`` in [0, 1].

    ``factors`` is ``[B, 4]``: multiplicative brightness/contrast/saturation factors
    and a hue shift in turns (torchvision's ``adjust_*`` semantics).
    """
    view = (-1, 1, 1, 1)
    x = (x * factors[:, 0].view(view)).clamp_(0, 1)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    c = factors[:, 1].view(view)
    x = (c * x + (1 - c) * mean).clamp_(0, 1)
    s = factors[:, 2].view(view)
    x = (s * x + (1 - s) * grayscale(x)).clamp_(0, 1)
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, 0] + factors[:, 3].view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` RGB in [0, 1] → HSV with hue in turns [0, 1)."""
    r, g, b = x.unbind(dim=1)
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    delta = maxc - minc
    flat = delta == 0
    safe = torch.where(flat, torch.ones_like(delta), delta)
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(flat, torch.zeros_like(hue), torch.remainder(hue / 6.0, 1.0))
    return torch.stack((hue, sat, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: ``[B, 3, H, W]`` HSV → RGB in [0, 1]."""
    h, s, v = x.unbind(dim=1)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.to(torch.int64) % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    table = torch.stack([
        torch.stack((v, q, p, p, t, v), dim=1),
        torch.stack((t, v, v, q, p, p), dim=1),
        torch.stack((p, p, t, v, v, q), dim=1),
    ], dim=1)  # [B, 3, 6, H, W]
    index = sector.unsqueeze(1).unsqueeze(1).expand(-1, 3, 1, -1, -1)
    return table.gather(2, index).squeeze(2)


def _blur_radius(max_sigma: float, height: int, width: int) -> int:
    return max(1, min(int(math.ceil(3 * max_sigma)), height - 1, width - 1))


def gaussian_blur(x: torch.Tensor, sigma: np.ndarray, *, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (pixels) per sample: ``[B, 3, H, W]``."""
    batch, channels, height, width = x.shape
    radius = _blur_radius(max_sigma, height, width)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / sig) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, k]
    kernel = kernel.repeat_interleave(channels, dim=0)  # [B * C, k]
    y = x.reshape(1, batch * channels, height, width)
    y = F.pad(y, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, kernel.view(batch * channels, 1, 1, -1), groups=batch * channels)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(batch * channels, 1, -1, 1), groups=batch * channels)
    return y.view(batch, channels, height, width)


def _center_crop(x: torch.Tensor, output_hw: tuple[int, int]) -> torch.Tensor:
    height, width = x.shape[-2:]
    oh, ow = output_hw
    top, left = (height - oh) // 2, (width - ow) // 2
    return x[..., top:top + oh, left:left + ow].contiguous()


def _gather_crops(x: torch.Tensor, top: np.ndarray, left: np.ndarray, output_hw: tuple[int, int],
                  flip: np.ndarray) -> torch.Tensor:
    """Per-sample integer crops of ``x [B, C, H, W]`` (exact copies of pixels): ``[B, C, h, w]``."""
    oh, ow = output_hw
    device = x.device
    rows = torch.from_numpy(top[:, None] + np.arange(oh)[None, :]).to(device)  # [B, h]
    cols_np = left[:, None] + np.arange(ow)[None, :]
    cols_np = np.where(flip[:, None], cols_np[:, ::-1], cols_np)
    cols = torch.from_numpy(np.ascontiguousarray(cols_np)).to(device)  # [B, w]
    batch = torch.arange(x.shape[0], device=device).view(-1, 1, 1)
    crops = x[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, h, w, C]
    return crops.permute(0, 3, 1, 2).contiguous()
