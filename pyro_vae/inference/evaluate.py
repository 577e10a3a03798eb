"""Honest test metrics for any Pyro model/guide pair whose data plate is ``dim=-1``.

- :func:`elbo_terms`: per datapoint, the reconstruction E_q[log p(x|z)] and KL(q(z|x)‖p(z))
  (closed form where ``torch.distributions.kl_divergence`` has one, else one-sample Monte Carlo).
- :func:`importance_log_px`: per datapoint, log (1/K) Σ_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x),
  vectorized over K in chunks of bounded memory (sized to the networks by :func:`chunk_for_memory`).

The metrics of conditional models (generative classification, label fidelity and sensitivity)
are in :mod:`pyro_vae.inference.labels`.

References: Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.
"""

from __future__ import annotations

import contextlib
import math
import pickle
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import kl_divergence

from pyro_vae.atomic import atomic_write
from pyro_vae.errors import DataError, UsageError

DEFAULT_CHUNK = 2**15  # (particle, datapoint) pairs per forward pass: ~100 MB per (pairs, 784) tensor
EVAL_MEMORY = 576 * 2**20  # counted bytes of activations per forward pass of a final IS estimate (chunk_for_memory)
PROBE = (4, 2)  # (datapoints, particles) of the probe pass that counts activation bytes per pair


def _traces(model: Callable, guide: Callable, args: tuple, particles: int | None):
    plate = pyro.plate("particles", particles, dim=-2) if particles else contextlib.nullcontext()
    with plate:
        guide_tr = poutine.trace(guide).get_trace(*args)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args)
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()
    return model_tr, guide_tr


def _sites(tr):
    """The sample sites of a trace, without the plates' subsample sites."""
    return [s for s in tr.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def log_weights(model: Callable, guide: Callable, *args, num_particles: int = 1) -> Tensor:
    """log p(x, z_k) − log q(z_k|x) for ``num_particles`` draws, shape ``(num_particles, batch)``.

    β-scaling (``pyro.poutine.scale``) is ignored: the unscaled log densities are used.
    """
    model_tr, guide_tr = _traces(model, guide, args, num_particles)
    log_w = sum(s["unscaled_log_prob"] for s in _sites(model_tr))
    log_w = log_w - sum(s["unscaled_log_prob"] for s in _sites(guide_tr) if not s["is_observed"])
    return log_w


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def importance_log_px(
    model: Callable,
    guide: Callable,
    *data: Tensor,
    num_samples: int = 1000,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor:
    """Importance-sampled log p(x) for each datapoint, with ``num_samples`` draws from the guide.

    log p̂(x) = logsumexp_k [log p(x, z_k) − log q(z_k|x)] − log K. Its expectation is a lower
    bound on log p(x) that rises with K and reaches the ELBO at K = 1.

    :param data: tensors with the datapoints along dim 0, passed to ``model`` and ``guide``
        (e.g. ``x`` of shape ``(N, D)``, or ``x, y``).
    :param int num_samples: K.
    :param int chunk_size: at most this many (particle, datapoint) pairs per forward pass,
        which bounds the memory whatever N and K are. The default suits 784-pixel images through
        MLPs (~330 MiB); :func:`chunk_for_memory` sizes it for larger images and conv networks.
        Only the draws' order depends on it: each datapoint's estimate has the same law.
    :returns: ``(N,)`` tensor of nats.
    """
    if num_samples < 1:
        raise UsageError(f"num_samples must be a positive integer, got {num_samples!r}")
    n = len(data[0])
    batch = max(1, min(n, chunk_size // num_samples))
    particles = max(1, min(num_samples, chunk_size // batch))
    out = []
    for rows in _chunks(n, batch):
        args = tuple(d[rows] for d in data)
        lse = [
            torch.logsumexp(log_weights(model, guide, *args, num_particles=k.stop - k.start), dim=0)
            for k in _chunks(num_samples, particles)
        ]
        out.append(torch.logsumexp(torch.stack(lse), dim=0) - math.log(num_samples))
    return torch.cat(out)


def _compiled(module: torch.nn.Module) -> bool:
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in module.modules())


@torch.no_grad()
def chunk_for_memory(
    module: torch.nn.Module,
    model: Callable,
    guide: Callable,
    *data: Tensor,
    memory: int = EVAL_MEMORY,
    limit: int = DEFAULT_CHUNK,
) -> int:
    """A ``chunk_size`` for :func:`importance_log_px` whose forward passes hold about ``memory``
    bytes of activations, whatever the image size and the networks.

    A probe pass with :data:`PROBE` (datapoint, particle) pairs counts the bytes of every output
    of ``module``'s leaf modules (forward hooks), plus three ``(pairs, D)`` float32 tensors for the
    likelihood's parameters and log densities. Counting every output as if all were alive at once
    overestimates the peak (without gradients each is freed once used), so the bound is on the safe
    side. The probe draws from a forked random generator: the estimate that follows draws as it
    would without it. For compiled networks (hooks would recompile them) the activations are taken
    as eight ``(pairs, D)`` float32 tensors.

    The count is about 1.6 times the measured peak. Measured on CPU (peak RSS rise of one
    :func:`importance_log_px` call, default networks): 784-pixel images through the MLPs keep
    :data:`DEFAULT_CHUNK` pairs (17,424 bytes counted per pair; +305 MiB), 32×32×3 images through
    the conv networks get 2,048 (201,488 bytes; +227 MiB, where 2^15 pairs took about 4 GiB), and
    through the MLPs 8,192 (+296 MiB).

    :param module: the model whose networks ``model`` and ``guide`` run.
    :param data: as for :func:`importance_log_px`, datapoints along dim 0.
    :returns: a power of two in ``1..limit``.
    """
    d = math.prod(data[0].shape[1:])
    rows, particles = min(len(data[0]), PROBE[0]), PROBE[1]
    counted = [0]
    if _compiled(module) or rows == 0:
        per_pair = 8 * 4 * d
    else:

        def count(_module, _inputs, output):
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            counted[0] += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, Tensor))

        leaves = [m for m in module.modules() if next(m.children(), None) is None]
        handles = [m.register_forward_hook(count) for m in leaves]
        devices = [data[0].device] if data[0].device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                log_weights(model, guide, *(t[:rows] for t in data), num_particles=particles)
        finally:
            for h in handles:
                h.remove()
        per_pair = counted[0] / (rows * particles) + 3 * 4 * d
    pairs = max(1, min(limit, int(memory // per_pair)))
    return 2 ** int(math.log2(pairs))


@torch.no_grad()
def elbo_terms(model: Callable, guide: Callable, *data: Tensor, batch_size: int = 1000) -> dict[str, Tensor]:
    """Per-datapoint ELBO = reconstruction − KL, with one z ~ q(z|x) per datapoint.

    :returns: dict of ``(N,)`` tensors, nats: ``"elbo"``, ``"reconstruction"`` (E_q log p(x|z),
        summed over observed sites) and ``"kl"`` (KL(q(z|x)‖p(z)), summed over latent sites).
    """
    rec, kl = [], []
    n = len(data[0])
    for rows in _chunks(n, batch_size):
        model_tr, guide_tr = _traces(model, guide, tuple(d[rows] for d in data), None)
        rec.append(sum(s["unscaled_log_prob"] for s in _sites(model_tr) if s["is_observed"]))
        kl_rows = torch.zeros(rows.stop - rows.start, device=data[0].device)
        for q in _sites(guide_tr):
            if q["is_observed"]:
                continue
            p = model_tr.nodes[q["name"]]
            try:
                kl_rows = kl_rows + kl_divergence(q["fn"], p["fn"])
            except NotImplementedError:
                kl_rows = kl_rows + q["unscaled_log_prob"] - p["unscaled_log_prob"]
        kl.append(kl_rows)
    rec_t, kl_t = torch.cat(rec), torch.cat(kl)
    return {"elbo": rec_t - kl_t, "reconstruction": rec_t, "kl": kl_t}


def summarize(terms: dict[str, Tensor]) -> dict[str, float]:
    """Means over datapoints, plus the standard error of the mean of each term (``*_se``)."""
    out = {}
    for k, v in terms.items():
        out[k] = v.mean().item()
        out[f"{k}_se"] = (v.std() / math.sqrt(len(v))).item() if len(v) > 1 else float("nan")
    return out


#: The file of a finished run folder that holds each test image's IS log p(x), for paired differences.
PER_IMAGE_NAME = "test_log_px.pt"


def save_per_image(path: str | Path, log_px: Tensor) -> None:
    """Write one finished run's per-image IS log p(x) (``(N,)``, test-set order) atomically."""
    atomic_write(path, lambda f: torch.save(log_px.detach().to("cpu", torch.float64), f))


def load_per_image(path: str | Path) -> Tensor:
    """Read what :func:`save_per_image` wrote: a ``(N,)`` float64 tensor.

    :raises DataError: when the file is missing or holds anything else, naming it.
    """
    try:
        values = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise DataError(f"cannot read per-image log p(x) from {path}: {e}; rerun or finish that run") from None
    if not isinstance(values, Tensor) or values.dim() != 1 or not values.is_floating_point():
        raise DataError(f"{path} does not hold a vector of per-image log p(x); rerun that run")
    return values


def paired_difference(values: Tensor, reference: Tensor) -> tuple[float, float]:
    """Mean of ``values − reference`` over the same images (``(N,)`` each) and its standard error,
    sd(difference)/√N: the paired s.e., much smaller than either run's own when the two runs find
    the same images hard.

    :raises UsageError: when the two were measured on different numbers of images.
    """
    if values.shape != reference.shape or values.numel() < 2:
        raise UsageError(
            f"paired differences need the same test images twice, got {values.numel()} and {reference.numel()} "
            "values; compare runs evaluated on the same test set"
        )
    d = values.double() - reference.double()
    return float(d.mean()), float(d.std(unbiased=True) / math.sqrt(d.numel()))
