"""`obcp predict DIR --model EXPORT`: label new images with an exported model.

Uses only what `obcp export` wrote (``model.pt`` through ``torch.jit.load``, ``model.json``)
and the input contract it states: each image decoded to RGB, its central square resized to
the model's size (:func:`pipeline.data.folder.fit_square`). Images are found as the
``folder`` dataset finds them (recursively, sorted by relative path, hidden entries
skipped). Writes a CSV: ``path`` (relative to DIR), ``predicted``, ``confidence``, then one
``p_<class>`` column per class.

An image that cannot be decoded stops everything (exit 2, nothing written) with its name,
unless ``skip_unreadable``: then it is left out and listed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import ObcpError
from pipeline.core.io import write_csv
from pipeline.tools.labeling.export import ExportError, load_manifest, quiet_jit


class PredictError(ObcpError):
    """No images to predict, an unreadable image, or an unusable model folder."""


def load_model(model_dir: Path):
    """(the TorchScript module, model.json) of an export folder."""
    import torch

    doc = load_manifest(model_dir)
    path = Path(model_dir) / "model.pt"
    try:
        with quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu")
    except (OSError, RuntimeError, ValueError) as exc:
        raise ExportError(f"{path} cannot be loaded as TorchScript ({exc}); export again with `obcp export`.") \
            from None
    return module.eval(), doc


def predict_folder(folder: Path, model_dir: Path, *, batch_size: int = 64,
                   skip_unreadable: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Predictions for every image under `folder`: (the CSV's frame, the files left out)."""
    import torch

    from pipeline.data.folder import _walk, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise PredictError(f"{folder} is not a folder of images.")
    files = _walk(folder)
    if not files:
        raise PredictError(f"{folder} holds no images (searched recursively).")
    module, doc = load_model(model_dir)
    h, w = (int(v) for v in doc["image_size"])
    if h != w:
        raise PredictError(f"the model expects {h}x{w} images; only square inputs are supported.")
    images, kept, bad = [], [], []
    for path in files:
        try:
            images.append(read_image(path, h))
            kept.append(path.relative_to(folder).as_posix())
        except (OSError, ValueError, SyntaxError) as exc:
            bad.append(f"{path.relative_to(folder).as_posix()} ({type(exc).__name__}: {exc})")
    if bad and not skip_unreadable:
        raise PredictError(f"{len(bad)} image(s) under {folder} cannot be decoded: {', '.join(bad[:10])}"
                           f"{' ...' if len(bad) > 10 else ''}. Replace them, or leave them out with --skip-unreadable.")
    if not kept:
        raise PredictError(f"none of the images under {folder} can be decoded.")
    probs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.stack(images[start:start + batch_size]))
            probs.append(module(batch).numpy())
    p = np.concatenate(probs).astype(np.float64)
    classes = list(doc["classes"])
    best = p.argmax(axis=1)
    frame = pd.DataFrame({"path": kept, "predicted": np.asarray(classes, dtype=object)[best],
                          "confidence": np.round(p[np.arange(len(best)), best], 6)})
    for i, name in enumerate(classes):
        frame[f"p_{name}"] = np.round(p[:, i], 6)
    return frame, bad


def write_predictions(folder: Path, model_dir: Path, out: Path, *, skip_unreadable: bool = False) -> tuple[int, list[str]]:
    frame, bad = predict_folder(folder, model_dir, skip_unreadable=skip_unreadable)
    write_csv(out, frame)
    return len(frame), bad
