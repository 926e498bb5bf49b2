"""Where every artifact lives (DESIGN §3). The only place that builds artifact paths."""
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

    def stage1_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "stage1"

    def arm_dir(self, seed: int, arm: str) -> Path:
        return self.seed_dir(seed) / arm

    def cycle_dir(self, seed: int, arm: str, cycle: int) -> Path:
        return self.arm_dir(seed, arm) / f"cycle_{cycle:03d}"

    def ledger(self, arm: str, seed: int) -> Path:
        return self.root / "reports" / "ledger" / f"{arm}-seed{seed}.parquet"

    def metrics(self, arm: str, seed: int) -> Path:
        return self.root / "reports" / "metrics" / f"{arm}-seed{seed}.json"
