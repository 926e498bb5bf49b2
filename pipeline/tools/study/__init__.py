"""The study: a declared grid of param variants × datasets × seeds, every arm in each cell.

    spec.py     the study spec (study.yaml) → validated `Spec`; cells and their params
    rule.py     the pre-registered rule that picks the defaults (a pure function of the run table)
    cells.py    one isolated DVC project per cell under data/study/, run with `dvc repro`
    table.py    the run table (reports/study/runs.csv): one row per dataset, variant, arm, seed, cycle
    report.py   reports/study.md and the CSVs and figures behind it

`obcp study plan | run | report` (pipeline/cli.py) drives them.
"""
