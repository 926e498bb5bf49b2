"""`obcp demo-images --out DIR`: an unlabeled folder of real images to try the labeling workflow on.

scikit-learn's embedded 8x8 digits (no download), written as PNGs whose names and folders say
nothing about their class:

- ``DIR/images/part<k>/img<nnnn>.png``: the first `count` train digits (nested, two parts);
- ``DIR/new/new<nnnn>.png``: `new` digits of the test split, for `obcp predict`;
- ``DIR/classes.txt``: the class names 0..9;
- ``DIR/answer_key.csv``: ``file,label`` of every image written: the truth, for checking an
  export or for a robot that answers (the end-to-end test); a person timing themselves
  should not open it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.core.errors import ObcpError
from pipeline.core.io import write_csv, write_text


def write_demo(out: Path, *, count: int = 300, new: int = 20) -> dict[str, int]:
    """Write the demo folder (module docstring); returns the counts."""
    from pipeline.data.sources import digits_source

    source = digits_source()
    n_train, n_test = source.num_samples("train"), source.num_samples("test")
    if not 10 <= count <= n_train or not 0 <= new <= n_test:
        raise ObcpError(f"--count must lie in [10, {n_train}] and --new in [0, {n_test}], got {count} and {new}.")
    out = Path(out)
    rows = []
    for split, n, folder in (("train", count, "images"), ("test", new, "new")):
        images, labels = source.images(split)[:n], source.labels(split)[:n]
        for i, (image, label) in enumerate(zip(images, labels)):
            rel = f"{folder}/part{i % 2 + 1}/img{i:04d}.png" if folder == "images" else f"{folder}/new{i:04d}.png"
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(image)).save(path)
            rows.append({"file": rel, "label": source.classes[int(label)]})
    write_text(out / "classes.txt", "\n".join(source.classes) + "\n")
    write_csv(out / "answer_key.csv", pd.DataFrame(rows))
    return {"images": count, "new": new, "classes": source.num_classes}
