"""Shapeset-3x2 (Glorot & Bengio 2010), generated in batches with torch on any device.

The definition is that of the original generator (Glorot's Shapeset, ``polygongen.py`` with
the parameters of ``simpleexemple.py``); the code is our own, vectorised over a batch:

- 32 x 32 grey images holding 1 or 2 shapes (even chance), each a triangle, a parallelogram
  or an "ellipse" (a 20-vertex polygon), drawn uniformly;
- a shape is the regular polygon on a circle of diameter 1 with a horizontal base, rotated by
  a small angle ``rot1`` (within its symmetry), stretched by ``s = (s0, s1)``, ``s0 >= s1``,
  each U(0.2, 0.8) x 32, rotated back so the base is horizontal again, then rotated by any
  of 255 angles and translated uniformly so every vertex stays 1 px inside the image;
- a second shape is redrawn (new scale and position, same rotations) while the generator's
  overlap estimate exceeds 0.5 of the first shape's area; after 50 rejected draws it is
  dropped and the image keeps one shape;
- integer grey levels /255: background in [0, 114], each shape in [140, 255], or, with even
  chance, the reverse (inverted);
- the label is the set of shapes up to order, 9 classes (``CLASSES``).

Images come back as uint8 grey levels (N, 32, 32), row = y, column = x (pygame's surfarray
stores the transpose, which leaves the distribution unchanged); pixel (r, c) is inside a
shape when the point (x=c, y=r) is, as pygame and PIL fill polygons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIZE = 32
N_VERTICES = (3, 4, 20)  # triangle, parallelogram, ellipse (drawn as a 20-gon)
SHAPE_NAMES = ("triangle", "parallelogram", "ellipse")
MAX_VERTICES = max(N_VERTICES)
ROT_RES = 255             # rotation_resolution: angles are k * 2 pi / 255
SCALE = (0.2, 0.8)        # of the image size, per axis
FG_LEVELS = (140, 255)    # int(0.55 * 255), int(1.0 * 255)
BG_LEVELS = (0, 114)      # int(0.0 * 255), int(0.45 * 255)
OVERLAP_MAX = 0.5
MAX_TRIES = 50            # rejectionmax: a second shape rejected 50 times is dropped
# simpleexemple.py's convertout: counts (triangles, parallelograms, ellipses) -> class
CLASSES = {(1, 0, 0): 0, (0, 1, 0): 1, (0, 0, 1): 2, (1, 1, 0): 3, (0, 1, 1): 4, (1, 0, 1): 5,
           (2, 0, 0): 6, (0, 2, 0): 7, (0, 0, 2): 8}
NUM_CLASSES = len(CLASSES)


def class_probabilities() -> list[float]:
    """The label distribution when no second shape is dropped: one shape (1/2) of each type
    (1/3), or an ordered pair (1/2) of two types (1/9 each ordering)."""
    p = [0.0] * NUM_CLASSES
    for a in range(3):
        p[CLASSES[tuple(int(k == a) for k in range(3))]] += 1 / 6
        for b in range(3):
            p[CLASSES[tuple(int(k == a) + int(k == b) for k in range(3))]] += 1 / 18
    return p


def _regular(n: int) -> torch.Tensor:
    """n vertices on the circle of radius 0.5, counter-clockwise, base edge horizontal."""
    t = torch.arange(n, dtype=torch.float64)
    angle = (t / n + 1 / (2 * n) + 0.25) * 2 * math.pi
    return 0.5 * torch.stack([angle.cos(), angle.sin()], dim=1)


def _template() -> torch.Tensor:
    """(3, MAX_VERTICES, 2): each type's vertices, the last one repeated up to 20, so shapes of
    every type fit one tensor (the rasteriser reads only a type's own vertices)."""
    rows = []
    for n in N_VERTICES:
        v = _regular(n)
        rows.append(torch.cat([v, v[-1:].expand(MAX_VERTICES - n, 2)]))
    return torch.stack(rows)


def _area_ratio(n: int) -> float:
    """Area of the regular n-gon over that of its circumscribed circle."""
    return n * math.sin(2 * math.pi / n) / (2 * math.pi)


@dataclass
class Scenes:
    """A batch and how it was drawn: per image and shape slot (2) the shape type (-1 where
    absent), vertices (padded to 20), translation (the overlap test floors the first one's, as
    the generator's int32 storage did), scales and grey levels."""

    images: torch.Tensor    # (N, 32, 32) uint8
    labels: torch.Tensor    # (N,) int64 in [0, 9)
    shape_id: torch.Tensor  # (N, 2) int64, -1: no shape
    points: torch.Tensor    # (N, 2, 20, 2) vertices, (x, y) pixels
    centre: torch.Tensor    # (N, 2, 2) translation
    scale: torch.Tensor     # (N, 2, 2) s0 >= s1, pixels
    fg: torch.Tensor        # (N, 2) grey levels
    bg: torch.Tensor        # (N,) grey level
    tries: torch.Tensor     # (N,) draws the second shape took (0 without one, 51: dropped)


class ShapeGenerator:
    """Draws Shapeset-3x2 batches from a torch generator on ``device`` (float32 geometry)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        dev, f32 = self.device, torch.float32
        self.template = _template().to(dev, f32)
        self.area_ratio = torch.tensor([_area_ratio(n) for n in N_VERTICES], device=dev)
        # rot1 as the generator draws it: randint(0, 255 // n), indices past half the range
        # wrapped to negative angles (a symmetric range about the base)
        self.rot1_count = torch.tensor([ROT_RES // n for n in N_VERTICES], device=dev)
        self.rot1_half = torch.tensor([(ROT_RES - 1) // (2 * n) for n in N_VERTICES], device=dev)
        self.rot1_wrap = torch.tensor([ROT_RES - (ROT_RES - 1) // n for n in N_VERTICES],
                                      device=dev)
        angles = torch.arange(ROT_RES, dtype=torch.float64) * (2 * math.pi / ROT_RES)
        self.cos, self.sin, self.tan = (f(angles).to(dev, f32) for f in (torch.cos, torch.sin,
                                                                          torch.tan))
        self.xs = torch.arange(SIZE, device=dev, dtype=f32)
        # row_masks[start * 33 + width]: a row with pixels [start, start + width) set
        start, width = torch.meshgrid(torch.arange(SIZE + 1), torch.arange(SIZE + 1),
                                      indexing="ij")
        cols = torch.arange(SIZE)
        inside = (cols >= start.reshape(-1, 1)) & (cols < (start + width).reshape(-1, 1))
        self.row_masks = (inside.to(torch.uint8) * 255).to(dev)

    def _uniform(self, shape, gen) -> torch.Tensor:
        return torch.rand(shape, device=self.device, generator=gen)

    def _randint(self, low, high, shape, gen) -> torch.Tensor:
        """Integers in [low, high) (tensor bounds allowed), like numpy's randint."""
        return (low + (self._uniform(shape, gen) * (high - low)).long().clamp(max=high - low - 1)
                if torch.is_tensor(high) else torch.randint(low, high, shape, device=self.device,
                                                            generator=gen))

    def _place(self, kind, k1, k3, gen):
        """Draw scale and translation for shapes of known type and rotation indices (the part
        a rejection redraws); return vertices (M, 20, 2), translation and scale (M, 2)."""
        m = len(kind)
        s = self._uniform((m, 2), gen) * (SCALE[1] - SCALE[0]) + SCALE[0]
        s = s.sort(dim=1, descending=True).values * SIZE  # s0 >= s1 keeps the base horizontal
        # rot2 = -atan(u) undoes rot1 exactly after the stretch: the base is horizontal again
        u = s[:, 1] / s[:, 0] * self.tan[k1]
        c2 = torch.rsqrt(1 + u * u)
        s2 = -u * c2
        c3, s3 = self.cos[k3], self.sin[k3]
        c23, s23 = c2 * c3 - s2 * s3, s2 * c3 + c2 * s3
        # vertices @ R(rot1) diag(s) R(rot2 + rot3), row vectors as the generator has them
        m00, m01 = self.cos[k1] * s[:, 0], self.sin[k1] * s[:, 1]
        m10, m11 = -self.sin[k1] * s[:, 0], self.cos[k1] * s[:, 1]
        a = torch.stack([m00 * c23 - m01 * s23, m00 * s23 + m01 * c23,
                         m10 * c23 - m11 * s23, m10 * s23 + m11 * c23], 1).view(m, 2, 2)
        p = torch.bmm(self.template[kind], a)
        low = ((1 - p.amin(1)) / SIZE).clamp(min=0.0)
        high = (1 - (p.amax(1) + 1) / SIZE).clamp(max=1.0)
        t = (low + self._uniform((m, 2), gen) * (high - low)) * SIZE
        return p + t[:, None, :], t, s

    def _rejected(self, new, old) -> torch.Tensor:
        """The generator's overlap estimate: project both shapes on the line joining their
        centres; where the projections overlap, the overlap factor 1 - 2^(-(proj - d) / d)
        times the new shape's area over the old one's must not exceed OVERLAP_MAX."""
        (p, t, s, kind), (p0, c0, s0, kind0) = new, old
        v = t - c0
        d = v.norm(dim=1)
        proj = (torch.bmm(p0 - c0[:, None], v[:, :, None]).amax((1, 2))
                + torch.bmm(p - t[:, None], -v[:, :, None]).amax((1, 2))) / d
        factor = 1 - torch.exp2(-(proj - d) / d)
        areas = (s.prod(1) * self.area_ratio[kind]) / (s0.prod(1) * self.area_ratio[kind0])
        return (proj >= d) & (areas * factor > OVERLAP_MAX)

    def _rotations(self, kind, gen):
        """Rotation indices: rot1 = randint(0, 255 // n), the upper half wrapped to negative
        angles (a range symmetric about the base); rot3 = randint(0, 254), never 254."""
        k1 = self._randint(0, self.rot1_count[kind], kind.shape, gen)
        half, wrap = self.rot1_half[kind], self.rot1_wrap[kind]
        k1 = torch.where(k1 > half, (wrap + k1).clamp(max=ROT_RES - 1), k1)
        return k1, self._randint(0, ROT_RES - 1, kind.shape, gen)

    def scenes(self, n: int, gen: torch.Generator) -> Scenes:
        """``n`` images with everything drawn about them."""
        dev = self.device
        light_shapes = self._uniform((n,), gen) < 0.5  # the "inversion": either way equally
        two = self._uniform((n,), gen) < 0.5
        shape_id = self._randint(0, 3, (n, 2), gen)
        fg_range = torch.where(light_shapes, FG_LEVELS[0], BG_LEVELS[0])[:, None], torch.where(
            light_shapes, FG_LEVELS[1], BG_LEVELS[1])[:, None].expand(n, 2)
        bg_range = torch.where(light_shapes, BG_LEVELS[0], FG_LEVELS[0]), torch.where(
            light_shapes, BG_LEVELS[1], FG_LEVELS[1])
        fg = fg_range[0] + self._randint(0, 1 + fg_range[1] - fg_range[0], (n, 2), gen)
        bg = bg_range[0] + self._randint(0, 1 + bg_range[1] - bg_range[0], (n,), gen)
        k1, k3 = self._rotations(shape_id, gen)
        p1, t1, s1 = self._place(shape_id[:, 0], k1[:, 0], k3[:, 0], gen)
        points = torch.zeros(n, 2, MAX_VERTICES, 2, device=dev)
        centre, scale = torch.zeros(n, 2, 2, device=dev), torch.zeros(n, 2, 2, device=dev)
        points[:, 0], centre[:, 0], scale[:, 0] = p1, t1, s1
        # the generator stores centres as int32: the overlap test sees the first one truncated
        old = (p1, t1.floor(), s1, shape_id[:, 0])
        tries = torch.zeros(n, dtype=torch.long, device=dev)
        pending, done, block = two.nonzero().squeeze(1), 0, 1
        # Redraws come in blocks (1, 2, 4, ... per image still pending) and the first accepted
        # draw of a block is kept: the same law as one draw at a time, in fewer, larger steps.
        while len(pending) and done < MAX_TRIES:
            block = min(block, MAX_TRIES - done)
            idx = pending.repeat_interleave(block)
            kind = shape_id[idx, 1]
            p, t, s = self._place(kind, k1[idx, 1], k3[idx, 1], gen)
            ok = ~self._rejected((p, t, s, kind), tuple(x[idx] for x in old)).view(-1, block)
            accepted = ok.any(1)
            first = ok.to(torch.uint8).argmax(1)  # the first accepted draw of each block
            pick = (torch.arange(len(pending), device=dev) * block + first)[accepted]
            won = pending[accepted]
            points[won, 1], centre[won, 1], scale[won, 1] = p[pick], t[pick], s[pick]
            tries[won] = done + 1 + first[accepted]
            pending, done, block = pending[~accepted], done + block, block * 2
        tries[pending] = MAX_TRIES + 1
        shape_id[:, 1] = torch.where(two & (tries <= MAX_TRIES), shape_id[:, 1], -1)
        fg = torch.where(shape_id >= 0, fg, 0)
        images = self.rasterize(points, shape_id, fg, bg)
        return Scenes(images, labels_of(shape_id), shape_id, points, centre, scale, fg, bg, tries)

    def _side(self, base, slope, mask, fill, reduce) -> torch.Tensor:
        """reduce over the edges in ``mask`` of base + slope * y, for every row y. Those edges
        are gathered first (at most ``k`` a shape), so a 20-gon costs ~10 edges, not 20."""
        k = int(mask.sum(1).max())
        order = mask.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :k]
        b = torch.where(mask, base, fill).gather(1, order)
        s = torch.where(mask, slope, 0.0).gather(1, order)
        return reduce(torch.addcmul(b[..., None], s[..., None], self.xs), 1)

    def spans(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last column (float, integral; first > last: none) of convex counter-
        clockwise polygons ``v`` (M, n, 2) on each of the 32 rows.

        On row y a polygon spans from the largest bound its left edges set to the smallest its
        right edges set, within its vertices' y range; a right edge rises (ey > 0), and
        inside it means x <= x0 + (y - y0) ex / ey."""
        e = v.roll(-1, dims=1) - v
        ex, ey = e.unbind(-1)
        slope = ex / ey  # inf/nan on flat edges: masked out, the y range stands for them
        base = torch.addcmul(v[..., 0], v[..., 1], -slope)
        inf = float("inf")
        lo = self._side(base, slope, ey < 0, -inf, torch.amax).ceil()
        hi = self._side(base, slope, ey > 0, inf, torch.amin).floor()
        y, rows = v[..., 1], self.xs
        out = (rows < y.amin(1, keepdim=True)) | (rows > y.amax(1, keepdim=True))
        return torch.where(out, SIZE, lo), torch.where(out, -1.0, hi)

    def rasterize(self, points, shape_id, fg, bg) -> torch.Tensor:
        """uint8 images (N, 32, 32): the background, then each shape (``shape_id`` >= 0)
        filled in its grey level, the second over the first; shapes of one type go through
        ``spans`` together, with their own vertex count."""
        n, slots = shape_id.shape
        flat_id, flat_points = shape_id.flatten(), points.flatten(0, 1)
        lo = torch.zeros(n * slots, SIZE, device=points.device)
        hi = torch.full((n * slots, SIZE), -1.0, device=points.device)
        for kind, count in enumerate(N_VERTICES):
            idx = (flat_id == kind).nonzero().squeeze(1)
            if len(idx):
                lo[idx], hi[idx] = self.spans(flat_points[idx, :count])
        # each row's mask is a row of the table of all (start, width) masks: a copy, no compare
        lo, hi = lo.clamp(0, SIZE), hi.clamp(max=SIZE - 1)
        key = lo.long() * (SIZE + 1) + (hi - lo + 1).clamp(0, SIZE).long()
        m1, m2 = self.row_masks.index_select(0, key.view(-1)).view(n, slots, -1).unbind(1)
        # masks are 0 or 255: a blend by bitwise select, b ^ ((b ^ f) & m), vectorised in uint8
        bg = bg.to(torch.uint8)[:, None]
        fg = fg.to(torch.uint8)
        img = bg ^ ((bg ^ fg[:, :1]) & m1)
        img = img ^ ((img ^ fg[:, 1:]) & m2)
        return img.view(n, SIZE, SIZE)

    def __call__(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (n, 32, 32) uint8, labels (n,) int64)."""
        scenes = self.scenes(n, gen)
        return scenes.images, scenes.labels


def labels_of(shape_id: torch.Tensor) -> torch.Tensor:
    """Class of each image from its shape types (-1: absent), by simpleexemple's mapping."""
    counts = torch.stack([(shape_id == k).sum(1) for k in range(3)], dim=1)
    lookup = torch.full((3, 3, 3), -1, dtype=torch.long, device=shape_id.device)
    for (a, b, c), label in CLASSES.items():
        lookup[a, b, c] = label
    return lookup[counts[:, 0], counts[:, 1], counts[:, 2]]
