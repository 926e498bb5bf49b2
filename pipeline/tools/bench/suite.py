"""`obcp bench`: every benchmark in one run → reports/bench.json and a table.

Each figure is a ratio of two measurements taken in the same run, so the machine's
speed cancels out. Not part of the test suite.
"""
from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from pipeline.core import io

SECTIONS = ("convert", "loader", "train", "cycle", "ddp", "memory", "train_cifar", "retest", "selection",
            "startup")


def default_sections() -> tuple[str, ...]:
    """Every section; `train_cifar` (ResNet-18, the CIFAR preset) only where a GPU is."""
    return SECTIONS if torch.cuda.is_available() else tuple(s for s in SECTIONS if s != "train_cifar")


def _digits(tmp: Path, name: str, params: Path, overrides: dict):
    from pipeline.tools.bench.workspace import scratch_project
    from pipeline.core.context import open_run

    project = scratch_project(tmp / name, params, {"seeds": [0], **overrides})
    return project, open_run(project / "params.yaml", 0, root=project)


def cifar_shaped(tmp: Path, *, n: int, overrides: dict | None = None):
    """The CIFAR-10 preset (ResNet-18, batch 64 + 64) on `n` random 32x32 images, seed 0
    (`overrides` on top, e.g. tiny sizes for a CPU dry run)."""
    import numba

    from pipeline.tools.bench.convert import synthetic_source
    from pipeline.tools.bench.workspace import merge_params, scratch_project
    from pipeline.core.context import open_run

    preset = Path(__file__).resolve().parents[2] / "presets" / "cifar10.yaml"  # pipeline/presets
    base = {"seeds": [0], "budget": {"initial": n // 10, "one_bit": n // 10},
            "train": {"num_workers": min(8, numba.config.NUMBA_NUM_THREADS)}}
    project = scratch_project(tmp / "train_cifar", preset, merge_params(base, overrides or {}),
                              source=synthetic_source(n, 32))
    return open_run(project / "params.yaml", 0, root=project)


def _memory(quick: bool) -> dict:
    from pipeline.tools.bench.memory import measure

    sizes = [150_000, 300_000] if quick else [150_000, 300_000, 600_000, 1_200_000]
    by_n = [measure(n, 1000, 30, 5, 2) for n in sizes]
    by_c = [measure(150_000, c, 30, 5, 2) for c in (100, 1000)]
    by_m = [measure(50_000, 1000, m, min(5, m), m) for m in (5, 30)]
    by_rule = [measure(150_000, 1000, 30, 5, 5, rule) for rule in ("since_query", "across_queries")]
    return {"by_N": by_n, "by_C": by_c, "by_m": by_m, "by_rule": by_rule}


def run_suite(params: Path, out: Path, sections: tuple[str, ...] | None = None, *, quick: bool = False,
              echo: Callable[[str], None] = print) -> dict:
    from pipeline.tools.bench.convert import bench_convert, bench_loader

    sections = default_sections() if sections is None else sections
    report: dict = _kept_sections(out, sections)
    report |= {"machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                                "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    with tempfile.TemporaryDirectory(prefix="obcp-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for name in sections:
            t0 = time.perf_counter()
            echo(f"bench {name} …")
            if name == "convert":
                report[name] = bench_convert(n=10_000 if quick else 50_000, out_dir=tmp / "convert")
            elif name == "loader":
                report[name] = bench_loader(n=5_000 if quick else 10_000)
            elif name == "train":
                from pipeline.tools.bench.train import bench_train_loop

                _, ctx = _digits(tmp, "train", params, {})
                report[name] = bench_train_loop(ctx)
            elif name == "cycle":
                from pipeline.tools.bench.cycle import bench_cycle

                _, ctx = _digits(tmp, "cycle", params, {"train": {"stage1_epochs": 5}} if quick else {})
                report[name] = bench_cycle(ctx)
            elif name == "ddp":
                from pipeline.tools.bench.ddp import bench_ddp

                project, _ = _digits(tmp, "ddp", params, {"train": {"stage1_epochs": 4 if quick else 8},
                                                          "ddp": {"backend": "gloo"}})
                report[name] = bench_ddp(project)
            elif name == "memory":
                report[name] = _memory(quick)
            elif name == "retest":
                from pipeline.tools.bench.retest import bench_retest

                _, ctx = _digits(tmp, "retest", params, {"train": {"stage1_epochs": 6}} if quick else {})
                report[name] = bench_retest(ctx, pairs=1 if quick else 3)
            elif name == "selection":
                from pipeline.tools.bench.selection import bench_selection

                partial = Path(out).with_suffix(".selection.jsonl")  # finished rows survive an interruption
                report[name] = bench_selection(quick, echo=echo, partial=partial)
                partial.unlink(missing_ok=True)
            elif name == "startup":
                from pipeline.tools.bench.startup import bench_startup

                project, _ = _digits(tmp, "startup", params, {})
                report[name] = bench_startup(project, repeats=3 if quick else 5)
            elif name == "train_cifar":
                from pipeline.tools.bench.train import bench_train_loop

                report[name] = bench_train_loop(cifar_shaped(tmp, n=640 if quick else 20_000), epochs=3 if quick else 4)
            report[name]["bench_seconds"] = round(time.perf_counter() - t0, 1)
    io.write_json(out, report)
    echo(summary_table(report))
    return report


def _kept_sections(out: Path, sections: tuple[str, ...]) -> dict:
    """The sections of an earlier `out` that this run does not redo (`--only` updates a report)."""
    try:
        old = json.loads(Path(out).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in old.items() if k in SECTIONS and k not in sections} if isinstance(old, dict) else {}


def summary_table(report: dict) -> str:
    """The headline ratios, one line each."""
    lines = ["benchmark                                   value"]
    if "convert" in report:
        lines.append(f"convert images/s (50k x 32x32x3)            {report['convert'].get('images_per_second', 'n/a')}")
    if "loader" in report:
        lines.append(f"FFCV / DataLoader images/s                  {report['loader']['ratio_vs_batched']:.2f} (same aug.), {report['loader']['ratio_vs_torchvision']:.2f} (torchvision per-sample)")
    if "train" in report:
        t = report["train"]
        lines.append(f"train loop / pure fwd+bwd (target ≥ 0.90)   {t['ratio']} median of epochs, {t['ratio_best']} best/best "
                     f"({t['loop_images_per_s']} / {t['pure_images_per_s']} img/s)")
    if "cycle" in report:
        lines.append(f"(score+oracle+update) / retrain (≤ 0.05)    max {report['cycle']['max_ratio']}, mean {report['cycle']['mean_ratio']}")
    if "train_cifar" in report:
        t = report["train_cifar"]
        lines.append(f"train loop, ResNet-18 CIFAR-shaped ({t['device']})    {t['loop_images_per_s']} img/s, "
                     f"{t['ratio']} of pure fwd+bwd")
    if "ddp" in report:
        d = report["ddp"]
        lines.append(f"DDP 2 proc / 1 proc throughput (CPU)        {d['ratio']}")
    if "retest" in report:
        views = report["retest"]["views"]
        lines.append("Eq. 7 test-retest Spearman (top-k overlap)   " + ", ".join(
            f"{v} {r['spearman_mean']} ({r['top_k_overlap_mean']})" for v, r in views.items()))
    if "selection" in report:
        for r in report["selection"]["rows"]:
            lines.append(f"selection {r['strategy']:>10} N={r['N']:>9} C={r['C']:>4} k={r['k']:>4}  {r['seconds']} s, "
                         f"peak {r['peak_rss_mib'] / 1024:.2f} GiB (inputs {r['inputs_mib'] / 1024:.2f} GiB)")
    if "startup" in report:
        s = report["startup"]
        lines.append(f"validate stage / import torch (fresh procs)  {s['ratio']} ({s['validate_stage_seconds']} s / "
                     f"{s['import_torch_seconds']} s; imports torch: {s['validate_imports_torch']})")
        lines.append("import stages.<name>, s                     " + ", ".join(
            f"{k} {v}" for k, v in s["import_seconds"].items()))
    if "memory" in report:
        for r in report["memory"]["by_N"]:
            lines.append(f"history+scoring peak RSS N={r['N']:>9} C={r['C']}  {r['peak_rss_mib']} MiB")
        for r in report["memory"].get("by_rule", []):
            lines.append(f"history+scoring peak RSS N={r['N']:>9} C={r['C']} {r['rule']}  {r['peak_rss_mib']} MiB")
    return "\n".join(lines)
