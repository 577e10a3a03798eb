"""Estimators Pyro lacks, as subclasses of ``pyro.infer.ELBO``: ``stl`` (:class:`STL_ELBO`) and ``dreg``
(:class:`DReG_IWAE`). Both need log q(z|x) with the guide's parameters held fixed, which
:func:`pyro_vae.inference.pathwise.path_log_prob` computes.

References:
    Roeder, Wu & Duvenaud, *Sticking the Landing*, NeurIPS 2017.
    Tucker, Lawson, Gu & Maddison, *Doubly Reparameterized Gradient Estimators for Monte Carlo
    Objectives*, ICLR 2019.
"""

from __future__ import annotations

import math

import torch
from pyro.infer import (
    ELBO,
)
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyro_vae.errors import IncompatiblePair
from pyro_vae.inference.pathwise import path_log_prob

MAX_PLATE_NESTING = 1  # the "data" plate; vectorized particles go to dim=-2


def _sample_sites(tr) -> list[dict]:
    return [s for s in tr.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _latent_sites(tr) -> list[dict]:
    return [s for s in _sample_sites(tr) if not s["is_observed"]]


class _PathwiseELBO(ELBO):
    """Shared machinery: one vectorized trace, and per-particle, per-datapoint log weights."""

    def __init__(self, num_particles: int = 1):
        super().__init__(num_particles=num_particles, max_plate_nesting=MAX_PLATE_NESTING, vectorize_particles=True)

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _log_weights(self, model, guide, args, kwargs, path: bool = True) -> tuple[Tensor, Tensor, tuple]:
        """:returns: log w and its path-derivative surrogate s, each ``(K, batch)``, and the traces.

        s has the value of log w = log p(x, z) − log q(z|x), but its gradient for the guide's
        parameters φ flows only through z: log q is :func:`pyro_vae.inference.pathwise.path_log_prob`,
        log q_φ̄(z) with φ̄ = stop_grad(φ) (for a flow, without inverting it). ``path=False``: s is log w.
        """
        model_tr, guide_tr = self._get_vectorized_trace(model, guide, args, kwargs)
        log_p = sum(s["log_prob"] for s in _sample_sites(model_tr))
        log_w, surrogate = log_p, log_p
        for site in _latent_sites(guide_tr):
            if not site["fn"].has_rsample:
                raise IncompatiblePair(
                    f"site {site['name']!r} has no rsample; this estimator needs a reparameterized guide"
                )
            log_w = log_w - site["log_prob"]
            surrogate = surrogate - path_log_prob(site) if path else log_w
        if self.num_particles == 1:
            log_w, surrogate = log_w.unsqueeze(0), surrogate.unsqueeze(0)
        return log_w, surrogate, (model_tr, guide_tr)

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        return self._loss(self._log_weights(model, guide, args, kwargs, path=False)[0]).item()

    def _loss(self, log_w: Tensor) -> Tensor:
        raise NotImplementedError


class STL_ELBO(_PathwiseELBO):
    """ "Sticking the landing": the ELBO with the score term of q dropped from the gradient.

    The loss is −mean_k Σ_batch log w_k, as ``Trace_ELBO``; the guide's gradient is
    E_q[∂/∂z (log p(x, z) − log q(z|x)) ∂z/∂φ], which is unbiased and vanishes at q = p(z|x).
    Needs a reparameterized guide.
    """

    def _loss(self, log_w: Tensor) -> Tensor:
        return -log_w.mean(0).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        _, surrogate, _ = self._log_weights(model, guide, args, kwargs)
        return self._loss(surrogate)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class DReG_IWAE(_PathwiseELBO):
    """The IWAE bound with the doubly-reparameterized gradient estimator.

    Loss: −Σ_batch [logsumexp_k log w_k − log K]. Gradients: for the model (decoder) parameters,
    IWAE's Σ_k w̃_k ∇ log w_k; for the guide parameters, Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ, where
    w̃ are the normalized weights. Both are unbiased for the gradient of the IWAE bound.
    Needs a reparameterized guide.

    One backward pass: the surrogate Σ_k w̃_k s_k (s the path-derivative log weight) gives IWAE's
    model gradient and Σ_k w̃_k ∂log w_k/∂z_k ∂z_k/∂φ for the guide; a hook on each latent value
    z_k multiplies the gradient reaching it by w̃_k once more. With the latent site scaled by β
    (KL warm-up: log w = log p(x|z) + β(log p(z) − log q(z|x))) the score term carries β, and the
    guide's weight becomes (1 − β) w̃_k + β w̃_k², so the hook multiplies by 1 − β + β w̃_k. For
    that, the path derivative of log q(z_k|x) passes through z_k (:func:`pyro_vae.inference.pathwise.path_log_prob`,
    which for a flow reads the sample's intermediate values from the flow's cache instead of
    inverting it).
    """

    def _loss(self, log_w: Tensor) -> Tensor:
        return -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        log_w, surrogate, (model_tr, guide_tr) = self._log_weights(model, guide, args, kwargs)
        latents = _latent_sites(guide_tr)
        weights = torch.softmax(log_w.detach(), 0)  # (K, batch), normalized over particles
        obs_scale = next((s["scale"] for s in _sample_sites(model_tr) if s["is_observed"]), 1.0)
        for site in latents:
            z = site["value"]
            if z.requires_grad:
                event_dims = (1,) * len(site["fn"].event_shape)
                w = weights.reshape(z.shape[: z.dim() - len(event_dims)] + event_dims)  # (K, batch, 1)
                beta = site["scale"] / obs_scale  # β of a KL warm-up (poutine.scale on the latent site)
                z.register_hook(lambda grad, w=w, beta=beta: grad * ((1 - beta) + beta * w))
        (-(weights * surrogate).sum()).backward()
        return self._loss(log_w.detach()).item()
