"""Pixel likelihoods p(x|z) by name: the decoder's output ↦ a distribution over ``(..., D)``.

- ``bernoulli``: one logit per pixel; on grey levels a cross-entropy, not a density (see README).
- ``continuous-bernoulli``: one logit per pixel; a proper density on [0, 1] (Loaiza-Ganem &
  Cunningham 2019).
- ``gaussian``: a mean and a scale per pixel, both decoder outputs (a *learned, per-pixel,
  per-image* scale). The mean is ``sigmoid(·)`` so that decoded images are valid pixels; the scale
  is ``softplus(·) + 1/255``: no narrower than one grey level, which keeps the density bounded on
  pixels that are constant in the data (MNIST's background is exactly 0, where σ → 0 would send
  log p(x|z) to +∞). The density is on ℝ, so data outside [0, 1] are scored, not refused.

Log-likelihoods are in nats of a density over the pixel values as stored (grey levels in [0, 1]);
bits per dimension are −log p(x) / (D ln 2) of that same density (see :func:`bits_per_dim`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import torch.nn.functional as F
from torch import Tensor

from pyro_vae.errors import RegistryError

MIN_PIXEL_SCALE = 1 / 255  # the Gaussian's smallest σ: one grey level


@dataclass(frozen=True)
class Likelihood:
    """A registered likelihood.

    :ivar int out_per_pixel: decoder outputs per pixel (1 for logits).
    :ivar bool unit_interval: whether data must lie in [0, 1].
    :ivar make: decoder output ``(..., D * out_per_pixel)`` ↦ distribution with event shape ``(D,)``.
    """

    name: str
    out_per_pixel: int
    unit_interval: bool
    make: Callable[[Tensor], dist.TorchDistribution]


def _bernoulli(logits: Tensor) -> dist.TorchDistribution:
    # validate_args=False: continuous grey levels in [0, 1] are allowed, as in Pyro's VAE tutorial
    # (the cross-entropy of a grey level); the data boundary checks the [0, 1] range instead.
    return dist.Bernoulli(logits=logits, validate_args=False).to_event(1)


def _continuous_bernoulli(logits: Tensor) -> dist.TorchDistribution:
    return dist.ContinuousBernoulli(logits=logits).to_event(1)


def _gaussian(params: Tensor) -> dist.TorchDistribution:
    raw_loc, raw_scale = params.chunk(2, dim=-1)  # each (..., D): the first D outputs are means
    return dist.Normal(raw_loc.sigmoid(), F.softplus(raw_scale) + MIN_PIXEL_SCALE).to_event(1)


#: Pixel likelihoods by ``--likelihood`` name.
LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": Likelihood("bernoulli", 1, True, _bernoulli),
    "continuous-bernoulli": Likelihood("continuous-bernoulli", 1, True, _continuous_bernoulli),
    "gaussian": Likelihood("gaussian", 2, False, _gaussian),
}


def get_likelihood(name: str) -> Likelihood:
    """:raises ValueError: for an unknown name, listing the registered ones."""
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise RegistryError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}") from None


def bits_per_dim(log_px: float, x_dim: int) -> float:
    """−log p(x) / (D ln 2): nats per image ↦ bits per pixel value, for the density as scored.

    For a density over grey levels in [0, 1] this is *not* the discrete 8-bit figure of the
    literature: a model trained on uniformly dequantized pixels (x·255 + u)/256 would report this
    + 8 (the log 256 of the change of scale) as an upper bound on discrete bits per dimension. We
    do not dequantize, so compare these numbers only with each other.
    """
    return -log_px / (x_dim * math.log(2))
