"""Stage 2: `query_times` query cycles, each score → oracle → update → retrain.

Each step reads and writes files in `data/runs/seed<S>/arms/<arm>/cycle_KKK/`, so it can
run alone (`obcp score --cycle K …`) or inside `run_active`, which does every cycle of
one arm in one process (`pipeline.loop.arms` runs every arm of a seed). Steps that only need one process (score,
oracle, update) run on rank 0; every rank retrains.

Resuming: a cycle writes `inputs.json` (hash of its inputs and of the params that
shape it) when it starts and `manifest.json` when it is done. A rerun skips a cycle
whose manifest matches, continues a started cycle whose inputs match (reusing its
`scores.parquet`: a rerun while waiting for a person does not score the pool again), and
discards a mismatching cycle together with every later one.

Human answers live in the answer store (pipeline.oracle.answers), not in the cycles: before a
cycle folder is discarded its `answers.csv` goes into the store, and a rebuilt cycle takes
every answer it can from there, so a person is only asked questions never answered. A
finished cycle whose answers changed in the store since it was trained (an edited
`answers.csv`, a correction on the page or from Label Studio) is replayed: it keeps its
scores and questions, takes the corrected answers, and retrains; later cycles are redone.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.core import distributed as dist
from pipeline.oracle import answers, sheets
from pipeline.selection import diagnostics, strategies
from pipeline.core import io
from pipeline.pool import ledger, pools
from pipeline.core.config import ArmParams, as_dict
from pipeline.core.context import RunContext
from pipeline.core.errors import ObcpError
from pipeline.method.history import QueryWindow, cycle_history, epoch_shares, load_query_history, query_epochs, query_windows
from pipeline.loop.runs import evaluate_model, fresh_state, loop_config, stage1_meta
from pipeline.loop.train import echo, load_checkpoint, pool_view, predict_batches, split_log, train_epochs
from pipeline.method.methods import stage2_plan
from pipeline.pool.budget import budget_through, cycle_budgets, full_label_budget


@dataclass(frozen=True)
class Cycle:
    """Cycle k (1-based) of one arm and seed, with the paths and numbers it uses."""

    ctx: RunContext
    arm_name: str
    k: int

    @property
    def arm(self) -> ArmParams:
        return self.ctx.params.arm(self.arm_name)

    @property
    def dir(self) -> Path:
        return self.ctx.layout.cycle_dir(self.ctx.seed, self.arm_name, self.k)

    @property
    def prev_dir(self) -> Path:
        """Where the previous model and history live: stage 1, or cycle k−1."""
        if self.k == 1:
            return self.ctx.layout.stage1_dir(self.ctx.seed)
        return self.ctx.layout.cycle_dir(self.ctx.seed, self.arm_name, self.k - 1)

    @property
    def timings(self) -> Path:
        """The cycle's wall-clock times (seconds per step, per epoch): outside DVC's outputs."""
        return self.ctx.layout.timings_dir(self.ctx.seed) / self.arm_name / f"cycle_{self.k:03d}.json"

    @property
    def prev_pool(self) -> Path:
        if self.k == 1:
            return self.ctx.layout.initial_pool(self.ctx.seed)
        return self.prev_dir / "pool.parquet"

    @property
    def is_last(self) -> bool:
        return self.k == self.ctx.params.query_times

    @property
    def query_epoch(self) -> int:
        t = self.ctx.params.train
        return query_epochs(t.stage1_epochs, t.stage2_epochs, self.ctx.params.query_times)[self.k - 1]

    @property
    def retrain_until(self) -> int:
        t = self.ctx.params.train
        return self.query_epoch + epoch_shares(t.stage2_epochs, self.ctx.params.query_times)[self.k - 1]

    @property
    def window(self) -> QueryWindow:
        """This cycle's query's Eq. 7 windows (`selection.window`)."""
        return self.windows[self.k - 1]

    @property
    def windows(self) -> list[QueryWindow]:
        """Every query's Eq. 7 windows (`selection.window`)."""
        p = self.ctx.params
        return query_windows(p.train.stage1_epochs, p.train.stage2_epochs, p.query_times, m=p.selection.m,
                             t=p.selection.t, rule=p.selection.window)

    @property
    def full_labels(self) -> bool:
        return self.arm.method == "fullbit"

    @property
    def strategy(self) -> str:
        """The selection strategy scored: `fullbit` ranks by entropy where the arm says `obcp`."""
        return "entropy" if self.full_labels and self.arm.strategy == "obcp" else self.arm.strategy

    def budgets(self) -> list[int]:
        """Questions per cycle (one-bit), or full labels per cycle for `fullbit` — equal bits."""
        total = self.ctx.one_bit_budget
        if self.full_labels:
            total = full_label_budget(total, self.ctx.num_classes)
        return cycle_budgets(total, self.ctx.params.query_times)

    @property
    def budget(self) -> int:
        return self.budgets()[self.k - 1]

    def expect_meta(self) -> dict:
        return stage1_meta(self.ctx)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cycle_key(c: Cycle) -> dict:
    """What a cycle's result depends on: its input files and the params that shape it."""
    p = c.ctx.params
    files = [c.prev_pool, c.prev_dir / "checkpoint.pt", c.prev_dir / "history.npz"]
    return {
        "cycle": c.k,
        "inputs": {str(f): _sha256(f) for f in files if f.exists()},
        "params": as_dict(
            {
                "arm": c.arm,
                "budget": p.budget,
                "query_times": p.query_times,
                "selection": p.selection,
                "oracle": p.oracle,
                "train": p.train,
                "loss": p.loss,
                "contrastive": p.contrastive,
                "model": p.model,
                "dataset": p.dataset,
                "seed": c.ctx.seed,
                "nproc": dist.world_size(),
                **({"onebit": p.onebit} if c.arm.method == "onebit" else {}),  # shapes only that arm
            }
        ),
    }


# --------------------------------------------------------------------------- steps


def score_step(c: Cycle) -> pd.DataFrame:
    """Rank every candidate by the arm's strategy; write scores.parquet (rank 0).

    Candidates: unlabeled samples with at least one class not yet denied. The asked
    class is the current model's clean-view argmax over the classes not yet denied: the
    query encoder's, or for `onebit` the EMA teacher's (the key encoder), as Hu et al. ask;
    the probability-based strategies score that same prediction.
    One streamed evaluation pass: per batch only (ids, score, asked/predicted class)
    are kept, so memory is O(N) here (the Eq. 7 history itself is O(N·C)).
    """
    ctx = c.ctx
    pool = pools.read_pool(c.prev_pool)
    unl = pool[pool["status"] == "unlabeled"]
    unl = unl[unl["negatives"].map(len) < ctx.num_classes]
    ids = unl["sample_id"].to_numpy(dtype=np.int64)
    state = fresh_state(ctx)
    load_checkpoint(c.prev_dir / "checkpoint.pt", state, expect=c.expect_meta())
    strategy = c.strategy
    history = load_query_history(c.prev_dir / "history.npz", c.window) if strategy == "obcp" else None
    parts = []
    for batch_ids, probs in predict_batches(state.model, ctx.layout.beton("train"), ids, device=ctx.device,
                                            num_workers=ctx.params.train.num_workers,
                                            teacher=c.arm.method == "onebit"):
        parts.append(pd.DataFrame({
            "sample_id": batch_ids,
            "score": strategies.score_candidates(strategy, batch_ids, probs=probs, history=history,
                                                seed=ctx.seed * 1000 + c.k),
            "asked_class": strategies.asked_classes(probs, pools.denied_matrix(pool, batch_ids, ctx.num_classes)),
            "pred_class": probs.argmax(axis=1),
            "pred_prob": probs.max(axis=1),
        }))
    scored = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["sample_id", "score", "asked_class", "pred_class", "pred_prob"])
    ranked = strategies.select_top(
        scored["sample_id"].to_numpy(dtype=np.int64), scored["score"].to_numpy(dtype=np.float64), len(scored),
        extra={k: scored[k].to_numpy() for k in ("asked_class", "pred_class", "pred_prob")},
    )  # every candidate, ranked
    ranked["selected"] = ranked["rank"] <= c.budget
    ranked["strategy"] = strategy
    io.write_parquet(c.dir / "scores.parquet", ranked)
    return ranked


def oracle_step(c: Cycle) -> pd.DataFrame:
    """Answer the selected questions; write queries.parquet (rank 0).

    `simulated` answers from the ground truth. `human` takes every answer it can from the
    answer store (after putting a new or edited `answers.csv` of the cycle into it); the
    questions still open go on a question sheet, and `sheets.AnswersMissing` (exit code 3)
    stops the stage until they are answered. `fullbit` asks for full labels instead: the
    ground truth (simulated) or a person's label (human: a sheet whose asked_class is -1).
    """
    ctx = c.ctx
    scores = pd.read_parquet(c.dir / "scores.parquet")
    asked = scores[scores["selected"]].sort_values("rank").reset_index(drop=True)
    q = asked[["sample_id", "asked_class", "score", "rank", "strategy"]].copy()
    if c.full_labels:
        q["asked_class"] = answers.LABEL_QUESTION
    truth = ctx.train_labels[q["sample_id"].to_numpy()]
    if ctx.params.oracle.kind == "simulated":
        if c.full_labels:
            q["answer"] = True
            q["label_given"] = truth
        else:
            q["answer"] = sheets.simulated_answers(q[["sample_id", "asked_class"]], ctx.train_labels)
            q["label_given"] = np.where(q["answer"], q["asked_class"], -1)
        q["true_label"] = truth
    else:
        got = human_answers(c, q)
        if c.full_labels:
            q["answer"] = True
            q["label_given"] = got["label"].to_numpy()
        else:
            q["answer"] = got["answer"].to_numpy(dtype=bool)
            q["label_given"] = np.where(q["answer"], q["asked_class"], -1)
        q["true_label"] = -1
        q["answered_at"] = got["answered_at"].astype(str).to_numpy()  # when the person answered
    io.write_parquet(c.dir / "queries.parquet", q)
    return q


def human_answers(c: Cycle, q: pd.DataFrame) -> pd.DataFrame:
    """The store's answers to the questions `q` (DataFrame[sample_id, asked_class]), as
    `answers.lookup` gives them; raises `sheets.AnswersMissing` naming the sheet of the
    questions still open (written, with their images, unless the cycle's sheet has them)."""
    ctx = c.ctx
    store = ctx.layout.answer_store
    sheets.ingest_answers_csv(c.dir, store, num_samples=ctx.num_samples, class_names=ctx.class_names)
    got = answers.lookup(answers.read(store), q)
    still = q[~got["answered"].to_numpy()]
    if len(still):
        sheet = sheets.read_sheet(c.dir)
        listed = set() if sheet is None else set(zip(sheet["sample_id"], sheet["asked_class"]))
        if not set(zip(still["sample_id"], still["asked_class"])) <= listed:
            images = _raw_images(ctx, still["sample_id"].to_numpy())
            sheets.write_question_sheet(c.dir, still[["sample_id", "asked_class"]], list(ctx.class_names), images)
        where = c.dir / sheets.QUESTIONS_CSV
        who = f"--arm {c.arm_name} --seed {ctx.seed}"
        raise sheets.AnswersMissing(
            f"waiting for answers ({len(still)} questions at {where}). Answer them on a local page with "
            f"`obcp annotate {who}`, or in Label Studio (`obcp annotate {who} --export label-studio`, then "
            f"`obcp annotate --import EXPORT.json`), or write {sheets.answers_path(c.dir)} (`sample_id,answer`, "
            f"one row per question of the sheet; {c.dir / sheets.ANSWERS_TEMPLATE_CSV} is a template); then "
            f"rerun `dvc repro`. {len(q) - len(still)} of this cycle's {len(q)} questions were answered from "
            f"the answer store {store}."
        )
    return got


def update_step(c: Cycle) -> pd.DataFrame:
    """Apply the answers to the pool and append the cycle to the ledger (rank 0)."""
    ctx = c.ctx
    pool = pools.read_pool(c.prev_pool)
    q = pd.read_parquet(c.dir / "queries.parquet")
    if c.full_labels:
        new = pools.apply_full_labels(pool, q["sample_id"].to_numpy(), q["label_given"].to_numpy(), c.k,
                                      num_classes=ctx.num_classes)
    else:
        new = pools.apply_answers(pool, q[["sample_id", "asked_class", "answer"]], c.k, num_classes=ctx.num_classes)
    budget = None if c.full_labels else budget_through(c.budgets(), c.k)
    pools.write_pool(c.dir / "pool.parquet", new, ctx.num_classes, num_samples=ctx.num_samples, budget=budget)
    rows = ledger.ledger_rows(
        q,
        cycle=c.k,
        epoch=c.query_epoch,
        strategy=str(q["strategy"].iloc[0]) if len(q) else c.arm.strategy,
        oracle=ctx.params.oracle.kind,
        arm=c.arm_name,
        seed=ctx.seed,
        kind="full" if c.full_labels else "one_bit",
    )
    ledger.append(ctx.layout.ledger(c.arm_name, ctx.seed), rows)
    return new


def retrain_step(c: Cycle, key: dict, *, until_epoch: int | None = None,
                 seconds: dict[str, float] | None = None, log: Callable[[str], None] | None = echo,
                 progress: bool = True) -> dict:
    """Continue from the previous checkpoint for this cycle's share of stage-2 epochs
    with the full loss of the arm; write checkpoint, history, log, then the manifest, and
    the cycle's wall-clock times (`seconds`: the query steps', plus retrain and evaluate)
    to `Cycle.timings`. The manifest returned also carries `seconds`."""
    ctx, t0 = c.ctx, time.perf_counter()
    pool = pools.read_pool(c.dir / "pool.parquet")
    state = fresh_state(ctx)
    load_checkpoint(c.prev_dir / "checkpoint.pt", state, expect=c.expect_meta())
    # every later query whose windows overlap this cycle's epochs (rank 0 continues the partial
    # accumulators the previous cycle carried; the other ranks only ask in_window); None for the last cycle
    history = cycle_history(c.windows, c.query_epoch, c.retrain_until, ctx.num_samples, ctx.num_classes,
                            carried=c.prev_dir / "history.npz" if c.k > 1 and dist.is_main() else None)
    rows = train_epochs(
        state,
        pool_view(pool, ctx.num_classes, c.arm),
        stage2_plan(c.arm, ctx.params.loss, ctx.params.onebit, start_epoch=ctx.params.train.stage1_epochs),
        loop_config(ctx),
        until_epoch=c.retrain_until if until_epoch is None else until_epoch,
        history=history,
        log=log if dist.is_main() else None,
        progress=progress,
    )
    manifest: dict = {}
    if dist.is_main():
        seconds = dict(seconds or {})
        io.save_torch(c.dir / "checkpoint.pt", state.state_dict())
        if history is not None:
            history.save(c.dir / "history.npz")
        log, timings = split_log(rows)
        io.write_csv(c.dir / "log.csv", log)
        seconds["retrain"] = round(time.perf_counter() - t0, 4)
        t1 = time.perf_counter()
        test = evaluate_model(ctx, state.model)
        seconds["evaluate"] = round(time.perf_counter() - t1, 4)
        summary = pools.summary(pool).as_dict()
        queries = pd.read_parquet(c.dir / "queries.parquet")
        manifest = {
            **key,
            "counts": summary,
            "asked": int(len(queries)),
            "bits_used": pools.bits_used(pool, ctx.num_classes),
            "yes": int(queries["answer"].fillna(False).astype(bool).sum()),
            # selection quality at query time (pipeline/selection/diagnostics.py; AUROC reads ground truth)
            "selection": diagnostics.selection_quality(pd.read_parquet(c.dir / "scores.parquet"), queries,
                                                       ctx.train_labels),
            "test": test,
        }
        io.write_json(c.dir / "manifest.json", manifest)
        # wall-clock times live outside DVC's outputs, so a rerun gives the same manifest
        io.write_json(c.timings, {"seconds": seconds, "epochs": timings.to_dict("records"),
                                  "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        manifest = {**manifest, "seconds": seconds}
    dist.barrier()
    return manifest


# --------------------------------------------------------------------------- the loop


def _raw_images(ctx: RunContext, ids: np.ndarray) -> np.ndarray:
    """[n, H, W, 3] uint8 source pixels of train samples `ids` (for the question sheet)."""
    from pipeline.data.loaders import make_loader

    loader = make_loader(ctx.layout.beton("train"), batch_size=256, views=["raw"], indices=np.sort(ids),
                         order="sequential", seed=0)
    got_ids, imgs = [], []
    for batch in loader:
        got_ids.append(batch.ids.numpy().copy())
        imgs.append(batch.views[0].permute(0, 2, 3, 1).numpy().copy())
    got = np.concatenate(got_ids)
    allimg = np.concatenate(imgs)
    return allimg[np.searchsorted(got, ids)]


def _on_main(fn: Callable[[], object]) -> None:
    """Run `fn` on rank 0 only; an ObcpError there stops every rank."""
    error: ObcpError | None = None
    if dist.is_main():
        try:
            fn()
        except ObcpError as exc:
            if not dist.is_dist():
                raise
            error = exc
    summary = dist.broadcast_object(
        None if error is None else (isinstance(error, sheets.AnswersMissing), f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if summary is not None:  # every rank stops the same way: waiting stays waiting (exit 3)
        waiting, text = summary
        raise (sheets.AnswersMissing if waiting else ObcpError)(f"rank 0 stopped: {text}")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cycle_no(d: Path) -> int:
    return int(d.name.split("_")[1])


def discard_from(ctx: RunContext, arm_name: str, k: int, *, why: str = "",
                 log: Callable[[str], None] | None = None) -> None:
    """Delete cycle k and every later cycle folder, and their ledger rows (rank 0).

    A person's answers are kept: each doomed cycle's `answers.csv` goes into the answer
    store first (an invalid one stops everything here, before anything is deleted). With
    `log`, cycles that held human answers are named, with `why`, and where the answers are.
    """
    arm_dir = ctx.layout.arm_dir(ctx.seed, arm_name)
    doomed = [d for d in sorted(arm_dir.glob("cycle_*")) if _cycle_no(d) >= k]
    human = [d for d in doomed if (d / sheets.QUESTIONS_CSV).exists() or sheets.answers_path(d).exists()]
    for d in human:
        keep_answers(ctx, d, why)
    if human and log is not None:
        store = ctx.layout.answer_store
        held = len(answers.current(answers.read(store)))
        cycles = ", ".join(str(_cycle_no(d)) for d in doomed)
        log(f"cycle(s) {cycles} of arm {arm_name} are discarded ({why}). Their human answers are kept: all "
            f"{held} answers are in the answer store {store}, and rebuilt cycles take every answer they can "
            "from it, so only questions never answered are asked.")
    for d in doomed:
        shutil.rmtree(d)
    path = ctx.layout.ledger(arm_name, ctx.seed)
    if path.exists():
        ledger.truncate_after(path, k - 1)


def keep_answers(ctx: RunContext, cycle_dir: Path, why: str = "") -> None:
    """Put a cycle's `answers.csv` into the answer store before the cycle is deleted; an
    invalid file stops the deletion with its validation message and what to do."""
    try:
        sheets.ingest_answers_csv(cycle_dir, ctx.layout.answer_store, num_samples=ctx.num_samples,
                                  class_names=ctx.class_names)
    except sheets.AnswersError as exc:
        raise sheets.AnswersError(
            f"{cycle_dir} must be discarded ({why or 'its inputs changed'}), but the answers written there "
            f"cannot be kept: {exc} Fix the file (its answers then go into the answer store and are reused), "
            "or move it out of the cycle folder, and rerun; nothing was deleted."
        ) from None


def changed_answers(c: Cycle) -> int:
    """How many answers a finished cycle used differ from the answer store now (0 for the
    simulated oracle); an edited `answers.csv` of the cycle goes into the store first."""
    ctx = c.ctx
    if ctx.params.oracle.kind != "human":
        return 0
    sheets.ingest_answers_csv(c.dir, ctx.layout.answer_store, num_samples=ctx.num_samples,
                              class_names=ctx.class_names)
    if not (c.dir / "queries.parquet").is_file():
        return c.budget  # the record of what it used is gone: replay it from the store
    used = io.read_parquet(c.dir / "queries.parquet", what="queries", error=sheets.OracleError,
                           fix="rerun the active stage after deleting the cycle's manifest.json (it replays).")
    now = answers.lookup(answers.read(ctx.layout.answer_store), used)
    if c.full_labels:
        same = now["answered"] & (now["label"].to_numpy() == used["label_given"].to_numpy())
    else:
        same = now["answered"] & (now["answer"].fillna(False).to_numpy(dtype=bool) == used["answer"].to_numpy(bool))
    return int((~same).sum())


def reopen(c: Cycle) -> None:
    """Undo what a finished cycle's answers shaped (its pool, model, ledger rows and every
    later cycle), keeping its inputs, scores and question sheet (rank 0)."""
    (c.dir / "manifest.json").unlink(missing_ok=True)
    discard_from(c.ctx, c.arm_name, c.k + 1, why=f"cycle {c.k} is replayed with changed answers")
    for name in ("queries.parquet", "pool.parquet", "checkpoint.pt", "history.npz", "log.csv"):
        (c.dir / name).unlink(missing_ok=True)
    path = c.ctx.layout.ledger(c.arm_name, c.ctx.seed)
    if path.exists():
        ledger.truncate_after(path, c.k - 1)


def check_inputs(c: Cycle) -> None:
    """Read the cycle's inputs (previous pool, checkpoint and, for Eq. 7, history) before
    anything is written or discarded (rank 0): a missing, corrupt or foreign input stops
    the run with its own error and leaves every finished cycle as it was."""
    pools.read_pool(c.prev_pool)
    load_checkpoint(c.prev_dir / "checkpoint.pt", fresh_state(c.ctx), expect=c.expect_meta())
    if c.strategy == "obcp":
        load_query_history(c.prev_dir / "history.npz", c.window)


def _main_value(fn: Callable[[], object]) -> object:
    """`fn()` computed on rank 0 and given to every rank (an ObcpError stops every rank)."""
    box: list[object] = [None]

    def run() -> None:
        box[0] = fn()

    _on_main(run)
    return dist.broadcast_object(box[0])


def run_cycle(c: Cycle, *, log: Callable[[str], None] = echo, progress: bool = True) -> dict:
    """Bring cycle k to done (skip, resume, replay or redo) and return its manifest."""
    key = cycle_key(c)
    manifest = _read_json(c.dir / "manifest.json")
    if manifest is not None and {k: manifest.get(k) for k in key} == key:
        changed = _main_value(lambda: changed_answers(c))
        if not changed:
            log(f"cycle {c.k}: up to date, skipped")
            return manifest
        log(f"cycle {c.k}: {changed} answer(s) differ from the ones it was trained with (answer store "
            f"{c.ctx.layout.answer_store}); replaying from cycle {c.k} with the answers in the store")
        _on_main(lambda: reopen(c))
    started = _read_json(c.dir / "inputs.json")
    resume = started == key

    def begin() -> None:
        if not resume:
            discard_from(c.ctx, c.arm_name, c.k, why="their inputs or params changed; they are redone", log=log)
        c.dir.mkdir(parents=True, exist_ok=True)
        (c.dir / "manifest.json").unlink(missing_ok=True)
        io.write_json(c.dir / "inputs.json", key)

    _on_main(lambda: check_inputs(c))
    _on_main(begin)
    dist.barrier()
    log(f"cycle {c.k}: asking {c.budget} "
        f"{'full labels' if c.full_labels else 'one-bit questions'}")
    seconds: dict[str, float] = {}

    def query() -> None:
        for name, step in (("score", score_step), ("oracle", oracle_step), ("update", update_step)):
            if name == "score" and resume and (c.dir / "scores.parquet").is_file():
                log(f"cycle {c.k}: scores.parquet of the same inputs reused (no new scoring pass)")
                seconds[name] = 0.0
                continue
            t0 = time.perf_counter()
            step(c)
            seconds[name] = round(time.perf_counter() - t0, 4)

    _on_main(query)
    return retrain_step(c, key, seconds=seconds, log=log, progress=progress)


def run_active(ctx: RunContext, arm_name: str, *, log: Callable[[str], None] = echo,
               progress: bool = True) -> list[dict]:
    """Run every cycle of one arm and seed; drop cycles beyond `query_times`."""
    ctx.params.arm(arm_name)  # clear error for an unknown arm
    manifests = [run_cycle(Cycle(ctx, arm_name, k), log=log, progress=progress)
                 for k in range(1, ctx.params.query_times + 1)]
    _on_main(lambda: discard_from(ctx, arm_name, ctx.params.query_times + 1,
                                  why=f"beyond query_times = {ctx.params.query_times}", log=log))
    return manifests
