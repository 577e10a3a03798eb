"""Pixel likelihoods p(x|z) by name: the decoder's output ↦ a distribution over ``(..., D)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
from torch import Tensor


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


LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": Likelihood("bernoulli", 1, True, _bernoulli),
    "continuous-bernoulli": Likelihood("continuous-bernoulli", 1, True, _continuous_bernoulli),
}


def get_likelihood(name: str) -> Likelihood:
    """:raises ValueError: for an unknown name, listing the registered ones."""
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}") from None
