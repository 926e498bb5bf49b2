"""DVC stage `evaluate@seed`: accuracy and bits per cycle → reports/metrics/seed<S>/<arm>.json."""
from pathlib import Path
from typing import List, Optional

import typer

from pipeline.core import io
from pipeline.core.config import load_params
from pipeline.data.index import read_classes, read_index
from pipeline.core.errors import reported
from pipeline.reporting.metrics import run_metrics
from pipeline.core.layout import Layout


def main(
    seed: int = typer.Option(...),
    arm: Optional[List[str]] = typer.Option(None, help="Only this arm (repeatable); default: every arm in params."),
    params: Path = Path("params.yaml"),
) -> None:
    with reported():
        p = load_params(params, names=False)
        layout = Layout(p.dataset.name)
        num_classes = read_classes(layout.data_dir)["num_classes"]
        num_train = int((read_index(layout.data_dir)["split"] == "train").sum())
        io.remove_stale_temps(layout.metrics_dir(seed))
        for name in arm or p.arms:
            doc = run_metrics(p, layout, name, seed, num_classes=num_classes, num_train=num_train)
            io.write_json(layout.metrics(name, seed), doc)
            final = doc["final"]
            top1 = ("not measured" if final["top1"] is None
                    else f"{100 * final['top1']:.1f} % ({final.get('top1_source', 'test set')})")
            print(f"evaluate seed {seed} {name}: final top-1 {top1} after {final['bits']:.1f} bits "
                  f"({final['labeled_equiv_pct']:.2f} % labeled-equivalent)")


if __name__ == "__main__":
    typer.run(main)
