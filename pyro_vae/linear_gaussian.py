"""An exact testbed: the linear-Gaussian latent model (probabilistic PCA).

    z ~ N(0, I_k),    x | z ~ N(W z + b, σ² I_d)

has a closed-form evidence p(x) = N(b, W Wᵀ + σ² I) and posterior
p(z|x) = N(Σ Wᵀ (x − b) / σ², Σ) with Σ = (I + Wᵀ W / σ²)⁻¹, so every claim about the ELBO can be
checked exactly. Guides are affine-Gaussian, q(z|x) = N(A x + c, S Sᵀ), a family that contains
the exact posterior.

References: Tipping & Bishop, *Probabilistic Principal Component Analysis*, JRSS-B 1999.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence


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

    def expected_log_likelihood(self, x: Tensor, guide: AffineGaussianGuide) -> Tensor:
        """E_q[log p(x|z)] = log N(x; W μ + b, σ² I) − tr(W S Sᵀ Wᵀ) / (2σ²), ``(N,)``."""
        q = guide.dist(x)
        at_mean = dist.Normal(q.loc @ self.W.T + self.b, self.noise_scale).to_event(1).log_prob(x)
        spread = (self.W @ guide.scale_tril).pow(2).sum() / (2 * self.noise_scale**2)
        return at_mean - spread

    def prior_kl(self, x: Tensor, guide: AffineGaussianGuide) -> Tensor:
        """KL(q(z|x) ‖ p(z)), ``(N,)``."""
        return kl_divergence(guide.dist(x), self.prior())

    def elbo(self, x: Tensor, guide: AffineGaussianGuide) -> Tensor:
        """The exact ELBO E_q[log p(x|z)] − KL(q‖p(z)), ``(N,)``."""
        return self.expected_log_likelihood(x, guide) - self.prior_kl(x, guide)

    def posterior_kl(self, x: Tensor, guide: AffineGaussianGuide) -> Tensor:
        """KL(q(z|x) ‖ p(z|x)) = log p(x) − ELBO, ``(N,)``."""
        return kl_divergence(guide.dist(x), self.posterior(x))
