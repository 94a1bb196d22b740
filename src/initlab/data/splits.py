"""What the in-memory data modules share: splits as uint8 tensors on the device, batches
sliced by index, augmentation of the training batches, corrupted test copies, and the fixed
sets the monitors use."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

from initlab.data.augment import Augment
from initlab.utils import DATA_ORDER, stream_seed


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) -> float (N, 1, H, W) in [0, 1]."""
    return images.unsqueeze(1).float().div_(255)


def example_order(n: int, seed: int, epoch: int, shuffle: bool = True, rank: int = 0,
                  world_size: int = 1) -> torch.Tensor:
    """The order in which a rank sees the ``n`` examples in ``epoch`` of the run ``seed``
    (consecutive slices of it are the batches): a permutation drawn from the (seed, epoch)
    stream, or split order without ``shuffle``. Under DDP each rank takes every
    ``world_size``-th position. The data modules and the bench's hand-written loops both
    batch by it, so they train on the same batches."""
    if shuffle:
        gen = torch.Generator().manual_seed(stream_seed(seed, DATA_ORDER, epoch))
        order = torch.randperm(n, generator=gen)
    else:
        order = torch.arange(n)
    if world_size > 1:
        # Same permutation on every rank, disjoint shards; shuffled shards have equal
        # length so every rank runs the same number of steps.
        if shuffle:
            order = order[: n - n % world_size]
        order = order[rank::world_size]
    return order


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
        return example_order(len(self.labels), self.seed, self.epoch(), self.shuffle,
                             self.rank, self.world_size).to(self.labels.device)

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


class CorruptedBatches(Batches):
    """A corrupted copy of a test split in batches: at every pass the whole split is corrupted
    first, in split order and chunks of ``CHUNK`` examples, its draws restarted from the seed,
    then served in evaluation batches (standardised per batch): every run sees the same
    corrupted images whatever its evaluation batch, number of ranks or device count (with
    ``CHUNK`` the former evaluation batch, the images a run saw before)."""

    CHUNK = 1000

    def __init__(self, images, labels, batch_size: int, standardize: Callable,
                 corrupt: Augment, rank: int = 0, world_size: int = 1):
        super().__init__(images, labels, batch_size, standardize, rank=rank,
                         world_size=world_size)
        self.corrupt = corrupt

    def __iter__(self):
        self.corrupt.set_epoch(0)
        corrupted = torch.cat([self.corrupt(to_unit(self.images[i: i + self.CHUNK]))
                               for i in range(0, len(self.images), self.CHUNK)])
        # split order (never shuffled): this rank's examples are a strided view and its batches
        # slices of it, where gathering them by index copied the corrupted split once more
        images, labels = corrupted, self.labels
        if self.world_size > 1:  # as example_order: a single process sees every example
            images, labels = images[self.rank:: self.world_size], labels[self.rank:: self.world_size]
        for start in range(0, len(labels), self.batch_size):
            yield (self.transform(images[start: start + self.batch_size]),
                   labels[start: start + self.batch_size])


def check_eval_batch_size(value) -> None:
    """``data.eval_batch_size``: an integer >= 1, or ``auto`` (initlab.train.build sets the
    measured fastest for the model on the device: ``eval_batch_in_effect``)."""
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"data.eval_batch_size={value!r} is invalid: it must be auto or an "
                         "integer >= 1")


class SplitsDataModule(L.LightningDataModule):
    """Splits ``{"train" | "val" | "test": (uint8 images (N, H, W), labels)}`` in
    ``self.splits``, filled by a subclass's ``setup``, which also sets ``augment``, ``seed``,
    ``batch_size``, ``eval_batch_size`` and ``corruptions`` and defines ``standardize``.

    The splits live on the strategy's device while a stage runs (moved when Lightning asks for
    the dataloaders) and go back to the CPU at the stage's teardown, as Lightning does with the
    model. ``corruptions`` (the ``robustness`` config, ``{kind: [levels]}``) adds corrupted
    copies of the test set as extra, named test dataloaders.
    """

    def to(self, device: torch.device) -> None:
        """Move every split to ``device`` (the GPU when training there)."""
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def _train_transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.augment(x))

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _batches(self, split: str, train: bool) -> Batches:
        if not train and self.eval_batch_size == "auto":
            raise ValueError("data.eval_batch_size=auto is chosen for a model and device by "
                             "initlab.train.build; a data module used without it needs an "
                             "integer eval_batch_size")
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
        x = to_unit(self.train_head(n)[0])
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

    def _corrupted(self, corrupt: Augment) -> CorruptedBatches:
        """The test split's batches (same shards and batch size) corrupted by ``corrupt`` on
        the split's device, the same images for every run of the seed (CorruptedBatches)."""
        clean = self._batches("test", train=False)
        return CorruptedBatches(clean.images, clean.labels, clean.batch_size, self.standardize,
                                corrupt, rank=clean.rank, world_size=clean.world_size)

    def teardown(self, stage: str) -> None:
        # Lightning's Strategy.teardown has just moved the model to the CPU: the data follows
        self.to(torch.device("cpu"))

    def probe_batch(self, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed set of ``n`` held-out (validation) examples, never augmented."""
        x, y = self.splits["val"]
        return self.standardize(to_unit(x[:n])), y[:n]

    def test_examples(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test examples (all of them when None), standardised, never
        corrupted."""
        x, y = self.splits["test"]
        return self.standardize(to_unit(x[:n])), y[:n]

    def train_subset(self, n: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training examples (all of them when the split is smaller), in split
        order, standardised, never augmented: a fixed set for full-batch gradients."""
        x, y = self.train_head(n)
        return self.standardize(to_unit(x)), y

    def train_head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training images (uint8) and labels, in split order."""
        x, y = self.splits["train"]
        return x[:n], y[:n]
