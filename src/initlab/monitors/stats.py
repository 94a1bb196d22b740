"""Per-layer statistics of Glorot & Bengio (2010) on a fixed probe batch.

Pure functions over a model that satisfies the model contract
(:class:`initlab.models.contract.MonitoredModel`).
Everything stays a tensor on the model's device; callers move numbers to the host. Nothing
here draws from the global random generator (training is the same with monitors on or off).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from initlab.init import fans
from initlab.utils import draw_kept_by_state, weight_layers

SATURATION = 0.97  # tanh/softsign |a| > 0.97; sigmoid a < 0.03 or a > 0.97; elu a < -0.97
# p98 from all values up to this many, else from a seeded uniform sample of this size: its
# error is ~0.25% (1 sd) on the default CNN's conv1 (4M values at 300 examples), whose full
# sort would cost more than the rest of the probe on a CPU.
QUANTILE_SAMPLE = 1 << 19
HISTOGRAM_BINS = 64
JACOBIAN_METHODS = ("auto", "exact", "slq")
_BATCHNORM = nn.modules.batchnorm._BatchNorm


def saturated_fraction(a: torch.Tensor, activation: str) -> torch.Tensor:
    """Fraction of saturated (or dead) units among the finite values of ``a``.

    tanh/softsign: |a| > 0.97; sigmoid: a < 0.03 or a > 0.97; elu: a < -0.97 (its slope
    e^s = a + 1 is below 0.03: the negative saturation); relu and leaky_relu: the fraction of
    units (channels for a conv) whose pre-activation is <= 0 at every position of every probe
    example (dead for ReLU; on leaky ReLU's 0.01 slope only); linear: 0 (never saturates).
    """
    if activation in ("relu", "leaky_relu"):
        # (everything else, channels or units): a view for channels-last activations
        per_position = a.movedim(1, -1).reshape(-1, a.shape[1])
        # dead: the largest value <= 0 (a NaN is the largest: not dead). Up to 64 rows side by
        # side first: the reduction over 1,536 columns took 0.8 ms, any() over 24 took 11 ms
        # (the CNN's conv1, 300 probe examples, 2-core CPU)
        rows, units = per_position.shape
        fold = math.gcd(rows, 64)
        peak = per_position.reshape(rows // fold, fold * units).amax(0).view(fold, units).amax(0)
        return (peak <= 0).float().mean()
    finite = torch.isfinite(a)
    if activation in ("tanh", "softsign"):
        hit = a.abs() > SATURATION
    elif activation == "sigmoid":
        hit = (a < 1 - SATURATION) | (a > SATURATION)
    elif activation == "elu":
        hit = a < -SATURATION
    else:
        return torch.zeros((), device=a.device)
    return (hit & finite).sum() / finite.sum().clamp_min(1)


def finite_quantile(t: torch.Tensor, q: float, generator: torch.Generator,
                    sample: int = QUANTILE_SAMPLE) -> torch.Tensor:
    """The q-quantile of the finite values of ``t`` (NaN if none): over all values when there
    are at most ``sample``, else over ``sample`` values drawn uniformly (with replacement) by
    ``generator``. No host sync on an accelerator; on the CPU the same number as
    ``torch.nanquantile`` from a partial selection instead of a full sort (8x faster)."""
    flat = t.detach().flatten().float()
    if flat.numel() > sample:
        flat = flat[_sample_indices(flat.numel(), sample, generator, flat.device)]
    if flat.device.type != "cpu":
        return torch.nanquantile(torch.where(torch.isfinite(flat), flat, torch.nan), q)
    return _quantile_by_selection(flat, q)


# (numel, sample, device, generator state) -> (the draw's indices sorted, generator state after)
_SAMPLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_SAMPLES_KEPT = 8  # draws: 4 MiB each at the default sample size


def _sample_indices(numel: int, sample: int, generator: torch.Generator,
                    device: torch.device) -> torch.Tensor:
    """``torch.randint(numel, (sample,), generator=generator)``, sorted, leaving ``generator``
    as the draw leaves it. A quantile does not depend on the order of the values: sorted, the
    gather reads memory in order (1.2 ms against 7.6 ms for 2^19 of conv1's 4M values on the
    2-core CPU). Kept by the generator's state: every probe reseeds it, so every probe of a
    layer draws the same indices, and only the first one pays the draw and the sort."""
    return draw_kept_by_state(
        _SAMPLES, _SAMPLES_KEPT, (numel, sample, str(device)), generator,
        lambda: torch.randint(numel, (sample,), device=device, generator=generator).sort().values)


def _quantile_by_selection(flat: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.nanquantile`` of the finite values of ``flat`` (float32), by ``topk``."""
    finite = torch.isfinite(flat)
    if not bool(finite.all()):  # selecting the finite ones costs more than the check
        flat = flat[finite]
    if flat.numel() == 0:
        return torch.tensor(torch.nan)
    # torch.nanquantile's linear interpolation, bit for bit: rank = float32(q) * (n - 1) in
    # float64, the weight rank - floor(rank) in the values' dtype
    rank = float(torch.tensor(q, dtype=torch.float32)) * (flat.numel() - 1)
    below = math.floor(rank)
    top = flat.topk(flat.numel() - below).values  # descending: ends with ranks below+1, below
    value_below = top[-1]
    value_above = top[-2] if len(top) > 1 else value_below
    return torch.lerp(value_below, value_above, torch.tensor(rank - below, dtype=flat.dtype))


def histogram(t: torch.Tensor, bins: int = HISTOGRAM_BINS) -> torch.Tensor:
    """Histogram of every finite value of ``t`` on ``bins`` uniform bins from its min to its max,
    on the device, as one float64 vector: [min, max, count, sum, sum of squares, bin counts...].
    Non-finite values are not counted; with none finite, count is 0. Bins as ``np.histogram``
    draws them: [edge_i, edge_i+1), the last one closed."""
    flat = t.detach().flatten()
    return _histogram_on_host(flat, bins) if flat.device.type == "cpu" else _histogram_on_device(
        flat, bins)


def _histogram_on_device(flat: torch.Tensor, bins: int) -> torch.Tensor:
    """:func:`histogram` without a host read (an accelerator would sync); a value within
    rounding of a bin edge may land in the neighbouring bin."""
    finite = torch.isfinite(flat)
    lo = torch.where(finite, flat, torch.inf).min().double()
    hi = torch.where(finite, flat, -torch.inf).max().double()
    span = torch.where(hi > lo, hi - lo, 1.0)
    index = ((flat.double() - lo) / span * bins).floor().clamp(0, bins - 1)
    index = torch.where(finite, index, bins).long()  # non-finite go to a dropped extra bin
    counts = torch.zeros(bins + 1, dtype=torch.float64, device=flat.device)
    counts.index_add_(0, index, torch.ones((), dtype=torch.float64, device=flat.device)
                      .expand(index.numel()))
    values = torch.where(finite, flat, 0).double()
    return torch.cat([torch.stack([lo, hi, finite.sum().double(), values.sum(),
                                   values.pow(2).sum()]), counts[:bins]])


def _histogram_on_host(flat: torch.Tensor, bins: int) -> torch.Tensor:
    """:func:`histogram` in one pass: on the CPU a host read costs nothing. ``torch.histc``
    (a bin by interpolation) where :func:`_interpolation_bins_as_edges` proves it bins every
    value as the edges do, else ``torch.histogram`` (np.histogram's edge search), 3x slower on
    the probe's 4M-value histograms (48 ms against 16 ms, 2-core CPU)."""
    lo, hi = (float(v) for v in torch.aminmax(flat))  # NaN or inf among them: not all finite
    if not (math.isfinite(lo) and math.isfinite(hi)):
        flat = flat[torch.isfinite(flat)]
        if flat.numel() == 0:
            empty = [math.inf, -math.inf, 0.0, 0.0, 0.0] + [0.0] * bins
            return torch.tensor(empty, dtype=torch.float64)
        lo, hi = (float(v) for v in torch.aminmax(flat))
    values = flat.double()
    if hi > lo and flat.dtype in _SINGLE_OR_NARROWER and _interpolation_bins_as_edges(lo, hi, bins):
        counts = torch.histc(values, bins, lo, hi)
    elif hi > lo:
        counts = torch.histogram(values, bins, range=(lo, hi)).hist
    else:  # one value: all in the first bin
        counts = torch.zeros(bins, dtype=torch.float64)
        counts[0] = values.numel()
    head = torch.tensor([lo, hi, values.numel(), float(values.sum()), float(values.dot(values))],
                        dtype=torch.float64)
    return torch.cat([head, counts])


_SINGLE_OR_NARROWER = (torch.float32, torch.bfloat16, torch.float16)


def _interpolation_bins_as_edges(lo: float, hi: float, bins: int) -> bool:
    """Whether ``torch.histc``'s bin of every float32 value x in [lo, hi] (lo, hi float32),
    int((x - lo) * bins / (hi - lo)) in float64, is the bin of the edges
    ``torch.linspace(lo, hi, bins + 1)`` that ``torch.histogram`` searches. Both round by a few
    float64 units of |lo| + |hi|, so they can differ only for an x that close to an edge: the
    float32 values that close are checked one by one; where float32 is too dense for that (an
    edge within ~1e-8 of the range from 0), the answer is no."""
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64).numpy()
    band = 16 * np.finfo(np.float64).eps * (abs(lo) + abs(hi))
    near = edges[1:-1].astype(np.float32)
    up = np.nextafter(near, np.float32(np.inf))
    down = np.nextafter(near, np.float32(-np.inf))
    if ((up - near).astype(np.float64) <= band).any() or (
            (near - down).astype(np.float64) <= band).any():
        return False
    candidates = np.concatenate([near, up, down, np.nextafter(up, np.float32(np.inf)),
                                 np.nextafter(down, np.float32(-np.inf))]).astype(np.float64)
    candidates = candidates[(candidates >= lo) & (candidates <= hi)]
    interpolated = np.minimum(((candidates - lo) * bins / (hi - lo)).astype(np.int64), bins - 1)
    searched = np.minimum(np.searchsorted(edges, candidates, side="right") - 1, bins - 1)
    return bool((interpolated == searched).all())


@dataclass(frozen=True)
class JacobianConfig:
    """How the Jacobian singular values are measured (see :func:`jacobian_sv`)."""

    samples: int | None = 10  # probe examples (None: all)
    method: str = "auto"  # exact, slq, or auto: exact when m * n <= max_exact
    max_exact: int = 1_000_000  # entries of one example's Jacobian
    probes: int = 4  # slq: random vectors per example
    steps: int = 30  # slq: Lanczos steps per vector

    def __post_init__(self):
        if self.method not in JACOBIAN_METHODS:
            raise ValueError(f"jacobian_method={self.method!r} is invalid: allowed {JACOBIAN_METHODS}")
        for key, value, least, extra in (
                ("jacobian_samples", self.samples, 1, ", 0 (no Jacobians) or null (all examples)"),
                ("jacobian_max_exact", self.max_exact, 0, ""),
                ("jacobian_probes", self.probes, 2, " (the error bar needs two)"),
                ("jacobian_lanczos_steps", self.steps, 2, "")):
            if value is None and key == "jacobian_samples":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key}={value!r} is invalid: it must be an integer >= {least}{extra}")


@dataclass
class Probe:
    """What one probe pass measured: scalars per layer, and raw tensors for histograms."""

    scalars: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    backprop: dict[str, torch.Tensor] = field(default_factory=dict)
    weight_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    jacobian_method: dict[str, str] = field(default_factory=dict)  # layer -> exact or slq


@contextmanager
def probe_mode(model: nn.Module):
    """Eval mode (dropout off), except BatchNorm: it normalises with the probe batch's own
    statistics, as in training, without updating its running statistics."""
    was_training = {m: m.training for m in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, _BATCHNORM)]
    tracking = [m.track_running_stats for m in norms]
    model.eval()
    for m in norms:
        m.train()
        m.track_running_stats = False  # batch statistics, and the running ones stay untouched
    try:
        yield
    finally:
        for m, track in zip(norms, tracking):
            m.track_running_stats = track
        for m, mode in was_training.items():
            m.training = mode


def _capture(model: nn.Module):
    """Forward hooks recording each hidden layer's pre-activation and activation, and the batch
    statistics each BatchNorm normalised with (as buffers for a functional call)."""
    record: dict[str, dict[str, torch.Tensor]] = {}
    batch_stats: dict[str, torch.Tensor] = {}
    handles = []
    for name, _, act in model.hidden_layers():
        entry = record.setdefault(name, {})
        handles.append(act.register_forward_hook(
            lambda m, inp, out, e=entry: e.update(pre=inp[0], act=out)))

    def norm_stats(name):
        def hook(m, inp):
            x = inp[0].detach()
            dims = [d for d in range(x.dim()) if d != 1]
            batch_stats[f"{name}.running_mean"] = x.mean(dims)
            batch_stats[f"{name}.running_var"] = x.var(dims, unbiased=False)
        return hook

    for name, m in model.named_modules():
        if isinstance(m, _BATCHNORM) and m.running_mean is not None:
            handles.append(m.register_forward_pre_hook(norm_stats(name)))
    return record, batch_stats, handles


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, activation: str,
          jacobian: JacobianConfig | None = None, seed: int = 0) -> Probe:
    """One forward/backward pass on the probe batch in :func:`probe_mode`, leaving ``.grad``
    and every buffer untouched; ``jacobian`` None skips the Jacobians. ``seed`` seeds the
    percentile sample and the Lanczos probe vectors."""
    result = Probe()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with probe_mode(model):
        with torch.enable_grad():
            record, batch_stats, handles = _capture(model)
            try:
                loss = F.cross_entropy(model(x), y)
            finally:
                for h in handles:
                    h.remove()
            layers = weight_layers(model)
            names = list(record)
            pre = [record[n]["pre"] for n in names]
            weights = [m.weight for m in layers.values()]
            grads = torch.autograd.grad(loss, pre + weights)
        for name, g in zip(layers, grads[len(pre):]):
            w = layers[name].weight.detach()
            fan_in, fan_out = fans(w)
            var = w.var()
            result.weight_grads[name] = g
            result.scalars[name] = {
                "weight_grad_std": g.std(), "weight_var": var,
                "fan_in_var": fan_in * var, "fan_out_var": fan_out * var,
            }
        for name, s, g in zip(names, pre, grads[: len(pre)]):
            a = record[name]["act"].detach()
            result.activations[name], result.backprop[name] = a, g
            result.scalars[name].update({
                "activation_mean": a.mean(), "activation_std": a.std(),
                "activation_p98": finite_quantile(a, 0.98, generator),
                "activation_saturated": saturated_fraction(a, activation),
                "preactivation_std": s.detach().std(),
                "backprop_std": g.std(),
            })
        if jacobian is not None:
            n = jacobian.samples
            inputs = [x[:n]] + [record[name]["act"].detach()[:n] for name in names[:-1]]
            for k, name in enumerate(names):
                stats, method = jacobian_sv(model, x[:n], k, inputs[k], jacobian, generator,
                                            batch_stats)
                result.scalars[name].update(stats)
                result.jacobian_method[name] = method
    return result


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the block's output exists."""


def block_function(model: nn.Module, x: torch.Tensor, k: int,
                   buffers: dict[str, torch.Tensor] | None = None) -> Callable:
    """z_{k-1} -> z_k (z_0 = the input, z_k = hidden layer k's activation) through the model's
    own forward, whatever sits in between (pooling, normalisation, reshaping): the forward runs
    on ``x`` with activation k-1's output replaced by the argument, and stops at activation k.
    ``buffers`` override module buffers (BatchNorm's running statistics), so that examples stay
    independent. The model should be in eval mode."""
    hidden = model.hidden_layers()
    source = hidden[k - 1][2] if k > 0 else None
    target = hidden[k][2]

    def block(z: torch.Tensor) -> torch.Tensor:
        seen = {}

        def stop(module, inp, out):
            seen["z"] = out
            raise _Stop

        handles = [target.register_forward_hook(stop)]
        if source is not None:
            handles.append(source.register_forward_hook(lambda module, inp, out: z))
        try:
            torch.func.functional_call(model, buffers or {}, (z if source is None else x,))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return seen["z"]

    return block


def jacobian_sv(model: nn.Module, x: torch.Tensor, k: int, z: torch.Tensor,
                config: JacobianConfig, generator: torch.Generator,
                batch_stats: dict[str, torch.Tensor] | None = None,
                ) -> tuple[dict[str, torch.Tensor], str]:
    """Mean and RMS singular value of J_k = dz_k/dz_{k-1} at each example of ``x`` (``z`` =
    z_{k-1} there), pooled over the examples: ``jacobian_mean_sv`` (the paper's statistic),
    ``jacobian_rms_sv`` = sqrt(||J||_F^2 / min(m, n)) and, when estimated,
    ``jacobian_mean_sv_stderr``. Returns them and the method used ("exact" or "slq").

    exact: J of each example built from min(m, n) vector-Jacobian (or Jacobian-vector)
    products, singular values from its Gram matrix. slq: stochastic Lanczos quadrature
    (Ubaru, Chen & Saad 2017) of tr((J^T J)^(1/2)) / min(m, n), on the smaller side of J, from
    ``config.probes`` Rademacher vectors per example and ``config.steps`` Lanczos steps, each
    step one J and one J^T product; the error bar is the standard error over the probe vectors
    (the quadrature's own error is not in it). ``method="auto"``: exact when J has at most
    ``config.max_exact`` entries. BatchNorm uses the probe batch's statistics, held fixed.
    """
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            z = z.detach()
            m = block_function(model, x[:1], k, batch_stats)(z[:1])[0].numel()
            n = z[0].numel()
            method = config.method
            if method == "auto":
                method = "exact" if m * n <= config.max_exact else "slq"
            if method == "exact":
                return _exact_sv(*_linearize(model, x, k, z, batch_stats)), method
            # one row per (probe vector, example): plain batched products beat vmap over probes
            x, z = torch.cat([x] * config.probes), torch.cat([z] * config.probes)
            return _slq_sv(*_linearize(model, x, k, z, batch_stats), config, generator), method
    finally:
        for module, mode in was_training.items():
            module.training = mode


def _linearize(model, x, k, z, batch_stats):
    """(z, z_k, v -> J v, u -> J^T u) at each example (row) of ``z``."""
    out, vjp_fn = torch.func.vjp(block_function(model, x, k, batch_stats), z)

    def jt(u):
        return vjp_fn(u)[0]

    _, vjp_jt = torch.func.vjp(jt, torch.zeros_like(out))  # jt is linear: its VJP is J

    def j(v):
        return vjp_jt(v)[0]

    return z, out, j, jt


def _exact_sv(z, out, j, jt) -> dict[str, torch.Tensor]:
    """Each example's J from min(m, n) products with basis vectors; its singular values are the
    square roots of the eigenvalues of the smaller Gram matrix, solved in float64 (as fast as
    ``svdvals`` when J is square, ~7x faster when wide; float32 ``eigvalsh`` can return NaN on
    the zero rows of dead ReLU units)."""
    rows, op = (out, jt) if out[0].numel() <= z[0].numel() else (z, j)
    d, b, other = rows[0].numel(), len(z), (z if rows is out else out)[0].numel()
    basis = torch.eye(d, dtype=z.dtype, device=z.device).reshape(d, 1, *rows.shape[1:])
    chunk = max(1, (1 << 25) // (b * other))  # bound the memory (128 MiB a chunk)
    jac = torch.func.vmap(op, chunk_size=chunk)(basis.expand(d, *rows.shape))
    jac = jac.reshape(d, b, other).transpose(0, 1)  # (examples, d, other side)
    gram = (jac @ jac.transpose(1, 2)).double()
    finite = torch.isfinite(gram).flatten(1).all(1)
    # non-finite weights of a diverging run: the eigensolver cannot converge, report NaN
    eig = torch.linalg.eigvalsh(torch.where(finite[:, None, None], gram, 0))
    sv = torch.where(finite[:, None], eig.clamp_min(0).sqrt(), torch.nan)
    return {"jacobian_mean_sv": sv.mean().float(), "jacobian_rms_sv": sv.pow(2).mean().sqrt().float()}


def _slq_sv(z, out, j, jt, config: JacobianConfig, generator) -> dict[str, torch.Tensor]:
    """Rows of ``z`` are (probe vector, example) pairs, probe-major."""
    if z[0].numel() <= out[0].numel():
        like, matvec = z, (lambda v: jt(j(v)))  # J^T J
    else:
        like, matvec = out, (lambda u: j(jt(u)))  # J J^T
    p = config.probes
    b, d = len(z) // p, like[0].numel()
    steps = min(config.steps, d)
    signs = torch.randint(0, 2, (p * b, d), device=z.device, generator=generator)
    q = (2 * signs - 1).to(z.dtype) / d**0.5  # unit Rademacher vectors
    # each row's Lanczos vectors contiguous: the reorthogonalisation reads them in order (3-6x
    # faster than steps-major on the 2-core CPU)
    basis = q.new_zeros(p * b, steps, d)
    alpha, beta = [], []
    for i in range(steps):
        basis[:, i] = q
        w = matvec(q.reshape(like.shape)).reshape(p * b, d)
        alpha.append((w * q).sum(-1))
        done = basis[:, : i + 1]
        w = w.unsqueeze(1)
        for _ in range(2):  # full reorthogonalisation, twice: float32 Lanczos loses it fast
            w = torch.baddbmm(w, torch.bmm(w, done.transpose(1, 2)), done, alpha=-1)
        w = w.squeeze(1)
        if i + 1 < steps:
            norm = w.norm(dim=-1)
            beta.append(norm)
            q = w / norm.clamp_min(torch.finfo(w.dtype).tiny).unsqueeze(-1)  # 0 if exhausted
    diag = torch.stack(alpha, -1).double()
    tri = torch.diag_embed(diag)
    if beta:
        off = torch.diag_embed(torch.stack(beta, -1).double(), offset=1)
        tri = tri + off + off.transpose(-1, -2)
    finite = torch.isfinite(tri).flatten(1).all(-1)
    theta, vectors = torch.linalg.eigh(torch.where(finite[:, None, None], tri, 0))
    # Gauss quadrature: v^T f(A) v / |v|^2 = sum_k tau_k^2 f(theta_k), tau = first components
    per_probe = (vectors[:, 0, :].pow(2) * theta.clamp_min(0).sqrt()).sum(-1)
    per_probe = torch.where(finite, per_probe, torch.nan).reshape(p, b)
    stderr = (per_probe.var(0) / p).sum().sqrt() / b
    rms = diag[:, 0].mean().sqrt()  # Hutchinson: v^T A v / |v|^2 estimates tr(A) / d
    return {"jacobian_mean_sv": per_probe.mean().float(), "jacobian_rms_sv": rms.float(),
            "jacobian_mean_sv_stderr": stderr.float()}
