"""An exact testbed: the linear-Gaussian latent model (probabilistic PCA).

    z ~ N(0, I_k),    x | z ~ N(W z + b, σ² I_d)

has a closed-form evidence p(x) = N(b, W Wᵀ + σ² I) and posterior
p(z|x) = N(Σ Wᵀ (x − b) / σ², Σ) with Σ = (I + Wᵀ W / σ²)⁻¹, so every claim about the ELBO can be
checked exactly. Guides are affine-Gaussian, q(z|x) = N(A x + c, S Sᵀ), a family that contains
the exact posterior, or any registered guide head on the raw x (:func:`amortized_guide`), trained by
any registered estimator (:func:`fit_guide`). For Gaussian guides the ELBO is exact too, and the
best mean-field guide's gap is known (:meth:`LinearGaussian.mean_field_gap`).

References: Tipping & Bishop, *Probabilistic Principal Component Analysis*, JRSS-B 1999.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI
from torch import Tensor, nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from pyro_vae.errors import UsageError
from pyro_vae.inference.elbos import build_elbo
from pyro_vae.inference.guides import Encoder, build_head, site_infer


@dataclass
class AffineGaussianGuide:
    """q(z|x) = N(A x + c, S Sᵀ): ``A`` ``(k, d)``, ``c`` ``(k,)``, ``scale_tril`` S ``(k, k)``."""

    A: Tensor
    c: Tensor
    scale_tril: Tensor

    def dist(self, x: Tensor) -> MultivariateNormal:
        """``x`` ``(N, d)`` ↦ q with batch shape ``(N,)`` and event shape ``(k,)``."""
        return dist.MultivariateNormal(x @ self.A.T + self.c, scale_tril=self.scale_tril)

    def __call__(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", self.dist(x))


def _gaussian(q) -> MultivariateNormal:
    """A diagonal (``Independent(Normal, 1)``) or full Gaussian as a MultivariateNormal."""
    if isinstance(q, MultivariateNormal):
        return q
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        return MultivariateNormal(q.base_dist.loc, scale_tril=torch.diag_embed(q.base_dist.scale))
    raise UsageError(f"the exact ELBO needs a Gaussian q(z|x), got {type(q).__name__}; use importance_log_px")


def _q(guide, x: Tensor):
    """q(z|x) of an :class:`AffineGaussianGuide` or of an :class:`~pyro_vae.inference.guides.Encoder`."""
    return guide.dist(x) if isinstance(guide, AffineGaussianGuide) else guide(x)


class LinearGaussian:
    """z ~ N(0, I_k), x | z ~ N(W z + b, σ² I_d), with everything in closed form.

    :param Tensor W: ``(d, k)`` loadings.
    :param Tensor b: ``(d,)`` offset.
    :param float noise_scale: σ.
    """

    def __init__(self, W: Tensor, b: Tensor, noise_scale: float):
        self.W, self.b, self.noise_scale = W, b, float(noise_scale)
        self.d, self.k = W.shape

    @classmethod
    def random(
        cls, d: int = 5, k: int = 2, noise_scale: float = 0.5, seed: int = 0, dtype=torch.float64
    ) -> LinearGaussian:
        g = torch.Generator().manual_seed(seed)
        return cls(torch.randn(d, k, generator=g, dtype=dtype), torch.randn(d, generator=g, dtype=dtype), noise_scale)

    @classmethod
    def correlated(cls, d: int = 5, noise_scale: float = 0.5, seed: int = 0, spread: float = 0.3) -> LinearGaussian:
        """k = 2 with nearly parallel columns of W: a strongly correlated posterior p(z|x), so a
        mean-field guide pays a visible gap (about 1 nat with the defaults)."""
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d, 1, generator=g, dtype=torch.float64)
        W = w.expand(d, 2) + spread * torch.randn(d, 2, generator=g, dtype=torch.float64)  # (d, 2)
        return cls(W, torch.randn(d, generator=g, dtype=torch.float64), noise_scale)

    def model(self, x: Tensor) -> None:
        """The Pyro model: site ``"z"`` (event ``(k,)``) and observed ``"x"`` (event ``(d,)``)."""
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            loc = z @ self.W.T + self.b  # (..., N, d)
            pyro.sample("x", dist.Normal(loc, self.noise_scale).to_event(1), obs=x)

    def prior(self) -> MultivariateNormal:
        """p(z) = N(0, I_k)."""
        eye = torch.eye(self.k, dtype=self.W.dtype)
        return dist.MultivariateNormal(self.W.new_zeros(self.k), scale_tril=eye)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W Wᵀ + σ² I)."""
        cov = self.W @ self.W.T + self.noise_scale**2 * torch.eye(self.d, dtype=self.W.dtype)
        return MultivariateNormal(self.b, covariance_matrix=cov)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """``(n, d)`` draws of x from p(x)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.marginal().sample((n,))

    def log_px(self, x: Tensor) -> Tensor:
        """Exact log p(x), ``(N,)``."""
        return self.marginal().log_prob(x)

    def exact_guide(self) -> AffineGaussianGuide:
        """The guide equal to the posterior: A = Σ Wᵀ/σ², c = −A b, S = chol Σ."""
        eye = torch.eye(self.k, dtype=self.W.dtype)
        cov = torch.linalg.inv(eye + self.W.T @ self.W / self.noise_scale**2)
        A = cov @ self.W.T / self.noise_scale**2
        return AffineGaussianGuide(A, -A @ self.b, torch.linalg.cholesky(cov))

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """Exact p(z|x), batch ``(N,)``, event ``(k,)``."""
        return self.exact_guide().dist(x)

    def expected_log_likelihood(self, x: Tensor, guide) -> Tensor:
        """E_q[log p(x|z)] = log N(x; W μ + b, σ² I) − tr(W Σ_q Wᵀ) / (2σ²), ``(N,)``.

        ``guide``: an :class:`AffineGaussianGuide` or an Encoder with a Gaussian head; so for
        :meth:`prior_kl`, :meth:`elbo` and :meth:`posterior_kl`. Differentiable in W, b and q.
        """
        q = _gaussian(_q(guide, x))
        at_mean = dist.Normal(q.loc @ self.W.T + self.b, self.noise_scale).to_event(1).log_prob(x)
        spread = (self.W @ q.scale_tril).pow(2).sum((-2, -1)) / (2 * self.noise_scale**2)
        return at_mean - spread

    def prior_kl(self, x: Tensor, guide) -> Tensor:
        """KL(q(z|x) ‖ p(z)), ``(N,)``."""
        return kl_divergence(_gaussian(_q(guide, x)), self.prior())

    def elbo(self, x: Tensor, guide) -> Tensor:
        """The exact ELBO E_q[log p(x|z)] − KL(q‖p(z)), ``(N,)``."""
        return self.expected_log_likelihood(x, guide) - self.prior_kl(x, guide)

    def posterior_kl(self, x: Tensor, guide) -> Tensor:
        """KL(q(z|x) ‖ p(z|x)) = log p(x) − ELBO, ``(N,)``."""
        return kl_divergence(_gaussian(_q(guide, x)), self.posterior(x))

    def mean_field_gap(self) -> Tensor:
        """min over diagonal Gaussians q of KL(q ‖ p(z|x)), the same for every x.

        With posterior precision Λ = I + WᵀW/σ², the best diagonal q has the posterior mean and
        variances 1/Λ_uu, and KL = ½ [Σ_u log Λ_uu − log det Λ].
        """
        eye = torch.eye(self.k, dtype=self.W.dtype)
        precision = eye + self.W.T @ self.W / self.noise_scale**2
        return 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))


class AmortizedGuide(Encoder):
    """An :class:`~pyro_vae.inference.guides.Encoder` (``forward(x)`` is q(z|x)) with the testbed's guide
    :meth:`guide`, which draws the site ``"z"`` in ``pyro.plate("data")`` as :meth:`LinearGaussian.model` does."""

    def guide(self, x: Tensor) -> Tensor:
        pyro.module("encoder", self)
        with pyro.plate("data", x.shape[0], dim=-1):
            q = self(x)
            return pyro.sample("z", q, infer=site_infer(q))  # (..., N, k)


def amortized_guide(lg: LinearGaussian, name: str, **options) -> AmortizedGuide:
    """A registered guide head on the raw x (no hidden layer), in the testbed's dtype.

    ``diag`` and ``fullcov`` heads on x contain the best guide of their family: the posterior
    mean is affine in x and its covariance does not depend on x.
    """
    options.setdefault("flow_steps", 2)
    return AmortizedGuide(nn.Identity(), build_head(name, lg.d, lg.k, **options)).to(lg.W.dtype)


def fit_guide(
    lg: LinearGaussian,
    x: Tensor,
    guide: str = "diag",
    elbo: str = "trace",
    *,
    steps: int = 2000,
    lr: float = 0.01,
    particles: int = 1,
    seed: int = 0,
) -> AmortizedGuide:
    """Fit a registered guide to the testbed's posterior on data ``x`` ``(N, d)`` by SVI.

    The model's W and b stay fixed; only the guide learns, so the result shows how close each
    guide family and estimator gets to p(z|x).
    """
    pyro.set_rng_seed(seed)
    encoder = amortized_guide(lg, guide)
    pyro.clear_param_store()
    svi = SVI(lg.model, encoder.guide, pyro.optim.Adam({"lr": lr}), build_elbo(elbo, particles))
    for _ in range(steps):
        svi.step(x)
    return encoder
