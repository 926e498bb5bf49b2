"""Datasets: source registry, FFCV conversion and reproducible multi-view loaders.

Names are imported lazily: `pipeline.data.index` (the converted dataset's facts)
needs only pandas, while the loaders and the writer pull in FFCV, numba and OpenCV
(seconds of start-up), so a stage pays for FFCV only when it builds a loader.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "VIEW_KINDS": "augment", "AugmentConfig": "augment",
    "BetonInfo": "beton", "check_beton": "beton",
    "convert": "conversion",
    "beton_path": "index", "read_classes": "index", "read_files": "index", "read_index": "index",
    "FolderSource": "folder", "fit_square": "folder",
    "Batch": "loaders", "ViewLoader": "loaders", "make_loader": "loaders",
    "ArraySource": "sources", "ImageFolderSource": "sources", "Source": "sources",
    "get_source": "sources", "known_sources": "sources",
    **{name: "errors" for name in (
        "ConversionError", "ConvertedDataMissingError", "CorruptArtifactError", "DatasetError",
        "DatasetFormatError", "DatasetNotFoundError", "LoaderConfigError", "LoaderRuntimeError",
        "UnknownDatasetError")},
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pipeline.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipeline.data.{_WHERE[name]}"), name)
