"""The VAE: a Pyro model p(z) p(x|z) and its amortized guide q(z|x), side by side.

References: Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from .guides import Encoder, build_head, moments
from .likelihoods import get_likelihood
from .nets import get_net


class VAE(nn.Module):
    """p(z) = N(0, I), p(x|z) = likelihood(decoder(z)), q(z|x) = guide head(encoder(x)).

    With the default ``guide="diag"``, q(z|x) = N(μ(x), diag σ²(x)) as in Kingma & Welling.

    Both :meth:`model` and :meth:`guide` take ``x`` of shape ``(batch, x_dim)`` and sample the
    latent site ``"z"`` (event shape ``(z_dim,)``) inside ``pyro.plate("data", batch, dim=-1)``;
    the model observes ``"x"`` (event shape ``(x_dim,)``). Any outer plate (e.g. vectorized
    particles at ``dim=-2``) broadcasts through both.

    :param int x_dim: D, pixels per image.
    :param int z_dim: latent dimension.
    :param hidden_dims: MLP widths of the encoder; the decoder mirrors them (``net="conv"``: the
        width of the linear layer is the last one).
    :param str likelihood: a name in :data:`pyro_vae.likelihoods.LIKELIHOODS`.
    :param str guide: a name in :data:`pyro_vae.guides.GUIDES`.
    :param int flow_steps: K, for guides that take it (``iaf``).
    :param str net: a name in :data:`pyro_vae.nets.NETS` (``mlp`` or ``conv``).
    :param image_shape: (C, H, W) with C·H·W = x_dim; needed by ``net="conv"``.

    ``beta`` (default 1) scales the latent site in model and guide through
    ``pyro.poutine.scale``: β·KL in the loss, for KL warm-up.
    """

    conditional = False  # encode/decode/reconstruct/sample take no label

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        guide: str = "diag",
        flow_steps: int = 2,
        net: str = "mlp",
        image_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.x_dim, self.z_dim, self.guide_name = x_dim, z_dim, guide
        self.lik = get_likelihood(likelihood)
        nets, shape = get_net(net), tuple(image_shape or (x_dim,))
        body = nets.encoder(shape, hidden_dims, 0)
        self.encoder = Encoder(body, build_head(guide, body.out_dim, z_dim, flow_steps=flow_steps))
        self.decoder = nets.decoder(z_dim, shape, hidden_dims, self.lik.out_per_pixel)
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))
        self.beta = 1.0

    # -- the distributions, shared by model, guide and helpers
    def prior(self) -> dist.TorchDistribution:
        """p(z): batch shape ``()``, event shape ``(z_dim,)``; plates broadcast it."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def likelihood(self, z: Tensor) -> dist.TorchDistribution:
        """p(x|z) for ``z`` of shape ``(..., z_dim)``: batch shape ``(...)``, event ``(x_dim,)``."""
        return self.lik.make(self.decoder(z))

    def posterior(self, x: Tensor) -> dist.TorchDistribution:
        """q(z|x) for ``x`` of shape ``(batch, x_dim)``: batch ``(batch,)``, event ``(z_dim,)``."""
        return self.encoder(x)

    def _latent_scale(self):
        return contextlib.nullcontext() if self.beta == 1.0 else pyro.poutine.scale(scale=self.beta)

    # -- the Pyro pair
    def model(self, x: Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            with self._latent_scale():
                z = pyro.sample("z", self.prior())  # (..., batch, z_dim)
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: Tensor) -> None:
        with self._latent_scale():
            self.encoder.guide(x)  # site "z" in plate "data": (..., batch, z_dim)

    @functools.cached_property
    def pair(self) -> tuple:
        """``(model, guide)``, bound once: a JIT estimator keys its compiled graph on their ids, and
        ``self.model`` is a new bound method on every access."""
        return self.model, self.guide

    def loss_and_grads(self, elbo, x: Tensor) -> float:
        """``elbo.loss_and_grads`` on this pair (what one training step differentiates)."""
        return elbo.loss_and_grads(*self.pair, x)

    # -- helpers
    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:returns: the mean and marginal standard deviation of q(z|x), each ``(batch, z_dim)``
        (Monte Carlo estimates for flow guides)."""
        return moments(self.posterior(x))

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """:returns: the mean of p(x|z), ``(..., x_dim)``."""
        return self.likelihood(z).mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean: ``(batch, x_dim)`` ↦ ``(batch, x_dim)``."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """:returns: the means of p(x|z) for ``n`` draws z ~ p(z), ``(n, x_dim)``."""
        return self.decode(self.prior().sample((n,)))
