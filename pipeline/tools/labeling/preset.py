"""`obcp preset label --images DIR --classes classes.txt`: params.yaml for labeling your own images.

One arm, one seed, the human oracle. The arm is the ObCP method with least-confidence
selection (`strategy: max`), the choice the committed measurements support: on the study's
fresh seeds 5–9 (reports/study.md, block `confirm`) `max` reached 97.5 ± 0.5 % on digits and
92.1 ± 0.8 % on glyphs, against 96.7 ± 0.3 / 91.4 ± 1.4 for Eq. 7 (`obcp`), 97.4 / 92.0 for
`entropy` and 97.1 / 92.5 for `diff2`: Eq. 7 never beat the plain uncertainty strategies
(0.7–0.8 points behind `max` on both datasets, interval touching 0), `max` was the best or
within 0.4 points of the best on both datasets with the smallest seed-to-seed spread, and it
needs nothing but the current model's softmax.

The folder, the class list, the validation folder and the initial-labels CSV are read and
checked first (every image decoded): bad input stops with exit code 2 and nothing is
written. Budgets default to the size of the task: I^S = 5 images per class (at most a fifth
of the folder), |T^O| = the bits of 10 full labels per class (10·C·log2 C questions, at most
what the folder can take). Without a validation folder a fifth of each cycle's questions (at
most 20) are a random audit set that estimates top-1 (pipeline/selection/audit.py).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.core.config import parse_params
from pipeline.core.errors import ObcpError
from pipeline.core.io import write_text

STRATEGY = "max"  # see the module docstring
ARM = "label"


class PresetError(ObcpError):
    """The labeling preset's options do not fit the folder."""


@dataclass(frozen=True)
class LabelPreset:
    text: str  # the params.yaml
    images: int
    classes: int
    initial: int
    questions: int
    query_times: int
    audit: int
    initial_from_csv: bool
    skipped: tuple[str, ...]

    @property
    def answers(self) -> int:
        """What a person answers: the initial labels (unless a CSV gives them) and every yes/no question."""
        return (0 if self.initial_from_csv else self.initial) + self.questions


def _path(value: str | os.PathLike | None) -> str:
    return "" if not value else Path(value).as_posix()


TEMPLATE = """\
# Label your own images with yes/no answers: written by `obcp preset label` (docs/labeling.md).
# One arm, one seed, a person answers (oracle.kind: human). Walkthrough: `dvc repro`; when it
# stops with "waiting for ..." (exit code 3), answer on `obcp annotate --seed 0`; `dvc repro`
# again; ... ; then `obcp export --out export/`.

# Query cycles; the one-bit budget and stage-2 epochs are split evenly over them.
query_times: {query_times}

dataset:
  name: folder
  # your images (flat or nested; their labels are not known)
  root: {root}
  # a classes.txt file (one name a line) or a list of names
  classes: {classes}
  # optional labeled val/<class>/ folder: accuracy measured on it instead of estimated
  val: {val}
  # optional CSV (path or file name, class) giving I^S instead of a person
  initial_labels: {initial_labels}
  # every image: its central square resized to this side
  image_size: {image_size}
  # true: leave out undecodable images (convert lists them) instead of stopping
  skip_unreadable: {skip}
  jpeg_quality: 90
  # horizontal flips in augmentation (fine for photos, not for text or digits)
  hflip: {hflip}

budget:
  # |I^S|: full labels before stage 1 ({initial_note})
  initial: {initial}
  # no labels to balance with: I^S is a uniform random draw
  class_balanced: false
  # |T^O|: yes/no questions over all cycles, the audit's included
  one_bit: {questions}

# Random audit questions per cycle, inside the cycle's budget: their yes-rate estimates top-1
# where no labeled val folder exists (0: none; pipeline/selection/audit.py).
audit:
  size: {audit}

# The conventional learners' settings (docs/baselines.md); no arm here reads them.
baselines:
  mc_samples: 20
  dropout: 0.5
  ensemble: 5

model:
  arch: {arch}
  width: 32
  proj_dim: 128

train:
  stage1_epochs: 15
  stage2_epochs: 12
  batch_size: 32
  unlabeled_ratio: 2
  lr: 0.03
  momentum: 0.9
  weight_decay: 0.0005
  num_workers: 1
  cpu_threads: 1
  amp: true
  sup_view: weak
  view_backend: auto
  cpu_amp: false

contrastive:
  queue_size: 256
  temperature: 0.2
  momentum: 0.99
  hard_negatives: 128

loss:
  lambda_ctr: 0.1
  lambda_neg: 0.1

selection:
  m: 10
  t: 3
  window: since_query
  history_view: clean

onebit:
  consistency: 10.0
  rampup_epochs: 5
  ema_decay: 0.97

# a person answers (the images have no ground truth)
oracle:
  kind: human

ddp:
  nproc: 1
  backend: auto

seeds:
  - 0

# The ObCP method with least-confidence selection: what the study's measurements support
# (pipeline/tools/labeling/preset.py says why).
arms:
  {arm}:
    method: obcp
    strategy: {strategy}
"""


def label_preset(images: str | os.PathLike, classes: str | os.PathLike, *, val: str | os.PathLike | None = None,
                 initial_labels: str | os.PathLike | None = None, image_size: int = 32,
                 skip_unreadable: bool = False, initial: int | None = None, questions: int | None = None,
                 query_times: int = 4, audit: int | None = None, arch: str = "smallcnn",
                 hflip: bool = False) -> LabelPreset:
    """Check the inputs and build the params (nothing is written here)."""
    from pipeline.data.folder import FolderSource

    source = FolderSource(images, classes, val=val, initial_labels=initial_labels, image_size=image_size,
                          skip_unreadable=skip_unreadable)
    n, c = source.num_samples("train"), source.num_classes
    from_csv = bool(initial_labels)
    csv_count = int((source.extra_columns("train")["initial_label"] >= 0).sum())
    if from_csv:
        if initial is not None and initial != csv_count:
            raise PresetError(f"--initial {initial}: the initial-labels CSV labels {csv_count} images, and I^S is "
                              "exactly those; leave --initial out.")
        initial = csv_count
    elif initial is None:
        initial = max(1, min(5 * c, n // 5))
    if not 1 <= initial < n:
        raise PresetError(f"--initial {initial}: I^S must have between 1 and {n - 1} of the folder's {n} images.")
    if query_times < 1:
        raise PresetError(f"--query-times must be >= 1, got {query_times}.")
    room = query_times * (n - initial)  # a sample is asked at most once per cycle
    if questions is None:
        questions = min(int(round(10 * c * math.log2(c))), room)
    if not query_times <= questions <= room:
        raise PresetError(f"--questions {questions}: between {query_times} (one per cycle) and {room} "
                          f"({query_times} cycles x {n - initial} unlabeled images).")
    per_cycle = questions // query_times
    if audit is None:
        audit = 0 if val else min(20, max(1, per_cycle // 5))
    if not 0 <= audit <= per_cycle:
        raise PresetError(f"--audit {audit}: between 0 and the {per_cycle} questions of a cycle.")
    quote = lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()  # noqa: E731
    classes_value = _path(classes) if isinstance(classes, (str, os.PathLike)) else list(classes)
    text = TEMPLATE.format(
        query_times=query_times, root=quote(_path(images)), classes=quote(classes_value), val=quote(_path(val)),
        initial_labels=quote(_path(initial_labels)), image_size=image_size, skip=str(skip_unreadable).lower(),
        hflip=str(hflip).lower(), initial=initial, questions=questions, audit=audit, arch=arch, arm=ARM,
        strategy=STRATEGY,
        initial_note="the rows of the initial-labels CSV" if from_csv else "a person labels them on the page",
    )
    parse_params(yaml.safe_load(text), pool_size=n, source="the labeling preset")
    return LabelPreset(text, n, c, initial, questions, query_times, audit, from_csv, tuple(source.skipped))


def write_label_preset(out: Path, preset: LabelPreset) -> None:
    write_text(out, preset.text)


def describe(p: LabelPreset, out: Path) -> str:
    who = (f"{p.initial} initial labels come from the CSV; a person answers {p.questions} yes/no questions"
           if p.initial_from_csv else
           f"a person gives {p.initial} full labels, then answers {p.questions} yes/no questions")
    audit = f", {p.audit} of them per cycle a random audit that estimates top-1" if p.audit else ""
    skipped = f"; {len(p.skipped)} undecodable image(s) left out" if p.skipped else ""
    return (f"wrote {out}: {p.images} images, {p.classes} classes, arm {ARM!r} (obcp, strategy {STRATEGY}), seed 0; "
            f"{who} over {p.query_times} cycle{'s' * (p.query_times != 1)}{audit} ({p.answers} answers in all){skipped}. Next: `dvc repro`.")
