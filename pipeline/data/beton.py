"""The ``.beton`` files of obcp: writing them safely and validating them cheaply.

Every obcp beton has three fields, in this order: ``image`` (``RGBImageField``),
``label`` (``IntField``) and ``sample_id`` (``IntField``, equal to the row).

Writing goes through FFCV's ``DatasetWriter`` with two changes (:class:`_GuardedWriter`):
a worker that raises stops the conversion with its message (FFCV 1.0.2 would wait
forever for the missing samples), and no progress bar is printed.

Determinism: with ``num_workers=1`` the writer claims pages in sample order and every
padding byte is zero, so the same samples give a byte-identical file. With several
workers, pages are claimed in whatever order workers fill them: the decoded content is
identical but the byte layout (and thus the DVC hash) may differ between runs.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.data.errors import ConversionError, ConvertedDataMissingError, CorruptArtifactError
from pipeline.data.ffcv_compat import (
    ALLOC_TABLE_TYPE,
    CURRENT_VERSION,
    MIN_PAGE_SIZE,
    TYPE_ID_HANDLER,
    DatasetWriter,
    FieldDescType,
    HeaderType,
    IntField,
    MemoryAllocator,
    RGBImageField,
    get_handlers,
    get_metadata_type,
)

FIELDS: tuple[str, str, str] = ("image", "label", "sample_id")
_FIELD_TYPES = {"image": RGBImageField, "label": IntField, "sample_id": IntField}
_POLL_SECONDS = 0.05


class IndexedSamples(Protocol):
    """What the writer reads: ``samples[i] -> ([H, W, 3] uint8, label, sample_id == i)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]: ...


@dataclass(frozen=True)
class BetonInfo:
    """What :func:`check_beton` learned about a file."""

    path: Path
    num_samples: int
    heights: np.ndarray  # [N] uint16
    widths: np.ndarray  # [N] uint16
    modes: np.ndarray  # [N] uint8: 0 jpg, 1 raw

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` when every image has it, else ``None``."""
        if self.num_samples and (self.heights == self.heights[0]).all() and (self.widths == self.widths[0]).all():
            return int(self.heights[0]), int(self.widths[0])
        return None


def image_field(*, write_mode: str, jpeg_quality: int, max_resolution: int | None) -> RGBImageField:
    """The ``image`` field: ``raw`` stores pixels (exact), ``jpg`` compresses."""
    return RGBImageField(write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality)


def write_beton(
    path: Path,
    samples: IndexedSamples,
    *,
    image: RGBImageField,
    num_workers: int = 1,
    page_size: int = MIN_PAGE_SIZE,
    chunk_size: int = 100,
) -> None:
    """Write ``samples`` to ``path`` (a plain path string is passed to FFCV).

    The caller makes this atomic by passing a temporary path and renaming it.
    """
    if len(samples) == 0:
        raise ConversionError(f"Refusing to write {path}: the split has no samples. Check the source dataset.")
    fields = {"image": image, "label": IntField(), "sample_id": IntField()}
    writer = _GuardedWriter(str(path), fields, page_size=page_size, num_workers=num_workers)
    writer.from_indexed_dataset(samples, chunksize=chunk_size)


def _guarded_job(errors: Any, work_fn: Callable[..., None], *args: Any) -> None:
    """Run an FFCV worker; on failure, report the exception text before dying."""
    try:
        work_fn(*args)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, then re-raised
        errors.put(f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        raise


class _GuardedWriter(DatasetWriter):
    """FFCV's writer whose parent process notices a failed worker instead of hanging."""

    def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):  # noqa: ANN001
        # Mirrors ffcv 1.0.2 DatasetWriter._write_common, with failure detection.
        self.num_samples = num_samples
        self.prepare()
        ctx = multiprocessing.get_context()
        workqueue = ctx.Queue()
        for todo in queue_content:
            workqueue.put(todo)
        for _ in range(self.num_workers):
            workqueue.put(None)
        allocations_queue = ctx.Queue()
        errors = ctx.Queue()
        done_number = ctx.Value(ctypes.c_uint64, 0)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        worker_args = (workqueue, self.metadata_sm, self.metadata_type, self.fields, allocator,
                       done_number, allocations_queue, *extra_worker_args)
        processes = [ctx.Process(target=_guarded_job, args=(errors, work_fn, *worker_args))
                     for _ in range(self.num_workers)]
        allocation_list: list = []
        try:
            for process in processes:
                process.start()
            finished = 0
            while finished < len(processes):
                try:
                    allocation_list.extend(allocations_queue.get(timeout=_POLL_SECONDS))
                    finished += 1
                    continue
                except queue.Empty:
                    pass
                failure = _first_failure(errors, processes)
                if failure is not None:
                    raise ConversionError(
                        f"Writing {self.fname} failed in a conversion worker: {failure}\n"
                        "Fix the offending sample (or the source) and run the conversion again."
                    )
            for process in processes:
                process.join()
            self.finalize(allocation_list)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                    process.join()
            self.metadata_sm.close()
            self.metadata_sm.unlink()


def _first_failure(errors: Any, processes: list) -> str | None:
    try:
        return errors.get_nowait()
    except queue.Empty:
        pass
    for process in processes:
        if process.exitcode not in (None, 0):
            try:  # the message may still be in flight
                return errors.get(timeout=1.0)
            except queue.Empty:
                return f"worker exited with code {process.exitcode}"
    return None


def check_beton(path: Path | str | os.PathLike) -> BetonInfo:
    """Validate an obcp ``.beton`` cheaply (header, fields, metadata, allocation table).

    Reads only the header, per-sample metadata and allocation table (a few bytes per
    sample), never the image data. Raises :class:`ConvertedDataMissingError` when the
    file is absent and :class:`CorruptArtifactError` when it is truncated or
    inconsistent, so that the FFCV loader is never pointed at a bad file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConvertedDataMissingError(
            f"Missing converted dataset file {path}. Run `dvc repro convert` (or `obcp convert`) first."
        )
    size = path.stat().st_size

    def corrupt(problem: str) -> CorruptArtifactError:
        return CorruptArtifactError(
            f"{path} is not a valid obcp .beton file: {problem}. It is probably truncated or was "
            "written by an interrupted or different tool. Delete it and run `dvc repro convert` again."
        )

    if size < HeaderType.itemsize:
        raise corrupt(f"{size} bytes is smaller than the {HeaderType.itemsize}-byte header")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if int(header["version"]) != CURRENT_VERSION:
        raise corrupt(f"format version {int(header['version'])}, expected {CURRENT_VERSION}")
    num_fields = int(header["num_fields"])
    num_samples = int(header["num_samples"])
    alloc_ptr = int(header["alloc_table_ptr"])
    if num_fields != len(FIELDS):
        raise corrupt(f"{num_fields} fields, expected {len(FIELDS)} ({', '.join(FIELDS)})")
    descriptors_end = HeaderType.itemsize + num_fields * FieldDescType.itemsize
    if size < descriptors_end:
        raise corrupt("the field descriptors are cut off")
    descriptors = np.fromfile(path, dtype=FieldDescType, count=num_fields, offset=HeaderType.itemsize)
    names = [bytes(d["name"]).split(b"\x00")[0].decode("ascii", errors="replace") for d in descriptors]
    types = [TYPE_ID_HANDLER.get(int(d["type_id"])) for d in descriptors]
    expected = [_FIELD_TYPES[name] for name in FIELDS]
    if names != list(FIELDS) or types != expected:
        raise corrupt(f"fields {names} of types {[t.__name__ if t else None for t in types]}, "
                      f"expected {list(FIELDS)} of types {[t.__name__ for t in expected]}")
    metadata_type = get_metadata_type(get_handlers(descriptors))
    metadata_end = descriptors_end + num_samples * metadata_type.itemsize
    if num_samples < 1:
        raise corrupt("it holds no samples")
    if alloc_ptr == 0:
        raise corrupt("the header was never finalised (allocation table pointer is 0)")
    if not metadata_end <= alloc_ptr <= size:
        raise corrupt(f"the allocation table starts at byte {alloc_ptr} but the file has {size} bytes")
    if (size - alloc_ptr) % ALLOC_TABLE_TYPE.itemsize:
        raise corrupt("the allocation table has a partial entry at the end")
    metadata = np.fromfile(path, dtype=metadata_type, count=num_samples, offset=descriptors_end)
    table = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=alloc_ptr)
    image_meta = metadata[metadata_type.names[0]]
    sample_ids = metadata[metadata_type.names[2]]
    if not np.array_equal(sample_ids, np.arange(num_samples)):
        raise corrupt("the sample_id field is not 0..N-1 in row order")
    if len(table) != num_samples:
        raise corrupt(f"{len(table)} image allocations for {num_samples} samples")
    if (table["ptr"] + table["size"] > alloc_ptr).any() or (table["ptr"] < metadata_end).any():
        raise corrupt("an image points outside the data region")
    if not np.array_equal(np.sort(table["sample_id"]), np.arange(num_samples, dtype=np.uint64)):
        raise corrupt("the allocation table does not hold exactly one image per sample")
    if not np.isin(image_meta["data_ptr"], table["ptr"]).all():
        raise corrupt("an image's data pointer is not in the allocation table")
    if (image_meta["height"] == 0).any() or (image_meta["width"] == 0).any() or (image_meta["mode"] > 1).any():
        raise corrupt("an image has zero size or an unknown storage mode")
    return BetonInfo(path=path, num_samples=num_samples, heights=image_meta["height"].copy(),
                     widths=image_meta["width"].copy(), modes=image_meta["mode"].copy())
