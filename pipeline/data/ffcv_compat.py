"""The one place that imports FFCV, pinned to the behaviour of ffcv 1.0.2.

Importing FFCV calls ``torch.set_num_threads(1)`` (``ffcv.pipeline.compiler`` sets its
thread count at import time and forwards it to torch). That would silently make the
training loop single-threaded, so the thread count is restored around the import;
:func:`keep_torch_threads` does the same around FFCV calls that reset it again
(``Loader.__init__``).

Importing FFCV also builds a numba typed ``Dict`` (``ffcv.fields.rgb_image.IMAGE_MODES``,
``{'jpg': 0, 'raw': 1}``), and its first typed dict JIT-compiles numba's dict machinery:
3–6 s in every process that imports FFCV (each training stage, each test subprocess). FFCV
reads that mapping only from Python (``generate_code``, ``encode``), never inside compiled
code, so :func:`_plain_image_modes` lets the import build a plain ``dict`` with the same
items instead; nothing else in FFCV 1.0.2 or obcp creates a typed dict.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.metadata import version

import torch


@contextlib.contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block (FFCV resets it)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def _plain_image_modes() -> Iterator[None]:
    """During the block, `numba.typed.Dict` is `dict` (see the module docstring)."""
    import numba.typed

    typed_dict = numba.typed.Dict
    numba.typed.Dict = dict
    try:
        yield
    finally:
        numba.typed.Dict = typed_dict


with keep_torch_threads(), _plain_image_modes():
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.loader.epoch_iterator import IS_CUDA, EpochIterator
    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.types import (
        ALLOC_TABLE_TYPE,
        CURRENT_VERSION,
        TYPE_ID_HANDLER,
        FieldDescType,
        HeaderType,
        get_handlers,
        get_metadata_type,
    )
    from ffcv.writer import MIN_PAGE_SIZE, DatasetWriter

FFCV_VERSION = version("ffcv")

__all__ = [
    "ALLOC_TABLE_TYPE",
    "CURRENT_VERSION",
    "CenterCropRGBImageDecoder",
    "DatasetWriter",
    "EpochIterator",
    "FFCV_VERSION",
    "FieldDescType",
    "HeaderType",
    "IS_CUDA",
    "IntDecoder",
    "IntField",
    "Loader",
    "MIN_PAGE_SIZE",
    "MemoryAllocator",
    "OrderOption",
    "RGBImageField",
    "SimpleRGBImageDecoder",
    "TYPE_ID_HANDLER",
    "get_handlers",
    "get_metadata_type",
    "keep_torch_threads",
]
