"""Augmentation of whole batches on the batch's device: Gaussian noise and one random affine
transform per image (skew/shear, rotation, translation, scale) through ``grid_sample``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from initlab.utils import AUGMENTATION, draw_kept_by_state, stream_seed

# CPU banks: (size, dtype, generator state) -> (the bank, generator state after the draw)
_BANKS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_BANKS_KEPT = 2  # 16 MiB each at the default size


def _normal_bank(size: int, dtype, device, gen: torch.Generator) -> torch.Tensor:
    """``torch.randn(size, generator=gen)``, leaving ``gen`` as the draw leaves it. Kept by the
    generator's state: the noise levels of the corrupted test sets each start a generator from
    the same seed, so every level after the first reuses the first one's bank (a draw costs
    ~25 ms on the 2-core CPU, a third of what corrupting a test set costs). An accelerator
    draws in microseconds: there nothing is kept, so no device memory stays held."""
    if torch.device(device).type != "cpu":
        return torch.randn(size, device=device, generator=gen, dtype=dtype)
    return draw_kept_by_state(
        _BANKS, _BANKS_KEPT, (size, dtype), gen,
        lambda: torch.randn(size, device=device, generator=gen, dtype=dtype))


class Augment:
    """Per-image random parameters drawn from a seeded generator, so a run is reproducible.

    - ``skew_degrees``: horizontal shear by an angle in [-d, d] (a tilted digit);
    - ``rotate_degrees``: rotation by an angle in [-d, d];
    - ``translate``: shift by up to this fraction of the image size in x and y;
    - ``scale``: zoom by a factor in [1 - s, 1 + s];
    - ``noise_std``: Gaussian noise of this std added after the affine transform.

    Input and output are (B, C, H, W) floats in [0, 1]: the affine transform fills with 0
    (background) and bilinear interpolation stays in range; noise is clipped back to [0, 1].

    Speed: drawing fresh normals costs more than the whole affine transform, so the noise of a
    batch is a window, at a random offset, of a bank of ``NOISE_BANK`` N(0, 1) draws made once
    from the seeded generator: every image gets its own stretch of the bank, every batch a new
    offset.
    """

    NOISE_BANK = 1 << 22

    def __init__(self, noise_std: float = 0.0, skew_degrees: float = 0.0,
                 rotate_degrees: float = 0.0, translate: float = 0.0, scale: float = 0.0,
                 seed: int = 0):
        for name, value in (("noise_std", noise_std), ("skew_degrees", skew_degrees),
                            ("rotate_degrees", rotate_degrees), ("translate", translate),
                            ("scale", scale)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"augment.{name}={value!r} is invalid: it must be a number >= 0")
        if skew_degrees >= 90 or scale >= 1:
            raise ValueError(
                f"augment.skew_degrees={skew_degrees} must be < 90 and augment.scale={scale} < 1")
        self.noise_std, self.skew_degrees = float(noise_std), float(skew_degrees)
        self.rotate_degrees, self.translate, self.scale = (float(rotate_degrees),
                                                           float(translate), float(scale))
        self.seed, self.epoch, self.rank = seed, 0, 0
        self._generator: torch.Generator | None = None
        self._offsets: torch.Generator | None = None
        self._bank: torch.Tensor | None = None
        self._grids: dict = {}

    @property
    def is_identity(self) -> bool:
        return not (self.noise_std or self.skew_degrees or self.rotate_degrees
                    or self.translate or self.scale)

    @property
    def has_affine(self) -> bool:
        return bool(self.skew_degrees or self.rotate_degrees or self.translate or self.scale)

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Restart the random stream at (seed, epoch, rank): a resumed run draws what it would
        have, and each DDP rank draws its own."""
        self.epoch, self.rank, self._generator = epoch, rank, None

    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            seed = stream_seed(self.seed, AUGMENTATION, self.epoch, self.rank)
            self._generator = torch.Generator(device=device).manual_seed(seed)
            self._offsets = torch.Generator().manual_seed(seed)
            self._bank = None
        return self._generator

    def _noise(self, shape, dtype, device, gen) -> torch.Tensor:
        numel = math.prod(shape)
        if self._bank is None or numel > self._bank.numel():
            self._bank = _normal_bank(max(self.NOISE_BANK, 2 * numel), dtype, device, gen)
        # the offset comes from a CPU generator: reading it never waits for the GPU
        start = int(torch.randint(0, self._bank.numel() - numel + 1, (1,),
                                  generator=self._offsets))
        return self._bank[start: start + numel].view(shape)

    def _grid(self, theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """affine_grid(theta, align_corners=False), written out: each coordinate is
        (a * x + b * y) + c, the products a row or a column long and one full-size sum, written
        into the grid in place (2.5x faster than affine_grid on the CPU). Terms the settings
        make exact are left out, which changes no value grid_sample reads: without
        translation c is +-0 (adding it can change only a zero's sign); without rotation or
        zoom the x coordinate's a is 1 and the y coordinate is 0 * x + 1 * y = y, so a shear
        alone costs one sum (5x faster than affine_grid)."""
        key = (height, width, theta.device, theta.dtype)
        if key not in self._grids:
            ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
            xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
            self._grids[key] = ys.view(height, 1), xs.view(1, width)
        y, x = self._grids[key]
        t = theta.view(-1, 6, 1, 1)
        grid = torch.empty(len(theta), height, width, 2, device=theta.device, dtype=theta.dtype)
        if not (self.rotate_degrees or self.scale):
            torch.add(x, t[:, 1] * y, out=grid[..., 0])
            grid[..., 1] = y
        else:
            for k in (0, 1):
                torch.add(t[:, 3 * k] * x, t[:, 3 * k + 1] * y, out=grid[..., k])
        if self.translate:
            grid.add_(theta[:, :, 2].view(-1, 1, 1, 2))
        return grid

    def _uniform(self, n: int, bound: float, device, gen) -> torch.Tensor:
        return (torch.rand(n, device=device, generator=gen) * 2 - 1) * bound

    def affine_matrices(self, n: int, device, gen) -> torch.Tensor:
        """(n, 2, 3) matrices mapping output to input coordinates (affine_grid's convention)."""
        shear = torch.tan(self._uniform(n, math.radians(self.skew_degrees), device, gen))
        angle = self._uniform(n, math.radians(self.rotate_degrees), device, gen)
        zoom = 1 + self._uniform(n, self.scale, device, gen)
        shift = self._uniform(2 * n, 2 * self.translate, device, gen).view(n, 2)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # rotation @ shear, divided by the zoom (sampling coordinates shrink when zooming in)
        theta = torch.stack([
            torch.stack([cos, cos * shear - sin, shift[:, 0]], dim=1),
            torch.stack([sin, sin * shear + cos, shift[:, 1]], dim=1),
        ], dim=1)
        theta[:, :, :2] /= zoom.view(n, 1, 1)
        return theta

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return x
        gen = self._gen(x.device)
        if self.has_affine:
            theta = self.affine_matrices(len(x), x.device, gen).to(x.dtype)
            grid = self._grid(theta, x.shape[-2], x.shape[-1])
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.noise_std:
            noise = self._noise(x.shape, x.dtype, x.device, gen)
            x = torch.add(x, noise, alpha=self.noise_std).clamp_(0.0, 1.0)
        return x

    def __repr__(self) -> str:
        return (f"Augment(noise_std={self.noise_std}, skew_degrees={self.skew_degrees}, "
                f"rotate_degrees={self.rotate_degrees}, translate={self.translate}, "
                f"scale={self.scale}, seed={self.seed})")
