"""Where every artifact lives (docs/design.md §3). The only place that builds artifact paths."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Artifact paths of one project checkout (`root`) for one dataset."""

    dataset: str
    root: Path = Path(".")

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / self.dataset

    def beton(self, split: str) -> Path:
        return self.data_dir / f"{split}.beton"

    @property
    def index(self) -> Path:
        return self.data_dir / "index.parquet"

    def seed_dir(self, seed: int) -> Path:
        return self.root / "data" / "runs" / f"seed{seed}"

    def initial_pool(self, seed: int) -> Path:
        return self.seed_dir(seed) / "cycle_000" / "pool.parquet"

    def initial_sheet_dir(self, seed: int) -> Path:
        """The question sheet of I^S when a person labels it (dataset folder without an
        initial-labels CSV): outside every DVC output, so that its `answers.csv` survives reruns."""
        return self.seed_dir(seed) / "initial"

    @property
    def answer_store_images(self) -> Path:
        """Which image folder the answer store's sample ids refer to (dataset folder)."""
        return self.answers_dir / f"{self.dataset}.images.json"

    def stage1_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "stage1"

    def timings_dir(self, seed: int) -> Path:
        """Wall-clock timings of a seed's training: outside every DVC output, so that a rerun
        gives the same output hashes (and `dvc.lock`) as the first run."""
        return self.seed_dir(seed) / "timings"

    def arms_dir(self, seed: int) -> Path:
        """Every arm's query cycles of one seed (the `active@seed` stage's output)."""
        return self.seed_dir(seed) / "arms"

    def arm_dir(self, seed: int, arm: str) -> Path:
        return self.arms_dir(seed) / arm

    def cycle_dir(self, seed: int, arm: str, cycle: int) -> Path:
        return self.arm_dir(seed, arm) / f"cycle_{cycle:03d}"

    def ledger_dir(self, seed: int) -> Path:
        return self.root / "reports" / "ledger" / f"seed{seed}"

    def ledger(self, arm: str, seed: int) -> Path:
        return self.ledger_dir(seed) / f"{arm}.parquet"

    @property
    def answers_dir(self) -> Path:
        """The answer store's folder: a DVC dependency of `active@seed`, never an output."""
        return self.root / "reports" / "answers"

    @property
    def answer_store(self) -> Path:
        """Every human answer of this dataset, append-only (pipeline.oracle.answers)."""
        return self.answers_dir / f"{self.dataset}.parquet"

    @property
    def metrics_root(self) -> Path:
        return self.root / "reports" / "metrics"

    def metrics_dir(self, seed: int) -> Path:
        """Every arm's per-seed metrics of one seed (the `evaluate@seed` stage's output)."""
        return self.metrics_root / f"seed{seed}"

    def metrics(self, arm: str, seed: int) -> Path:
        return metrics_file(self.metrics_root, arm, seed)

    @property
    def summary_metrics(self) -> Path:
        """Final top-1 per arm over seeds: the one metrics file DVC shows (the `figures` stage's)."""
        return self.root / "reports" / "metrics.json"


def metrics_file(metrics_root: Path, arm: str, seed: int) -> Path:
    """`<metrics_root>/seed<S>/<arm>.json`: one arm and seed's DVC metrics."""
    return Path(metrics_root) / f"seed{seed}" / f"{arm}.json"
