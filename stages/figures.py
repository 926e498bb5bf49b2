"""DVC stage `figures`: every arm and seed → reports/metrics.json (the summary DVC shows),
reports/results.csv, reports/figures/, reports/index.md."""
from pathlib import Path

import typer

from pipeline.core import io
from pipeline.core.config import load_params
from pipeline.core.errors import reported
from pipeline.core.layout import Layout
from pipeline.data.index import read_classes
from pipeline.reporting import provenance
from pipeline.reporting.plots import write_report
from pipeline.reporting.results import collect, final_summary, load_ledgers, read_metrics, summary_metrics


def main(params: Path = Path("params.yaml")) -> None:
    with reported():
        p = load_params(params, names=False)
        layout = Layout(p.dataset.name)
        reports = layout.summary_metrics.parent
        io.remove_stale_temps(reports, recursive=False)
        io.remove_stale_temps(reports / "figures")
        results = collect(layout.metrics_root, p.arms, p.seeds)
        ledgers = load_ledgers({arm: [layout.ledger(arm, s) for s in p.seeds] for arm in p.arms})
        classes = read_classes(layout.data_dir)
        io.write_json(layout.summary_metrics, summary_metrics(final_summary(results)), sort_keys=False)
        first = read_metrics(layout.metrics(next(iter(p.arms)), p.seeds[0]))
        header = provenance.header(dataset=classes.get("dataset", p.dataset.name), num_classes=classes["num_classes"],
                                   num_train=first.get("num_train"), params=params, seeds=list(p.seeds))
        index = write_report(results, p.arms, ledgers, reports, num_classes=classes["num_classes"],
                             class_names=classes["classes"], header=header)
        print(f"figures: {len(p.arms)} arms × {len(p.seeds)} seed(s), {len(results)} points → {index}, "
              f"{layout.summary_metrics}")


if __name__ == "__main__":
    typer.run(main)
