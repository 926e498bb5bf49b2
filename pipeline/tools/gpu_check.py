"""`obcp gpu-check` (`make gpu-check`): what only a GPU can check, in one command.

Five checks, each timed, into one JSON (`reports/gpu_check.json`) and a table; one failing
check does not stop the others (exit 1 at the end):

- `collectives`: torchrun, one process per visible GPU, nccl: the collectives the loop
  uses (all_reduce_max, all_gather_varlen, broadcast_object, sync_buffers) and DDP steps
  under AMP with the projector left out (as the one-bit baseline trains): identical
  weights on every rank.
- `repro`: a CIFAR-shaped end-to-end `dvc repro` in a throw-away copy of the project:
  the cifar10 preset scaled down to a generated folder of 32×32 PNGs (`imagefolder`),
  two epochs per stage, one seed, two arms (obcp, onebit), `ddp.nproc` = the GPUs (1 on CPU).
- `amp`: the training loop with float16 autocast + GradScaler on CUDA: loss finite and falling.
- `device_views`: FFCV → device views (torch ops on the GPU, fed by non-blocking copies
  from FFCV's buffers) equal the numba CPU views to float rounding (2e-4).
- `bench`: `obcp bench --only train_cifar`: images/s of the loop, and loop ÷ pure
  forward+backward (ResNet-18, the cifar10 preset's batch, 20k random 32×32 images).

`--cpu` runs the same script on CPU, for CI: gloo with 2 processes, bfloat16 autocast +
GradScaler (`train.cpu_amp`), torch view ops (`train.view_backend: torch`), tiny sizes
(SmallCNN instead of ResNet-18). About 8 minutes on one GPU, under a minute on CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from pipeline.core import io
from pipeline.tools.bench.workspace import merge_params
from pipeline.core.project import copy_code
from pipeline.core.errors import ObcpError

ROOT = Path(__file__).resolve().parents[2]  # the checkout: pipeline/tools/gpu_check.py
PRESET = ROOT / "pipeline" / "presets" / "cifar10.yaml"
VIEW_ATOL = 2e-4  # numba vs torch views: float32 rounding (tests/test_loaders.py)


class GpuCheckError(ObcpError):
    """gpu-check cannot start: no GPU (without --cpu), or not run from a checkout of the project."""


@dataclass(frozen=True)
class Mode:
    """What differs between the GPU run and its CPU dry run."""

    cpu: bool

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.cpu else "cuda")

    @property
    def nproc(self) -> int:
        """Ranks of the collectives check: one per GPU; 2 on CPU."""
        return 2 if self.cpu else torch.cuda.device_count()

    @property
    def repro_nproc(self) -> int:
        """`ddp.nproc` of the repro: one per GPU; 1 on CPU (DDP on CPU has its own tests, and time)."""
        return 1 if self.cpu else torch.cuda.device_count()

    @property
    def backend(self) -> str:
        return "gloo" if self.cpu else "nccl"

    def training(self) -> dict:
        """Model, loop and queue sizes: the preset's on a GPU; tiny, with the GPU's code paths, on CPU."""
        if not self.cpu:
            return {"train": {"batch_size": 64, "num_workers": 4}, "contrastive": {"queue_size": 512,
                                                                                   "hard_negatives": 256}}
        return {"model": {"arch": "smallcnn", "width": 8},
                "train": {"batch_size": 32, "num_workers": 1, "view_backend": "torch", "cpu_amp": True},
                "contrastive": {"queue_size": 64, "hard_negatives": 16}}

    def params(self, image_root: Path) -> dict:
        """The cifar10 preset, scaled down, on the generated folder."""
        budget = 40 if self.cpu else 200
        return merge_params(self.training(), {
            "query_times": 2,
            "dataset": {"name": "imagefolder", "root": str(image_root), "download": False},
            "budget": {"initial": budget, "one_bit": budget},
            "train": {"stage1_epochs": 2, "stage2_epochs": 2},
            "selection": {"m": 2, "t": 1},
            "ddp": {"nproc": self.repro_nproc, "backend": self.backend},
            "seeds": [0],
            "arms": {"obcp": {"method": "obcp", "strategy": "obcp"},
                     "onebit": {"method": "onebit", "strategy": "obcp"}},
        })

    @property
    def images(self) -> tuple[int, int]:
        """(train, val) images in the generated folder."""
        return (240, 60) if self.cpu else (2000, 500)


# --------------------------------------------------------------------------- the throw-away project


def image_folder(root: Path, train: int, val: int, *, classes: int = 10, seed: int = 0) -> Path:
    """`root/{train,val}/<class>/<i>.png`: 32×32 RGB noise around a colour per class (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, (classes, 3))
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            c = i % classes
            pixels = np.clip(colours[c] + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return root


def throwaway_project(dest: Path, mode: Mode) -> Path:
    """A copy of the project's code and pipeline (no data, no git) with the scaled-down params."""
    if not (ROOT / "dvc.yaml").is_file():
        raise GpuCheckError(f"{ROOT} has no dvc.yaml: run gpu-check from a checkout of the project.")
    dest.mkdir(parents=True)
    copy_code(ROOT, dest)
    images = image_folder(dest / "images", *mode.images)
    params = merge_params(yaml.safe_load(PRESET.read_text()), mode.params(images))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], dest)
    return dest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # stages' `python`
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("PYTHONPATH", None)  # the copy imports its own pipeline/
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"`{' '.join(cmd[1:4])} …` exited {out.returncode}:\n{tail}")
    return out


# --------------------------------------------------------------------------- the checks


def check_collectives(project: Path, mode: Mode) -> dict:
    out = project / "collectives.json"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={mode.nproc}",
          "-m", "pipeline.tools.gpu_check", "ranks", mode.backend, str(out)], ROOT, timeout=300)
    result = json.loads(out.read_text())
    if not result["identical_weights"]:
        raise RuntimeError(f"the ranks ended the DDP steps with different weights: {result['digests']}")
    return result


def check_repro(project: Path, mode: Mode) -> dict:
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "dvc", "repro", "-q"], project)
    seconds = round(time.perf_counter() - t0, 1)
    import pandas as pd

    results = pd.read_csv(project / "reports" / "results.csv")
    missing = {"obcp", "onebit"} - set(results["arm"])
    if missing or not (project / "reports" / "index.md").is_file():
        raise RuntimeError(f"dvc repro finished without results for {sorted(missing) or 'the report'}")
    last = results.sort_values("cycle").groupby("arm").tail(1)
    return {"seconds": seconds, "nproc": mode.repro_nproc, "backend": mode.backend,
            "top1": {str(r.arm): round(float(r.top1), 4) for r in last.itertuples()}}


def _ctx(project: Path):
    from pipeline.core.context import open_run

    return open_run(project / "params.yaml", 0, root=project)


def check_amp(project: Path, mode: Mode) -> dict:
    from pipeline.pool.pools import read_pool
    from pipeline.loop.runs import fresh_state, loop_config
    from pipeline.loop.train import loop_precision, pool_view, stage1_plan, train_epochs

    ctx = _ctx(project)
    precision = loop_precision(ctx.params.train, ctx.device)
    if precision.dtype != (torch.bfloat16 if mode.cpu else torch.float16):
        raise RuntimeError(f"the loop would not autocast on {ctx.device}: {precision}")
    pool = pool_view(read_pool(ctx.layout.initial_pool(0)), ctx.num_classes)
    rows = train_epochs(fresh_state(ctx), pool, stage1_plan(ctx.params.loss), loop_config(ctx), until_epoch=2,
                        log=None, progress=False)
    losses = [round(r["loss_sup"], 4) for r in rows]
    if not all(np.isfinite([v for r in rows for k, v in r.items() if k.startswith("loss_")])):
        raise RuntimeError(f"non-finite losses under autocast: {rows}")
    if not losses[-1] < losses[0]:
        raise RuntimeError(f"L_sup did not fall under autocast: {losses}")
    return {"dtype": str(precision.dtype).removeprefix("torch."), "device": str(ctx.device), "loss_sup": losses}


def check_device_views(project: Path, mode: Mode) -> dict:
    from pipeline.data import make_loader

    ctx = _ctx(project)
    common = dict(batch_size=64, views=["strong", "weak", "clean"], indices=np.arange(64), order="sequential",
                  seed=3, hflip=True)
    beton = ctx.layout.beton("train")
    (device_batch,) = list(make_loader(beton, device=ctx.device, view_backend="torch", **common))
    (cpu_batch,) = list(make_loader(beton, view_backend="numba", **common))
    worst = 0.0
    for kind, a, b in zip(common["views"], device_batch.views, cpu_batch.views):
        if a.device.type != ctx.device.type:
            raise RuntimeError(f"the {kind} view was made on {a.device}, not on {ctx.device}")
        worst = max(worst, float((a.cpu() - b).abs().max()))
    if worst > VIEW_ATOL:
        raise RuntimeError(f"device views differ from the numba views by up to {worst:.2e} (> {VIEW_ATOL})")
    return {"device": str(device_batch.views[0].device), "max_abs_diff": worst}


def check_bench(project: Path, mode: Mode) -> dict:
    from pipeline.tools.bench.suite import cifar_shaped
    from pipeline.tools.bench.train import bench_train_loop

    with tempfile.TemporaryDirectory(prefix="obcp-bench-", dir=project) as tmp:
        if mode.cpu:
            ctx = cifar_shaped(Path(tmp), n=320, overrides=mode.training())
        else:
            ctx = cifar_shaped(Path(tmp), n=20_000)  # as `obcp bench --only train_cifar`
        result = bench_train_loop(ctx, epochs=2 if mode.cpu else 4)
    return {k: result[k] for k in ("model", "device", "batch", "loop_images_per_s", "pure_images_per_s", "ratio")
            if k in result}


CHECKS: dict[str, Callable[[Path, Mode], dict]] = {
    "collectives": check_collectives,
    "repro": check_repro,
    "amp": check_amp,
    "device_views": check_device_views,
    "bench": check_bench,
}


def run_gpu_check(out: Path, *, cpu: bool = False, echo: Callable[[str], None] = print) -> dict:
    """Run every check; write `out` (JSON) and echo a table. The report's "ok" is True when all passed."""
    if not cpu and not torch.cuda.is_available():
        raise GpuCheckError("no CUDA GPU is visible here. Run it on a GPU machine, or `obcp gpu-check --cpu` "
                            "for the same script on CPU (gloo, bfloat16 autocast, torch views, tiny sizes).")
    mode = Mode(cpu)
    report: dict = {"mode": "cpu" if cpu else "gpu", "machine": {
        "platform": platform.platform(), "torch": torch.__version__,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}, "checks": {}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="obcp-gpu-check-") as tmp:
        project = throwaway_project(Path(tmp) / "project", mode)
        for name, check in CHECKS.items():
            echo(f"gpu-check {name} …")
            t0 = time.perf_counter()
            try:
                entry = {"ok": True, **check(project, mode)}
            except Exception as exc:  # a failed check is a finding: record it, run the others
                entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                         "where": traceback.format_exc(limit=-3).strip().splitlines()[-4:]}
            entry["check_seconds"] = round(time.perf_counter() - t0, 1)
            report["checks"][name] = entry
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    io.write_json(out, report)
    echo(table(report))
    return report


def table(report: dict) -> str:
    """One line per check: name, ok/FAILED, seconds, the figure that matters."""
    def figure(name: str, c: dict) -> str:
        if not c["ok"]:
            return c["error"].splitlines()[0][:90]
        if name == "collectives":
            return f"{c['backend']} × {c['world_size']} on {c['device']}, identical weights"
        if name == "repro":
            return f"dvc repro {c['seconds']} s, nproc {c['nproc']}, top1 " + ", ".join(
                f"{a} {v:.3f}" for a, v in c["top1"].items())
        if name == "amp":
            return f"{c['dtype']} on {c['device']}, L_sup {c['loss_sup'][0]} → {c['loss_sup'][-1]}"
        if name == "device_views":
            return f"on {c['device']}, max |Δ| vs numba {c['max_abs_diff']:.1e}"
        return (f"{c['model']} {c['batch']} on {c['device']}: {c['loop_images_per_s']} img/s, "
                f"loop ÷ pure {c['ratio']}")

    lines = [f"gpu-check ({report['mode']}, {report['seconds']} s)", f"{'check':<14}{'result':<8}{'s':>7}  detail"]
    for name, c in report["checks"].items():
        lines.append(f"{name:<14}{'ok' if c['ok'] else 'FAILED':<8}{c['check_seconds']:>7}  {figure(name, c)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- one rank of `collectives`


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def ranks_main(backend: str, out: Path) -> None:
    """Run under torchrun: the loop's collectives and DDP steps; rank 0 writes `out`."""
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from pipeline.core import distributed as dist
    from pipeline.method.models import build_encoder
    from pipeline.loop.train import Precision, frozen

    device = dist.setup(backend)
    r, w = dist.rank(), dist.world_size()
    if int(dist.all_reduce_max(torch.tensor([r], device=device)).item()) != w - 1:
        raise RuntimeError("all_reduce_max is wrong")
    rows = dist.all_gather_varlen(torch.full((r, 3), float(r), device=device))  # rank r sends r rows
    if rows.shape[0] != w * (w - 1) // 2 or rows.device != device:
        raise RuntimeError(f"all_gather_varlen gave {tuple(rows.shape)} on {rows.device}")
    flags = dist.all_gather_varlen(torch.ones(r + 1, dtype=torch.bool, device=device))
    if flags.dtype != torch.bool or flags.numel() != w * (w + 1) // 2:
        raise RuntimeError("all_gather_varlen of bool is wrong")
    if dist.broadcast_object({"from": r})["from"] != 0:
        raise RuntimeError("broadcast_object is wrong")

    torch.manual_seed(0)
    encoder = build_encoder("resnet18_cifar" if device.type == "cuda" else "smallcnn", 10, width=8).to(device)
    gen = torch.Generator().manual_seed(100 + r)  # each rank its own batch
    x, y = torch.randn(16, 3, 32, 32, generator=gen).to(device), torch.randint(0, 10, (16,), generator=gen).to(device)
    precision = Precision(device.type, torch.float16 if device.type == "cuda" else torch.bfloat16)
    scaler, opt = precision.scaler(), torch.optim.SGD(encoder.parameters(), lr=0.05, momentum=0.9)
    with frozen(encoder.projector.parameters()):  # as the one-bit baseline: no term reads q
        net = DistributedDataParallel(encoder)
        for _ in range(3):
            with precision.autocast():
                logits, _ = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    dist.sync_buffers(encoder)
    digests = [None] * w
    torch.distributed.all_gather_object(digests, _digest(encoder))
    if r == 0:
        io.write_json(out, {"backend": backend, "world_size": w, "device": device.type,
                            "identical_weights": len(set(digests)) == 1, "digests": digests,
                            "loss": round(float(loss), 4)})
    dist.cleanup()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "ranks":
        raise SystemExit("usage: torchrun … -m pipeline.tools.gpu_check ranks BACKEND OUT  (run by `obcp gpu-check`)")
    ranks_main(sys.argv[2], Path(sys.argv[3]))
