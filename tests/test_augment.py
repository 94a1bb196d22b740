"""Batch augmentation: ranges, per-image randomness, reproducibility, identities, splits."""

from __future__ import annotations

import pytest
import torch

from initlab.data import MNISTDataModule
from initlab.data.augment import Augment
from initlab.data.mnist import to_unit
from initlab.data.splits import CorruptedBatches
from initlab.train import build


def digits(n=64) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 4:24, 12:16] = 1.0  # a vertical bar: skew tilts it
    return x


@pytest.mark.parametrize("kwargs", [{"noise_std": 0.3}, {"skew_degrees": 30},
                                    {"noise_std": 0.2, "skew_degrees": 20, "rotate_degrees": 10,
                                     "translate": 0.1, "scale": 0.1}])
def test_shape_dtype_and_range_are_kept(kwargs):
    out = Augment(**kwargs)(digits())
    assert out.shape == (64, 1, 28, 28) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_parameters_differ_per_image():
    out = Augment(skew_degrees=30)(digits(8))
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 8))
    noisy = Augment(noise_std=0.1)(digits(8))
    assert not torch.allclose(noisy[0], noisy[1])


def test_same_seed_same_batch_other_seed_other_batch():
    a = Augment(noise_std=0.2, skew_degrees=20, seed=5)
    b = Augment(noise_std=0.2, skew_degrees=20, seed=5)
    c = Augment(noise_std=0.2, skew_degrees=20, seed=6)
    x = digits()
    first_a, first_b = a(x), b(x)
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, c(x))
    assert not torch.equal(first_a, a(x))  # the stream moves on between batches


def test_each_epoch_and_rank_restarts_its_own_stream():
    x = digits()

    def first_batch(seed, epoch, rank):
        augment = Augment(noise_std=0.2, skew_degrees=20, seed=seed)
        augment(x)  # draws made before the epoch starts (the example grid) change nothing
        augment.set_epoch(epoch, rank)
        return augment(x)

    assert torch.equal(first_batch(5, 1, 0), first_batch(5, 1, 0))
    draws = [first_batch(seed, epoch, rank) for seed in (5, 6) for epoch in (0, 1)
             for rank in (0, 1)]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])


def test_zero_skew_and_zero_noise_are_identities():
    x = torch.rand(16, 1, 28, 28)
    assert torch.equal(Augment(skew_degrees=0.0)(x), x)
    assert torch.equal(Augment(noise_std=0.0)(x), x)


def test_affine_with_tiny_angle_is_close_to_identity():
    x = digits(4)
    out = Augment(skew_degrees=1e-4)(x)
    assert torch.allclose(out, x, atol=1e-3)


def test_skew_tilts_a_vertical_bar():
    x = digits(256)
    out = Augment(skew_degrees=30, seed=1)(x)
    top, bottom = out[:, 0, 6, :], out[:, 0, 21, :]
    cols = torch.arange(28.0)
    centre = lambda row: (row * cols).sum(1) / row.sum(1).clamp_min(1e-6)  # noqa: E731
    shift = (centre(top) - centre(bottom)).abs()
    assert shift.max() > 3 and shift.min() < shift.max()  # tilted, by different angles


@pytest.mark.parametrize("kwargs,message", [({"noise_std": -1}, "augment.noise_std=-1"),
                                            ({"skew_degrees": 95}, "skew_degrees=95 must be < 90")])
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Augment(**kwargs)


def test_only_the_training_split_is_augmented(tiny_data):
    plain = MNISTDataModule(data_dir=str(tiny_data), verify=False, sources=["local"],
                            normalize=False)
    augmented = MNISTDataModule(data_dir=str(tiny_data), verify=False, sources=["local"],
                                normalize=False, augment=Augment(noise_std=0.3, skew_degrees=20))
    for dm in (plain, augmented):
        dm.setup()
    for a, b in ((plain.val_dataloader(), augmented.val_dataloader()),
                 (plain.test_dataloader()["test"], augmented.test_dataloader()["test"])):
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xa, _ = next(iter(plain.train_dataloader()))
    xb, _ = next(iter(augmented.train_dataloader()))
    assert not torch.equal(xa, xb)
    assert torch.equal(plain.probe_batch(10)[0], augmented.probe_batch(10)[0])


def test_corrupted_test_sets_run_inside_trainer_test(make_cfg):
    cfg = make_cfg("trainer.max_epochs=4", "data.train_samples=null",
                   "robustness={noise:[0,1],skew:[45]}")
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    per_loader = trainer.test(module, datamodule=datamodule, verbose=False)
    acc = {k: v for metrics in per_loader for k, v in metrics.items()}
    assert set(acc) == {"test/acc", "test/loss", "test_corrupt/noise_0/acc",
                        "test_corrupt/noise_1/acc", "test_corrupt/skew_45/acc"}
    assert acc["test/acc"] > 0.9
    assert acc["test_corrupt/noise_0/acc"] == pytest.approx(acc["test/acc"], abs=1e-6)
    assert acc["test_corrupt/noise_1/acc"] < acc["test/acc"] - 0.2
    # the draws restart with every pass: a second test sees the same corrupted sets
    again = trainer.test(module, datamodule=datamodule, verbose=False)
    assert {k: v for metrics in again for k, v in metrics.items()} == acc

    # = the accuracy on the whole test set corrupted chunk by chunk with the run's seed
    x, y = datamodule.splits["test"]
    corrupt, batch = Augment(skew_degrees=45, seed=cfg.seed), CorruptedBatches.CHUNK
    model = module.model.eval()
    with torch.no_grad():
        logits = torch.cat([model(datamodule.standardize(corrupt(to_unit(x[i: i + batch]))))
                            for i in range(0, len(y), batch)])
    expected = float((logits.argmax(1) == y).float().mean())
    assert acc["test_corrupt/skew_45/acc"] == pytest.approx(expected, abs=1e-6)
    assert expected != pytest.approx(acc["test/acc"])  # the skew changed something


def test_the_corrupted_images_do_not_depend_on_the_evaluation_batch_or_the_ranks(tiny_data,
                                                                                monkeypatch):
    """The same corrupted images in evaluation batches of 7, 64 and 1000, and in two DDP
    ranks' shards put back together; a chunk of another size draws other ones (the check can
    fail)."""
    def corrupted_set(batch: int, rank: int = 0, world_size: int = 1):
        datamodule = MNISTDataModule(data_dir=str(tiny_data), eval_batch_size=batch,
                                     sources=["local"], verify=False, seed=3,
                                     corruptions={"noise": [0.3], "skew": [20]})
        datamodule.setup()
        loaders = datamodule.test_dataloader()
        out = {}
        for name in ("test_corrupt/noise_0.3", "test_corrupt/skew_20"):
            loader = loaders[name]
            loader.rank, loader.world_size = rank, world_size
            out[name] = torch.cat([x for x, _ in loader])
        return out

    alone = corrupted_set(1000)
    n = len(alone["test_corrupt/noise_0.3"])
    assert n % 7 and n % 64
    for batch in (7, 64):
        other = corrupted_set(batch)
        assert all(torch.equal(other[k], alone[k]) for k in alone)
    shards = [corrupted_set(64, rank, 2) for rank in (0, 1)]
    for name, images in alone.items():
        together = torch.empty_like(images)
        together[0::2], together[1::2] = shards[0][name], shards[1][name]
        assert torch.equal(together, images)
    monkeypatch.setattr(CorruptedBatches, "CHUNK", 50)
    assert not torch.equal(corrupted_set(1000)["test_corrupt/skew_20"],
                           alone["test_corrupt/skew_20"])


def test_several_unnamed_test_loaders_are_a_clear_error(make_cfg):
    datamodule, module, trainer = build(make_cfg())
    datamodule.setup()
    clean = datamodule.test_dataloader()["test"]
    with pytest.raises(ValueError, match=r"2 unnamed test dataloaders: return a dict"):
        trainer.test(module, dataloaders=[clean, clean], verbose=False)


@pytest.mark.parametrize("settings", [
    {"skew_degrees": 30, "rotate_degrees": 20, "translate": 0.1, "scale": 0.2},
    {"skew_degrees": 30}, {"skew_degrees": 30, "translate": 0.1},
    {"rotate_degrees": 20}, {"scale": 0.2, "translate": 0.1}])
def test_grid_is_affine_grid(settings):
    """Every shortcut of the written-out grid (a shear alone, no translation) against
    affine_grid, on a grid that is not square."""
    augment = Augment(**settings)
    theta = augment.affine_matrices(16, torch.device("cpu"), torch.Generator().manual_seed(0))
    expected = torch.nn.functional.affine_grid(theta, [16, 1, 28, 20], align_corners=False)
    assert torch.allclose(augment._grid(theta, 28, 20), expected, atol=1e-6)


def test_noise_has_the_requested_std_and_differs_per_image():
    x = torch.full((64, 1, 28, 28), 0.5)
    out = Augment(noise_std=0.1, seed=3)(x) - 0.5
    assert float(out.std()) == pytest.approx(0.1, rel=0.05)
    assert float(out.mean()) == pytest.approx(0.0, abs=0.005)
    assert not torch.allclose(out[0], out[1])


def test_noise_levels_share_one_draw_of_the_bank():
    """Noise levels from one seed draw their bank once; each level's images, and its
    generator after them, are what a draw of its own gives; another seed draws its own."""
    from initlab.data import augment

    x = torch.rand(300, 1, 28, 28)
    augment._BANKS.clear()
    first, second = Augment(noise_std=0.1, seed=5), Augment(noise_std=0.3, seed=5)
    shared = [(first, first(x), first(x)), (second, second(x), second(x))]
    assert second._bank is first._bank
    for aug, *outs in shared:
        augment._BANKS.clear()
        alone = Augment(noise_std=aug.noise_std, seed=5)
        assert all(torch.equal(alone(x), out) for out in outs)
        assert torch.equal(alone._generator.get_state(), aug._generator.get_state())
    other = Augment(noise_std=0.1, seed=6)
    other(x)
    assert not torch.equal(other._bank, first._bank)
