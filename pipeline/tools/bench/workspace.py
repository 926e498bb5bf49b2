"""A scratch project for benchmarks: params.yaml, converted digits and initial pools."""
from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.core.config import load_params, resolve_size
from pipeline.data import ArraySource, convert, get_source, read_classes, read_index
from pipeline.core.layout import Layout
from pipeline.pool.pools import initial_pool, write_pool


def merge_params(base: dict, over: dict) -> dict:
    """`over` merged into `base` key by key (a mapping under `arms` replaces the base one)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_params(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "arms" else v
    return out


def scratch_project(dest: Path, params_file: Path, overrides: dict, source: ArraySource | None = None) -> Path:
    """`dest` with `params_file` + `overrides` as params.yaml, the dataset (or `source`,
    stored under the dataset's name) converted and each seed's initial pool drawn — the
    inputs of stage 1, without DVC."""
    dest.mkdir(parents=True, exist_ok=True)
    raw = merge_params(yaml.safe_load(Path(params_file).read_text()), overrides)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    p = load_params(dest / "params.yaml")
    layout = Layout(p.dataset.name, dest)
    convert(source or get_source(p.dataset.name, dest / p.dataset.root, download=False), layout.data_dir)
    index = read_index(layout.data_dir)
    labels = index[index["split"] == "train"].sort_values("sample_id")["label"].to_numpy()
    for seed in p.seeds:
        pool = initial_pool(labels, resolve_size(p.budget.initial, len(labels)),
                            class_balanced=p.budget.class_balanced, seed=seed)
        write_pool(layout.initial_pool(seed), pool, read_classes(layout.data_dir)["num_classes"])
    return dest
