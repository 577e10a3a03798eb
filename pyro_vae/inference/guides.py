"""Guides q(z|x) by name: a feature network followed by a registered *guide head*.

A guide head is an ``nn.Module`` that maps encoder features ``h`` of shape ``(batch, feature_dim)``
to a distribution over z with batch shape ``(batch,)`` and event shape ``(z_dim,)``; it returns the
distribution only. Every model in pyro_vae gets q from an :class:`Encoder` (features, then head) and
writes its latent site itself, in its own file, so every head works with every model and every
estimator that accepts it (see :mod:`pyro_vae.inference.elbos`).

Registered heads (:data:`GUIDES`):

- ``diag``: mean-field Gaussian N(μ(h), diag σ²(h)), reparameterized. The default.
- ``diag-score``: the same family, but not reparameterized: gradients use the score function
  (with a decaying-average baseline under ``tracegraph``), to show the variance gap.
- ``fullcov``: N(μ(h), L(h) L(h)ᵀ) with a lower-triangular ``scale_tril`` L whose diagonal is
  positive.
- ``iaf``: a diagonal Gaussian pushed through K inverse-autoregressive flow steps conditioned
  on h.
- ``planar``, ``radial``, ``householder``, ``naf``, ``spline``, ``coupling``: the same base pushed
  through K steps of another of Pyro's conditional transforms (:mod:`pyro_vae.inference.flows`).

Register your own with :func:`register_guide`; see README.md for an example.

References:
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, *Improved Variational Inference with
    Inverse Autoregressive Flow*, NeurIPS 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence, register_kl

from pyro_vae.errors import RegistryError, UsageError
from pyro_vae.inference.flows import FLOWS, flow_guide

MIN_SCALE = 1e-4  # added to every softplus scale, so q never collapses to a point


class DiagGaussian(nn.Module):
    """h ↦ N(μ(h), diag σ²(h)): two linear maps, σ = softplus(·) + 1e-4.

    :param int feature_dim: width of the encoder features h.
    :param int z_dim: latent dimension.
    """

    def __init__(self, feature_dim: int, z_dim: int):
        super().__init__()
        self.loc = nn.Linear(feature_dim, z_dim)
        self.scale = nn.Linear(feature_dim, z_dim)

    def loc_scale(self, h: Tensor) -> tuple[Tensor, Tensor]:
        loc = self.loc(h)  # (..., z_dim)
        scale = F.softplus(self.scale(h)) + MIN_SCALE  # (..., z_dim), positive
        return loc, scale

    def forward(self, h: Tensor) -> dist.TorchDistribution:
        return dist.Normal(*self.loc_scale(h)).to_event(1)


class _NoRsampleIndependent(dist.Independent):
    """``Independent`` that reports no ``rsample``; a class attribute, so it survives plate expansion."""

    has_rsample = False


class DiagGaussianScore(DiagGaussian):
    """:class:`DiagGaussian` with reparameterization switched off: a score-function guide."""

    def forward(self, h: Tensor) -> dist.TorchDistribution:
        return _NoRsampleIndependent(dist.Normal(*self.loc_scale(h)), 1)


class FullCovGaussian(nn.Module):
    """h ↦ N(μ(h), L(h) L(h)ᵀ); L lower-triangular, diagonal softplus(·) + 1e-4.

    The head outputs z_dim (z_dim + 1) / 2 numbers for L, placed with ``torch.tril_indices``.
    """

    def __init__(self, feature_dim: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.loc = nn.Linear(feature_dim, z_dim)
        rows, cols = torch.tril_indices(z_dim, z_dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.tril = nn.Linear(feature_dim, len(rows))

    def forward(self, h: Tensor) -> dist.TorchDistribution:
        loc = self.loc(h)  # (..., z_dim)
        entries = self.tril(h)  # (..., z_dim (z_dim + 1) / 2)
        diagonal = self.rows == self.cols
        entries = torch.where(diagonal, F.softplus(entries) + MIN_SCALE, entries)
        L = entries.new_zeros(*entries.shape[:-1], self.z_dim, self.z_dim)  # (..., z_dim, z_dim)
        L[..., self.rows, self.cols] = entries
        return dist.MultivariateNormal(loc, scale_tril=L)


class IAFGaussian(nn.Module):
    """h ↦ a diagonal Gaussian pushed through ``flow_steps`` IAF steps, each conditioned on h.

    Each step is Pyro's ``ConditionalAffineAutoregressive`` (the numerically stable, gated form of
    Kingma et al. 2016) with its own variable order, conditioned on a context c = Linear(h) of
    ``max(2 z_dim, 16)`` numbers (small, so that the z_dim sequential passes of an inversion stay
    cheap). Samples are cheap; the log-density of a sample drawn in the same call is read from the
    flow's cache, and any other point costs an inversion (as in ``stl`` and ``dreg``).

    :param int flow_steps: K, the number of IAF steps.
    """

    def __init__(self, feature_dim: int, z_dim: int, flow_steps: int = 2):
        super().__init__()
        if flow_steps < 1:
            raise UsageError(f"flow_steps must be a positive integer, got {flow_steps!r}")
        self.base = DiagGaussian(feature_dim, z_dim)
        context_dim = max(2 * z_dim, 16)
        self.context = nn.Linear(feature_dim, context_dim)
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(z_dim, context_dim, hidden_dims=[max(4 * z_dim, 32)], stable=True)
            for _ in range(flow_steps)
        )

    def forward(self, h: Tensor) -> dist.TorchDistribution:
        base = self.base(h)  # batch (batch,), event (z_dim,)
        c = self.context(h)  # (batch, context_dim)
        return dist.TransformedDistribution(base, [flow.condition(c) for flow in self.flows])


@dataclass(frozen=True)
class GuideSpec:
    """A registered guide head.

    :ivar build: ``build(feature_dim, z_dim, **options)`` ↦ the head module.
    :ivar options: the :class:`~pyro_vae.config.ModelConfig` fields passed to ``build`` as keywords.
    :ivar inverse: q's density is available at any z (``False``: at its own samples only, as for a
        flow with no inverse; a VampPrior cannot use it).
    """

    name: str
    build: Callable[..., nn.Module]
    description: str
    options: tuple[str, ...] = ()
    inverse: bool = True


#: Guide heads by ``--guide`` name; add one with :func:`register_guide`.
GUIDES: dict[str, GuideSpec] = {}


def register_guide(
    name: str, build: Callable[..., nn.Module], description: str, options: tuple[str, ...] = (), inverse: bool = True
):
    """Add a guide head to :data:`GUIDES` (and so to ``--guide`` and every parametrized test).

    :param str name: the registry key.
    :param build: ``build(feature_dim, z_dim, **options)`` returning an ``nn.Module`` whose
        ``forward(h)`` maps ``(batch, feature_dim)`` features to a distribution with batch shape
        ``(batch,)`` and event shape ``(z_dim,)``.
    :param str description: one line for ``--help`` and the README table.
    :param options: names of ModelConfig fields to pass to ``build`` (e.g. ``("flow_steps",)``).
    :param bool inverse: whether q's ``log_prob`` takes any z, not only q's own samples.
    """
    GUIDES[name] = GuideSpec(name, build, description, tuple(options), inverse)
    return build


register_guide("diag", DiagGaussian, "mean-field Gaussian N(μ(x), diag σ²(x)), reparameterized")
register_guide("diag-score", DiagGaussianScore, "the diag family with score-function (REINFORCE) gradients")
register_guide("fullcov", FullCovGaussian, "full-covariance Gaussian N(μ(x), L Lᵀ), L lower-triangular")
register_guide("iaf", IAFGaussian, "diagonal Gaussian + K inverse autoregressive flow steps", ("flow_steps",))
for _name, (_step, _permute, _inverse, _description) in FLOWS.items():  # Pyro's other conditional flows
    register_guide(_name, flow_guide(DiagGaussian, _step, _permute), _description, ("flow_steps",), _inverse)


def get_guide(name: str) -> GuideSpec:
    """:raises ValueError: for an unknown name, listing the registered ones."""
    try:
        return GUIDES[name]
    except KeyError:
        raise RegistryError(f"unknown guide {name!r}; choose one of {', '.join(GUIDES)}") from None


def build_head(name: str, feature_dim: int, z_dim: int, **config_fields) -> nn.Module:
    """Build the head ``name``, passing it the config fields it declares in ``options``."""
    spec = get_guide(name)
    return spec.build(feature_dim, z_dim, **{k: config_fields[k] for k in spec.options})


class Encoder(nn.Module):
    """q(z|inputs) = ``head(body(*inputs))``: a feature network followed by a guide head.

    :param nn.Module body: maps the inputs (e.g. ``x`` of shape ``(batch, D)``) to features
        ``(batch, feature_dim)``.
    :param nn.Module head: a guide head from :data:`GUIDES`.
    """

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, *inputs: Tensor) -> dist.TorchDistribution:
        return self.head(self.body(*inputs))


def site_infer(q: dist.TorchDistribution, name: str = "z") -> dict:
    """The ``infer`` dict of the latent site ``name`` drawn from ``q``: a decaying-average baseline
    for a distribution without ``rsample`` (which ``TraceGraph_ELBO`` uses), nothing otherwise.

    Pyro keeps that average per datapoint, shaped like the first batch it saw; an epoch's last batch
    is usually smaller, so an average of another batch size is dropped here and starts again at 0
    (the datapoints of two shuffled batches have nothing in common to average anyway)."""
    if q.has_rsample:
        return {}
    store = pyro.get_param_store()
    key = f"__baseline_avg_downstream_cost_{name}"
    batch = q.batch_shape[-1:] if q.batch_shape else torch.Size()
    if key in store and store[key].shape[-len(batch) :] != batch:
        del store[key]
    return {"baseline": {"use_decaying_avg_baseline": True}}


#: Draws of z that :func:`moments` holds at once (a flow's intermediates scale with them).
MOMENT_DRAWS = 2**15


@torch.no_grad()
def moments(q: dist.TorchDistribution, num_samples: int = 256) -> tuple[Tensor, Tensor]:
    """Mean and marginal standard deviation of q, each of shape ``batch_shape + event_shape``.

    Exact for Gaussians; a Monte Carlo estimate from ``num_samples`` draws for flows, drawn in blocks
    of at most :data:`MOMENT_DRAWS` draws of z in all (so that a whole test set fits in memory) and
    combined exactly (Chan et al.'s pairwise update of the mean and the sum of squared deviations).
    """
    try:
        return q.mean, q.stddev
    except NotImplementedError:
        pass
    block = max(1, min(num_samples, MOMENT_DRAWS // max(1, math.prod(q.batch_shape))))
    n, mean, m2 = 0, 0.0, 0.0
    for start in range(0, num_samples, block):
        z = q.sample((min(block, num_samples - start),))  # (draws, batch, z_dim)
        k, z_mean = len(z), z.mean(0)
        delta = z_mean - mean
        m2 = m2 + ((z - z_mean) ** 2).sum(0) + delta**2 * n * k / (n + k)
        mean, n = mean + delta * k / (n + k), n + k
    return mean, (m2 / (n - 1)).sqrt()


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal(p: MultivariateNormal, q: Independent) -> Tensor:
    """KL(full-covariance ‖ diagonal Gaussian), so that ``fullcov`` works with ``meanfield``.

    Torch has the MVN–MVN closed form; a diagonal Normal with one event dim is an MVN.
    """
    if not isinstance(q.base_dist, Normal) or q.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    return kl_divergence(p, MultivariateNormal(q.base_dist.loc, scale_tril=torch.diag_embed(q.base_dist.scale)))
