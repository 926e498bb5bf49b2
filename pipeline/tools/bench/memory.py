"""Peak memory of Eq. 7 history accumulation + scoring at ImageNet scale, on synthetic
predictions. Each configuration runs in a fresh process so its peak RSS is its own.

It records what cycle 2 of the paper's schedule (stage 1 = stage 2 = 100 epochs, 4
queries, so cycle 2 trains epochs 125..149) records under the window rule: its last
EPOCHS epochs into every accumulator that cycle opens (`since_query`: query 3's two
sums; `across_queries` with m = 30, t = 5: also query 4's p-sum, 3 [N, C] arrays),
then scores all N with query 3's and takes the top-k.

python -m pipeline.tools.bench.memory N C M T [EPOCHS [RULE]]  → one JSON line
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

from pipeline.method.history import HistorySet, window_history
from pipeline.method.schedule import accumulator_arrays, open_windows, query_windows
from pipeline.selection.strategies import score_candidates, select_top_streaming


def _rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    VmHWM, not getrusage's ru_maxrss: on Linux the latter carries over the parent's peak
    across fork + exec, so a child started by a 1 GiB parent never reports less.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PAPER_SCHEDULE = (100, 100, 4)  # stage-1 epochs, stage-2 epochs, query_times
CYCLE = (125, 150)  # the epochs cycle 2 trains


def run_one(n: int, c: int, m: int, t: int, epochs: int, rule: str = "since_query", *, chunk: int = 16_384,
            top_k: int = 10_000) -> dict:
    """Record cycle 2's last `epochs` epochs into the accumulators it opens (module
    docstring), then score all N with query 3's and take the top-k."""
    rng = np.random.default_rng(0)
    block = rng.random((chunk, c), dtype=np.float32) + np.float32(1e-3)  # [chunk, C] softmax-like rows
    block /= block.sum(axis=1, keepdims=True)
    baseline = _rss_mib()
    epochs = min(epochs, CYCLE[1] - CYCLE[0])
    windows = query_windows(*PAPER_SCHEDULE, m=m, t=t, rule=rule)
    recorder = HistorySet([window_history(w, n, c) for w in open_windows(windows, *CYCLE)])
    t0 = time.perf_counter()
    for e in range(CYCLE[1] - epochs, CYCLE[1]):
        for start in range(0, n, chunk):
            ids = np.arange(start, min(n, start + chunk), dtype=np.int64)
            recorder.record(e, ids, block[: ids.size])
    record_s = time.perf_counter() - t0
    history = recorder.get(windows[2].query_epoch)
    assert history is not None
    t1 = time.perf_counter()
    ids = np.arange(n, dtype=np.int64)
    chunks = ((ids[s:s + chunk], score_candidates("obcp", ids[s:s + chunk], history=history))
              for s in range(0, n, chunk))
    top = select_top_streaming(chunks, top_k)
    score_s = time.perf_counter() - t1
    return {
        "N": n, "C": c, "m": m, "t": t, "rule": rule, "epochs_recorded": epochs,
        "peak_rss_mib": round(_rss_mib(), 1), "baseline_rss_mib": round(baseline, 1),
        "accumulators_mib": round(accumulator_arrays(windows, *CYCLE) * n * c * 4 / 2**20, 1),
        "record_s_per_epoch": round(record_s / epochs, 2), "score_s": round(score_s, 2), "top_k": len(top),
    }


def measure(n: int, c: int, m: int, t: int, epochs: int, rule: str = "since_query") -> dict:
    """`run_one` in a fresh interpreter (so peaks don't mix)."""
    out = subprocess.run([sys.executable, "-m", "pipeline.tools.bench.memory", *map(str, (n, c, m, t, epochs, rule))],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(run_one(*map(int, sys.argv[1:6]), *sys.argv[6:7])))
