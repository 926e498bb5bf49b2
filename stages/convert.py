"""DVC stage `convert`: the dataset → data/<name>/{train,test}.beton, index.parquet, classes.json."""
from pathlib import Path

import typer

from pipeline.core import io
from pipeline.core.config import load_params
from pipeline.data.conversion import convert
from pipeline.data.sources import get_source
from pipeline.core.errors import reported
from pipeline.core.layout import Layout


def main(params: Path = Path("params.yaml")) -> None:
    with reported():
        p = load_params(params, names=False).dataset
        data_dir = Layout(p.name).data_dir
        io.remove_stale_temps(data_dir)
        source = get_source(p.name, Path(p.root), download=p.download, settings=p)
        summary = convert(source, data_dir, jpeg_quality=p.jpeg_quality)
        counts = summary["counts"]
        print(f"convert: {summary['dataset']} → {data_dir}/: {counts.get('train', 0)} train + "
              f"{counts.get('test', 0)} test images ({summary['storage']}) in {summary['seconds']:.1f} s "
              f"({summary['images_per_second']:.0f} images/s)")
        for path in getattr(source, "skipped", []):
            print(f"convert: left out {path} (cannot be decoded; dataset.skip_unreadable is true)")


if __name__ == "__main__":
    typer.run(main)
