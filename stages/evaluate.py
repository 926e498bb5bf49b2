"""DVC stage `evaluate@arm-seed`: accuracy and bits per cycle → reports/metrics/<arm>-seed<S>.json."""
import json
from pathlib import Path

import pandas as pd
import typer

from pipeline import io
from pipeline.config import load_params
from pipeline.errors import reported
from pipeline.evaluate import run_metrics
from pipeline.layout import Layout


def main(arm: str = typer.Option(...), seed: int = typer.Option(...), params: Path = Path("params.yaml")) -> None:
    with reported():
        p = load_params(params)
        layout = Layout(p.dataset.name)
        num_classes = json.loads((layout.data_dir / "classes.json").read_text())["num_classes"]
        num_train = int((pd.read_parquet(layout.index, columns=["split"])["split"] == "train").sum())
        doc = run_metrics(p, layout, arm, seed, num_classes=num_classes, num_train=num_train)
        io.write_json(layout.metrics(arm, seed), doc)
        print(f"evaluate {arm} seed {seed}: final top1 {doc['final']['top1']:.4f} at {doc['final']['bits']} bits")


if __name__ == "__main__":
    typer.run(main)
