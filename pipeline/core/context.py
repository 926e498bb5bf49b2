"""A run's explicit inputs, resolved once: params, artifact layout, data facts, device.

Every stage builds one `RunContext` at start-up and passes it (or parts of it) down.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core import distributed as dist
from pipeline.core.config import Params, load_params, resolve_one_bit, resolve_size
from pipeline.data.index import read_classes, read_index
from pipeline.core.layout import Layout


@dataclass(frozen=True)
class RunContext:
    params: Params
    layout: Layout
    seed: int
    device: torch.device
    distributed: bool
    class_names: tuple[str, ...]
    train_labels: np.ndarray  # [N] int64, by sample_id
    test_labels: np.ndarray  # [n_test] int64, by sample_id

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_samples(self) -> int:
        return len(self.train_labels)

    @property
    def initial_size(self) -> int:
        return resolve_size(self.params.budget.initial, self.num_samples)

    @property
    def one_bit_budget(self) -> int:
        return resolve_one_bit(self.params.budget, self.num_samples, self.num_classes)


def open_run(params_path: str | Path = "params.yaml", seed: int = 0, *, root: Path = Path("."),
             names: bool = True) -> RunContext:
    """Load and validate params against the converted dataset; pick the device.

    `names=False` skips the registries (strategies, methods, oracles, plugins): stage 1
    never runs them (see `pipeline.core.config.parse_params`).

    Under `torchrun` (WORLD_SIZE > 1) this also joins the process group.
    """
    from pipeline.data.beton import check_beton  # FFCV: only training stages open a run

    params = load_params(params_path, names=names)
    layout = Layout(params.dataset.name, Path(root))
    index = read_index(layout.data_dir)
    classes = read_classes(layout.data_dir)
    for split in ("train", "test"):  # cheap header check now, not after hours of training
        check_beton(layout.beton(split))
    train = index[index["split"] == "train"].sort_values("sample_id")
    test = index[index["split"] == "test"].sort_values("sample_id")
    params = load_params(params_path, pool_size=len(train), names=names,  # budget-vs-pool checks
                         num_classes=int(classes["num_classes"]))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.setup(params.ddp.backend)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(params.train.cpu_threads)  # float results depend on the thread count
    return RunContext(
        params=params,
        layout=layout,
        seed=seed,
        device=device,
        distributed=distributed,
        class_names=tuple(classes["classes"]),
        train_labels=train["label"].to_numpy(dtype=np.int64),
        test_labels=test["label"].to_numpy(dtype=np.int64),
    )
