"""Selection cost of every strategy on synthetic inputs: seconds and peak memory at N = 50 k
and N = 1.2 M candidates, C = 10 and 1000 classes (`obcp bench --only selection`).

Each configuration runs in a fresh interpreter, so its peak resident memory (VmHWM) is its
own; `inputs_mib` is what the strategy's declared inputs take (what the scoring pass holds
anyway), `peak_rss_mib − baseline_rss_mib` what the run added to the interpreter.

- Per-sample strategies are scored as the loop scores them: chunk by chunk (`CHUNK`
  candidates: softmax [chunk, C], T = 20 dropout samples, E = 5 ensemble members, a
  predicted loss), streaming the top k (`select_top_streaming`): memory O(chunk·T·C + k),
  whatever N. The synthetic chunks are made outside the timed part. A chunk's cost does not
  depend on N, so at most `SAMPLED` candidates are scored and the seconds are scaled to N
  (`scored` says how many were).
- Batch strategies get the whole candidate set: features [N, F] (F = 256, Gaussian clusters),
  badge also probs [N, C], coreset and typiclust the labeled set's features [1 000, F];
  they pick k (1 000 at 50 k, 100 at 1.2 M, where `seconds_per_pick` extrapolates).
- Not here: ``obcp`` (Eq. 7's history and its memory: the `memory` section), ``vaal`` (its
  cost is training a VAE on the images, not a computation on features; see the fig4 run's
  cycle timings).

python -m pipeline.tools.bench.selection STRATEGY N C K  → one JSON line
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.core.registry import STRATEGIES
from pipeline.selection.base import Candidates
from pipeline.selection.ranking import select_top_streaming
from pipeline.tools.bench.memory import _rss_mib

CHUNK = 4_096
SAMPLED = 65_536  # per-sample strategies: candidates actually scored (the time is scaled to N)
FEATURES = 256
LABELED = 1_000
MC_SAMPLES = 20
ENSEMBLE = 5
PER_SAMPLE = ("random", "max", "diff2", "entropy", "mc_dropout", "bald", "varratio", "ll4al")
BATCH = ("coreset", "badge", "typiclust")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _features(rng: np.random.Generator, n: int, f: int, clusters: int = 100) -> np.ndarray:
    """[n, f] float32 Gaussian clusters, made in blocks."""
    centers = rng.normal(size=(clusters, f)).astype(np.float32) * 3.0
    out = np.empty((n, f), np.float32)
    for i in range(0, n, 65_536):
        m = min(65_536, n - i)
        out[i:i + m] = centers[rng.integers(0, clusters, m)] + rng.normal(size=(m, f)).astype(np.float32)
    return out


def _probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    out = np.empty((n, c), np.float32)
    for i in range(0, n, 65_536):
        m = min(65_536, n - i)
        out[i:i + m] = _softmax(rng.normal(size=(m, c)).astype(np.float32) * 3.0)
    return out


def run_one(strategy: str, n: int, c: int, k: int) -> dict:
    rng = np.random.default_rng(0)
    s = STRATEGIES.get(strategy)
    settings = {"typiclust_max_clusters": 500, "typiclust_knn": 20, "typiclust_min_cluster": 5}
    baseline = _rss_mib()
    if strategy in PER_SAMPLE:
        seconds, inputs, scored = 0.0, 0, 0

        def chunks():
            nonlocal seconds, inputs, scored
            for start in range(0, min(n, SAMPLED), CHUNK):
                ids = np.arange(start, min(n, start + CHUNK), dtype=np.int64)
                m = len(ids)
                extra: dict = {}
                if "mc_probs" in s.needs:
                    extra["mc_probs"] = _softmax(rng.normal(size=(MC_SAMPLES, m, c)).astype(np.float32) * 3.0)
                if "ensemble_probs" in s.needs:
                    extra["ensemble_probs"] = _softmax(rng.normal(size=(ENSEMBLE, m, c)).astype(np.float32) * 3.0)
                if "predicted_loss" in s.needs:
                    extra["predicted_loss"] = rng.random(m)
                probs = _softmax(rng.normal(size=(m, c)).astype(np.float32) * 3.0)
                inputs = max(inputs, probs.nbytes + sum(a.nbytes for a in extra.values()))
                t0 = time.perf_counter()
                scores = s.scores(Candidates(ids=ids, probs=probs, seed=1, settings=settings, **extra), k)
                seconds += time.perf_counter() - t0
                scored += m
                yield ids, scores

        top = select_top_streaming(chunks(), k)
        picks = len(top)
        seconds *= n / scored
    else:
        x = _features(rng, n, FEATURES)
        cands = Candidates(ids=np.arange(n, dtype=np.int64), embeddings=x,
                           labeled_embeddings=_features(rng, LABELED, FEATURES),
                           probs=_probs(rng, n, c) if "probs" in s.needs else None, seed=1, settings=settings)
        inputs = sum(a.nbytes for a in (cands.embeddings, cands.labeled_embeddings, cands.probs) if a is not None)
        t0 = time.perf_counter()
        scores = s.scores(cands, k)
        seconds = time.perf_counter() - t0
        picks, scored = int(np.isfinite(scores).sum()), n
    return {"strategy": strategy, "N": n, "C": c, "k": k, "picks": picks, "scored": scored, "seconds": round(seconds, 3),
            "seconds_per_pick": round(seconds / max(picks, 1), 5) if strategy in BATCH else None,
            "inputs_mib": round(inputs / 2**20, 1), "peak_rss_mib": round(_rss_mib(), 1),
            "baseline_rss_mib": round(baseline, 1)}


THREADS = 1  # BLAS and OpenMP threads of each run: the figures do not depend on the machine's core count


def measure(strategy: str, n: int, c: int, k: int) -> dict:
    """`run_one` in a fresh interpreter (so peaks don't mix), with `THREADS` BLAS threads."""
    env = {**os.environ, **{v: str(THREADS) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, "-m", "pipeline.tools.bench.selection", strategy, str(n), str(c), str(k)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


READS_NO_PROBS = ("coreset", "typiclust")  # features only: C changes nothing they compute


def bench_selection(quick: bool = False, echo=print, partial: Path | None = None) -> dict:
    """Every strategy at N ∈ {50 k, 1.2 M} (quick: 5 k, 50 k) and C ∈ {10, 1000}; the strategies
    that read no probabilities run at C = 10 only (their C = 1000 row says so). `partial`: a JSON
    lines file that keeps each finished row, so an interrupted bench resumes where it stopped."""
    sizes = (5_000, 50_000) if quick else (50_000, 1_200_000)
    done: dict[tuple, dict] = {}
    if partial is not None and partial.is_file():
        for line in partial.read_text().splitlines():
            r = json.loads(line)
            done[(r["strategy"], r["N"], r["C"], r["k"])] = r
    rows = []
    for n in sizes:
        for c in (10, 1000):
            for strategy in (*PER_SAMPLE, *BATCH):
                k = 1_000 if n <= 50_000 else 100 if strategy in BATCH else 1_000
                if strategy in READS_NO_PROBS and c != 10:
                    same = next(r for r in rows if r["strategy"] == strategy and r["N"] == n and r["C"] == 10)
                    rows.append({**same, "C": c, "same_as_C": 10})
                    continue
                row = done.get((strategy, n, c, k)) or measure(strategy, n, c, k)
                if partial is not None and (strategy, n, c, k) not in done:
                    with open(partial, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
                rows.append(row)
                echo(f"  {strategy:>10} N={n:>9} C={c:>4}: {rows[-1]['seconds']} s, "
                     f"peak {rows[-1]['peak_rss_mib']} MiB")
    return {"rows": rows, "features": FEATURES, "chunk": CHUNK, "mc_samples": MC_SAMPLES, "ensemble": ENSEMBLE,
            "threads": THREADS, "sampled": SAMPLED}


if __name__ == "__main__":
    print(json.dumps(run_one(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
