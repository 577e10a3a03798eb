"""log q(z|x) with the parameters held fixed: the path derivative that STL and DReG need.

For a latent site with value z = z(φ, ε) drawn from q_φ, the path-derivative estimators use
log q_φ̄(z), φ̄ = stop_grad(φ): its value is log q_φ(z), and its gradient reaches φ only through z,
∇_z log q_φ(z) · ∂z/∂φ, never through the parameters of q directly (the score term).

- A Gaussian's density at z costs one cheap evaluation: log q_φ(z) − (log q_φ(z̄) − stop_grad),
  z̄ = stop_grad(z), which cancels the direct term.
- A flow's density at a new point costs an inversion, z_dim sequential passes through each
  autoregressive network (:class:`pyro_vae.inference.guides.IAFGaussian`). :func:`flow_score` avoids it: the
  sample's intermediate values z_0 → z_1 → … → z_K are in the flow's cache, and
  ∇_z log q(z) follows from them by the chain rule through the inverse, layer after layer,

      v_0 = ∇ log base(z_0),   v_k = J_k(z_{k−1})^{−T} (v_{k−1} − ∇ log|det J_k|(z_{k−1})),

  where J_k is the Jacobian of step k, triangular (in the step's variable order) with diagonal
  exp(log_scale). The triangular system is solved by Jacobi iteration, u ← (r − Nᵀu)/diag, one
  vector-Jacobian product of the step's network per iteration on the graph of the forward pass
  that drew the sample (so the step is not run again). The strictly triangular part N is
  nilpotent, so the iteration is exact after at most z_dim rounds; it stops earlier, once a round
  changes u by round-off only, or once the rounds shrink so fast (by a ratio ρ < 1/2) that all
  those left would add less than round-off. In practice that is 2–3 rounds per step. Then
  log q_φ̄(z) = stop_grad(log q(z)) + ⟨stop_grad(v_K), z − stop_grad(z)⟩, which has the right value
  and the right first derivative (all that the estimators differentiate).

References:
    Roeder, Wu & Duvenaud, *Sticking the Landing*, NeurIPS 2017.
    Vaitl, Nicoli, Nakajima & Kessel, *Gradients should stay on path: better estimators of the
    reverse- and forward KL divergence for normalizing flows*, 2022.
"""

from __future__ import annotations

import torch
from pyro.distributions.transforms import AffineAutoregressive
from torch import Tensor
from torch.distributions import Independent, Normal, TransformedDistribution

ROUND_OFF = 1e-6  # relative change of u below which the Jacobi iteration has converged (float32)


def _affine_steps(fn) -> bool:
    """Whether ``fn`` is a flow of affine autoregressive steps, each holding its last sample in its cache."""
    return isinstance(fn, TransformedDistribution) and all(
        isinstance(t, AffineAutoregressive) and t._cached_x_y[0] is not None for t in fn.transforms
    )


def _base_score(base, z0: Tensor) -> Tensor:
    """∇ log base(z0): closed form for a diagonal Normal, autograd otherwise."""
    normal = base.base_dist if isinstance(base, Independent) else base
    if isinstance(normal, Normal):
        return -(z0 - normal.loc) / normal.scale**2
    z0 = z0.detach().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(base.log_prob(z0).sum(), z0)[0]


def _step_graph(t: AffineAutoregressive) -> tuple[Tensor, Tensor, Tensor, bool]:
    """(x, y, log_scale) of a flow step's last sample, on a graph from x: the forward pass's own
    graph when it has one (the flag says so), else the step recomputed from a detached x."""
    x, y = t._cached_x_y
    log_scale = t._cached_log_scale
    if x.requires_grad and y.requires_grad and log_scale is not None and log_scale.requires_grad:
        return x, y, log_scale, True
    saved = t._cached_x_y, t._cached_log_scale
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        y = t(x)  # a cache miss: x is a new tensor
        log_scale = t._cached_log_scale
    t._cached_x_y, t._cached_log_scale = saved
    return x, y, log_scale, False


def _solve_step(t: AffineAutoregressive, v: Tensor) -> Tensor:
    """u with J(x)ᵀu = v − ∇ log|det J|(x) for flow step t at its last sample x, by Jacobi iteration:
    each round one vector-Jacobian product of (y, log_scale) with (u, 1), i.e. Jᵀu + ∇ log|det J|.
    J is triangular in the step's variable order with diagonal exp(log_scale), so the iteration is
    exact after at most z_dim rounds; it stops when a round changes u by round-off only."""
    x, y, log_scale, own = _step_graph(t)
    diag = log_scale.detach().exp()
    ones = torch.ones_like(log_scale)
    u, last = v / diag, None
    for _ in range(v.shape[-1]):
        (jtu_g,) = torch.autograd.grad([y, log_scale], x, [u, ones], retain_graph=True)  # Jᵀu + ∇ log|det J|
        step = (v - jtu_g) / diag
        u = u + step
        size, tol = step.abs().max().item(), ROUND_OFF * u.abs().max().item()
        # converged: this round changed u by round-off, or the rounds shrink geometrically (ratio ρ)
        # so that all the rounds left would add less than round-off, |step| ρ / (1 − ρ)
        rho = size / last if last else 1.0
        if size <= tol or (rho < 0.5 and size * rho / (1 - rho) <= tol):
            break
        last = size
    return u


def flow_score(fn: TransformedDistribution, z: Tensor) -> Tensor:
    """∇_z log q(z) at a sample ``z`` that ``fn`` drew itself (it must still be in the flow's cache),
    without inverting the flow; no gradient reaches any parameter.

    :returns: a tensor of ``z``'s shape ``(..., z_dim)``, with no graph.
    """
    v = _base_score(fn.base_dist, fn.transforms[0]._cached_x_y[0].detach()).detach()
    for t in fn.transforms:
        v = _solve_step(t, v)
    return v.detach()


def path_log_prob(site: dict) -> Tensor:
    """log q_φ̄(z) of a guide site: the value of ``site["log_prob"]`` (scaled as the site is), the
    gradient only along the site's value z (see the module docstring).

    :param dict site: a latent sample site of a guide trace with its ``log_prob`` computed.
    """
    fn, z, scale = site["fn"], site["value"], site["scale"]
    if _affine_steps(fn) and fn.transforms[-1]._cached_x_y[1] is z:
        v = flow_score(fn, z)
        return site["log_prob"].detach() + (v * (z - z.detach())).sum(-1) * scale
    at_fixed_z = fn.log_prob(z.detach()) * scale
    # a flow of other steps: log q(z) evaluated afresh at z * 1 (a new tensor, so no cache hit), so
    # that its path derivative passes through z; a Gaussian's density, computed from z, already does
    log_q = fn.log_prob(z * 1) * scale if isinstance(fn, TransformedDistribution) else site["log_prob"]
    return log_q - (at_fixed_z - at_fixed_z.detach())
