"""``glyphs``: an offline, deterministic embedded dataset harder than digits (letters in clutter).

Every image is rendered from what ships with the installed packages; nothing is
downloaded: ten capital letters (:data:`CLASSES`) drawn by Pillow with the TrueType fonts
bundled in matplotlib's ``mpl-data/fonts/ttf`` (:data:`FONTS`: 14 faces of DejaVu Sans,
Sans Mono and Serif, STIX and Computer Modern) over crops of scikit-learn's two bundled
photos (``load_sample_images()``: china.jpg, flower.jpg), at ``SIZE`` x ``SIZE`` = 16 x 16
pixels. 3 000 train and 1 000 test images (``GLYPHS_TRAIN``, ``GLYPHS_TEST``).

Sample ``i`` of a split is a pure function of (split, i): its random numbers come from
``numpy.random.default_rng([SEED, split code, i])``, so any subset renders to the same
bytes as the full split (the tests render a few rows) and the order of rendering does
not matter. Its label is ``i % 10`` (balanced classes).

Each sample draws a difficulty d = u³, u ~ U(0, 1) (median 0.125: most samples are
easy, a tail is hard), which sets how far it strays from a plain, upright, bright letter
in DejaVu Sans Bold on a dim, flat background:

- background: a square crop (side 12-100 % of the photo's height) of one photo at a
  random place, box-resized to the output, contrast scaled by 0.2 + 0.8 d, times 0.6;
- clutter, each with probability d: part of another letter (any class, font and
  colour, 30-60 % size, ±30°, its centre anywhere), and one or two random lines;
- the letter: with probability d another font; size 95 % of the side down to
  (95 - 35 d) %; rotation ±(5 + 25 d)°; centre offset ±(4 + 16 d) % of the side;
  stroke 0-2 px (at 4x); a random colour at least (0.45 - 0.3 d) brighter (luminance)
  than the background under it, so the letter is always the lighter shape;
- noise: Gaussian with σ = 3 + 15 d grey levels, then rounded to uint8.

Letters are drawn at 4x and reduced with a box filter (anti-aliasing). The bytes depend
on Pillow (its FreeType and libjpeg), matplotlib's fonts, scikit-learn's photos and
numpy, all pinned in requirements.lock: on one environment the same call always gives
the same bytes.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from pipeline.data.errors import DatasetNotFoundError

CLASSES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "G", "H", "K", "R")
FONTS: tuple[str, ...] = (
    "DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "cmss10.ttf", "cmr10.ttf", "cmtt10.ttf",
)
SIZE = 16  # output side in pixels
SEED = 20_240_612
GLYPHS_TRAIN = 3000
GLYPHS_TEST = 1000
_SPLIT_CODE = {"train": 0, "test": 1}
_SUPER = 4  # letters are drawn at SUPER x SIZE and box-filtered down
_LUMA = np.array([0.299, 0.587, 0.114])


def font_dir() -> Path:
    """matplotlib's bundled TrueType fonts (``mpl-data/fonts/ttf``)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def _font(name: str, size: int):
    from PIL import ImageFont

    path = font_dir() / name
    if not path.is_file():
        raise DatasetNotFoundError(
            f"The glyphs dataset needs the font {path}, which ships with matplotlib; it is missing. "
            "Reinstall the pinned matplotlib (requirements.lock) or choose another dataset."
        )
    return ImageFont.truetype(os.fspath(path), size)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled photos, ``[427, 640, 3]`` uint8 each."""
    from sklearn.datasets import load_sample_images

    return tuple(np.ascontiguousarray(img) for img in load_sample_images().images)


def _background(rng: np.random.Generator, side: int, contrast: float, brightness: float) -> np.ndarray:
    """``[side, side, 3]`` float64 in [0, 255]: a random square crop of a bundled photo,
    its contrast scaled by ``contrast``, then its values by ``brightness``."""
    from PIL import Image

    photos = _photos()
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    crop = int(round(h * rng.uniform(0.12, 1.0)))
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    patch = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side), Image.Resampling.BOX)
    out = np.asarray(patch, dtype=np.float64)
    mean = out.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + (out - mean) * contrast, 0, 255) * brightness


def _letter_mask(rng: np.random.Generator, char: str, side: int, *, font: str, scale: float, angle: float,
                 offset: float) -> np.ndarray:
    """``[side, side]`` float64 alpha in [0, 1] of one letter, drawn at 4x and box-filtered.

    ``scale``: font size as a fraction of the side; ``angle``: degrees; ``offset``: the
    largest shift of its centre, as a fraction of the side.
    """
    from PIL import Image, ImageDraw

    big = side * _SUPER
    stroke = int(rng.integers(0, 3))
    canvas = Image.new("L", (2 * big, 2 * big), 0)
    ImageDraw.Draw(canvas).text((big, big), char, fill=255, font=_font(font, max(4, int(round(big * scale)))),
                                anchor="mm", stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, center=(big, big))
    dx, dy = (int(round(v * big)) for v in rng.uniform(-offset, offset, size=2))
    left, top = big // 2 - dx, big // 2 - dy
    canvas = canvas.crop((left, top, left + big, top + big)).resize((side, side), Image.Resampling.BOX)
    return np.asarray(canvas, dtype=np.float64) / 255.0


def _colour(rng: np.random.Generator, under: np.ndarray, min_contrast: float) -> np.ndarray:
    """[3] RGB in [0, 255] whose luminance exceeds ``under``'s by at least ``min_contrast`` · 255
    (white if 32 draws find none)."""
    luma = float(under @ _LUMA) / 255.0
    for _ in range(32):
        rgb = rng.uniform(0, 255, size=3)
        if float(rgb @ _LUMA) / 255.0 - luma >= min_contrast:
            return rgb
    return np.full(3, 255.0)


def _paint(image: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, min_contrast: float) -> np.ndarray:
    under = (image * alpha[..., None]).sum(axis=(0, 1)) / max(alpha.sum(), 1e-6)
    colour = _colour(rng, under, min_contrast)
    return image * (1 - alpha[..., None]) + colour * alpha[..., None]


def _lines(rng: np.random.Generator, side: int) -> np.ndarray:
    """``[side, side]`` alpha of one or two random straight lines (drawn at 4x)."""
    from PIL import Image, ImageDraw

    big = side * _SUPER
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 3))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, big, size=4))
        draw.line((x0, y0, x1, y1), fill=255, width=int(rng.integers(2, 7)))
    return np.asarray(canvas.resize((side, side), Image.Resampling.BOX), dtype=np.float64) / 255.0


def render(split: str, index: int, size: int = SIZE) -> tuple[np.ndarray, int]:
    """Sample ``index`` of ``split``: (``[size, size, 3]`` uint8 image, label in 0..9).

    The sample's difficulty d = u³ sets how far it strays from a plain letter (module docstring).
    """
    rng = np.random.default_rng([SEED, _SPLIT_CODE[split], int(index)])
    label = int(index) % len(CLASSES)
    d = float(rng.random()) ** 4
    image = _background(rng, size, contrast=0.2 + 0.8 * d, brightness=0.6)
    if rng.random() < d:  # clutter: part of another letter, under the main one
        alpha = _letter_mask(rng, CLASSES[int(rng.integers(len(CLASSES)))], size,
                             font=FONTS[int(rng.integers(len(FONTS)))], scale=float(rng.uniform(0.3, 0.6)),
                             angle=float(rng.uniform(-30, 30)), offset=0.55)
        image = _paint(image, alpha, rng, min_contrast=0.2)
    if rng.random() < d:
        image = _paint(image, _lines(rng, size), rng, min_contrast=0.2)
    font = FONTS[int(rng.integers(len(FONTS)))] if rng.random() < d else FONTS[0]
    alpha = _letter_mask(rng, CLASSES[label], size, font=font, scale=float(rng.uniform(0.95 - 0.35 * d, 0.95)),
                         angle=float(rng.uniform(-1, 1)) * (5 + 25 * d), offset=0.04 + 0.16 * d)
    image = _paint(image, alpha, rng, min_contrast=0.45 - 0.3 * d)
    image = image + rng.normal(0.0, 3 + 15 * d, size=image.shape)
    return np.rint(np.clip(image, 0, 255)).astype(np.uint8), label


def render_split(split: str, indices: range | list[int] | np.ndarray,
                 size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``indices`` of ``split``: images ``[n, size, size, 3]`` uint8 and labels ``[n]`` int64."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODE)}, got {split!r}")
    rows = [render(split, int(i), size) for i in indices]
    images = np.stack([img for img, _ in rows]) if rows else np.zeros((0, size, size, 3), np.uint8)
    return images, np.asarray([lab for _, lab in rows], dtype=np.int64)


def glyphs_source(train: int = GLYPHS_TRAIN, test: int = GLYPHS_TEST):
    """The ``glyphs`` dataset as an :class:`~pipeline.data.sources.ArraySource` (rendered in memory)."""
    from pipeline.data.sources import ArraySource

    return ArraySource("glyphs", list(CLASSES), {"train": render_split("train", range(train)),
                                                 "test": render_split("test", range(test))})
