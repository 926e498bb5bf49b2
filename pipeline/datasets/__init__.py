"""Datasets: source registry, FFCV conversion and reproducible multi-view loaders."""
from pipeline.datasets.augment import VIEW_KINDS, AugmentConfig
from pipeline.datasets.beton import BetonInfo, check_beton
from pipeline.datasets.convert import beton_path, convert, read_classes, read_index
from pipeline.datasets.errors import (
    ConversionError,
    ConvertedDataMissingError,
    CorruptArtifactError,
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    LoaderConfigError,
    LoaderRuntimeError,
    UnknownDatasetError,
)
from pipeline.datasets.loaders import Batch, ViewLoader, make_loader
from pipeline.datasets.sources import ArraySource, ImageFolderSource, Source, get_source, known_sources

__all__ = [
    "VIEW_KINDS",
    "ArraySource",
    "AugmentConfig",
    "Batch",
    "BetonInfo",
    "ConversionError",
    "ConvertedDataMissingError",
    "CorruptArtifactError",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageFolderSource",
    "LoaderConfigError",
    "LoaderRuntimeError",
    "Source",
    "UnknownDatasetError",
    "ViewLoader",
    "beton_path",
    "check_beton",
    "convert",
    "get_source",
    "known_sources",
    "make_loader",
    "read_classes",
    "read_index",
]
