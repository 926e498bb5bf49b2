"""FFCV loaders that yield several views of each image, reproducibly per (seed, epoch).

FFCV (1.0.2) reads and decodes the ``.beton``; order, sharding and augmentation are
ours, because FFCV's are not reproducible enough for resumable, distributed training:

- order: FFCV seeds ``RANDOM`` with ``seed + epoch`` (so seed 0 / epoch 1 equals
  seed 1 / epoch 0) and in distributed mode uses ``DistributedSampler(drop_last=False)``,
  which *repeats* samples to even out ranks. We plan each epoch ourselves
  (:mod:`pipeline.data.sharding`): every sample exactly once, same batch count on
  every rank, a function of (seed, epoch) only;
- augmentation: FFCV's random transforms use numba's unseeded per-thread RNG; ours are
  keyed by (seed, epoch, view slot, sample_id) (:mod:`pipeline.data.augment`) and
  made in FFCV's thread right after decoding, ahead of the consumer.

The FFCV pipeline per batch is: ``image`` decoded to ``[B, H, W, 3]`` uint8 (center
square resized to a fixed size for variable-size data), ``label`` and ``sample_id`` as
``[B, 1]`` int64. Batches are copied out of FFCV's reused buffers before they are
handed over, so a kept :class:`Batch` is never overwritten.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import torch

from pipeline.data.augment import AugmentConfig, ViewMaker, check_views
from pipeline.data.beton import BetonInfo, check_beton
from pipeline.data.errors import (
    ConvertedDataMissingError,
    DatasetError,
    LoaderConfigError,
    LoaderRuntimeError,
)
from pipeline.data.ffcv_compat import (
    IS_CUDA,
    CenterCropRGBImageDecoder,
    EpochIterator,
    IntDecoder,
    Loader,
    OrderOption,
    SimpleRGBImageDecoder,
    keep_torch_threads,
)
from pipeline.data.sharding import ORDERS, epoch_order, num_batches, shard_batches

CLEAN_CROP = 0.875  # variable-size data: the clean view is this central fraction of the decoded square
_POLL_SECONDS = 1.0


@dataclass
class Batch:
    """One batch. ``views[k]``: ``[B, 3, H, W]`` float32 (uint8 for ``raw``); ``labels``, ``ids``: ``[B]`` int64."""

    views: list[torch.Tensor]
    labels: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])


Planned = tuple[int, np.ndarray]  # (epoch, sample ids [b]) of one batch
_FAILED = object()


class _PlannedEpochIterator(EpochIterator):
    """FFCV's epoch iterator fed with our own batches, making whole :class:`Batch` objects.

    ``__init__`` mirrors ``ffcv.loader.epoch_iterator.EpochIterator.__init__`` (1.0.2)
    except that the batches come from ``planned``, an iterator of (epoch, ids) read
    lazily (any number of epochs back to back, never held in memory at once), instead
    of being cut from one epoch's order, so batches may be smaller than the loader's
    batch size (never larger). FFCV's thread decodes each batch and then, in
    :meth:`run_pipeline`, hands it to ``make_batch`` (the views), so one thread per
    stream does all the work ahead of the consumer (up to ``batches_ahead`` batches).
    A failure in that thread is re-raised in the consumer instead of hanging.

    The reader must use the OS page cache (``os_cache=True``): FFCV's process cache
    needs every batch of an epoch up front to schedule its page reads.
    """

    def __init__(self, loader: Loader, planned: Iterator[Planned],  # noqa: D107 - see class docstring
                 make_batch: Callable[[tuple, Planned], Batch]):
        threading.Thread.__init__(self, daemon=True)
        self.loader = loader
        self.metadata = loader.reader.metadata
        self.current_batch_slot = 0
        self.iter_ixes = self._sample_ids(planned)
        self.closed = False
        self.output_queue = queue.Queue(loader.batches_ahead)
        self.terminate_event = threading.Event()
        self.error: BaseException | None = None
        self.make_batch = make_batch
        self.batch_plan: Planned | None = None  # of the batch being decoded
        self.memory_context = loader.memory_manager.schedule_epoch(None)
        if IS_CUDA:
            self.current_stream = torch.cuda.current_stream()
        self.memory_context.__enter__()
        self.storage_state = self.memory_context.state
        self.cuda_streams = [(torch.cuda.Stream() if IS_CUDA else None) for _ in range(loader.batches_ahead + 2)]
        self.memory_allocations = loader.graph.allocate_memory(loader.batch_size, loader.batches_ahead + 2)
        self.start()

    def _sample_ids(self, planned: Iterator[Planned]) -> Iterator[np.ndarray]:
        for batch_plan in planned:
            self.batch_plan = batch_plan
            yield batch_plan[1]

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event) -> Batch:  # noqa: ANN001 - FFCV's
        decoded = super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)
        assert self.batch_plan is not None
        return self.make_batch(decoded, self.batch_plan)

    def run(self) -> None:
        try:
            super().run()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer thread
            self.error = err
            while not self.terminate_event.is_set():
                try:
                    self.output_queue.put(_FAILED, timeout=0.05)
                    return
                except queue.Full:
                    continue

    def close(self) -> None:
        """Stop the decoding thread and wait for it (also when the stream was abandoned).

        FFCV's thread ends with a *blocking* ``put(None)``; if the consumer left with
        the queue full it would wait forever, holding its batch buffers. So the
        remaining batches are dropped (the thread finishes the one in hand) and the
        queue is drained until the thread has exited. Idempotent.
        """
        if self.closed:
            return
        self.terminate_event.set()
        self.iter_ixes = iter(())
        if threading.current_thread() is not self:
            while self.is_alive():
                self._drain()
                self.join(timeout=0.05)
        self._drain()
        super().close()
        self.closed = True

    def _drain(self) -> None:
        try:
            while True:
                self.output_queue.get_nowait()
        except queue.Empty:
            pass

    def __next__(self) -> Batch:
        while True:
            try:
                result = self.output_queue.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self.is_alive() and self.output_queue.empty():
                    result = _FAILED
                    break
        if result is None:
            self.close()
            raise StopIteration
        if result is _FAILED:
            self.close()
            if isinstance(self.error, DatasetError):  # ours, with its own message (e.g. ids off the plan)
                raise self.error
            raise LoaderRuntimeError(
                f"FFCV's decoding thread stopped while reading {self.loader.fname}: "
                f"{self.error!r}. Check the file with check_beton() and reconvert it if needed."
            ) from self.error
        slot, batch = result
        if IS_CUDA:
            self.current_stream.wait_stream(self.cuda_streams[slot])
        return batch


class ViewLoader:
    """Iterate a ``.beton`` as :class:`Batch` objects; see :func:`make_loader`."""

    def __init__(self, beton: Path | str, *, batch_size: int, views: Sequence[str],
                 indices: np.ndarray | Sequence[int] | None = None, order: str = "random", seed: int = 0,
                 distributed: bool = False, drop_last: bool = False, num_workers: int = 1, hflip: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 image_size: int | None = None, device: torch.device | str | None = None,
                 rank: int | None = None, world_size: int | None = None, batches_ahead: int = 3,
                 augment: AugmentConfig | None = None, view_backend: str = "auto"):
        self.beton = Path(beton)
        self.views = check_views(views)
        if order not in ORDERS:
            raise LoaderConfigError(f"Unknown order {order!r}; use one of {list(ORDERS)}.")
        if seed < 0:
            raise LoaderConfigError(f"seed must be a non-negative integer, got {seed}.")
        if not 1 <= num_workers <= numba.config.NUMBA_NUM_THREADS:
            raise LoaderConfigError(
                f"num_workers={num_workers} must lie in [1, {numba.config.NUMBA_NUM_THREADS}] "
                "(numba's thread limit on this machine). Lower `train.num_workers`."
            )
        info = check_beton(self.beton)
        self.info: BetonInfo = info
        self.indices = _check_indices(indices, info.num_samples, self.beton)
        self.order = order
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.rank, self.world_size = _resolve_rank(distributed, rank, world_size)
        self.device = torch.device(device) if device is not None else None
        self._epoch = 0
        self._length = num_batches(len(self.indices), batch_size=self.batch_size,
                                   world_size=self.world_size, drop_last=drop_last)

        fixed = info.fixed_shape
        if fixed is None:
            if image_size is None:
                raise LoaderConfigError(
                    f"{self.beton} holds images of different sizes; pass image_size (the side of the "
                    "square views, e.g. 224) so that they can be decoded to one size."
                )
            decode = int(round(image_size / CLEAN_CROP))
            decoder_key: tuple[int, int] | None = (decode, decode)
            input_hw, resize = (decode, decode), False
        else:
            decoder_key = None
            input_hw, resize = fixed, image_size is not None and (image_size, image_size) != fixed
        output_hw = (image_size, image_size) if image_size is not None else input_hw
        if mean is None or std is None:
            stats = _dataset_stats(self.beton)
            mean = stats[0] if mean is None else mean
            std = stats[1] if std is None else std
        config = augment or AugmentConfig(mean=tuple(mean), std=tuple(std), hflip=hflip)
        self.view_maker = ViewMaker(self.views, input_hw=input_hw, output_hw=output_hw, resize=resize,
                                    config=config, seed=self.seed, backend=view_backend)
        self._ffcv = _compiled_reader(self.beton, decoder_key, batch_size=self.batch_size,
                                      num_workers=num_workers, batches_ahead=batches_ahead)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will yield."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield epoch ``epoch`` (order and augmentation = f(seed, epoch))."""
        if epoch < 0:
            raise LoaderConfigError(f"epoch must be >= 0, got {epoch}.")
        self._epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self._length

    @property
    def num_samples(self) -> int:
        """Samples in the loader's subset (all ranks together)."""
        return len(self.indices)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """Sample ids of each batch this rank yields in ``epoch``: list of ``[b]`` int64."""
        visit = epoch_order(self.indices, order=self.order, seed=self.seed, epoch=epoch)
        return shard_batches(visit, batch_size=self.batch_size, world_size=self.world_size,
                             rank=self.rank, drop_last=self.drop_last)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._epoch
        self._epoch += 1
        return self.epochs(epoch, epoch + 1)

    def epochs(self, start: int, stop: int) -> Iterator[Batch]:
        """The batches of epochs ``start`` … ``stop - 1`` back to back, ``len(self)`` per
        epoch, through one decoding thread: the next epoch's first batches are made
        while this one ends."""
        return self._stream((epoch, ids) for epoch in range(start, stop) for ids in self.plan(epoch))

    def cycle(self, start_epoch: int, num_batches: int) -> Iterator[Batch]:
        """``num_batches`` batches of epochs ``start_epoch``, ``start_epoch + 1``, … back to
        back: for a small set (the labeled one) that is visited many times per epoch of a
        large one."""
        return self.cycles([start_epoch], num_batches)

    def cycles(self, start_epochs: Iterable[int], num_batches: int) -> Iterator[Batch]:
        """:meth:`cycle` from each of ``start_epochs`` in turn (``num_batches`` each), all
        through one decoding thread."""
        return self._stream(planned for start in start_epochs for planned in self.cycle_plan(start, num_batches))

    def cycle_plan(self, start_epoch: int, num_batches: int) -> list[Planned]:
        """(epoch, sample ids ``[b]``) of each batch :meth:`cycle` yields."""
        planned: list[Planned] = []
        epoch = start_epoch
        while len(planned) < num_batches:
            batches = self.plan(epoch)
            if not batches:
                raise LoaderConfigError(f"{self.beton}: cannot cycle over an empty subset of samples.")
            planned += [(epoch, ids) for ids in batches]
            epoch += 1
        return planned[:num_batches]

    def _stream(self, planned: Iterator[Planned]) -> Iterator[Batch]:
        """Decode the planned batches and make their views ahead of the consumer, in
        FFCV's thread (started at the first ``next``; closing the stream stops it)."""
        with keep_torch_threads():
            iterator = _PlannedEpochIterator(self._ffcv, planned, self._to_batch)
        try:
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                yield batch
        finally:
            iterator.close()

    def _to_batch(self, decoded: tuple, batch_plan: Planned) -> Batch:
        """Check FFCV's ``(images [B, H, W, 3], labels, ids)`` against the plan and make the views."""
        images, labels, ids = decoded
        epoch, ids_planned = batch_plan
        ids = np.asarray(ids).reshape(-1).astype(np.int64)
        if not np.array_equal(ids, ids_planned):
            raise LoaderRuntimeError(
                f"{self.beton}: decoded sample ids {ids[:5]}... differ from the planned "
                f"{ids_planned[:5]}...; the file's sample_id field is inconsistent. Reconvert it."
            )
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)  # [B, 3, H, W] view of FFCV's buffer
        label_t = torch.from_numpy(np.asarray(labels).reshape(-1).astype(np.int64))
        if self.device is not None and self.device.type != "cpu":
            pixels = pixels.to(self.device, non_blocking=True).contiguous()
            label_t = label_t.to(self.device, non_blocking=True)
        # on CPU the views are made from FFCV's buffer right here, before it is reused
        views = self.view_maker(pixels, ids, epoch)
        id_t = torch.from_numpy(ids)
        if self.device is not None:
            id_t = id_t.to(self.device, non_blocking=True)
        return Batch(views=views, labels=label_t, ids=id_t)


# FFCV loaders by (file version, decoder, batch size, threads, prefetch depth); see _compiled_reader.
_READERS: dict[tuple, Loader] = {}
_READERS_LOCK = threading.Lock()


def _compiled_reader(beton: Path, decoder_key: tuple[int, int] | None, *, batch_size: int, num_workers: int,
                     batches_ahead: int) -> Loader:
    """The FFCV ``Loader`` (file reader + JIT-compiled decoding pipeline) for this shape of work.

    Kept for the life of the process and shared by every :class:`ViewLoader` with the
    same key; a ``Loader`` is only used for its reader and compiled code (orders and
    batches are ours), and each epoch iterator allocates its own buffers, so sharing
    is safe, including concurrent iteration. Why a process-wide cache:

    - a new ``Loader`` costs ~0.5 s of numba compilation and ~7 MB that numba never
      returns; ObCP builds loaders for every pool state;
    - a collected ``Loader`` lets numba's dispatcher finalizer run inside the cyclic
      garbage collector, where it raises ``KeyError`` (numba 0.6x, FFCV's loader is a
      reference cycle); on CPython 3.11 that can surface as a ``SystemError`` in
      unrelated code running at that moment. Cached loaders die only at exit, where
      numba skips the finalizer.

    The key holds the file's inode, size and mtime, so a reconverted file gets a new
    reader instead of a stale memory map.
    """
    stat = beton.stat()
    key = (str(beton.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, decoder_key, batch_size,
           num_workers, batches_ahead)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            decoder = (SimpleRGBImageDecoder() if decoder_key is None
                       else CenterCropRGBImageDecoder(decoder_key, ratio=1.0))
            with keep_torch_threads():
                reader = Loader(
                    str(beton), batch_size=batch_size, num_workers=num_workers, order=OrderOption.SEQUENTIAL,
                    distributed=False, seed=0, os_cache=True,  # read through the page cache; see _PlannedEpochIterator
                    pipelines={"image": [decoder], "label": [IntDecoder()], "sample_id": [IntDecoder()]},
                    drop_last=False, batches_ahead=batches_ahead,
                )
            _READERS[key] = reader
        return reader


def make_loader(beton: Path | str, *, batch_size: int, views: Sequence[str],
                indices: np.ndarray | Sequence[int] | None = None, order: str = "random", seed: int,
                distributed: bool = False, drop_last: bool = False, num_workers: int = 1, hflip: bool = True,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                image_size: int | None = None, device: torch.device | str | None = None,
                rank: int | None = None, world_size: int | None = None, view_backend: str = "auto") -> ViewLoader:
    """Build a :class:`ViewLoader` over ``beton`` (validated with ``check_beton`` first).

    - ``views``: kinds per view, e.g. ``["strong", "strong"]`` (contrastive pairs),
      ``["strong", "weak"]``, ``["clean"]`` (evaluation) or ``["raw"]`` (uint8 pixels);
    - ``indices``: the sample ids to yield (a pool subset); all samples when ``None``;
    - ``order``: ``random`` (a permutation per epoch) or ``sequential`` (``indices`` as given);
    - ``seed``: with the epoch (see :meth:`ViewLoader.set_epoch`), fixes order and augmentation;
    - ``distributed``: shard over ``torch.distributed`` ranks (or explicit ``rank``/``world_size``),
      each sample exactly once per epoch across ranks, equal batch counts per rank;
    - ``mean``/``std``: normalisation in [0, 1] units; default from ``classes.json`` beside the beton;
    - ``image_size``: side of the float views (default: the stored size; required for
      variable-size data);
    - ``device``: move batches there (non-blocking) before augmenting; default CPU;
    - ``view_backend``: ``numba`` kernels (CPU tensors), ``torch`` ops (any device), or
      ``auto`` (numba on CPU, torch elsewhere).
    """
    return ViewLoader(beton, batch_size=batch_size, views=views, indices=indices, order=order, seed=seed,
                      distributed=distributed, drop_last=drop_last, num_workers=num_workers, hflip=hflip,
                      mean=mean, std=std, image_size=image_size, device=device, rank=rank,
                      world_size=world_size, view_backend=view_backend)


def _check_indices(indices: np.ndarray | Sequence[int] | None, num_samples: int, beton: Path) -> np.ndarray:
    if indices is None:
        return np.arange(num_samples, dtype=np.int64)
    array = np.asarray(indices)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise LoaderConfigError(f"indices must be a 1-D array of integer sample ids, got {array.dtype} {array.shape}.")
    array = array.astype(np.int64)
    if array.size == 0:
        raise LoaderConfigError("indices is empty: the loader would yield nothing. Check the pool selection.")
    if array.min() < 0 or array.max() >= num_samples:
        raise LoaderConfigError(
            f"indices must lie in [0, {num_samples}) for {beton}; found [{array.min()}, {array.max()}]. "
            "Use sample_ids of this split (index.parquet)."
        )
    if len(np.unique(array)) != len(array):
        raise LoaderConfigError("indices contain duplicates; each sample_id may appear once. Deduplicate the pool.")
    return array


def _resolve_rank(distributed: bool, rank: int | None, world_size: int | None) -> tuple[int, int]:
    if not distributed:
        if rank not in (None, 0) or world_size not in (None, 1):
            raise LoaderConfigError("rank/world_size were given with distributed=False; set distributed=True.")
        return 0, 1
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise LoaderConfigError(
            "distributed=True needs an initialised torch.distributed process group (run under torchrun "
            "and call init_process_group first) or explicit rank and world_size."
        )
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _dataset_stats(beton: Path) -> tuple[list[float], list[float]]:
    from pipeline.data.index import read_classes

    try:
        info = read_classes(beton.parent)
    except ConvertedDataMissingError as err:
        raise LoaderConfigError(
            f"No mean/std given and no classes.json beside {beton} to read them from. Pass mean and std "
            "(per-channel, for pixels in [0, 1]) or convert the dataset with `dvc repro convert`."
        ) from err
    return list(info["mean"]), list(info["std"])
