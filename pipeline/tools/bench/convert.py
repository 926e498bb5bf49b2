"""Throughput of conversion and loading, on synthetic data.

- :func:`bench_convert`: images/s of the real :func:`~pipeline.data.convert` path
  on a seeded random ``n x size x size x 3`` uint8 set (raw storage, like CIFAR);
- :func:`bench_loader`: images/s of the FFCV :class:`~pipeline.data.ViewLoader`
  against ``torch.utils.data.DataLoader`` on the same images and views, two ways: the
  same batched augmentation after collation, and the usual per-sample torchvision
  MoCo v2 transforms.

Run ``python -m pipeline.tools.bench.convert [n] [out_dir]``; prints one JSON object.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data import ArraySource, convert, make_loader
from pipeline.data.augment import AugmentConfig, ViewMaker


def synthetic_source(n: int, size: int, *, seed: int = 0, num_classes: int = 10) -> ArraySource:
    """``n`` train and ``max(1, n // 10)`` test random images ``[size, size, 3]`` uint8."""
    rng = np.random.default_rng(seed)
    n_test = max(1, n // 10)
    splits = {split: (rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
                      rng.integers(0, num_classes, count))
              for split, count in (("train", n), ("test", n_test))}
    return ArraySource("synthetic", [str(c) for c in range(num_classes)], splits)


def bench_convert(n: int = 50_000, size: int = 32, out_dir: Path | str | None = None, *,
                  num_workers: int = 1, seed: int = 0) -> dict[str, Any]:
    """Convert a synthetic set; returns the conversion summary (``images_per_second`` etc.)."""
    source = synthetic_source(n, size, seed=seed)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(out_dir) if out_dir is not None else Path(scratch)
        summary = convert(source, target, num_workers=num_workers)
        summary["bytes"] = sum(p.stat().st_size for p in target.glob("*.beton"))
    summary.update({"n": n, "size": size, "num_workers": num_workers})
    return summary


class _ArrayDataset(torch.utils.data.Dataset):
    """``[i] -> ([H, W, 3] uint8 tensor, label, i)`` over in-memory arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return torch.from_numpy(self.images[index].copy()), int(self.labels[index]), index


class _TorchvisionDataset(_ArrayDataset):
    """``[i] -> (two MoCo v2 views [3, H, W] float32, label, i)`` with per-sample torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 num_views: int):
        super().__init__(images, labels)
        from torchvision import transforms as T

        size = images.shape[1]
        self.num_views = num_views
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ])

    def __getitem__(self, index: int):  # noqa: ANN204
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return [self.transform(image) for _ in range(self.num_views)], int(self.labels[index]), index


def _time_epochs(iterate, epochs: int, n: int) -> tuple[float, float]:
    """(first-epoch seconds, images/s over the remaining epochs)."""
    start = time.perf_counter()
    iterate()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(epochs - 1):
        iterate()
    rest = time.perf_counter() - start
    return first, (epochs - 1) * n / rest if rest > 0 else float("inf")


def bench_loader(n: int = 10_000, size: int = 32, *, batch_size: int = 256,
                 views: Sequence[str] = ("strong", "strong"), epochs: int = 3, num_workers: int = 1,
                 out_dir: Path | str | None = None, seed: int = 0) -> dict[str, Any]:
    """Images/s of the FFCV loader vs ``DataLoader`` on the same synthetic data and views.

    The first epoch (FFCV: numba compilation; DataLoader: worker start) is timed
    separately; rates are over the following ``epochs - 1`` epochs.
    """
    if epochs < 2:
        raise ValueError("epochs must be >= 2: the first epoch is warm-up")
    source = synthetic_source(n, size, seed=seed)
    images, labels = source.images("train"), source.labels("train")
    mean, std = source.mean, source.std
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(out_dir) if out_dir is not None else Path(scratch)
        convert(source, folder)
        loader = make_loader(folder / "train.beton", batch_size=batch_size, views=list(views), seed=seed,
                             num_workers=num_workers, mean=mean, std=std)

        def ffcv_epoch() -> None:
            for batch in loader:
                pass

        ffcv_first, ffcv_rate = _time_epochs(ffcv_epoch, epochs, n)

    maker = ViewMaker(list(views), input_hw=(size, size), output_hw=(size, size), resize=False,
                      config=AugmentConfig(mean=mean, std=std), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    torch_loader = torch.utils.data.DataLoader(_ArrayDataset(images, labels), batch_size=batch_size, shuffle=True,
                                               num_workers=num_workers, generator=generator,
                                               persistent_workers=num_workers > 0)
    epoch_counter = iter(range(epochs))

    def torch_epoch() -> None:
        epoch = next(epoch_counter)
        for pixels, _, ids in torch_loader:
            maker(pixels.permute(0, 3, 1, 2).contiguous(), ids.numpy(), epoch)

    torch_first, torch_rate = _time_epochs(torch_epoch, epochs, n)
    strong_count = sum(v == "strong" for v in views)
    tv_loader = torch.utils.data.DataLoader(
        _TorchvisionDataset(images, labels, mean, std, max(1, strong_count)), batch_size=batch_size,
        shuffle=True, num_workers=num_workers, generator=generator, persistent_workers=num_workers > 0)

    def torchvision_epoch() -> None:
        for _ in tv_loader:
            pass

    tv_first, tv_rate = _time_epochs(torchvision_epoch, epochs, n)
    return {
        "n": n, "size": size, "batch_size": batch_size, "views": list(views), "num_workers": num_workers,
        "torch_threads": torch.get_num_threads(),
        "ffcv_first_epoch_s": ffcv_first, "ffcv_images_per_s": ffcv_rate,
        "dataloader_batched_first_epoch_s": torch_first, "dataloader_batched_images_per_s": torch_rate,
        "dataloader_torchvision_first_epoch_s": tv_first, "dataloader_torchvision_images_per_s": tv_rate,
        "ratio_vs_batched": ffcv_rate / torch_rate,
        "ratio_vs_torchvision": ffcv_rate / tv_rate,
    }


def main(argv: Sequence[str]) -> None:
    n = int(argv[0]) if argv else 50_000
    out_dir = Path(argv[1]) if len(argv) > 1 else None
    result = {"convert": bench_convert(n=n, out_dir=out_dir),
              "loader_strong_pair": bench_loader(views=("strong", "strong")),
              "loader_clean": bench_loader(views=("clean",))}
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main(sys.argv[1:])
