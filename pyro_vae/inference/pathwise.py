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
- A flow with a step that Pyro cannot invert (planar, radial, neural autoregressive) or inverts only
  sequentially (spline autoregressive) takes the same recursion with each step's full Jacobian:
  J_k(z_{k−1}) from z_dim vector-Jacobian products (batched) and ∇ log|det J_k| from one more, on
  the graph of the forward pass, then one batched z_dim × z_dim solve per step
  (:func:`cached_flow_score`). Exact up to round-off, at a cost of about z_dim backward passes
  through each step, and no inversion.
- A flow of steps with a cheap closed-form inverse (Householder, coupling, permutations,
  elementwise splines) is evaluated afresh at z: one inversion, as cheap as a sample.

References:
    Roeder, Wu & Duvenaud, *Sticking the Landing*, NeurIPS 2017.
    Vaitl, Nicoli, Nakajima & Kessel, *Gradients should stay on path: better estimators of the
    reverse- and forward KL divergence for normalizing flows*, 2022.
"""

from __future__ import annotations

import torch
from pyro.distributions.transforms import AffineAutoregressive, AffineCoupling, Permute
from pyro.distributions.transforms.householder import ConditionedHouseholder
from pyro.distributions.transforms.spline import ConditionedSpline
from torch import Tensor
from torch.distributions import Independent, Normal, TransformedDistribution

ROUND_OFF = 1e-6  # relative change of u below which the Jacobi iteration has converged (float32)


def _affine_steps(fn) -> bool:
    """Whether ``fn`` is a flow of affine autoregressive steps, each holding its last sample in its cache."""
    return isinstance(fn, TransformedDistribution) and all(
        isinstance(t, AffineAutoregressive) and t._cached_x_y[0] is not None for t in fn.transforms
    )


CHEAP_INVERSE = (ConditionedHouseholder, ConditionedSpline, AffineCoupling, Permute)  # one pass to invert


def _cached_steps(fn, z: Tensor) -> bool:
    """Whether ``fn`` is a flow that holds the sample ``z`` in its cache, step after step, and has a
    step without a cheap inverse (so that reading the cache beats inverting it)."""
    if not isinstance(fn, TransformedDistribution) or not fn.transforms:
        return False
    caches = [getattr(t, "_cached_x_y", (None, None)) for t in fn.transforms]
    chained = all(a[1] is b[0] for a, b in zip(caches, caches[1:])) and caches[0][0] is not None
    cheap = all(isinstance(t, CHEAP_INVERSE) for t in fn.transforms)
    return chained and caches[-1][1] is z and not cheap


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


def _cache_of(t) -> dict:
    return {k: v for k, v in vars(t).items() if k.startswith("_cache")}


def _jacobian_step(t, v: Tensor) -> Tensor:
    """u with J(x)ᵀu = v − ∇ log|det J|(x) for flow step t at its last sample x, any step: J from
    z_dim vector-Jacobian products (one batched call), then a batched linear solve. Uses the
    forward pass's graph when it has one, else recomputes the step from a detached x; either way
    the step's cache is left as it was. Where J is singular (a NAF step saturated at the clamp of
    its inverse sigmoid, so that ∇ log q is undefined there) u is the least-squares solution."""
    x, y = t._cached_x_y
    saved = _cache_of(t)
    with torch.enable_grad():
        if not (x.requires_grad and y.requires_grad):
            x = x.detach().requires_grad_()
            y = t(x)  # a cache miss: x is a new tensor
        log_det = t.log_abs_det_jacobian(x, y)  # (...), from the cache of (x, y)
        if not log_det.requires_grad:  # a constant |det J| (a permutation)
            g = torch.zeros_like(x)
        else:
            (g,) = torch.autograd.grad(log_det.sum(), x, retain_graph=True)
        z_dim = x.shape[-1]
        eye = torch.eye(z_dim, dtype=x.dtype, device=x.device)
        eye = eye.reshape(z_dim, *(1,) * (y.dim() - 1), z_dim).expand(z_dim, *y.shape)
        try:
            (rows,) = torch.autograd.grad(y, x, eye, retain_graph=True, is_grads_batched=True)  # rows[i] = e_iᵀ J
        except RuntimeError:  # an op without a batching rule: one product per row
            rows = torch.stack([torch.autograd.grad(y, x, e, retain_graph=True)[0] for e in eye])
    vars(t).update(saved)
    jac_t = rows.movedim(0, -2).detach().transpose(-1, -2)  # (..., z_dim, z_dim), [..., j, i] = ∂y_i/∂x_j
    rhs = (v - g.detach()).unsqueeze(-1)  # (..., z_dim, 1)
    u, info = torch.linalg.solve_ex(jac_t, rhs)
    if (info != 0).any():  # a singular J (NAF saturated at its sigmoid's clamp): least squares there
        u = torch.where((info != 0)[..., None, None], torch.linalg.pinv(jac_t) @ rhs, u)
    return u.squeeze(-1)


def cached_flow_score(fn: TransformedDistribution, z: Tensor) -> Tensor:
    """∇_z log q(z) at a sample ``z`` that the flow ``fn`` drew itself (still in its cache), for any
    steps, by their Jacobians (:func:`_jacobian_step`); no gradient reaches any parameter.

    :returns: a tensor of ``z``'s shape ``(..., z_dim)``, with no graph.
    """
    v = _base_score(fn.base_dist, fn.transforms[0]._cached_x_y[0].detach()).detach()
    for t in fn.transforms:
        v = _jacobian_step(t, v)
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
    if _cached_steps(fn, z):
        v = cached_flow_score(fn, z)
        return site["log_prob"].detach() + (v * (z - z.detach())).sum(-1) * scale
    at_fixed_z = fn.log_prob(z.detach()) * scale
    # a flow of steps with cheap inverses: log q(z) evaluated afresh at z * 1 (a new tensor, so no cache hit), so
    # that its path derivative passes through z; a Gaussian's density, computed from z, already does
    log_q = fn.log_prob(z * 1) * scale if isinstance(fn, TransformedDistribution) else site["log_prob"]
    return log_q - (at_fixed_z - at_fixed_z.detach())
