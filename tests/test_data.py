"""The data module on tiny IDX files: splits, batches, sharding, reproducible order."""

from __future__ import annotations

import pytest
import torch

from initlab.data import MNISTDataModule
from initlab.data.mnist import MEAN, STD, Batches


def module(tiny_data, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(tiny_data), verify=False, sources=["local"], **kwargs)
    dm.setup()
    return dm


def test_splits_are_disjoint_and_fixed(tiny_data):
    dm = module(tiny_data)
    sizes = {k: len(y) for k, (x, y) in dm.splits.items()}
    assert sizes == {"train": 550, "val": 50, "test": 200}
    again = module(tiny_data, seed=99)  # the run seed does not move the validation split
    assert torch.equal(dm.splits["val"][0], again.splits["val"][0])
    train_rows = {tuple(r.flatten().tolist()) for r in dm.splits["train"][0]}
    assert not any(tuple(r.flatten().tolist()) in train_rows for r in dm.splits["val"][0])


def test_train_samples_keeps_the_first_n(tiny_data):
    full, small = module(tiny_data), module(tiny_data, train_samples=100)
    assert torch.equal(small.splits["train"][0], full.splits["train"][0][:100])
    with pytest.raises(ValueError, match="train_samples=1000 exceeds the 550"):
        module(tiny_data, train_samples=1000)


def test_batches_are_float_standardised_and_complete(tiny_data):
    dm = module(tiny_data, batch_size=64)
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == 9
    x, y = batches[0]
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = torch.cat([b[0] for b in batches]) * STD + MEAN
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(dm.splits["train"][1].tolist())


def test_raw_inputs_when_normalize_is_false(tiny_data):
    x, _ = next(iter(module(tiny_data, normalize=False).val_dataloader()))
    assert x.min() >= 0 and x.max() <= 1


def test_order_depends_on_seed_and_epoch_only():
    x, y = torch.zeros(100, 28, 28, dtype=torch.uint8), torch.arange(100)

    def order(seed, epoch):
        batches = Batches(x, y, 10, lambda t: t, shuffle=True, seed=seed, epoch=lambda: epoch)
        return torch.cat([b[1] for b in batches]).tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    # no seed's epoch replays another seed's epoch (seed + epoch once did exactly that)
    orders = [order(seed, epoch) for seed in range(4) for epoch in range(4)]
    assert len({tuple(o) for o in orders}) == len(orders)


def test_resume_at_skips_the_trained_batches_in_the_same_order():
    x, y = torch.zeros(100, 28, 28, dtype=torch.uint8), torch.arange(100)
    for skip in (0, 3, 9, 10):
        batches = Batches(x, y, 10, lambda t: t, shuffle=True, seed=2, epoch=lambda: 1)
        full = [b[1] for b in batches]
        assert len(full) == 10
        batches.resume_at = lambda skip=skip: skip
        assert len(batches) == 10  # Lightning counts the whole epoch; it resumes its count too
        assert [b[1].tolist() for b in batches] == [b.tolist() for b in full[skip:]]


@pytest.mark.parametrize("shuffle", [True, False])
def test_ddp_shards_are_disjoint(shuffle):
    x, y = torch.zeros(101, 28, 28, dtype=torch.uint8), torch.arange(101)
    shards = [
        torch.cat([b[1] for b in Batches(x, y, 8, lambda t: t, shuffle=shuffle, rank=r,
                                         world_size=2)]).tolist()
        for r in range(2)
    ]
    assert not set(shards[0]) & set(shards[1])
    if shuffle:  # equal length so every rank runs the same number of steps
        assert len(shards[0]) == len(shards[1]) == 50
    else:  # evaluation covers every example exactly once
        assert sorted(shards[0] + shards[1]) == list(range(101))
    lengths = [len(Batches(x, y, 8, lambda t: t, shuffle=shuffle, rank=r, world_size=2))
               for r in range(2)]
    assert lengths == [-(-len(s) // 8) for s in shards]


def test_invalid_batch_size_names_the_key(tiny_data):
    with pytest.raises(ValueError, match=r"data.batch_size=0 is invalid: it must be an integer >= 1"):
        MNISTDataModule(data_dir=str(tiny_data), batch_size=0)
