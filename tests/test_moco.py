"""ObCP dual encoder, queue and label bank; DDP collectives under a real torchrun."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import distributed as dist
from pipeline.core.errors import ObcpError
from pipeline.method.models import build_encoder
from pipeline.method.moco import LabelBank, LabelBankError, MocoConfigError, ObCP

DIM = 4


def small_model(queue_size: int = 6, momentum: float = 0.999, seed: int = 0) -> ObCP:
    torch.manual_seed(seed)
    enc = build_encoder("smallcnn", num_classes=3, width=2, proj_dim=DIM)
    return ObCP(enc, queue_size=queue_size, momentum=momentum, generator=torch.Generator().manual_seed(seed))


def unit(n: int, seed: int, dim: int = DIM) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


# ---- ObCP -----------------------------------------------------------------------------------


def test_key_encoder_starts_as_frozen_copy() -> None:
    model = small_model()
    for (name_q, p_q), (name_k, p_k) in zip(model.encoder_q.named_parameters(), model.encoder_k.named_parameters()):
        assert name_q == name_k
        assert torch.equal(p_q, p_k) and p_q.data_ptr() != p_k.data_ptr()
        assert p_q.requires_grad and not p_k.requires_grad
    x = torch.randn(3, 3, 8, 8)
    model.eval()
    logits, q = model(x)
    logits_k, k = model.keys(x)
    assert logits.shape == (3, 3) and q.shape == (3, DIM)
    torch.testing.assert_close(logits, logits_k)
    torch.testing.assert_close(q, k)
    assert q.requires_grad and not k.requires_grad


def test_momentum_update_is_ema_of_parameters() -> None:
    model = small_model(momentum=0.9)
    with torch.no_grad():
        for i, (p_q, p_k) in enumerate(zip(model.encoder_q.parameters(), model.encoder_k.parameters())):
            p_q.fill_(float(i + 1))
            p_k.fill_(-1.0)
    model.momentum_update()
    for i, p_k in enumerate(model.encoder_k.parameters()):
        expected = 0.9 * -1.0 + 0.1 * (i + 1)
        torch.testing.assert_close(p_k, torch.full_like(p_k, expected))
    model.momentum_update()  # second step: 0.9 * previous + 0.1 * q
    for i, p_k in enumerate(model.encoder_k.parameters()):
        expected = 0.9 * (0.9 * -1.0 + 0.1 * (i + 1)) + 0.1 * (i + 1)
        torch.testing.assert_close(p_k, torch.full_like(p_k, expected))


def test_momentum_one_freezes_and_zero_copies() -> None:
    frozen, copied = small_model(momentum=1.0), small_model(momentum=0.0)
    for model in (frozen, copied):
        with torch.no_grad():
            for p in model.encoder_q.parameters():
                p.add_(1.0)
        model.momentum_update()
    for p_q, p_k in zip(frozen.encoder_q.parameters(), frozen.encoder_k.parameters()):
        torch.testing.assert_close(p_k, p_q - 1.0)
    for p_q, p_k in zip(copied.encoder_q.parameters(), copied.encoder_k.parameters()):
        torch.testing.assert_close(p_k, p_q)


def test_queue_is_normalised_and_seeded() -> None:
    a, b, c = small_model(seed=1), small_model(seed=1), small_model(seed=2)
    assert a.queue.shape == (6, DIM) and a.queue_ptr.item() == 0
    torch.testing.assert_close(a.queue.norm(dim=1), torch.ones(6))
    assert torch.equal(a.queue, b.queue) and not torch.equal(a.queue, c.queue)
    state = a.state_dict()
    assert "queue" in state and "queue_ptr" in state


def reference_ring(initial: list[torch.Tensor], batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
    """Write keys one at a time into a Python list ring."""
    ring, ptr = list(initial), 0
    for batch in batches:
        for key in batch:
            ring[ptr] = key
            ptr = (ptr + 1) % len(ring)
    return ring, ptr


@settings(max_examples=50, deadline=None)
@given(queue_size=st.integers(1, 9), sizes=st.lists(st.integers(0, 23), min_size=1, max_size=6))
def test_enqueue_wraps_like_sequential_writes(queue_size: int, sizes: list[int]) -> None:
    model = small_model(queue_size=queue_size)
    initial = list(model.queue.clone())
    batches = [unit(n, seed=100 + i) for i, n in enumerate(sizes)]
    for batch in batches:
        model.enqueue(batch)
    ring, ptr = reference_ring(initial, batches)
    assert torch.equal(model.queue, torch.stack(ring))
    assert int(model.queue_ptr) == ptr


@pytest.mark.parametrize("sizes", [[4], [3, 3, 3], [5, 1], [13], [0, 2, 0]])
def test_enqueue_examples(sizes: list[int]) -> None:
    model = small_model(queue_size=4)
    initial = list(model.queue.clone())
    batches = [unit(n, seed=i) for i, n in enumerate(sizes)]
    for batch in batches:
        model.enqueue(batch)
    ring, ptr = reference_ring(initial, batches)
    assert torch.equal(model.queue, torch.stack(ring)) and int(model.queue_ptr) == ptr
    if sum(sizes) >= 4:  # the last 4 keys written are all present
        last = torch.cat(batches)[-4:]
        assert all((model.queue == key).all(1).any() for key in last)


def test_enqueue_casts_half_keys_and_rejects_wrong_shape() -> None:
    model = small_model(queue_size=3)
    model.enqueue(unit(2, 0).half())
    assert model.queue.dtype == torch.float32
    with pytest.raises(MocoConfigError):
        model.enqueue(torch.zeros(2, DIM + 1))
    with pytest.raises(MocoConfigError):
        model.enqueue(torch.zeros(DIM))


@pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"queue_size": 4, "momentum": 1.5}])
def test_bad_moco_config(kwargs: dict) -> None:
    enc = build_encoder("smallcnn", num_classes=3, width=2, proj_dim=DIM)
    with pytest.raises(MocoConfigError) as info:
        ObCP(enc, **kwargs)
    assert isinstance(info.value, ObcpError)


# ---- LabelBank --------------------------------------------------------------------------------


def filled_bank(ids: list[int], labels: list[int], *, num_samples: int = 20, num_classes: int | None = 4) -> LabelBank:
    bank = LabelBank(num_samples, DIM, num_classes)
    bank.set_members(torch.tensor(ids), torch.tensor(labels))
    bank.update(torch.tensor(ids), unit(len(ids), seed=9))
    return bank


def key_owner(bank: LabelBank, keys: torch.Tensor) -> torch.Tensor:
    """Sample id whose bank key equals each row of ``keys [..., D]`` (keys are distinct)."""
    eq = (keys[..., None, :] == bank.keys).all(-1)  # [..., N]
    assert (eq.sum(-1) == 1).all()
    return eq.float().argmax(-1)


def test_set_members_builds_class_index() -> None:
    bank = LabelBank(10, DIM, 3)
    bank.set_members(torch.tensor([7, 1, 4, 2]), torch.tensor([2, 0, 2, 0]))
    assert bank.labels.tolist() == [-1, 0, 0, -1, 2, -1, -1, 2, -1, -1]
    assert bank.member_ids.tolist() == [1, 2, 4, 7]
    assert bank.class_count.tolist() == [2, 0, 2] and bank.class_start.tolist() == [0, 2, 2]
    bank.set_members(torch.tensor([3]), torch.tensor([1]))  # membership is replaced, not added
    assert bank.member_ids.tolist() == [3] and bank.class_count.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    "ids,labels",
    [([0, 0], [1, 1]), ([0, 10], [1, 1]), ([-1], [0]), ([1], [3]), ([1], [-1]), ([1, 2], [0])],
)
def test_set_members_rejects_bad_input(ids: list[int], labels: list[int]) -> None:
    bank = LabelBank(10, DIM, 3)
    with pytest.raises(LabelBankError) as info:
        bank.set_members(torch.tensor(ids), torch.tensor(labels))
    assert isinstance(info.value, ObcpError)


def test_update_writes_members_only_and_last_duplicate_wins() -> None:
    bank = LabelBank(6, DIM, 2)
    bank.set_members(torch.tensor([1, 3]), torch.tensor([0, 1]))
    keys = unit(4, seed=1)
    bank.update(torch.tensor([0, 1, 3, 1]), keys)
    assert torch.equal(bank.keys[1], keys[3]) and torch.equal(bank.keys[3], keys[2])
    assert torch.equal(bank.keys[0], torch.zeros(DIM))
    assert bank.has_key.tolist() == [False, True, False, True, False, False]
    with pytest.raises(LabelBankError):
        bank.update(torch.tensor([1]), torch.zeros(1, DIM + 1))


def test_positives_are_other_same_class_members() -> None:
    ids = [0, 1, 2, 3, 4, 5, 6]
    labels = [0, 0, 0, 1, 1, 2, 3]
    bank = filled_bank(ids, labels)
    q_ids = torch.tensor(ids * 50)
    q_labels = torch.tensor(labels * 50)
    keys, valid = bank.sample_positives(q_ids, q_labels, torch.Generator().manual_seed(0))
    assert keys.shape == (len(q_ids), DIM) and valid.shape == (len(q_ids),)
    # classes 2 and 3 have one member each: no OTHER member
    assert valid.tolist() == [lab in (0, 1) for lab in q_labels.tolist()]
    assert torch.equal(keys[~valid], torch.zeros(int((~valid).sum()), DIM))
    owner = key_owner(bank, keys[valid])
    assert (owner != q_ids[valid]).all()
    assert torch.equal(bank.labels[owner], q_labels[valid])
    # every other member of class 0 is reachable from sample 0
    from_zero = owner[q_ids[valid] == 0]
    assert set(from_zero.tolist()) == {1, 2}


def test_positives_for_non_member_may_be_any_class_member() -> None:
    bank = filled_bank([0, 1, 3], [0, 1, 1])
    keys, valid = bank.sample_positives(torch.tensor([7, 7, 7]), torch.tensor([0, 1, 2]), torch.Generator().manual_seed(1))
    assert valid.tolist() == [True, True, False]
    assert key_owner(bank, keys[:1]).tolist() == [0]
    assert key_owner(bank, keys[1:2]).item() in (1, 3)


def test_positives_without_keys_are_invalid() -> None:
    bank = LabelBank(5, DIM, 2)
    bank.set_members(torch.tensor([0, 1]), torch.tensor([0, 0]))
    _, valid = bank.sample_positives(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.Generator().manual_seed(0))
    assert not valid.any()
    bank.update(torch.tensor([1]), unit(1, 0))
    _, valid = bank.sample_positives(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.Generator().manual_seed(0))
    assert valid.tolist() == [True, False]


def test_positives_uniform_over_other_members() -> None:
    bank = filled_bank([0, 1, 2, 3], [0, 0, 0, 0])
    n = 6000
    keys, valid = bank.sample_positives(torch.full((n,), 2), torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(3))
    assert valid.all()
    counts = torch.bincount(key_owner(bank, keys), minlength=4)
    assert counts[2] == 0
    assert all(abs(c - n / 3) < 200 for c in counts[[0, 1, 3]].tolist())  # sd ≈ 37


def test_negatives_come_from_denied_classes_only() -> None:
    ids = list(range(10))
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    bank = filled_bank(ids, labels)
    denied = torch.tensor(
        [[True, False, False, False], [False, True, False, True], [False, False, False, False], [True, False, True, True]]
    )
    keys, valid = bank.sample_negatives(denied, 4, torch.Generator().manual_seed(0))
    assert keys.shape == (4, 4, DIM) and valid.shape == (4, 4)
    # T_i = 3, 3, 0, 8 members of the denied classes -> min(n, T_i) valid slots, first
    assert valid.sum(1).tolist() == [3, 3, 0, 4]
    assert valid.tolist() == [[s < t for s in range(4)] for t in (3, 3, 0, 4)]
    assert torch.equal(keys[~valid], torch.zeros(int((~valid).sum()), DIM))
    for i in range(4):
        owner = key_owner(bank, keys[i][valid[i]])
        assert len(set(owner.tolist())) == len(owner)  # without replacement
        assert denied[i, bank.labels[owner]].all()
    assert set(key_owner(bank, keys[0][:3]).tolist()) == {0, 1, 2}
    assert set(key_owner(bank, keys[1][:3]).tolist()) == {3, 4, 9}


def test_negatives_subsets_are_uniform() -> None:
    bank = filled_bank([0, 1, 2, 3], [1, 1, 2, 2])
    n_rows = 6000
    denied = torch.zeros(n_rows, 4, dtype=torch.bool)
    denied[:, 1:3] = True  # 4 candidates, pick 2: 6 subsets
    keys, valid = bank.sample_negatives(denied, 2, torch.Generator().manual_seed(5))
    assert valid.all()
    owners = key_owner(bank, keys)
    subsets = [tuple(sorted(row)) for row in owners.tolist()]
    counts = {s: subsets.count(s) for s in itertools.combinations(range(4), 2)}
    assert sum(counts.values()) == n_rows
    assert all(abs(c - n_rows / 6) < 150 for c in counts.values())  # sd ≈ 29


def test_sampling_is_deterministic_given_the_generator() -> None:
    bank = filled_bank(list(range(12)), [i % 3 for i in range(12)])
    denied = torch.rand(8, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    ids = torch.arange(12)
    labels = ids % 3

    def draw(seed: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return (*bank.sample_positives(ids, labels, g), *bank.sample_negatives(denied, 3, g))

    a, b, c = draw(1), draw(1), draw(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_empty_inputs_and_empty_bank() -> None:
    bank = LabelBank(5, DIM, 3)
    g = torch.Generator().manual_seed(0)
    keys, valid = bank.sample_positives(torch.tensor([1, 2]), torch.tensor([0, 1]), g)
    assert keys.shape == (2, DIM) and not valid.any()
    keys, valid = bank.sample_negatives(torch.ones(2, 3, dtype=torch.bool), 4, g)
    assert keys.shape == (2, 4, DIM) and not valid.any()
    bank = filled_bank([0, 1], [0, 1])
    keys, valid = bank.sample_negatives(torch.zeros(0, 4, dtype=torch.bool), 4, g)
    assert keys.shape == (0, 4, DIM)
    keys, valid = bank.sample_negatives(torch.ones(3, 4, dtype=torch.bool), 0, g)
    assert keys.shape == (3, 0, DIM)
    keys, valid = bank.sample_positives(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), g)
    assert keys.shape == (0, DIM)
    with pytest.raises(LabelBankError):
        bank.sample_negatives(torch.ones(2, 3, dtype=torch.bool), 4, g)


def test_bank_without_num_classes_pads_denied_columns() -> None:
    bank = filled_bank([0, 1, 2], [0, 1, 1], num_classes=None)
    denied = torch.tensor([[False, True, False, False, True], [False, False, False, True, False]])
    keys, valid = bank.sample_negatives(denied, 3, torch.Generator().manual_seed(0))
    assert valid.tolist() == [[True, True, False], [False, False, False]]
    assert set(key_owner(bank, keys[0][:2]).tolist()) == {1, 2}
    _, valid = bank.sample_positives(torch.tensor([1, 5]), torch.tensor([1, 7]), torch.Generator().manual_seed(0))
    assert valid.tolist() == [True, False]


def test_state_dict_round_trip_rebuilds_index() -> None:
    bank = filled_bank([0, 3, 5, 6], [1, 1, 2, 0])
    state = bank.state_dict()
    assert set(state) == {"keys", "labels", "has_key"}
    fresh = LabelBank(20, DIM, 4)
    fresh.load_state_dict(state)
    for name in ("member_ids", "member_code", "class_start", "class_count"):
        assert torch.equal(getattr(fresh, name), getattr(bank, name)), name
    denied = torch.tensor([[False, True, True, False]])
    a = bank.sample_negatives(denied, 2, torch.Generator().manual_seed(4))
    b = fresh.sample_negatives(denied, 2, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    # also when the bank is a submodule of a larger module
    parent, other = torch.nn.ModuleDict({"bank": bank}), torch.nn.ModuleDict({"bank": LabelBank(20, DIM, 4)})
    other.load_state_dict(parent.state_dict())
    assert torch.equal(other["bank"].member_ids, bank.member_ids)


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=15),
    rows=st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=6),
    n=st.integers(0, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_negative_sampling_properties(labels: list[int], rows: list[list[bool]], n: int, seed: int) -> None:
    ids = list(range(len(labels)))
    bank = filled_bank(ids, labels, num_classes=5)
    denied = torch.tensor(rows)
    keys, valid = bank.sample_negatives(denied, n, torch.Generator().manual_seed(seed))
    assert keys.shape == (len(rows), n, DIM)
    for i, row in enumerate(rows):
        pool = [s for s, lab in zip(ids, labels) if row[lab]]
        expect = min(n, len(pool))
        assert valid[i].tolist() == [s < expect for s in range(n)]
        owner = key_owner(bank, keys[i][valid[i]]).tolist()
        assert len(set(owner)) == expect and set(owner) <= set(pool)


# ---- collectives ------------------------------------------------------------------------------


def test_collectives_are_identity_without_process_group() -> None:
    assert not dist.is_dist() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    x = torch.arange(6).reshape(3, 2)
    assert dist.all_gather_varlen(x) is x
    assert torch.equal(dist.all_reduce_max(x), x)
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    dist.barrier()
    with pytest.raises(dist.DistributedSetupError):
        dist.setup("mpi")


def test_torchrun_two_ranks_gather_enqueue_and_bank(tmp_path: Path) -> None:
    from conftest import ROOT, torchrun

    script = ROOT / "tests" / "ddp" / "moco_collectives.py"
    torchrun(2, [str(script), str(tmp_path)], cwd=ROOT, timeout=180)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert r0["is_main"] and not r1["is_main"]

    # all_gather_varlen: rank-ordered concatenation, identical on both ranks, uneven and empty sizes
    for step, (a, b) in enumerate(zip(r0["gather_out"], r1["gather_out"])):
        expected = torch.cat([r0["gather_in"][step], r1["gather_in"][step]])
        assert torch.equal(a, expected) and torch.equal(b, expected)
    assert r0["gather_out"][1].shape == (0, 2)
    assert torch.equal(r0["flags_out"], torch.tensor([True, True, False]))
    assert torch.equal(r1["flags_out"], r0["flags_out"])
    assert r0["max"].tolist() == [1, 10] and r1["max"].tolist() == [1, 10]
    assert r0["broadcast"] == r1["broadcast"] == {"from": 0}

    # enqueue: both ranks hold the same queue as one process fed the concatenation
    assert torch.equal(r0["queue_init"], r1["queue_init"])
    reference = small_model(queue_size=r0["queue_init"].shape[0])
    reference.queue.copy_(r0["queue_init"])
    for step, (k0, k1) in enumerate(zip(r0["enqueue_in"], r1["enqueue_in"])):
        assert k0.shape[0] != k1.shape[0]  # uneven per-rank batches
        reference.enqueue(torch.cat([k0, k1]))
        assert torch.equal(r0["queues"][step], reference.queue), step
        assert torch.equal(r1["queues"][step], reference.queue), step
        assert r0["ptrs"][step] == r1["ptrs"][step] == int(reference.queue_ptr)
    # the first step (3 + 2 keys, K = 5) leaves exactly both ranks' keys in the queue
    first = torch.cat([r0["enqueue_in"][0], r1["enqueue_in"][0]])
    assert torch.equal(r0["queues"][0], first)

    # LabelBank.update: keys gathered from both ranks; id 2 written by both -> rank 1's wins
    bank = LabelBank(10, DIM, 3)
    bank.set_members(torch.tensor([0, 2, 4, 6, 8]), torch.tensor([0, 1, 0, 2, 1]))
    for (ids0, k0), (ids1, k1) in zip(r0["bank_in"], r1["bank_in"]):
        bank.update(torch.cat([ids0, ids1]), torch.cat([k0, k1]))
    for r in (r0, r1):
        assert torch.equal(r["bank_keys"], bank.keys) and torch.equal(r["bank_has_key"], bank.has_key)
    assert torch.equal(bank.keys[2], r1["bank_in"][0][1][0])
    assert bank.has_key.tolist() == [True, False, True, False, True, False, False, False, True, False]
