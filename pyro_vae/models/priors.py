"""Priors p(z) (and p(z|y)) by name, shared by the models: ``--prior`` picks one of :data:`PRIORS`.

A prior module is called as ``prior_net(y, posterior)`` and returns a distribution with event shape
``(z_dim,)``: for an unconditional model (``y=None``, the VAE) batch shape ``()``; for a conditional
one batch shape ``y.shape``, and with ``y=None`` the marginal Σ_y p(y) p(z|y), p(y) uniform.
``posterior`` is the model's q(z|x) (``posterior(x)``), which only the VampPrior reads. Every
prior's parameters live in the module, which the model registers as ``pyro.module("prior_net", …)``,
so they are trained, saved and resumed with the networks.

Registered (:data:`PRIORS`):

- ``standard``: N(0, I). Closed-form KL against Gaussian guides.
- ``learned``: one learned Gaussian per class (conditional models only). Closed-form KL.
- ``mixture``: a learned mixture of ``--prior-components`` Gaussians (per class in a conditional model).
- ``vamp``: the VampPrior, (1/K) Σ_k q(z|u_k) over K = ``--prior-components`` learned pseudo-inputs
  u_k (unconditional models only); it evaluates q at any z, so the guide must have an inverse.

``meanfield`` needs a closed-form KL(q‖p), which neither mixture has: :func:`check_prior_estimator`
refuses the pair up front; the Monte Carlo estimators take every prior.

References:
    Tomczak & Welling, *VAE with a VampPrior*, AISTATS 2018.
    Dilokthanakul et al., *Deep Unsupervised Clustering with Gaussian Mixture Variational
    Autoencoders*, 2016 (a mixture prior).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_vae.errors import IncompatiblePair, RegistryError
from pyro_vae.inference.guides import GUIDES, MIN_SCALE, get_guide


class StandardPrior(nn.Module):
    """p(z) = N(0, I), batch shape ``()`` for every y (plates broadcast it); no parameters."""

    def __init__(self, z_dim: int, num_classes: int = 0, components: int | None = None, x_dim: int = 0):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim), persistent=False)
        self.register_buffer("scale", torch.ones(z_dim), persistent=False)

    def forward(self, y: Tensor | None = None, posterior: Callable | None = None) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


def _uniform_mixture(per_class: dist.TorchDistribution, num_classes: int) -> dist.TorchDistribution:
    """Σ_y p(y) p(z|y), p(y) uniform, for ``per_class`` of batch shape ``(num_classes,)``: one
    mixture over every (class, component)."""
    if isinstance(per_class, dist.MixtureSameFamily):
        weights = per_class.mixture_distribution.logits.log_softmax(-1).flatten()  # (C·M,)
        base = per_class.component_distribution.base_dist  # batch (C, M, z_dim)
        comp = dist.Normal(base.loc.flatten(0, 1), base.scale.flatten(0, 1)).to_event(1)
    else:
        weights = torch.zeros(num_classes, device=per_class.mean.device)
        comp = per_class
    return dist.MixtureSameFamily(dist.Categorical(logits=weights), comp)


class LearnedPrior(nn.Module):
    """y ↦ p(z|y) = N(μ_y, diag σ_y²): one linear map of one-hot(y), σ = softplus(·) + 1e-4.

    On a one-hot input a linear map is a table of one (μ, σ) per class. It starts at N(0, I)
    (zero weights, σ's bias at softplus⁻¹(1)), so a learned and a standard prior begin equal.
    """

    def __init__(self, z_dim: int, num_classes: int, components: int | None = None, x_dim: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Linear(num_classes, 2 * z_dim)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)
        with torch.no_grad():
            self.net.bias[z_dim:] = math.log(math.expm1(1.0 - MIN_SCALE))

    def loc_scale(self, y: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.net(F.one_hot(y, self.num_classes).float()).chunk(2, dim=-1)  # each (..., z_dim)
        return loc, F.softplus(raw) + MIN_SCALE

    def forward(self, y: Tensor | None = None, posterior: Callable | None = None) -> dist.TorchDistribution:
        if y is None:
            y = torch.arange(self.num_classes, device=self.net.weight.device)
            return _uniform_mixture(self(y), self.num_classes)
        return dist.Normal(*self.loc_scale(y)).to_event(1)


class MixturePrior(nn.Module):
    """p(z|y) = Σ_m π_{y,m} N(μ_{y,m}, diag σ_{y,m}²): a mixture of ``components`` Gaussians per
    class (one set for an unconditional model, ``num_classes=0``), all learned. A class whose codes
    form several clusters (a 7 with and without its bar) can then put prior mass on each instead of
    between them. It starts near N(0, I): weights equal, σ = 1, means 0.1·N(0, I) apart so that the
    components can separate.
    """

    def __init__(self, z_dim: int, num_classes: int = 0, components: int | None = None, x_dim: int = 0):
        super().__init__()
        self.num_classes, rows, m = num_classes, max(num_classes, 1), components or 10
        g = torch.Generator().manual_seed(0)
        self.loc = nn.Parameter(0.1 * torch.randn(rows, m, z_dim, generator=g))
        self.raw_scale = nn.Parameter(torch.full((rows, m, z_dim), math.log(math.expm1(1.0))))
        self.logits = nn.Parameter(torch.zeros(rows, m))

    def forward(self, y: Tensor | None = None, posterior: Callable | None = None) -> dist.TorchDistribution:
        """:returns: batch shape ``y.shape`` (``()`` without classes), event shape ``(z_dim,)``."""
        if y is None:
            if self.num_classes:
                y = torch.arange(self.num_classes, device=self.loc.device)
                return _uniform_mixture(self(y), self.num_classes)
            y = torch.zeros((), dtype=torch.int64, device=self.loc.device)
        scale = F.softplus(self.raw_scale[y]) + MIN_SCALE  # (..., components, z_dim)
        comp = dist.Normal(self.loc[y], scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits[y]), comp)


class _BroadcastMixture(dist.MixtureSameFamily):
    """``MixtureSameFamily`` that expands z to every component before asking for its density, so
    that a flow's component (whose conditional networks expand their context to z's shape, and
    cannot broadcast it) gets a z per component."""

    def log_prob(self, x: Tensor) -> Tensor:
        x = x.unsqueeze(-2)  # (..., 1, z_dim)
        shape = torch.broadcast_shapes(x.shape[:-1], self.component_distribution.batch_shape)
        log_p = self.component_distribution.log_prob(x.expand(*shape, x.shape[-1]))  # (..., K)
        return torch.logsumexp(log_p + self.mixture_distribution.logits.log_softmax(-1), -1)


class VampPrior(nn.Module):
    """p(z) = (1/K) Σ_k q(z|u_k): the guide's own posterior at K learned pseudo-inputs u_k.

    u_k = sigmoid(a_k) lies in (0, 1)^D like the images; a starts at 0.1·N(0, I), grey images.
    Each call encodes the K pseudo-inputs (K encoder passes per step), and the density of z is a
    log-mean-exp over them, so q(z|u_k) must be evaluable at any z (the guide needs an inverse).

    :param int x_dim: D, pixels per image.
    :param int components: K.
    """

    def __init__(self, z_dim: int, num_classes: int = 0, components: int | None = None, x_dim: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.pseudo_inputs = nn.Parameter(0.1 * torch.randn(components or 50, x_dim, generator=g))  # (K, D)

    def forward(self, y: Tensor | None = None, posterior: Callable | None = None) -> dist.TorchDistribution:
        q = posterior(torch.sigmoid(self.pseudo_inputs))  # batch (K,), event (z_dim,)
        weights = torch.zeros(q.batch_shape, device=self.pseudo_inputs.device)
        return _BroadcastMixture(dist.Categorical(logits=weights), q)


@dataclass(frozen=True)
class PriorSpec:
    """A registered prior.

    :ivar build: ``build(z_dim, num_classes, components, x_dim)`` ↦ the prior module.
    :ivar conditional: ``True``: conditional models only; ``False``: unconditional only; ``None``: both.
    :ivar closed_form_kl: torch has KL(q‖p) for a Gaussian q (what ``meanfield`` needs).
    :ivar components: the default of ``--prior-components`` (``None``: the prior takes none).
    :ivar needs_inverse: evaluates the guide's q at any z.
    """

    name: str
    build: Callable[..., nn.Module]
    description: str
    conditional: bool | None = None
    closed_form_kl: bool = True
    components: int | None = None
    needs_inverse: bool = False


#: name ↦ :class:`PriorSpec`; :func:`register_prior` adds one, ``--prior`` picks one.
PRIORS: dict[str, PriorSpec] = {}


def register_prior(spec: PriorSpec) -> PriorSpec:
    """Add a prior to :data:`PRIORS` (and so to ``--prior`` and every parametrized test)."""
    PRIORS[spec.name] = spec
    return spec


register_prior(PriorSpec("standard", StandardPrior, "N(0, I)"))
register_prior(PriorSpec("learned", LearnedPrior, "one learned Gaussian per class", conditional=True))
register_prior(
    PriorSpec(
        "mixture", MixturePrior, "a learned mixture of K Gaussians (per class)", closed_form_kl=False, components=10
    )
)
register_prior(
    PriorSpec(
        "vamp",
        VampPrior,
        "VampPrior: the mixture of q(z|u_k) over K learned pseudo-inputs",
        conditional=False,
        closed_form_kl=False,
        components=50,
        needs_inverse=True,
    )
)


def get_prior(name: str) -> PriorSpec:
    """:raises RegistryError: for an unknown name, listing the registered ones."""
    try:
        return PRIORS[name]
    except KeyError:
        raise RegistryError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}") from None


def build_prior(name: str, z_dim: int, num_classes: int = 0, components: int | None = None, x_dim: int = 0):
    """The prior module ``name`` for a model with ``num_classes`` classes (0: unconditional)."""
    spec = get_prior(name)
    return spec.build(z_dim, num_classes, components or spec.components, x_dim)


def check_prior(name: str, model_name: str, conditional: bool, guide: str) -> None:
    """:raises IncompatiblePair: when model or guide cannot take the prior ``name``, naming both."""
    spec = get_prior(name)
    if spec.conditional is not None and spec.conditional != conditional:
        takes = [n for n, s in PRIORS.items() if s.conditional in (None, conditional)]
        kind = "conditional" if spec.conditional else "unconditional"
        raise IncompatiblePair(
            f"prior {name!r} does not fit model {model_name!r}: it is for {kind} models only; "
            f"use --prior {', '.join(takes[:-1])} or {takes[-1]}"
        )
    if spec.needs_inverse and not get_guide(guide).inverse:
        takes = [n for n, s in GUIDES.items() if s.inverse]
        raise IncompatiblePair(
            f"prior {name!r} does not fit guide {guide!r}: the VampPrior evaluates q(z|u_k) at every z, and "
            f"guide {guide!r} has no inverse (its density is known at its own samples only); "
            f"use --guide {', '.join(takes)}"
        )


def check_prior_estimator(name: str, estimator: str, needs_analytic_kl: bool) -> None:
    """:raises IncompatiblePair: for an estimator that needs a closed-form KL and a prior without one."""
    if needs_analytic_kl and not get_prior(name).closed_form_kl:
        raise IncompatiblePair(
            f"estimator {estimator!r} does not fit prior {name!r}: TraceMeanField_ELBO needs a closed-form "
            f"KL(q‖p), and a mixture prior has none; use --elbo trace, stl, iwae or dreg, or --prior standard"
        )
