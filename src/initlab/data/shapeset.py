"""Shapeset-3x2 as a data module: an online training stream generated on the run's device,
fixed validation and test sets (``initlab.data.shapes`` draws the images)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from initlab.data.robustness import corruption_sets
from initlab.data.shapes import NUM_CLASSES, SIZE, ShapeGenerator
from initlab.data.splits import Batches, SplitsDataModule, check_eval_batch_size, to_unit
from initlab.utils import SHAPESET, stream_seed

SPLITS = {"train": 0, "val": 1, "test": 2}  # each split its own stream
# the fixed sets come in chunks of 1000 whatever chunk_size says: a set of 2000 is the first
# 2000 images of the set of 10000
SET_CHUNK = 1000


def generate(n: int, seed: int, split: str, epoch: int = 0, rank: int = 0, chunk: int = 4096,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (uint8, (n, 32, 32)) and labels of one stream, in chunks of ``chunk``, chunk
    k drawn from its own seed (``seed``, split, epoch, rank, k): the same images whatever the
    batch size, and any chunk can be made without those before it."""
    gen = ShapeGenerator(device)
    parts = [generate_chunk(gen, min(chunk, n - start), seed, split, epoch, rank, k)
             for k, start in enumerate(range(0, n, chunk))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def generate_chunk(gen: ShapeGenerator, n: int, seed: int, split: str, epoch: int, rank: int,
                   k: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator(gen.device).manual_seed(
        stream_seed(seed, SHAPESET, SPLITS[split], epoch, rank, k))
    return gen(n, rng)


class Stream:
    """Training batches of fresh images, generated chunk by chunk on the device: epoch e of
    rank r is the stream (seed, train, e, r), ``n`` images, so no image is ever seen twice.
    ``resume_at()`` batches are skipped after a mid-epoch resume (generated, their transforms
    drawn, not yielded), as ``Batches`` does."""

    def __init__(self, n: int, batch_size: int, chunk: int, seed: int, device: torch.device,
                 transform: Callable, rank: int = 0, epoch: Callable[[], int] = lambda: 0,
                 on_epoch: Callable[[int], None] | None = None,
                 resume_at: Callable[[], int] = lambda: 0):
        self.n, self.batch_size, self.chunk, self.seed = n, batch_size, chunk, seed
        self.device, self.transform, self.rank = device, transform, rank
        self.epoch, self.on_epoch, self.resume_at = epoch, on_epoch, resume_at
        self.generator = ShapeGenerator(device)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        epoch = self.epoch()
        if self.on_epoch is not None:
            self.on_epoch(epoch)
        skip = self.resume_at()
        x = y = None
        k = made = 0
        for i in range(len(self)):
            size = min(self.batch_size, self.n - i * self.batch_size)
            while x is None or len(x) < size:
                part = min(self.chunk, self.n - made)
                new = generate_chunk(self.generator, part, self.seed, "train", epoch, self.rank, k)
                k, made = k + 1, made + part
                x, y = new if x is None else (torch.cat([x, new[0]]), torch.cat([y, new[1]]))
            bx, by, x, y = x[:size], y[:size], x[size:], y[size:]
            bx = self.transform(to_unit(bx))
            if i >= skip:
                yield bx, by


class ShapesetDataModule(SplitsDataModule):
    """Shapeset-3x2, 9 classes of 32 x 32 grey images (``initlab.data.shapes``).

    - ``online`` (default): every training batch is new, drawn on the run's device (the paper
      never reused an example); an epoch is ``train_size`` images. ``online=false``: one fixed
      training set of ``train_size`` images, reshuffled every epoch like MNIST's.
    - validation and test: ``val_size`` and ``test_size`` images drawn on the CPU from their
      own streams of ``split_seed`` (not the run's seed: every run and device is measured on
      the same images), then moved to the device.
    - ``normalize``: pixels in [-1, 1] (the generator's ``neg`` option, which its example
      uses) instead of [0, 1].
    """

    input_shape = (1, SIZE, SIZE)
    num_classes = NUM_CLASSES

    def __init__(self, batch_size: int = 10, eval_batch_size: int | str = 1000,
                 online: bool = True, train_size: int = 50_000, val_size: int = 10_000,
                 test_size: int = 10_000, chunk_size: int = 4096, normalize: bool = True,
                 augment: Callable | None = None, seed: int = 0, split_seed: int = 0,
                 corruptions: dict[str, list[float]] | None = None):
        super().__init__()
        check_eval_batch_size(eval_batch_size)
        for key, value in (("batch_size", batch_size), ("train_size", train_size),
                           ("val_size", val_size), ("test_size", test_size),
                           ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key}={value!r} is invalid: it must be an integer >= 1")
        for key, value in (("online", online), ("normalize", normalize)):
            if not isinstance(value, bool):
                raise ValueError(f"data.{key}={value!r} is invalid: it must be true or false")
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise ValueError(f"data.split_seed={split_seed!r} is invalid: it must be an integer >= 0")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.online, self.normalize = online, normalize
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.chunk_size, self.split_seed = chunk_size, split_seed
        self.augment, self.seed = augment, seed
        self.corruptions = corruption_sets(corruptions, seed)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._examples_logged = self._shapes_logged = False
        self.load_seconds: float | None = None

    def prepare_data(self) -> None:
        """Nothing to fetch: the images are generated."""

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        start = time.perf_counter()
        splits = {name: generate(self.sizes[name], self.split_seed, name, chunk=SET_CHUNK)
                  for name in ("val", "test")}
        if not self.online:
            splits["train"] = generate(self.sizes["train"], self.seed, "train",
                                       chunk=self.chunk_size)
        self.splits = splits
        self.load_seconds = time.perf_counter() - start  # result.json's timings

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1 if self.normalize else x

    def _batches(self, split: str, train: bool) -> Batches | Stream:
        if not (train and self.online):
            return super()._batches(split, train)
        self.to(self._device())  # the fixed splits go where the stream is made
        trainer = self.trainer
        return Stream(
            self._stream_size(), self.batch_size, self.chunk_size, self.seed,
            self._device(), self._train_transform if self.augmenting else self.standardize,
            rank=trainer.global_rank if trainer is not None else 0,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            on_epoch=self._start_augment_epoch if self.augmenting else None,
            resume_at=self._batches_already_trained)

    def train_head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training images: of the fixed set, or of the stream's first epoch."""
        if not self.online:
            return super().train_head(n)
        # whole chunks, as the stream draws them (a shorter chunk would hold other images)
        size = min(self._stream_size(), -(-n // self.chunk_size) * self.chunk_size)
        x, y = generate(size, self.seed, "train", chunk=self.chunk_size, device=self._device())
        return x[:n], y[:n]

    def _stream_size(self) -> int:
        """Images per epoch of each rank's stream."""
        world = self.trainer.world_size if self.trainer is not None else 1
        return self.sizes["train"] // world

    def train_dataloader(self) -> Batches | Stream:
        batches = super().train_dataloader()
        if not self._shapes_logged:
            self._log_grid()
        return batches

    def _log_grid(self, n: int = 64) -> None:
        """The first ``n`` validation images in TensorBoard (``shapeset/examples``), once."""
        from torchvision.utils import make_grid

        self._shapes_logged = True
        loggers = self.trainer.loggers if self.trainer is not None else []
        grid = make_grid(to_unit(self.splits["val"][0][:n]).cpu(), nrow=8, pad_value=0.5)
        for logger in loggers:
            if hasattr(logger.experiment, "add_image"):
                logger.experiment.add_image("shapeset/examples", grid, 0)
