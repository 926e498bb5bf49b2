"""DVC stage `validate` (first, `always_changed`): params.yaml against the converted dataset and
the answer files, before DVC removes any output → data/validated/{stamp,plugins}.json."""
from pathlib import Path

import typer

from pipeline.core.errors import reported
from pipeline.tools.validate import check_project, describe, write_validated


def main(params: Path = Path("params.yaml")) -> None:
    with reported():
        p, pool, why = check_project(params)
        write_validated(p, params)
        print(f"validate: {describe(params, pool, why)}")


if __name__ == "__main__":
    typer.run(main)
