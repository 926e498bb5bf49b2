"""`obcp export --out DIR`: the labels a run has gathered and its model, after any cycle.

Writes, each atomically, into ``DIR``:

- ``labels.csv``: one row per train image (:data:`LABEL_COLUMNS`): ``sample_id``, ``path``
  (relative to the image folder; empty for datasets without files), ``label`` (the class
  name, when known), ``source`` (``initial``: I^S; ``yes``: a *yes* answer; ``full``: a full
  label; empty when unknown), ``predicted`` and ``confidence`` (for the images without a
  label: the model's class among those not denied, and its softmax probability renormalised
  over them), ``denied`` (the classes denied by *no* answers, ``;``-separated).
- ``model.pt``: the classifier as TorchScript, loadable with ``torch.jit.load`` alone (no
  code of this project): input ``[B, S, S, 3]`` uint8 RGB images (the square crop resized to
  ``S``, :func:`pipeline.data.folder.fit_square`), output ``[B, C]`` class probabilities;
  the normalisation is inside.
- ``model.json``: ``classes``, ``image_size``, the input/output contract, the run it comes
  from (arm, seed, cycle), and the counts of ``labels.csv``.

The labels are those of the chosen cycle's pool (default: the latest finished cycle; 0 is
stage 1), plus the answers already given to the open question sheet of the next cycle (so
nothing a person said is missing from an export made while a cycle waits).
"""
from __future__ import annotations

import contextlib
import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.core.context import RunContext
from pipeline.core.errors import ObcpError
from pipeline.core.io import atomic_path, write_csv, write_json

LABEL_COLUMNS = ("sample_id", "path", "label", "source", "predicted", "confidence", "denied")
SOURCES = {"initial": "initial", "yes": "yes", "full": "full"}


class ExportError(ObcpError):
    """Nothing to export yet, or an export that cannot be made as asked."""


class ExportedClassifier(nn.Module):
    """``[B, H, W, 3]`` uint8 RGB → ``[B, C]`` probabilities: scale, normalise, backbone, classifier."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, mean, std):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return torch.softmax(self.classifier(self.backbone((x - self.mean) / self.std)), dim=1)


@dataclass(frozen=True)
class Exported:
    out: Path
    arm: str
    seed: int
    cycle: int
    rows: int
    known: int
    predicted: int
    open_answers: int  # answers of the next cycle's open sheet included
    bytes: int


def only_arm(params) -> str:
    """The one arm of params, else an error asking for --arm."""
    if len(params.arms) == 1:
        return next(iter(params.arms))
    raise ExportError(f"params.yaml has {len(params.arms)} arms ({', '.join(params.arms)}); pick one with --arm.")


def finished_cycle(ctx: RunContext, arm: str) -> int:
    """The latest cycle of `arm` with a manifest (0: only stage 1 is done)."""
    done = [k for k in range(1, ctx.params.query_times + 1)
            if (ctx.layout.cycle_dir(ctx.seed, arm, k) / "manifest.json").is_file()]
    last = 0
    for k in done:  # cycles finish in order; stop at a gap (a later cycle from an older run)
        if k != last + 1:
            break
        last = k
    return last


def script_model(ctx: RunContext, state, *, teacher: bool) -> torch.jit.ScriptModule:
    """The classifier of `state` (the EMA teacher's for `onebit`) as traced TorchScript on CPU."""
    shape = ctx_image_shape(ctx)
    from pipeline.data.index import read_classes

    info = read_classes(ctx.layout.data_dir)
    encoder = copy.deepcopy(state.model.encoder_k if teacher else state.model.encoder_q).cpu().float().eval()
    module = ExportedClassifier(encoder.backbone, encoder.classifier, info["mean"], info["std"]).eval()
    example = torch.zeros((2, shape[0], shape[1], 3), dtype=torch.uint8)
    with torch.no_grad(), quiet_jit():
        return torch.jit.trace(module, example, check_trace=True)


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch's FutureWarning that TorchScript is deprecated (it still loads wherever
    torch does; the export's contract is `torch.jit.load`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        yield


def ctx_image_shape(ctx: RunContext) -> tuple[int, int]:
    from pipeline.data.index import read_classes

    shape = read_classes(ctx.layout.data_dir)["image_shape"]
    if shape is None:
        raise ExportError("the dataset's images have different sizes; an exported model needs one input size "
                          "(dataset folder resizes every image to dataset.image_size).")
    return int(shape[0]), int(shape[1])


def _open_answers(ctx: RunContext, arm: str, k: int, pool: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """`pool` plus the answers already given to cycle k+1's open sheet (not in any pool yet)."""
    from pipeline.oracle import answers, sheets
    from pipeline.pool import pools

    nxt = ctx.layout.cycle_dir(ctx.seed, arm, k + 1)
    sheet = sheets.read_sheet(nxt) if k < ctx.params.query_times else None
    if sheet is None or (nxt / "manifest.json").exists() or (nxt / "pool.parquet").exists():
        return pool, 0
    got = answers.lookup(answers.read(ctx.layout.answer_store), sheet)
    got = got[got["answered"].to_numpy()]
    unl = set(pool.loc[pool["status"] == "unlabeled", "sample_id"].tolist())
    got = got[got["sample_id"].isin(unl)]
    if got.empty:
        return pool, 0
    if sheets.is_label_sheet(sheet["asked_class"]):
        return pools.apply_full_labels(pool, got["sample_id"].to_numpy(), got["label"].to_numpy(), k + 1,
                                       num_classes=ctx.num_classes), len(got)
    denied = pools.denied_matrix(pool, got["sample_id"].to_numpy(), ctx.num_classes)
    fresh = ~denied[np.arange(len(got)), got["asked_class"].to_numpy()]  # not already applied
    got = got[fresh]
    q = pd.DataFrame({"sample_id": got["sample_id"].to_numpy(), "asked_class": got["asked_class"].to_numpy(),
                      "answer": got["answer"].to_numpy(dtype=bool)})
    return pools.apply_answers(pool, q, k + 1, num_classes=ctx.num_classes), len(q)


def label_table(pool: pd.DataFrame, class_names, paths: np.ndarray, probs: np.ndarray | None,
                pred_ids: np.ndarray) -> pd.DataFrame:
    """labels.csv (module docstring) from the pool [N rows], paths [N], and the model's
    probabilities probs [n, C] of the samples `pred_ids` [n] (the unlabeled ones)."""
    names = np.asarray(list(class_names), dtype=object)
    pool = pool.sort_values("sample_id").reset_index(drop=True)
    status = pool["status"].astype(str).to_numpy()
    known = status != "unlabeled"
    label = np.where(known, names[np.maximum(pool["label"].to_numpy(), 0)], "")
    source = np.array([SOURCES.get(s, "") for s in status], dtype=object)
    predicted = np.full(len(pool), "", dtype=object)
    confidence = np.full(len(pool), np.nan)
    if probs is not None and len(pred_ids):
        from pipeline.pool import pools

        denied = pools.denied_matrix(pool, pred_ids, len(names))
        allowed = np.where(denied, 0.0, probs.astype(np.float64))
        total = allowed.sum(axis=1, keepdims=True)
        allowed = np.divide(allowed, total, out=np.full_like(allowed, 1.0 / len(names)), where=total > 0)
        best = allowed.argmax(axis=1)
        predicted[pred_ids] = names[best]
        confidence[pred_ids] = np.round(allowed[np.arange(len(best)), best], 6)
    denied_text = [";".join(names[[int(c) for c in n]]) if len(n) else "" for n in pool["negatives"]]
    return pd.DataFrame({"sample_id": pool["sample_id"].to_numpy(), "path": paths, "label": label, "source": source,
                         "predicted": predicted, "confidence": confidence, "denied": denied_text})


def export(ctx: RunContext, out: Path, *, arm: str | None = None, cycle: int | None = None) -> Exported:
    """Write labels.csv, model.pt and model.json for `arm` after `cycle` into `out`."""
    from pipeline.data.errors import CorruptArtifactError
    from pipeline.data.index import read_files
    from pipeline.loop.runs import fresh_state, stage1_meta
    from pipeline.loop.inference import predict
    from pipeline.loop.train import load_checkpoint
    from pipeline.pool import pools

    arm = arm or only_arm(ctx.params)
    settings = ctx.params.arm(arm)
    last = finished_cycle(ctx, arm)
    if not (ctx.layout.stage1_dir(ctx.seed) / "checkpoint.pt").is_file():
        raise ExportError(f"there is no model yet: stage 1 of seed {ctx.seed} has not run "
                          f"({ctx.layout.stage1_dir(ctx.seed)}). Run `dvc repro` (answer the initial labels first "
                          "if it asks for them).")
    k = last if cycle is None else int(cycle)
    if not 0 <= k <= last:
        raise ExportError(f"--cycle {cycle}: arm {arm!r} of seed {ctx.seed} has finished cycles 0..{last} "
                          "(0 = stage 1); export one of those.")
    model_dir = ctx.layout.stage1_dir(ctx.seed) if k == 0 else ctx.layout.cycle_dir(ctx.seed, arm, k)
    pool = pools.read_pool(ctx.layout.initial_pool(ctx.seed) if k == 0 else model_dir / "pool.parquet")
    opened = 0
    if k == last:
        pool, opened = _open_answers(ctx, arm, k, pool)
    state = fresh_state(ctx)
    load_checkpoint(model_dir / "checkpoint.pt", state, expect=stage1_meta(ctx))
    teacher = settings.method == "onebit"
    unl = pool.loc[pool["status"] == "unlabeled", "sample_id"].to_numpy(dtype=np.int64)
    probs = None
    if len(unl):
        got, probs = predict(state.model, ctx.layout.beton("train"), unl, device=ctx.device,
                             num_workers=ctx.params.train.num_workers, teacher=teacher)
        assert np.array_equal(got, np.sort(unl))
        unl = got
    try:
        files = read_files(ctx.layout.data_dir)
        paths = files[files["split"] == "train"].sort_values("sample_id")["path"].to_numpy(dtype=object)
    except CorruptArtifactError:  # a dataset without files (digits, cifar): no paths
        paths = np.full(ctx.num_samples, "", dtype=object)
    table = label_table(pool, ctx.class_names, paths, probs, unl)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scripted = script_model(ctx, state, teacher=teacher)
    with atomic_path(out / "model.pt") as tmp, open(tmp, "wb") as fh, quiet_jit():  # a handle: no temp name inside
        torch.jit.save(scripted, fh)
    write_csv(out / "labels.csv", table)
    h, w = ctx_image_shape(ctx)
    counts = {"images": int(len(table)), "known": int((table["source"] != "").sum()),
              **{s: int((table["source"] == s).sum()) for s in SOURCES},
              "predicted": int((table["predicted"] != "").sum()),
              "with_denied": int((table["denied"] != "").sum())}
    write_json(out / "model.json", {
        "classes": list(ctx.class_names), "image_size": [h, w],
        "input": f"uint8 tensor [B, {h}, {w}, 3]: RGB images turned upright (EXIF orientation), the central "
                 f"square resized to {h}x{w} (bilinear)",
        "output": f"float32 tensor [B, {ctx.num_classes}]: class probabilities, in the order of `classes`",
        "load": "torch.jit.load('model.pt')", "dataset": ctx.params.dataset.name, "arm": arm,
        "method": settings.method, "strategy": settings.strategy, "seed": ctx.seed, "cycle": k,
        "open_answers_included": opened, "labels": counts,
    }, sort_keys=False)
    size = sum(f.stat().st_size for f in (out / "model.pt", out / "labels.csv", out / "model.json"))
    return Exported(out, arm, ctx.seed, k, len(table), counts["known"], counts["predicted"], opened, size)


def describe(e: Exported) -> str:
    return (f"exported arm {e.arm}, seed {e.seed}, after {'stage 1' if e.cycle == 0 else f'cycle {e.cycle}'}"
            f"{f' (+ {e.open_answers} answers of the open cycle)' if e.open_answers else ''}: {e.rows} images, "
            f"{e.known} labeled by a person, {e.predicted} predicted → {e.out}/labels.csv, model.pt, model.json "
            f"({e.bytes / 1024:.0f} KiB)")


def load_manifest(out: Path) -> dict:
    """model.json of an export folder (for `obcp predict`)."""
    path = Path(out) / "model.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} cannot be read ({exc}); point --model at a folder written by `obcp export`.") \
            from None
    if not isinstance(doc, dict) or not {"classes", "image_size"} <= set(doc):
        raise ExportError(f"{path} lacks classes/image_size; it was not written by `obcp export`.")
    return doc
