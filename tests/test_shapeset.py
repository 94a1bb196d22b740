"""Shapeset-3x2: the rasteriser against independent ones, the generator's rules on every image
of a large batch, the class distribution, determinism, the data module and a short training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from initlab.data import ShapesetDataModule
from initlab.data.shapes import MAX_VERTICES, ShapeGenerator
from initlab.data.shapeset import Stream, generate
from initlab.train import ConfigError, build, run
from tests.helpers import read_events, read_scalars

GEN = ShapeGenerator()
# The generator's definition (simpleexemple.py, polygongen.py), written out independently.
VERTICES = {0: 3, 1: 4, 2: 20}
CLASS_OF = {(0,): 0, (1,): 1, (2,): 2, (0, 1): 3, (1, 2): 4, (0, 2): 5, (0, 0): 6, (1, 1): 7,
            (2, 2): 8}


@pytest.fixture(scope="module")
def scenes():
    return GEN.scenes(20_000, torch.Generator().manual_seed(3))


def raster_one(vertices: np.ndarray) -> np.ndarray:
    """initlab's mask of one polygon (level 255 on 0)."""
    v = torch.tensor(vertices, dtype=torch.float32)
    padded = torch.cat([v, v[-1:].expand(MAX_VERTICES - len(v), 2)])
    points = torch.zeros(1, 2, MAX_VERTICES, 2)
    points[0, 0] = padded
    kind = {3: 0, 4: 1, 20: 2}[len(v)]
    img = GEN.rasterize(points, torch.tensor([[kind, -1]]), torch.tensor([[255, 0]]),
                        torch.tensor([0]))
    return img[0].numpy() == 255


def point_in_polygon(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact crossing-number test (float64) at every pixel point (x=c, y=r), and each point's
    distance to the polygon's boundary."""
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float64)
    inside = np.zeros((32, 32), bool)
    dist = np.full((32, 32), np.inf)
    n = len(vertices)
    for i in range(n):
        (x0, y0), (x1, y1) = vertices[i], vertices[(i + 1) % n]
        spans = (y0 > ys) != (y1 > ys)  # never true on a horizontal edge
        with np.errstate(divide="ignore", invalid="ignore"):
            inside ^= spans & (xs < x0 + (ys - y0) * (x1 - x0) / (y1 - y0))
        ex, ey = x1 - x0, y1 - y0
        t = np.clip(((xs - x0) * ex + (ys - y0) * ey) / max(ex * ex + ey * ey, 1e-300), 0, 1)
        dist = np.minimum(dist, np.hypot(xs - x0 - t * ex, ys - y0 - t * ey))
    return inside, dist


def pil_mask(vertices: np.ndarray, zoom: int = 8) -> np.ndarray:
    """PIL's ImageDraw.polygon at ``zoom`` x the resolution, read at the pixel points: PIL
    snaps vertices to its pixel grid, an error of 1/zoom px here."""
    img = Image.new("L", (32 * zoom, 32 * zoom), 0)
    ImageDraw.Draw(img).polygon([tuple(map(float, p * zoom)) for p in vertices], fill=255)
    return np.asarray(img)[::zoom, ::zoom] == 255


def test_axis_aligned_rectangle_covers_exactly_the_pixels_inside():
    # a parallelogram with x in [4.5, 20.5] and y in [8.2, 15.9]: columns 5..20, rows 9..15
    rect = np.array([[4.5, 8.2], [20.5, 8.2], [20.5, 15.9], [4.5, 15.9]])
    expected = np.zeros((32, 32), bool)
    expected[9:16, 5:21] = True
    assert (raster_one(rect) == expected).all()


def test_generated_shapes_match_independent_rasterisers(scenes):
    """Every shape of 600 generated images, drawn alone: exactly the exact point-in-polygon
    mask except at points within 1e-3 px of an edge (float32 rounding), and PIL's
    ImageDraw.polygon (8x finer) except at edge pixels (within 1/4 px of the boundary)."""
    checked = pil_edge = area = 0
    for i in range(600):
        for slot in range(2):
            kind = int(scenes.shape_id[i, slot])
            if kind < 0:
                continue
            v = scenes.points[i, slot, :VERTICES[kind]].double().numpy()
            mine = raster_one(v)
            exact, dist = point_in_polygon(v)
            assert not ((mine != exact) & (dist > 1e-3)).any(), (i, slot)
            pil_diff = mine != pil_mask(v)
            assert not (pil_diff & (dist > 0.25)).any(), (i, slot)
            checked, area = checked + 1, area + int(exact.sum())
            pil_edge += int(pil_diff.sum())
    assert checked > 800
    assert pil_edge / area < 0.05  # PIL counts some boundary pixels in that we leave out


def test_shapes_follow_the_generator_geometry(scenes):
    """Per shape: the area (shoelace) is s0 * s1 times the regular n-gon's on a unit-diameter
    circle; scales in [0.2, 0.8] x 32 with s0 >= s1; parallelograms have parallel opposite
    sides; every vertex stays 1 px inside the image; vertices counter-clockwise."""
    for kind, n in VERTICES.items():
        sel = scenes.shape_id == kind
        v = scenes.points[sel][:, :n].double()
        s = scenes.scale[sel].double()
        x, y = v[..., 0], v[..., 1]
        area = 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1)
        regular = n / 8 * math.sin(2 * math.pi / n)
        assert torch.allclose(area, s[:, 0] * s[:, 1] * regular, rtol=1e-4)
        assert (s[:, 0] >= s[:, 1]).all() and s.min() >= 0.2 * 32 - 1e-4 and s.max() <= 0.8 * 32 + 1e-4
        assert v.min() >= 1 - 1e-4 and v.max() <= 31 + 1e-4
        if n == 4:
            assert torch.allclose(v[:, 1] - v[:, 0], v[:, 2] - v[:, 3], atol=1e-3)


def test_overlap_rule_and_grey_levels_hold_on_every_image(scenes):
    sid = scenes.shape_id.numpy()
    pts = scenes.points.double().numpy()
    centre, scale = scenes.centre.double().numpy(), scenes.scale.double().numpy()
    area_ratio = {k: n * math.sin(2 * math.pi / n) / (2 * math.pi) for k, n in VERTICES.items()}
    two = np.nonzero(sid[:, 1] >= 0)[0]
    assert 0.48 < len(two) / len(sid) < 0.52
    for i in two:
        c0 = np.floor(centre[i, 0])  # the generator keeps the first centre as an int32
        t = centre[i, 1]
        vec = t - c0
        d = np.hypot(*vec)
        proj = (((pts[i, 0, :VERTICES[sid[i, 0]]] - c0) @ vec).max()
                + ((pts[i, 1, :VERTICES[sid[i, 1]]] - t) @ -vec).max()) / d
        if proj >= d:
            factor = 1 - math.exp(-(proj - d) / (d / math.log(2)))
            ratio = (np.prod(scale[i, 1]) * area_ratio[sid[i, 1]] * factor
                     / (np.prod(scale[i, 0]) * area_ratio[sid[i, 0]]))
            assert ratio <= 0.5 + 1e-4, i
    images, bg, fg = scenes.images.numpy(), scenes.bg.numpy(), scenes.fg.numpy()
    light = fg[:, 0] >= 140
    assert 0.48 < light.mean() < 0.52
    present = sid >= 0
    for levels, ok in ((fg[present & light[:, None]], (140, 255)), (bg[light], (0, 114)),
                       (fg[present & ~light[:, None]], (0, 114)), (bg[~light], (140, 255))):
        assert levels.min() == ok[0] and levels.max() == ok[1]
    for i in range(len(images)):
        allowed = {int(bg[i])} | {int(fg[i, k]) for k in range(2) if present[i, k]}
        assert set(np.unique(images[i]).tolist()) <= allowed, i
        assert images[i, 0, 0] == bg[i]  # vertices stay 1 px in: the corner is background
    assert (scenes.tries[two] >= 1).all()


def test_class_frequencies_over_100k_images():
    """Within 1% (absolute) of the generator's law: one shape or two (even chance), each type
    uniform, the class being the set of types; no second shape dropped in practice."""
    images, labels = generate(100_000, seed=11, split="train")
    expected = [1 / 6] * 3 + [1 / 9] * 3 + [1 / 18] * 3
    freq = torch.bincount(labels, minlength=9).double() / len(labels)
    assert len(freq) == 9
    assert (freq - torch.tensor(expected, dtype=torch.float64)).abs().max() < 0.01, freq.tolist()
    assert images.shape == (100_000, 32, 32) and images.dtype == torch.uint8


def test_labels_are_the_set_of_shapes(scenes):
    for i in range(2000):
        kinds = tuple(sorted(int(k) for k in scenes.shape_id[i] if k >= 0))
        assert int(scenes.labels[i]) == CLASS_OF[kinds]


def test_same_seed_same_images_and_the_stream_ignores_batch_size():
    a, la = generate(5000, 4, "train", chunk=1000)
    b, lb = generate(5000, 4, "train", chunk=1000)
    c, _ = generate(5000, 5, "train", chunk=1000)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    val, _ = generate(5000, 4, "val", chunk=1000)
    assert not torch.equal(a, val)
    streams = [torch.cat([x for x, _ in Stream(2500, bs, 1000, 4, torch.device("cpu"), lambda x: x)])
               for bs in (7, 64)]
    assert torch.equal(streams[0], streams[1])
    epoch, _ = generate(2500, 4, "train", chunk=1000)  # an epoch of the stream: these images
    assert torch.equal((streams[0] * 255).round().to(torch.uint8)[:, 0], epoch)


def test_data_module_splits_batches_and_monitor_sets():
    dm = ShapesetDataModule(batch_size=16, val_size=300, test_size=200, train_size=64,
                            chunk_size=50, seed=1, split_seed=2)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and y.max() < 9
    assert len(dm.train_dataloader()) == 4
    epochs = [torch.cat([b for b, _ in dm.train_dataloader()]) for _ in range(2)]
    assert torch.equal(epochs[0], epochs[1])  # no trainer: epoch 0 both times
    px, py = dm.probe_batch(100)
    assert px.shape == (100, 1, 32, 32) and torch.equal(py, dm.splits["val"][1][:100])
    sx, sy = dm.train_subset(30)
    assert torch.equal(sx, epochs[0][:30]) and len(sy) == 30
    other = ShapesetDataModule(val_size=2000, test_size=200, seed=9, split_seed=2)
    other.setup()
    assert torch.equal(other.splits["test"][0], dm.splits["test"][0])  # run seed: same sets
    assert not torch.equal(other.splits["test"][0], other.splits["val"][0][:200])
    longer = ShapesetDataModule(val_size=1000, test_size=10, split_seed=2)
    longer.setup()
    assert torch.equal(other.splits["val"][0][:1000], longer.splits["val"][0])  # nested sets
    offline = ShapesetDataModule(batch_size=8, online=False, train_size=40, val_size=10,
                                 test_size=10, normalize=False)
    offline.setup()
    assert offline.splits["train"][0].shape == (40, 32, 32)
    assert offline.train_subset(40)[0].min() >= 0


@pytest.mark.parametrize("key, value", [("online", "yes"), ("val_size", 0), ("chunk_size", 1.5),
                                        ("split_seed", -1), ("batch_size", 0)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"data.{key}="):
        ShapesetDataModule(**{key: value})


SHAPESET = "data=shapeset"


def test_models_take_shape_and_classes_from_the_data(make_cfg, tmp_path):
    _, module, _ = build(make_cfg(SHAPESET, "model=mlp"))
    assert module.model.fc1.in_features == 1024 and module.model.out.out_features == 9
    assert module.num_classes == 9
    _, module, _ = build(make_cfg(SHAPESET))
    assert module.model(torch.zeros(2, 1, 32, 32)).shape == (2, 9)
    with pytest.raises(ConfigError, match="model.in_features=784"):
        build(make_cfg(SHAPESET, "model=mlp", "+model.in_features=784"))


def test_training_with_augment_and_corrupted_tests_logs_the_grid(make_cfg, tmp_path):
    cfg = make_cfg(SHAPESET, "augment=noise_skew", "logger=tensorboard",
                       "robustness={noise: [0.2], skew: [20]}", outputs=True)
    run(cfg)
    events = read_events(tmp_path / "run")
    assert {"shapeset/examples", "augment/examples"} <= set(events.Tags()["images"])
    metrics = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]
    for tag in ("test/acc", "test_corrupt/noise_0.2/acc", "test_corrupt/skew_20/acc"):
        assert events.Scalars(tag)[-1].value == pytest.approx(metrics[tag]), tag


def test_a_small_tanh_mlp_learns_well_above_chance(make_cfg, tmp_path):
    """400 steps of a 2 x 256 tanh MLP (Adam, batch 50) on the real stream: well above chance
    (1/9) and above the most frequent class (1/6). Measured: 0.247 test accuracy, 2 s."""
    cfg = make_cfg(SHAPESET, "model=mlp", "model.depth=2", "model.width=256",
                       "model.activation=tanh", "optim=adam", "optim.lr=0.001", "scheduler=none",
                       "data.batch_size=50", "data.train_size=20000", "data.val_size=2000",
                       "data.test_size=2000", "trainer.max_steps=400", "trainer.max_epochs=null",
                       "robustness=null", "trainer.log_every_n_steps=50")
    acc = run(cfg)
    print(f"shapeset 2x256 tanh MLP, 400 steps: test accuracy {acc:.4f}")
    assert acc > 0.2


def test_stream_resumes_mid_epoch_and_draws_new_images_each_epoch():
    def stream(epoch=0, skip=0):
        return Stream(100, 16, 40, 3, torch.device("cpu"), lambda x: x, epoch=lambda: epoch,
                      resume_at=lambda: skip)

    full = [x for x, _ in stream()]
    resumed = [x for x, _ in stream(skip=3)]
    assert len(full) == 7 and len(resumed) == 4
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed))
    assert not torch.equal(torch.cat(full), torch.cat([x for x, _ in stream(epoch=1)]))


def test_monitors_run_on_shapeset(make_cfg, tmp_path):
    """The default and lesson monitors (probe statistics and Jacobians on probe_batch, gradient
    noise on train_subset) on a Shapeset MLP."""
    cfg = make_cfg(SHAPESET, "model=mlp", "callbacks=lesson", "robustness=null",
                       "callbacks.probe.jacobian_samples=2", "callbacks.probe.num_examples=50",
                       "+callbacks.noise._target_=initlab.monitors.GradientNoiseMonitor",
                       "+callbacks.noise.num_examples=64", "+callbacks.noise.every_n_examples=32",
                       outputs=True)
    run(cfg)
    stats = json.loads((tmp_path / "run" / "init_stats.json").read_text())["layers"]
    assert stats["fc1"]["fan_in"] == 1024  # 32 x 32 pixels
    scalars = read_scalars(tmp_path / "run")
    for tag, key in (("jacobian/fc1/mean_sv", "jacobian_mean_sv"), ("activation/fc2/std",
                                                                     "activation_std")):
        step, value = scalars[tag][0]  # step 0's measurement is init_stats.json's
        layer = tag.split("/")[1]
        assert step == 0 and value == pytest.approx(stats[layer][key], rel=1e-6), tag
    cosines = [value for _, value in scalars["grad_noise/cosine"]]
    assert cosines and all(-1 <= c <= 1 for c in cosines)


@pytest.mark.gpu
def test_generation_on_cuda_follows_the_rules():
    images, labels = generate(20_000, seed=1, split="train", device="cuda")
    assert images.device.type == "cuda" and images.dtype == torch.uint8
    freq = torch.bincount(labels, minlength=9).double().cpu() / len(labels)
    expected = torch.tensor([1 / 6] * 3 + [1 / 9] * 3 + [1 / 18] * 3, dtype=torch.float64)
    assert (freq - expected).abs().max() < 0.015
    again, _ = generate(20_000, seed=1, split="train", device="cuda")
    assert torch.equal(images, again)
    corner = images[:, 0, 0].long()
    assert ((corner <= 114) | (corner >= 140)).all()


def test_a_second_shape_rejected_50_times_is_dropped(monkeypatch):
    """With no overlap allowed, some second shapes exhaust their 50 draws: the image keeps its
    first shape alone, in that shape's class and grey levels."""
    import initlab.data.shapes as shapes

    monkeypatch.setattr(shapes, "OVERLAP_MAX", 0.0)
    sc = ShapeGenerator().scenes(4000, torch.Generator().manual_seed(0))
    dropped = (sc.tries > 50).nonzero().squeeze(1)
    assert len(dropped) > 20
    assert (sc.shape_id[dropped, 1] == -1).all()
    for i in dropped[:50].tolist():
        assert int(sc.labels[i]) == CLASS_OF[(int(sc.shape_id[i, 0]),)]
        assert set(sc.images[i].unique().tolist()) <= {int(sc.bg[i]), int(sc.fg[i, 0])}
    kept = (sc.tries >= 1) & (sc.tries <= 50)
    assert kept.any() and (sc.shape_id[kept, 1] >= 0).all()
