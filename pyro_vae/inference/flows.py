"""Flow guides from Pyro's conditional transforms: a diagonal Gaussian base q₀(z₀|h) pushed through
K steps of one ``pyro.distributions.transforms`` family, each step conditioned on the encoder
features h through a context c = Linear(h).

Registered in :data:`pyro_vae.inference.guides.GUIDES` (each takes ``--flow-steps K``):

- ``planar``: ``ConditionalPlanar``; no inverse in Pyro; log q_φ̄(z) for stl/dreg exact, from the cache (Jacobian).
- ``radial``: ``ConditionalRadial``; no inverse; exact, from the cache (Jacobian).
- ``householder``: ``ConditionalHouseholder`` (one reflection); closed-form inverse; exact, by inversion.
- ``naf``: ``ConditionalNeuralAutoregressive``; no inverse; exact, from the cache (Jacobian).
- ``spline``: ``ConditionalSplineAutoregressive``; sequential inverse (z_dim passes); exact, from the cache.
- ``coupling``: ``ConditionalAffineCoupling`` with a permutation between steps; closed-form inverse;
  exact, by inversion.

No pair is refused: :func:`pyro_vae.inference.pathwise.path_log_prob` computes ∇_z log q(z) for a
flow without a cheap inverse from the intermediate values its sampling pass cached.

Why ``spline`` is spline-*autoregressive*: an elementwise ``ConditionalSpline`` whose parameters
depend on h alone transforms each coordinate of z on its own, so q stays a product of marginals
(mean-field, only non-Gaussian); the autoregressive form lets each coordinate's spline depend on
the coordinates before it, so q can model correlations, like ``iaf``, at the same cost per sample
(one pass of its network; only an inversion would be sequential, and no estimator here needs one).

Numerics: Pyro's planar and radial steps are parametrised to stay invertible (planar: wᵀû ≥ −1
through û = u + (m(wᵀu) − wᵀu) w/‖w‖², m = −1 + softplus; radial: β ≥ −α through α = softplus(α'),
β = −α + softplus(β')); Householder steps have ``|det J| = 1``; coupling clamps its log-scales to
[−5, 3]; the splines are monotone rational-quadratic within [−bound, bound] and the identity
outside; NAF clamps its sigmoid output away from 0 and 1. What Pyro leaves to the user is the start:
the coupling and spline steps' last layers start at zero here (coupling: shift 0 and log-scale 0, the
identity; spline: equal bins, close to it), and the planar steps' u and b start at zero with w ≠ 0
(so û, which divides by ‖w‖², is finite), so that an untrained flow guide stays close to its
Gaussian base.

References:
    Rezende & Mohamed, *Variational Inference with Normalizing Flows*, ICML 2015 (planar, radial).
    Tomczak & Welling, *Improving Variational Auto-Encoders using Householder Flow*, 2016.
    Huang, Krueger, Lacoste & Courville, *Neural Autoregressive Flows*, ICML 2018.
    Durkan, Bekasov, Murray & Papamakarios, *Neural Spline Flows*, NeurIPS 2019; Dolatabadi,
    Erfani & Leckie, *Invertible Generative Modeling using Linear Rational Splines*, AISTATS 2020.
    Dinh, Sohl-Dickstein & Bengio, *Density estimation using Real NVP*, ICLR 2017 (coupling).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from pyro_vae.errors import UsageError


def _hidden(z_dim: int) -> list[int]:
    return [max(4 * z_dim, 32)]


def _last_linear(module: nn.Module) -> nn.Linear:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def _zero_last_layer(step: nn.Module) -> None:
    """Start a step's hypernetwork at a constant output (zero weights and bias of its last layer)."""
    last = _last_linear(step)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def _planar(z_dim: int, context_dim: int) -> nn.Module:
    step = T.conditional_planar(z_dim, context_dim, hidden_dims=_hidden(z_dim))
    # params (b, u, w): zero u and b (the identity) and keep w ≠ 0, so that û = u + (…) w/‖w‖² is finite
    last = _last_linear(step)
    with torch.no_grad():
        last.weight[: 1 + z_dim].zero_()
        last.bias[: 1 + z_dim].zero_()
    return step


def _radial(z_dim: int, context_dim: int) -> nn.Module:
    return T.conditional_radial(z_dim, context_dim, hidden_dims=_hidden(z_dim))


def _householder(z_dim: int, context_dim: int) -> nn.Module:
    return T.conditional_householder(z_dim, context_dim, hidden_dims=_hidden(z_dim), count_transforms=1)


def _naf(z_dim: int, context_dim: int) -> nn.Module:
    return T.conditional_neural_autoregressive(z_dim, context_dim, hidden_dims=_hidden(z_dim), width=8)


def _spline(z_dim: int, context_dim: int) -> nn.Module:
    step = T.conditional_spline_autoregressive(z_dim, context_dim, hidden_dims=_hidden(z_dim), count_bins=8, bound=5.0)
    _zero_last_layer(step)  # equal bin widths and heights: close to the identity
    return step


def _coupling(z_dim: int, context_dim: int) -> nn.Module:
    if z_dim < 2:
        raise UsageError(f"guide 'coupling' needs z_dim ≥ 2 (it splits z in two), got z_dim={z_dim}")
    step = T.conditional_affine_coupling(z_dim, context_dim, hidden_dims=_hidden(z_dim))
    _zero_last_layer(step)  # shift 0, log-scale 0: the identity
    return step


class FlowGaussian(nn.Module):
    """h ↦ a diagonal Gaussian pushed through ``flow_steps`` steps of one Pyro conditional transform.

    The context c = Linear(h) has ``max(2 z_dim, 16)`` numbers. With ``permute=True`` a fixed
    permutation of z's coordinates (seeded, saved in the state dict) follows every step but the
    last, so that coupling steps transform every coordinate in turn.

    :param int feature_dim: width of the encoder features h.
    :param int z_dim: latent dimension.
    :param base: ``base(feature_dim, z_dim)`` ↦ the head of q₀(z₀|h)
        (:class:`pyro_vae.inference.guides.DiagGaussian`).
    :param step: ``step(z_dim, context_dim)`` ↦ a ``ConditionalTransformModule``.
    :param int flow_steps: K, the number of steps.
    :returns: (``forward``) a ``TransformedDistribution``, batch ``(batch,)``, event ``(z_dim,)``.
    """

    def __init__(
        self, feature_dim: int, z_dim: int, base: Callable, step: Callable, flow_steps: int = 2, permute: bool = False
    ):
        super().__init__()
        if not isinstance(flow_steps, int) or flow_steps < 1:
            raise UsageError(f"flow_steps must be a positive integer, got {flow_steps!r}")
        self.base = base(feature_dim, z_dim)
        context_dim = max(2 * z_dim, 16)
        self.context = nn.Linear(feature_dim, context_dim)
        self.flows = nn.ModuleList(step(z_dim, context_dim) for _ in range(flow_steps))
        g = torch.Generator().manual_seed(0)
        orders = [torch.randperm(z_dim, generator=g) for _ in range(flow_steps - 1)] if permute else []
        self.register_buffer("orders", torch.stack(orders) if orders else torch.zeros(0, z_dim, dtype=torch.int64))

    def forward(self, h: Tensor) -> dist.TorchDistribution:
        base = self.base(h)  # batch (batch,), event (z_dim,)
        c = self.context(h)  # (batch, context_dim)
        transforms = []
        for k, flow in enumerate(self.flows):
            transforms.append(flow.condition(c))
            if k < len(self.orders):
                transforms.append(T.Permute(self.orders[k]))
        return dist.TransformedDistribution(base, transforms)


def flow_guide(base: Callable, step: Callable, permute: bool = False) -> Callable[..., FlowGaussian]:
    """``build(feature_dim, z_dim, flow_steps)`` of a :class:`FlowGaussian` of ``step``s on ``base``."""

    def build(feature_dim: int, z_dim: int, flow_steps: int = 2) -> FlowGaussian:
        return FlowGaussian(feature_dim, z_dim, base, step, flow_steps, permute)

    return build


#: name ↦ (step, permute between steps, has an inverse, description); registered by
#: :mod:`pyro_vae.inference.guides`
FLOWS = {
    "planar": (_planar, False, False, "diagonal Gaussian + K planar steps"),
    "radial": (_radial, False, False, "diagonal Gaussian + K radial steps"),
    "householder": (_householder, False, True, "diagonal Gaussian + K Householder reflections"),
    "naf": (_naf, False, False, "diagonal Gaussian + K neural autoregressive steps"),
    "spline": (_spline, False, True, "diagonal Gaussian + K spline-autoregressive steps"),
    "coupling": (_coupling, True, True, "diagonal Gaussian + K affine coupling steps, permuted between steps"),
}
