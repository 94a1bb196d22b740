"""MNIST as in-memory tensors, batched by index slicing (no per-image work)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from initlab.data.augment import Augment
from initlab.data.robustness import corruption_sets
from initlab.data.sources import MNIST_MD5, SOURCES, DataError, ensure_mnist
from initlab.utils import DATA_ORDER, stream_seed

MEAN, STD = 0.1307, 0.3081  # training-set pixel statistics in [0, 1]
NUM_TRAIN, NUM_VAL = 55_000, 5_000
SPLIT_SEED = 12345  # fixed: the validation split never depends on the run's seed
_IDX_MAGIC = {1: 0x0801, 3: 0x0803}


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) -> float (N, 1, H, W) in [0, 1]."""
    return images.unsqueeze(1).float().div_(255)


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Parse an IDX file of unsigned bytes, checking its magic number and exact size."""
    data = Path(path).read_bytes()
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: {len(data)} bytes, shorter than its header")
    magic = int.from_bytes(data[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(
            f"{path} has magic number {magic:#06x}, expected {_IDX_MAGIC[ndim]:#06x} "
            f"(an IDX file of {ndim}-d unsigned bytes)"
        )
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(torch.tensor(shape).prod())
    if len(data) != expected:
        raise DataError(f"{path} has {len(data)} bytes, expected {expected} for shape {shape}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


class Batches:
    """Iterates ``(x, y)`` batches sliced from in-memory tensors.

    ``x`` is stored as uint8 and turned into float in [0, 1] per batch, then passed through
    ``transform`` (augmentation, normalisation) on whatever device the tensors live on.
    Shuffling draws the order from the stream (``seed``, epoch), so the order is reproducible, a
    resumed run sees the same order and no seed replays another seed's epoch. Under DDP each
    rank takes every ``world_size``-th example. ``resume_at()`` is the number of this epoch's
    batches already trained (a mid-epoch resume): those are skipped, their transforms still
    drawn so augmentation continues exactly.
    """

    def __init__(self, images, labels, batch_size: int, transform: Callable, shuffle=False,
                 seed=0, rank=0, world_size=1,
                 epoch: Callable[[], int] = lambda: 0,
                 on_epoch: Callable[[int], None] | None = None,
                 resume_at: Callable[[], int] = lambda: 0):
        self.images, self.labels = images, labels
        self.batch_size, self.transform = batch_size, transform
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.on_epoch, self.resume_at = epoch, on_epoch, resume_at

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            gen = torch.Generator().manual_seed(stream_seed(self.seed, DATA_ORDER, self.epoch()))
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            # Same permutation on every rank, disjoint shards; shuffled shards have equal
            # length so every rank runs the same number of steps.
            if self.shuffle:
                order = order[: n - n % self.world_size]
            order = order[self.rank:: self.world_size]
        return order.to(self.labels.device)

    def __len__(self) -> int:
        n = len(self.labels)
        if self.world_size > 1:
            n = n // self.world_size + (0 if self.shuffle else int(self.rank < n % self.world_size))
        return -(-n // self.batch_size)

    def __iter__(self):
        if self.on_epoch is not None:
            self.on_epoch(self.epoch())
        order = self._indices()
        skip = self.resume_at()
        for i, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start: start + self.batch_size]
            x = self.transform(to_unit(self.images[idx]))
            if i >= skip:
                yield x, self.labels[idx]


class MNISTDataModule(L.LightningDataModule):
    """Real MNIST: 55k/5k train/validation split of the 60k, and the official 10k test set.

    The splits live on the strategy's device while a stage runs (moved when Lightning asks for
    the dataloaders) and go back to the CPU at the stage's teardown, as Lightning does with the
    model. ``corruptions`` (the ``robustness`` config, ``{kind: [levels]}``) adds corrupted
    copies of the test set as extra, named test dataloaders.
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        train_samples: int | None = None,
        normalize: bool = True,
        sources: list[str] | None = None,  # default: every source, in SOURCES order
        verify: bool = True,
        augment: Callable | None = None,
        seed: int = 0,
        corruptions: dict[str, list[float]] | None = None,
    ):
        if sources is None:
            sources = list(SOURCES)
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size!r} is invalid: it must be an integer >= 1")
        if not isinstance(eval_batch_size, int) or eval_batch_size < 1:
            raise ValueError(
                f"data.eval_batch_size={eval_batch_size!r} is invalid: it must be an integer >= 1"
            )
        if train_samples is not None and (not isinstance(train_samples, int) or train_samples < 1):
            raise ValueError(
                f"data.train_samples={train_samples!r} is invalid: it must be null (all) or an "
                f"integer in [1, {NUM_TRAIN}]"
            )
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.train_samples, self.normalize = train_samples, normalize
        self.sources, self.verify = tuple(sources), verify
        self.augment, self.seed = augment, seed
        self.corruptions = corruption_sets(corruptions, seed)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._examples_logged = False
        self.load_seconds: float | None = None

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, self.sources, MNIST_MD5 if self.verify else None)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        start = time.perf_counter()
        self._load()
        self.load_seconds = time.perf_counter() - start  # result.json's timings

    def _load(self) -> None:
        raw = ensure_mnist(self.data_dir, self.sources, MNIST_MD5 if self.verify else None)
        images = read_idx(raw / "train-images-idx3-ubyte", 3)
        labels = read_idx(raw / "train-labels-idx1-ubyte", 1).long()
        test_x = read_idx(raw / "t10k-images-idx3-ubyte", 3)
        test_y = read_idx(raw / "t10k-labels-idx1-ubyte", 1).long()
        for name, x, y in (("train", images, labels), ("test", test_x, test_y)):
            if len(x) != len(y):
                raise DataError(f"{name} split has {len(x)} images but {len(y)} labels")
        n_val = NUM_VAL if len(labels) == NUM_TRAIN + NUM_VAL else max(1, len(labels) // 12)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
        train_idx, val_idx = perm[n_val:], perm[:n_val]
        if self.train_samples is not None:
            if self.train_samples > len(train_idx):
                raise ValueError(
                    f"data.train_samples={self.train_samples} exceeds the {len(train_idx)} "
                    "training examples available"
                )
            train_idx = train_idx[: self.train_samples]
        self.splits = {
            "train": (images[train_idx], labels[train_idx]),
            "val": (images[val_idx], labels[val_idx]),
            "test": (test_x, test_y),
        }

    def to(self, device: torch.device) -> None:
        """Move every split to ``device`` (the GPU when training there)."""
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) / STD if self.normalize else x

    def _train_transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.augment(x))

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _batches(self, split: str, train: bool) -> Batches:
        self.to(self._device())
        x, y = self.splits[split]
        trainer = self.trainer
        return Batches(
            x, y,
            batch_size=self.batch_size if train else self.eval_batch_size,
            transform=self._train_transform if train and self.augmenting else self.standardize,
            shuffle=train, seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            epoch=(lambda: trainer.current_epoch) if train and trainer is not None else (lambda: 0),
            # augmentation draws restart from (seed, epoch, rank): a resumed run sees the same ones
            on_epoch=self._start_augment_epoch if train and self.augmenting else None,
            resume_at=self._batches_already_trained if train else (lambda: 0),
        )

    def _start_augment_epoch(self, epoch: int) -> None:
        self.augment.set_epoch(epoch, rank=self.trainer.global_rank if self.trainer else 0)

    def _batches_already_trained(self) -> int:
        """On the first pass after a mid-epoch checkpoint, Lightning resumes its batch count at
        the batches it had trained; the data must resume there too (0 otherwise)."""
        trainer = self.trainer
        if trainer is None or not trainer.fit_loop.restarting:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.ready

    @property
    def augmenting(self) -> bool:
        return self.augment is not None and not self.augment.is_identity

    def train_dataloader(self) -> Batches:
        batches = self._batches("train", train=True)
        if self.augmenting and not self._examples_logged:
            self._log_examples()
            self._examples_logged = True
        return batches

    def _log_examples(self, n: int = 32) -> None:
        """A grid of augmented training images in TensorBoard, before training starts."""
        from torchvision.utils import make_grid

        trainer = self.trainer
        loggers = trainer.loggers if trainer is not None else []
        x = to_unit(self.splits["train"][0][:n])
        grid = make_grid(self.augment(x).cpu(), nrow=8, pad_value=0.5)
        for logger in loggers:
            if hasattr(logger.experiment, "add_image"):
                logger.experiment.add_image("augment/examples", grid, 0)

    def val_dataloader(self) -> Batches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> dict[str, Batches]:
        """``"test"``: the clean test set; then ``test_corrupt/<kind>_<level>``, one per level."""
        loaders = {"test": self._batches("test", train=False)}
        for name, corrupt in self.corruptions.items():
            loaders[name] = self._corrupted(corrupt)
        return loaders

    def _corrupted(self, corrupt: Augment) -> Batches:
        """The test split's batches (same shards and batch size) through ``corrupt``, on the
        batch's device; its draws restart at every pass, so every model sees the same set."""
        batches = self._batches("test", train=False)
        batches.transform = lambda x: self.standardize(corrupt(x))
        batches.on_epoch = lambda epoch: corrupt.set_epoch(0)
        return batches

    def teardown(self, stage: str) -> None:
        # Lightning's Strategy.teardown has just moved the model to the CPU: the data follows
        self.to(torch.device("cpu"))

    def probe_batch(self, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed set of ``n`` held-out (validation) examples, never augmented."""
        x, y = self.splits["val"]
        return self.standardize(to_unit(x[:n])), y[:n]

    def train_subset(self, n: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training examples (all of them when the split is smaller), in split
        order, standardised, never augmented: a fixed set for full-batch gradients."""
        x, y = self.splits["train"]
        return self.standardize(to_unit(x[:n])), y[:n]
