"""Per arm and seed: accuracy, bits used and labeled-equivalent % after stage 1 and each cycle.

Every checkpoint's test accuracy is measured by the process that writes it (stage 1:
`stage1/test.json`; cycle k: `manifest.json`), while the model and the compiled data
pipeline are in memory. This module only assembles those records into
`reports/metrics/seed<S>/<arm>.json` (DVC metrics), so it imports no torch.

Each point says where its ``top1`` comes from (``top1_source``): ``test`` (the labeled test
split), ``audit`` (no labeled test split: the random audit questions of the *next* cycle,
which asked about this point's model; pipeline/selection/audit.py), or None: not measured
(no labeled test split and no later audit, e.g. the last cycle). ``audit_top1`` (with
``audit_n`` and ``audit_ci95``) is the audit's estimate wherever one exists, also beside a
measured ``top1``, so the two can be compared.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.core.config import ArmParams, Params, as_dict, resolve_size
from pipeline.core.errors import ObcpError
from pipeline.core.layout import Layout


class EvaluationInputError(ObcpError):
    """A record that the metrics need is missing: the run upstream did not finish."""


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EvaluationInputError(f"{path} is missing ({what}). Run the stages upstream: `dvc repro`.") from None
    except ValueError as exc:
        raise EvaluationInputError(f"{path} is not valid JSON ({exc}); rerun the stage that writes it.") from None


def with_top1_source(point: dict, audit: dict | None) -> dict:
    """Set ``top1_source`` (and ``top1`` from `audit` when the test split had none) in place;
    `audit`: the estimate of the cycle that asked about this point's model (module docstring)."""
    if audit is not None:
        point.update({"audit_top1": audit["top1"], "audit_n": audit["n"], "audit_ci95": audit["ci95"]})
    if point.get("top1") is not None:
        point["top1_source"] = "test"
    elif audit is not None:
        point["top1"], point["top1_source"] = audit["top1"], "audit"
    else:
        point["top1"], point["top1_source"] = None, None
    return point


def run_metrics(params: Params, layout: Layout, arm_name: str, seed: int, *, num_classes: int,
                num_train: int) -> dict:
    """The metrics document of one arm and seed (see the module docstring)."""
    arm: ArmParams = params.arm(arm_name)
    log2c = math.log2(num_classes)
    initial = resolve_size(params.budget.initial, num_train)

    def point(cycle: int, bits: float, test: dict, yes: int, asked: int, quality: dict | None = None) -> dict:
        out = {"cycle": cycle, "bits": round(bits, 3), "labeled_equiv_pct": round(100 * bits / log2c / num_train, 4),
               **test, "yes": yes, "asked": asked}
        if quality is not None:  # the cycle's selection quality (pipeline/selection/diagnostics.py)
            out["selection"] = quality
        return out

    stage1 = _read(layout.stage1_dir(seed) / "test.json", "stage-1 test accuracy")
    manifests = [_read(layout.cycle_dir(seed, arm_name, k) / "manifest.json", f"cycle {k} of arm {arm_name}")
                 for k in range(1, params.query_times + 1)]
    points = [point(0, initial * log2c, stage1, 0, 0)]
    for k, m in enumerate(manifests, start=1):
        points.append(point(k, m["bits_used"], m["test"], m.get("yes", 0), m["asked"], m.get("selection")))
    for k, p in enumerate(points):
        with_top1_source(p, manifests[k].get("audit") if k < len(manifests) else None)
    switches = {k: v for k, v in as_dict(arm).items() if k not in ("method", "strategy", "rounds")}
    doc = {
        "arm": arm_name, "seed": seed, "method": arm.method, "strategy": arm.strategy, "switches": switches,
        "num_classes": num_classes, "num_train": num_train,
        "final": {k: v for k, v in points[-1].items() if k not in ("cycle", "yes", "asked", "selection")},
        "points": points,
    }
    if arm.rounds != 1:  # follow-up questions (pipeline/loop/rounds.py); absent otherwise, as before
        doc["rounds"] = arm.rounds
    return doc
