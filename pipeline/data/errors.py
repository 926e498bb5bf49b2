"""Errors raised by the datasets package: each message names the problem and the fix."""
from __future__ import annotations

from pipeline.core.errors import ObcpError


class DatasetError(ObcpError):
    """Base class of every error raised by ``pipeline.data``."""


class UnknownDatasetError(DatasetError):
    """A dataset name that is not in the source registry."""


class DatasetNotFoundError(DatasetError):
    """The raw files of a dataset are missing or unreadable."""


class DatasetFormatError(DatasetError):
    """Raw files exist but do not have the expected layout or content."""


class ConvertedDataMissingError(DatasetError):
    """A converted artifact (``.beton``, ``index.parquet``, ``classes.json``) is absent."""


class CorruptArtifactError(DatasetError):
    """A converted artifact exists but is truncated, corrupt or inconsistent."""


class ConversionError(DatasetError):
    """Writing a ``.beton`` file failed."""


class LoaderConfigError(DatasetError):
    """Invalid arguments to the loader (views, indices, batch size, sharding)."""


class LoaderRuntimeError(DatasetError):
    """The FFCV decoding thread failed while producing a batch."""
