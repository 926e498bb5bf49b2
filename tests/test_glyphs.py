"""The embedded `glyphs` dataset: deterministic bytes, order-free rows, registered, preset."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.config import DATASETS, load_params
from pipeline.data import glyphs
from pipeline.data.sources import known_sources

PRESET = Path(__file__).resolve().parents[1] / "pipeline" / "presets" / "glyphs.yaml"


def test_same_bytes_twice_and_rows_do_not_depend_on_the_subset():
    images, labels = glyphs.render_split("train", range(12))
    again, _ = glyphs.render_split("train", range(12))
    assert images.tobytes() == again.tobytes()
    assert images.shape == (12, glyphs.SIZE, glyphs.SIZE, 3) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(12)]
    some, _ = glyphs.render_split("train", [11, 3])
    assert some.tobytes() == images[[11, 3]].tobytes()
    test, _ = glyphs.render_split("test", range(12))
    assert not np.array_equal(test, images)
    assert len({img.tobytes() for img in images}) == 12


def test_registered_with_a_preset_in_the_digits_budget_shape():
    assert "glyphs" in DATASETS and "glyphs" in known_sources()
    p = load_params(PRESET)
    assert p.dataset.name == "glyphs"
    # digits: 50 initial + 332 one-bit questions on 1 437 train samples
    assert p.budget.initial == round(50 * glyphs.GLYPHS_TRAIN / 1437)
    assert p.budget.one_bit == round(332 * glyphs.GLYPHS_TRAIN / 1437)
