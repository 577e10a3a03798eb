"""Diagnostics of a trained model/guide pair beyond the ELBO: active units and gradient noise.

- :func:`active_units`: a latent dimension u is active when Cov_x(E_q[z_u|x]) > 0.01.
- :func:`gradient_snr`: for a fixed minibatch and fixed parameters, draw M gradient estimates of
  an estimator and report, per parameter group (encoder, decoder), the signal-to-noise ratio
  ``|E[g]| / sd(g)`` averaged over parameters, and the average variance.

References:
    Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016 (active units).
    Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh, *Tighter Variational Bounds are Not
    Necessarily Better*, ICML 2018 (gradient SNR).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from pyro.infer import ELBO
from torch import Tensor, nn

from pyro_vae.inference.guides import moments

ACTIVE_THRESHOLD = 0.01


@torch.no_grad()
@torch.no_grad()  # no graph across the chunks: a flow's moments come from 256 draws per image
def active_units(
    encoder: Callable[[Tensor], object], x: Tensor, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000
) -> tuple[int, Tensor]:
    """Count the latent dimensions whose posterior mean varies across the data.

    :param encoder: ``x`` ↦ q(z|x), e.g. ``vae.posterior``.
    :param Tensor x: ``(N, D)`` data, typically the test set.
    :returns: the number of active units and the per-dimension variance Cov_x(E_q[z_u]), ``(z_dim,)``.
    """
    means = torch.cat([moments(encoder(x[i : i + batch_size]))[0] for i in range(0, len(x), batch_size)])
    variance = means.var(0)  # (z_dim,)
    return int((variance > threshold).sum()), variance


def gradient_snr(
    elbo: ELBO,
    model: Callable,
    guide: Callable,
    groups: dict[str, Iterable[nn.Parameter]],
    *args,
    num_estimates: int = 64,
) -> dict[str, dict[str, float]]:
    """Signal-to-noise ratio and variance of an estimator's gradient, per parameter group.

    Runs ``elbo.loss_and_grads(model, guide, *args)`` ``num_estimates`` times at the current
    parameters (nothing is updated; ``.grad`` is restored afterwards) and, for each group, treats
    every scalar parameter's M gradient draws as a sample.

    :param groups: e.g. ``{"encoder": vae.encoder.parameters(), "decoder": vae.decoder.parameters()}``.
    :returns: ``{group: {"snr": mean over parameters of |mean(g)| / sd(g), "variance": mean of
        var(g), "norm": ‖mean(g)‖₂}}``; parameters whose gradient never varies (sd = 0) are left
        out of the SNR average.
    """
    groups = {name: list(params) for name, params in groups.items()}
    params = [p for ps in groups.values() for p in ps]
    saved = [p.grad for p in params]
    draws: dict[str, list[Tensor]] = {name: [] for name in groups}
    for _ in range(num_estimates):
        for p in params:
            p.grad = None
        elbo.loss_and_grads(model, guide, *args)
        for name, ps in groups.items():
            draws[name].append(
                torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in ps])
            )
    for p, g in zip(params, saved):
        p.grad = g
    out = {}
    for name, d in draws.items():
        g = torch.stack(d)  # (num_estimates, params in group)
        mean, sd = g.mean(0), g.std(0)
        varies = sd > 0
        out[name] = {
            "snr": (mean[varies].abs() / sd[varies]).mean().item() if varies.any() else float("nan"),
            "variance": g.var(0).mean().item(),
            "norm": mean.norm().item(),
        }
    return out
