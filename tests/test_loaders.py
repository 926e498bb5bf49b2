"""FFCV loaders: views, subsets, reproducibility per (seed, epoch), sharding, DDP."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data import ArraySource, LoaderConfigError, convert, make_loader
from pipeline.data.augment import (
    AugmentConfig,
    ViewMaker,
    color_jitter,
    crop_resize,
    grayscale,
    hsv_to_rgb,
    rgb_to_hsv,
)
from pipeline.data.loaders import _PlannedEpochIterator
from pipeline.data.seeding import epoch_permutation, sample_uniforms
from pipeline.data.view_kernels import strong_params
from pipeline.data.sharding import epoch_order, num_batches, shard_batches

N_TRAIN = 75
SIZE = (12, 12)
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArraySource, Path]:
    rng = np.random.default_rng(3)
    splits = {split: (rng.integers(0, 256, (n, *SIZE, 3), dtype=np.uint8), rng.integers(0, 5, n))
              for split, n in (("train", N_TRAIN), ("test", 10))}
    source = ArraySource("synthetic", [str(i) for i in range(5)], splits)
    out = tmp_path_factory.mktemp("loaders")
    convert(source, out)
    return source, out / "train.beton"


def loader_for(beton: Path, **kwargs):
    args = {"batch_size": 16, "views": ["strong", "weak"], "seed": 5, "mean": MEAN, "std": STD}
    return make_loader(beton, **{**args, **kwargs})


def epoch_batches(loader) -> list:
    return [batch for batch in loader]


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.ids, y.ids) and torch.equal(x.labels, y.labels)
        assert all(torch.equal(u, v) for u, v in zip(x.views, y.views))


# --------------------------------------------------------------------------- seeding and sharding


def test_sample_uniforms_are_keyed_by_sample_not_by_batch() -> None:
    ids = np.array([4, 9, 1, 30])
    u = sample_uniforms(3, 2, 1, ids, 6)
    assert u.shape == (4, 6) and (u >= 0).all() and (u < 1).all()
    assert np.array_equal(sample_uniforms(3, 2, 1, ids[::-1], 6), u[::-1])
    assert np.array_equal(sample_uniforms(3, 2, 1, ids[1:2], 6), u[1:2])
    for other in [(4, 2, 1), (3, 3, 1), (3, 2, 0)]:
        assert not np.allclose(sample_uniforms(*other, ids, 6), u)
    many = sample_uniforms(0, 0, 0, np.arange(20000), 1)
    assert abs(many.mean() - 0.5) < 0.01 and abs(many.var() - 1 / 12) < 0.005


def test_epoch_permutation_depends_on_seed_and_epoch_only() -> None:
    p = epoch_permutation(50, seed=1, epoch=0)
    assert sorted(p) == list(range(50))
    assert np.array_equal(p, epoch_permutation(50, seed=1, epoch=0))
    assert not np.array_equal(p, epoch_permutation(50, seed=1, epoch=1))
    # FFCV's own RANDOM order uses seed + epoch, so (0, 1) == (1, 0); ours must not.
    assert not np.array_equal(epoch_permutation(50, seed=0, epoch=1), epoch_permutation(50, seed=1, epoch=0))
    with pytest.raises(LoaderConfigError, match="order"):
        epoch_order(np.arange(3), order="shuffled", seed=0, epoch=0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 40), world=st.integers(1, 5), drop_last=st.booleans(),
       seed=st.integers(0, 1000))
def test_shard_batches_each_sample_once_and_equal_counts(n: int, batch_size: int, world: int, drop_last: bool,
                                                         seed: int) -> None:
    order = epoch_order(np.arange(1000, 1000 + n), order="random", seed=seed, epoch=0)
    try:
        per_rank = [shard_batches(order, batch_size=batch_size, world_size=world, rank=r, drop_last=drop_last)
                    for r in range(world)]
    except LoaderConfigError:
        assert not drop_last and (n < world or (batch_size == 1 and n % world))
        return
    expected = num_batches(n, batch_size=batch_size, world_size=world, drop_last=drop_last)
    assert all(len(batches) == expected for batches in per_rank)
    seen = np.concatenate([b for batches in per_rank for b in batches] or [np.array([], np.int64)])
    assert len(np.unique(seen)) == len(seen)
    sizes = [len(b) for batches in per_rank for b in batches]
    if drop_last:
        assert all(size == batch_size for size in sizes)
        assert len(seen) == (n // (batch_size * world)) * batch_size * world
    else:
        assert sorted(seen) == sorted(order) and all(1 <= size <= batch_size for size in sizes)
    if world == 1 and not drop_last:
        chunks = np.array_split(order, range(batch_size, n, batch_size))
        assert [b.tolist() for b in per_rank[0]] == [c.tolist() for c in chunks]


# --------------------------------------------------------------------------- augmentation functions


def test_color_ops_identity_and_grayscale() -> None:
    x = torch.rand(6, 3, 5, 7)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(color_jitter(x, torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 6)), x, atol=1e-5, rtol=0)
    # Matches torchvision's adjust_* applied per sample in the order b, c, s, h.
    import torchvision.transforms.functional as TF

    factors = torch.tensor([[0.6, 1.4, 0.7, -0.1], [1.3, 0.6, 1.4, 0.1], [1.0, 1.0, 0.0, 0.05],
                            [0.8, 1.2, 1.2, -0.5], [1.4, 1.4, 1.4, 0.5], [0.6, 0.6, 0.6, 0.0]])
    ours = color_jitter(x, factors)
    for b, (fb, fc, fs, fh) in enumerate(factors.tolist()):
        ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[b], fb), fc), fs), fh)
        torch.testing.assert_close(ours[b], ref, atol=1e-5, rtol=0)
    dark = color_jitter(x, torch.tensor([[0.0, 1.0, 1.0, 0.0]] * 6))
    assert dark.abs().max() < 1e-6
    assert grayscale(x).shape == (6, 1, 5, 7)


@settings(max_examples=50, deadline=None)
@given(height=st.integers(4, 64), width=st.integers(4, 64), seed=st.integers(0, 10_000))
def test_random_resized_crop_boxes_fit_and_respect_scale(height: int, width: int, seed: int) -> None:
    config = AugmentConfig(mean=MEAN, std=STD, crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3))
    spec = ViewMaker(["strong"], input_hw=(height, width), output_hw=(height, width), resize=False,
                     config=config, seed=seed)._strong_spec
    boxes, *_ = strong_params(seed, 0, 0, np.arange(32), height, width, spec)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # a box is a try within scale and ratio (up to rounding) or the fallback's central crop
    area = h * w / (height * width)
    ratio = w / h
    tried = (area >= 0.2 - (h + w + 1) / (height * width)) & (ratio > 0.5) & (ratio < 2.0)
    central = (top == (height - h) // 2) & (left == (width - w) // 2)
    assert (tried | central).all()


def test_crop_resize_identity_box_and_flip_are_exact() -> None:
    x = torch.rand(2, 3, 6, 8)
    n = np.zeros(2, np.int64)
    full_h, full_w = np.full(2, 6), np.full(2, 8)
    same = crop_resize(x, n, n, full_h, full_w, (6, 8), np.array([False, True]))
    torch.testing.assert_close(same[0], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(same[1], x[1].flip(-1), atol=1e-5, rtol=0)


def test_view_maker_kinds_and_exact_weak_pixels() -> None:
    config = AugmentConfig(mean=(0.0,) * 3, std=(1.0,) * 3, hflip=False)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    ids = np.arange(8)
    maker = ViewMaker(["raw", "clean", "weak", "strong"], input_hw=(16, 16), output_hw=(16, 16),
                      resize=False, config=config, seed=0)
    raw, clean, weak, strong = maker(images, ids, epoch=0)
    assert torch.equal(raw, images) and raw.data_ptr() != images.data_ptr()
    torch.testing.assert_close(clean, images.float() / 255)
    assert weak.shape == strong.shape == (8, 3, 16, 16) and strong.dtype == torch.float32
    # Weak = translation by at most 2 px with reflect padding, no flip: the central
    # 12x12 of the original appears somewhere in the view, pixel for pixel.
    x = images.float() / 255
    for b in range(8):
        found = any(torch.equal(weak[b, :, 2 + dy:14 + dy, 2 + dx:14 + dx], x[b, :, 2:14, 2:14])
                    for dy in range(-2, 3) for dx in range(-2, 3))
        assert found
    resized = ViewMaker(["clean", "strong"], input_hw=(16, 16), output_hw=(24, 24), resize=True,
                        config=config, seed=0)(images, ids, epoch=0)
    assert [v.shape for v in resized] == [(8, 3, 24, 24)] * 2


def test_strong_view_flips_only_when_allowed() -> None:
    # Left half black, right half white: a flip is visible in the column means.
    images = torch.zeros(64, 3, 16, 16, dtype=torch.uint8)
    images[..., 8:] = 255
    for hflip in (False, True):
        config = AugmentConfig(mean=(0.0,) * 3, std=(1.0,) * 3, hflip=hflip, crop_scale=(1.0, 1.0),
                               crop_ratio=(1.0, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0)
        (view,) = ViewMaker(["strong"], input_hw=(16, 16), output_hw=(16, 16), resize=False,
                            config=config, seed=1)(images, np.arange(64), epoch=0)
        flipped = view[:, 0, :, 0].mean(dim=1) > 0.5
        assert flipped.any() == hflip and (not hflip or not flipped.all())


@pytest.mark.parametrize("hw,blur", [((8, 8), False), ((32, 32), False), ((64, 64), True)])
def test_numba_and_torch_backends_make_the_same_views(hw, blur) -> None:
    """The CPU kernels (numba) and the torch ops compute one augmentation: same crops,
    flips, jitter, grayscale and blur per sample, equal up to float rounding."""
    config = AugmentConfig(mean=MEAN, std=STD, hflip=True, blur_p=1.0 if blur else 0.0)
    images = torch.randint(0, 256, (48, 3, *hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ids = np.arange(48) * 5 + 2
    views = ["strong", "weak", "clean", "strong"]
    made = {backend: ViewMaker(views, input_hw=hw, output_hw=hw, resize=False, config=config, seed=4,
                               backend=backend)(images, ids, epoch=3) for backend in ("numba", "torch")}
    for kind, a, b in zip(views, made["numba"], made["torch"]):
        assert a.shape == b.shape == (48, 3, *hw) and a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=2e-4, rtol=0, msg=f"{kind} view at {hw}")
    assert not torch.equal(made["numba"][0], made["numba"][3])  # two strong slots differ
    with pytest.raises(LoaderConfigError, match="backend"):
        ViewMaker(views, input_hw=hw, output_hw=hw, resize=False, config=config, seed=4, backend="cuda")


# --------------------------------------------------------------------------- loaders


def test_raw_and_clean_views_give_back_the_source(data) -> None:
    source, beton = data
    loader = loader_for(beton, views=["raw", "clean"], order="sequential", batch_size=32)
    assert len(loader) == 3
    batches = epoch_batches(loader)  # all kept: FFCV's reused buffers must not leak into them
    ids = torch.cat([b.ids for b in batches]).numpy()
    assert np.array_equal(ids, np.arange(N_TRAIN)) and [len(b) for b in batches] == [32, 32, 11]
    raw = torch.cat([b.views[0] for b in batches])
    expected = torch.from_numpy(source.images("train").copy()).permute(0, 3, 1, 2)
    assert raw.dtype == torch.uint8 and torch.equal(raw, expected)
    clean = torch.cat([b.views[1] for b in batches])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(clean, (expected.float() / 255 - mean) / std)
    assert np.array_equal(torch.cat([b.labels for b in batches]).numpy(), source.labels("train"))
    assert batches[0].labels.dtype == torch.int64 and batches[0].ids.dtype == torch.int64


def test_kept_batches_survive_buffer_reuse(data) -> None:
    source, beton = data
    loader = loader_for(beton, views=["raw"], batch_size=4)  # 19 batches >> FFCV's 5 buffer slots
    kept = epoch_batches(loader)
    expected = torch.from_numpy(source.images("train").copy()).permute(0, 3, 1, 2)
    for batch in kept:
        assert torch.equal(batch.views[0], expected[batch.ids])


def test_cycle_runs_epochs_back_to_back(data) -> None:
    """cycle(start, n): the first n batches of epochs start, start+1, … exactly as
    iterating those epochs one by one would give them (a small labeled set)."""
    _, beton = data
    subset = np.array([1, 4, 9, 16, 25, 36, 49])
    loader = loader_for(beton, indices=subset, batch_size=3, drop_last=False)
    assert len(loader) == 3
    loader.set_epoch(10)
    expected = [b for _ in range(4) for b in epoch_batches(loader)][:10]
    cycled = list(loader.cycle(10, 10))
    assert_same_batches(cycled, expected)
    assert_same_batches(list(loader.cycle(11, 2)), expected[3:5])


def test_one_stream_over_several_epochs_equals_the_epochs_one_by_one(data) -> None:
    """epochs(a, b) and cycles([...], n) give the batches of separate iterations, through
    one decoding thread per stream."""
    _, beton = data
    loader = loader_for(beton, batch_size=16)
    loader.set_epoch(2)
    assert_same_batches(list(loader.epochs(2, 5)), [b for _ in range(3) for b in epoch_batches(loader)])
    small = loader_for(beton, indices=np.arange(0, N_TRAIN, 9), batch_size=3)
    assert_same_batches(list(small.cycles([0, 10_000], 5)), list(small.cycle(0, 5)) + list(small.cycle(10_000, 5)))
    assert [len(ids) for _, ids in small.cycle_plan(0, 5)] == [3, 3, 3, 3, 3]


def test_same_seed_same_batches_and_set_epoch_replays(data) -> None:
    _, beton = data
    running = loader_for(beton)
    epochs = [epoch_batches(running) for _ in range(3)]
    assert running.epoch == 3
    fresh = loader_for(beton)
    assert_same_batches(epoch_batches(fresh), epochs[0])
    fresh.set_epoch(2)
    assert_same_batches(epoch_batches(fresh), epochs[2])
    assert fresh.epoch == 3
    # Epochs differ in order and augmentation; a different seed differs too.
    assert not torch.equal(epochs[0][0].ids, epochs[1][0].ids)
    other = epoch_batches(loader_for(beton, seed=6))
    assert not torch.equal(other[0].ids, epochs[0][0].ids)
    first = {int(i): v for i, v in zip(epochs[0][0].ids, epochs[0][0].views[0])}
    again = {int(i): v for b in other for i, v in zip(b.ids, b.views[0])}
    assert all(not torch.equal(v, again[i]) for i, v in first.items())


def test_strong_views_differ_between_slots_and_are_keyed_by_sample(data) -> None:
    _, beton = data
    whole = epoch_batches(loader_for(beton, views=["strong", "strong"]))
    subset = np.array([3, 17, 42, 60, 61])
    part = epoch_batches(loader_for(beton, views=["strong", "strong"], indices=subset, batch_size=2))
    assert not torch.equal(whole[0].views[0], whole[0].views[1])
    by_id = {int(i): (a, b) for batch in whole for i, a, b in zip(batch.ids, *batch.views)}
    for batch in part:
        for i, a, b in zip(batch.ids, *batch.views):
            assert torch.equal(a, by_id[int(i)][0]) and torch.equal(b, by_id[int(i)][1])


def test_indices_restrict_the_samples(data) -> None:
    _, beton = data
    subset = np.array([70, 2, 33, 5, 9, 41, 64])
    loader = loader_for(beton, indices=subset, batch_size=3, views=["clean"])
    assert len(loader) == 3 and loader.num_samples == 7
    for _ in range(2):
        seen = torch.cat([b.ids for b in loader]).numpy()
        assert sorted(seen) == sorted(subset)
    sequential = loader_for(beton, indices=subset, batch_size=3, views=["clean"], order="sequential")
    assert np.array_equal(torch.cat([b.ids for b in sequential]).numpy(), subset)
    dropped = loader_for(beton, indices=subset, batch_size=3, views=["clean"], drop_last=True)
    assert len(dropped) == 2 and [len(b) for b in dropped] == [3, 3]


def test_explicit_rank_shards_match_plan(data) -> None:
    _, beton = data
    shards = [loader_for(beton, views=["clean"], batch_size=8, distributed=True, rank=r, world_size=3)
              for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [torch.cat([b.ids for b in s]).numpy() for s in shards]
    assert sorted(np.concatenate(seen)) == list(range(N_TRAIN))
    assert all(np.array_equal(ids, np.concatenate(s.plan(0))) for ids, s in zip(seen, shards))


def test_image_size_and_normalisation_from_classes_json(data) -> None:
    source, beton = data
    loader = make_loader(beton, batch_size=10, views=["clean", "weak", "strong"], seed=0, image_size=20,
                         order="sequential")
    batch = next(iter(loader))
    assert [tuple(v.shape) for v in batch.views] == [(10, 3, 20, 20)] * 3
    plain = next(iter(make_loader(beton, batch_size=10, views=["clean"], seed=0, order="sequential")))
    x = torch.from_numpy(source.images("train")[:10].copy()).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(source.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(source.std, dtype=torch.float32).view(1, 3, 1, 1)
    torch.testing.assert_close(plain.views[0], (x - mean) / std)


def test_concurrent_loaders_and_early_break(data) -> None:
    source, beton = data
    expected = torch.from_numpy(source.images("train").copy()).permute(0, 3, 1, 2)
    labeled = loader_for(beton, views=["raw"], batch_size=4, indices=np.arange(0, N_TRAIN, 5))
    unlabeled = loader_for(beton, views=["raw"], batch_size=4, seed=9)  # same compiled reader
    for a, b in zip(labeled, unlabeled):  # stops after labeled's 4 batches, abandoning unlabeled's epoch
        assert torch.equal(a.views[0], expected[a.ids]) and torch.equal(b.views[0], expected[b.ids])
    assert not [t for t in threading.enumerate() if isinstance(t, _PlannedEpochIterator)], "decoder thread leaked"
    for batch in unlabeled:  # the abandoned epoch left nothing behind
        assert torch.equal(batch.views[0], expected[batch.ids])
    assert unlabeled.epoch == 2 and labeled.epoch == 1


def test_abandoned_epoch_with_full_queue_stops_its_thread(data) -> None:
    import time

    _, beton = data
    loader = loader_for(beton, views=["raw"], batch_size=20)  # 4 batches: 1 taken, 3 fill FFCV's queue
    epoch = iter(loader)
    next(epoch)
    time.sleep(0.3)  # FFCV's thread (decoding + views) is now blocked on its full queue
    threads = [t for t in threading.enumerate() if isinstance(t, _PlannedEpochIterator)]
    del epoch
    assert threads and not any(t.is_alive() for t in threads)


def test_decoding_thread_failure_is_raised_not_hung(data, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.data import LoaderRuntimeError

    _, beton = data
    loader = loader_for(beton, views=["raw"], batch_size=7)

    def broken_stage(**_):
        raise RuntimeError("simulated decoder crash")

    monkeypatch.setattr(loader._ffcv, "code", ([(broken_stage, [])], []))
    with pytest.raises(LoaderRuntimeError, match="simulated decoder crash"):
        next(iter(loader))


def test_errors_of_the_plan_reach_the_consumer_as_they_are(data) -> None:
    """The plan is read lazily in the decoding thread; its errors keep their type and message."""
    _, beton = data
    loader = loader_for(beton, indices=np.arange(5), batch_size=8, drop_last=True)  # no full batch
    stream = loader.cycle(0, 3)
    with pytest.raises(LoaderConfigError, match="cannot cycle over an empty subset"):
        next(stream)
    assert not [t for t in threading.enumerate() if isinstance(t, _PlannedEpochIterator)]


def test_reconverted_file_is_read_afresh(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def make(value: int) -> ArraySource:
        images = np.full((6, 4, 4, 3), value, np.uint8)
        return ArraySource("s", ["a"], {"train": (images, np.zeros(6, int)), "test": (images[:2], np.zeros(2, int))})

    convert(make(10), tmp_path)
    first = next(iter(loader_for(tmp_path / "train.beton", views=["raw"], order="sequential")))
    convert(make(200 + int(rng.integers(0, 10))), tmp_path)
    second = next(iter(loader_for(tmp_path / "train.beton", views=["raw"], order="sequential")))
    assert int(first.views[0].max()) == 10 and int(second.views[0].min()) >= 200


def test_loader_keeps_torch_thread_count(data) -> None:
    _, beton = data
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loader = loader_for(beton, num_workers=1)
        epoch_batches(loader)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kwargs, message", [
    ({"views": []}, "views"),
    ({"views": ["strong", "blurry"]}, "views"),
    ({"indices": [1, 1, 2]}, "duplicates"),
    ({"indices": [0, N_TRAIN]}, r"\[0, 75\)"),
    ({"indices": []}, "empty"),
    ({"order": "shuffled"}, "order"),
    ({"distributed": True}, "init_process_group"),
    ({"rank": 1, "world_size": 2}, "distributed=True"),
    ({"num_workers": 0}, "num_workers"),
    ({"mean": (0.5, 0.5), "std": (1.0, 1.0)}, "3 values"),
    ({"batch_size": 0}, "batch_size"),
    ({"indices": [4, 5], "distributed": True, "rank": 0, "world_size": 3}, "at least one"),
])
def test_bad_loader_arguments_are_rejected(data, kwargs, message) -> None:
    _, beton = data
    with pytest.raises(LoaderConfigError, match=message):
        loader_for(beton, **kwargs)


def test_variable_size_data_needs_image_size(tmp_path: Path) -> None:
    from pipeline.data import ImageFolderSource
    from PIL import Image

    for split, folder in (("train", "train"), ("test", "val")):
        for k, size in enumerate([(5, 7), (9, 6)]):
            (tmp_path / "f" / folder / "a").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((*size, 3), 40 * k, np.uint8)).save(tmp_path / "f" / folder / "a" / f"{k}.png")
    convert(ImageFolderSource(tmp_path / "f"), tmp_path / "c")
    with pytest.raises(LoaderConfigError, match="image_size"):
        make_loader(tmp_path / "c" / "train.beton", batch_size=2, views=["clean"], seed=0)
    batch = next(iter(make_loader(tmp_path / "c" / "train.beton", batch_size=2, views=["clean", "strong"],
                                  seed=0, image_size=4, order="sequential")))
    assert [tuple(v.shape) for v in batch.views] == [(2, 3, 4, 4)] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_batches_match_cpu(data) -> None:
    _, beton = data
    cpu = epoch_batches(loader_for(beton, views=["raw", "clean", "weak"]))
    gpu = epoch_batches(loader_for(beton, views=["raw", "clean", "weak"], device="cuda"))
    for a, b in zip(cpu, gpu):
        assert b.views[0].is_cuda and torch.equal(a.ids, b.ids.cpu())
        assert torch.equal(a.views[0], b.views[0].cpu())
        torch.testing.assert_close(a.views[1], b.views[1].cpu())
        torch.testing.assert_close(a.views[2], b.views[2].cpu())


def test_torchrun_two_ranks_each_sample_exactly_once(data, tmp_path: Path) -> None:
    from conftest import ROOT, torchrun

    _, beton = data
    batch_size, epochs = 8, 2
    torchrun(2, [str(ROOT / "tests" / "ddp" / "loader_once.py"), str(beton), str(tmp_path), str(batch_size),
                 str(epochs)], cwd=ROOT, timeout=300)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    subset = np.arange(1, N_TRAIN, 2)  # 37 samples: 37 = 2 * 16 + 5, an uneven tail
    single = make_loader(beton, batch_size=batch_size, views=["strong"], indices=subset, seed=7,
                         mean=(0.5,) * 3, std=(0.5,) * 3)
    assert ranks[0]["len"][0] == ranks[1]["len"][0] == 3
    for epoch in range(epochs):
        ids = [r[f"ids{epoch}"] for r in ranks]
        assert sorted(np.concatenate(ids)) == list(subset), "each sample exactly once across ranks"
        assert len(ranks[0][f"sizes{epoch}"]) == len(ranks[1][f"sizes{epoch}"]) == 3
        single.set_epoch(epoch)
        reference = {int(i): float(v.sum()) for b in single for i, v in zip(b.ids, b.views[0])}
        for r in ranks:
            for i, s in zip(r[f"ids{epoch}"], r[f"sums{epoch}"]):
                assert s == pytest.approx(reference[int(i)], rel=1e-5, abs=1e-3)
    assert not np.array_equal(ranks[0]["ids0"], ranks[0]["ids1"])
