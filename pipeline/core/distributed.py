"""Tiny ``torch.distributed`` helpers for runs under ``torchrun``.

Every helper also works in a plain single process (no process group): ranks are 0 of 1,
collectives are the identity. Backend ``nccl`` on GPUs, ``gloo`` on CPU.
"""
from __future__ import annotations

import datetime
import os
from typing import Callable, Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from pipeline.core.errors import ObcpError, Waiting

T = TypeVar("T")

BACKENDS: tuple[str, ...] = ("auto", "nccl", "gloo")


class DistributedSetupError(ObcpError):
    """The process group cannot be set up with the requested backend."""


def is_dist() -> bool:
    """True when a process group is initialised (i.e. running under torchrun after :func:`setup`)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process; 0 when not distributed."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """Number of processes; 1 when not distributed."""
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """True on rank 0 (the only rank that writes artifacts)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank; no-op when not distributed."""
    if is_dist():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where tensors must live for collectives: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_max(t: Tensor) -> Tensor:
    """Element-wise maximum of ``t`` over all ranks (a new tensor on ``t``'s device).

    Any device is accepted (moved to the backend's device for the collective). Identity
    (a copy) when not distributed.
    """
    if not is_dist():
        return t.clone()
    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return buf.to(t.device)


def all_gather_varlen(t: Tensor) -> Tensor:
    """Concatenate ``t [n_r, ...]`` from every rank r in rank order → ``[sum_r n_r, ...]``.

    Ranks may hold different ``n_r`` (including 0); the trailing dimensions and dtype must
    agree across ranks. The result is identical on every rank and on ``t``'s device (a CPU
    tensor under nccl is moved to the GPU for the collective and back). No gradient flows
    through it (it is meant for keys, ids and labels). Identity when not distributed.
    """
    if not is_dist() or world_size() == 1:
        return t
    home = t.device
    t = t.detach().to(_comm_device()).contiguous()
    is_bool = t.dtype == torch.bool
    if is_bool:  # gloo has no bool collectives
        t = t.to(torch.uint8)
    n = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    n_max = max(counts)
    if n_max == 0:
        out = t.new_empty((0, *t.shape[1:]))
    else:
        padded = t.new_zeros((n_max, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        out = torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0)
    out = out.to(home)
    return out.bool() if is_bool else out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Return rank ``src``'s ``obj`` on every rank (picklable objects); identity when not distributed."""
    if not is_dist():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def setup(backend: str = "auto", timeout_s: float = 1800.0) -> torch.device:
    """Initialise the process group from torchrun's environment (``env://``) and pick a device.

    ``backend``: ``"auto"`` (``nccl`` when CUDA is available, else ``gloo``), ``"nccl"``
    or ``"gloo"``. With ``nccl`` each process uses ``cuda:LOCAL_RANK``. Outside torchrun
    (no ``RANK``/``WORLD_SIZE`` in the environment) no group is created and the single
    process uses ``cuda`` if available else ``cpu``. Returns the device this rank computes on.
    """
    if backend not in BACKENDS:
        raise DistributedSetupError(
            f"Unknown distributed backend {backend!r}; use one of {', '.join(BACKENDS)} "
            "(\"auto\" picks nccl on GPUs and gloo on CPU)."
        )
    cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise DistributedSetupError(
            "The nccl backend needs CUDA GPUs but none is available on this machine. "
            "Use backend \"gloo\" (or \"auto\") to train on CPU."
        )
    if not _launched_by_torchrun():
        return torch.device("cuda" if cuda else "cpu")
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                "visible. Launch torchrun with --nproc_per_node no larger than the number of GPUs."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not is_dist():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if backend == "nccl" else None,
        )
    return device


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if is_dist():
        dist.destroy_process_group()


@torch.no_grad()
def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer (BN running stats, queue, …) of `module` from rank `src` to all ranks.

    DDP keeps parameters identical but each rank's BN running statistics (and the key
    encoder's, which has no DDP wrapper) follow its own batches; call this before saving.
    """
    if not is_dist():
        return
    device = _comm_device()
    for buf in module.buffers():
        moved = buf.to(device)
        torch.distributed.broadcast(moved, src)
        if moved is not buf:
            buf.copy_(moved)


def on_main(fn: Callable[[], object]) -> None:
    """Run `fn` on rank 0 only; an ObcpError there stops every rank the same way (a rank
    other than 0 raises `Waiting` when rank 0 waits for answers, else `ObcpError`)."""
    error: ObcpError | None = None
    if is_main():
        try:
            fn()
        except ObcpError as exc:
            if not is_dist():
                raise
            error = exc
    summary = broadcast_object(None if error is None else (isinstance(error, Waiting), f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if summary is not None:
        waiting, text = summary
        raise (Waiting if waiting else ObcpError)(f"rank 0 stopped: {text}")


def main_value(fn: Callable[[], T]) -> T:
    """`fn()` computed on rank 0 and given to every rank (an ObcpError stops every rank)."""
    box: list = [None]

    def run() -> None:
        box[0] = fn()

    on_main(run)
    return broadcast_object(box[0])
