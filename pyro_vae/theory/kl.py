"""The KL divergence, as taught: the Gaussian closed form, a Monte Carlo estimate, and fitting a
Gaussian to a target by forward KL(p‖q) or reverse KL(q‖p).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, MixtureSameFamily, Normal

from pyro_vae.errors import UsageError


def gaussian_kl(loc1: Tensor, cov1: Tensor, loc2: Tensor, cov2: Tensor) -> Tensor:
    """KL(N(μ₁, Σ₁) ‖ N(μ₂, Σ₂)) in closed form, written as on the slide:

    ½ [tr(Σ₂⁻¹Σ₁) + (μ₂−μ₁)ᵀ Σ₂⁻¹ (μ₂−μ₁) − k + log(det Σ₂ / det Σ₁)].

    It equals ``torch.distributions.kl_divergence`` of the two ``MultivariateNormal`` (tested);
    use that in code, this function is for teaching.

    :param Tensor loc1: ``(..., k)``; ``cov1``: ``(..., k, k)`` positive definite; likewise 2.
    :returns: ``(...)`` nats.
    """
    k = loc1.shape[-1]
    chol2 = torch.linalg.cholesky(cov2)
    trace = torch.cholesky_solve(cov1, chol2).diagonal(dim1=-2, dim2=-1).sum(-1)
    diff = (loc2 - loc1).unsqueeze(-1)  # (..., k, 1)
    mahalanobis = (diff * torch.cholesky_solve(diff, chol2)).sum((-2, -1))
    logdet2 = 2 * chol2.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet1 = torch.linalg.slogdet(cov1)[1]
    return 0.5 * (trace + mahalanobis - k + logdet2 - logdet1)


def monte_carlo_kl(p: Distribution, q: Distribution, num_samples: int = 10_000) -> tuple[Tensor, Tensor]:
    """KL(p‖q) ≈ mean of log p(z) − log q(z) over z ~ p.

    :returns: the estimate and its standard error, each of ``p``'s batch shape.
    """
    z = p.sample((num_samples,))
    log_ratio = p.log_prob(z) - q.log_prob(z)
    return log_ratio.mean(0), log_ratio.std(0) / math.sqrt(num_samples)


def bimodal_mixture(separation: float = 4.0, scale: float = 0.7) -> MixtureSameFamily:
    """An equal mixture of N(−separation/2, scale²) and N(+separation/2, scale²) on the real line."""
    half = separation / 2
    return MixtureSameFamily(
        Categorical(torch.ones(2)), Normal(torch.tensor([-half, half]), torch.tensor([scale, scale]))
    )


def fit_gaussian(
    target: Distribution,
    direction: str,
    *,
    init_loc: float = 1.0,
    init_scale: float = 1.0,
    steps: int = 2000,
    num_samples: int = 2000,
    lr: float = 0.05,
    seed: int = 0,
) -> Normal:
    """Fit a 1-D Gaussian q = N(m, s²) to ``target`` by stochastic gradient descent.

    - ``"forward"``: minimize KL(p‖q) = E_p[log p − log q]; only −E_p[log q] depends on q, so
      samples of p suffice. The optimum matches p's mean and variance: q covers every mode.
    - ``"reverse"``: minimize KL(q‖p) = E_q[log q − log p] with reparameterized z = m + s·ε.
      q is penalized wherever p is small, so it locks onto one mode.

    :returns: the fitted ``Normal``.
    """
    if direction not in ("forward", "reverse"):
        raise UsageError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    gen = torch.Generator().manual_seed(seed)
    loc = torch.tensor(float(init_loc), requires_grad=True)
    log_scale = torch.tensor(math.log(init_scale), requires_grad=True)
    opt = torch.optim.Adam([loc, log_scale], lr=lr)
    for _ in range(steps):
        q = Normal(loc, log_scale.exp())
        if direction == "forward":
            with torch.random.fork_rng():
                torch.manual_seed(int(torch.randint(2**31, (), generator=gen)))
                z = target.sample((num_samples,))
            loss = -q.log_prob(z).mean()
        else:
            z = loc + log_scale.exp() * torch.randn(num_samples, generator=gen)
            loss = (q.log_prob(z) - target.log_prob(z)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Normal(loc.detach(), log_scale.detach().exp())
