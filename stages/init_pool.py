"""DVC stage `init_pool@seed`: draw the initial labeled set I^S → cycle_000/pool.parquet.

With ground truth, I^S is drawn from the labels (class-balanced if asked). A dataset
without it (`dataset.name: folder`) takes I^S from its initial-labels CSV, or asks a person
for full labels and stops with exit code 3 until they are given (pipeline.oracle.initial)."""
from pathlib import Path

import typer

from pipeline.core import io
from pipeline.core.config import load_params, resolve_size
from pipeline.data.index import read_classes, read_files, read_index
from pipeline.core.errors import reported
from pipeline.core.layout import Layout
from pipeline.pool.pools import initial_pool, summary, write_pool


def main(seed: int = typer.Option(...), params: Path = Path("params.yaml")) -> None:
    with reported():
        layout = Layout(load_params(params, names=False).dataset.name)
        io.remove_stale_temps(layout.initial_pool(seed).parent)
        index = read_index(layout.data_dir)
        labels = index[index["split"] == "train"].sort_values("sample_id")["label"].to_numpy()
        p = load_params(params, pool_size=len(labels), names=False)
        info = read_classes(layout.data_dir)
        if (labels < 0).all():  # no ground truth: the CSV's labels, or a person's
            from pipeline.oracle.initial import initial_pool_unlabeled

            pool = initial_pool_unlabeled(p, layout, seed, read_files(layout.data_dir), info["classes"], info)
        else:
            size = resolve_size(p.budget.initial, len(labels))
            pool = initial_pool(labels, size, class_balanced=p.budget.class_balanced, seed=seed)
        write_pool(layout.initial_pool(seed), pool, info["num_classes"], num_samples=len(labels))
        counts = summary(pool)
        print(f"init_pool seed {seed}: {counts.initial} of {counts.num_samples} training images labeled (I^S, "
              f"{'class-balanced' if p.budget.class_balanced else 'uniform'}), {counts.unlabeled} unlabeled "
              f"→ {layout.initial_pool(seed)}")


if __name__ == "__main__":
    typer.run(main)
