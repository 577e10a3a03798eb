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
from pyro.infer.util import is_validation_enabled
from torch import Tensor, nn

from .data import check_images
from .guides import Encoder, build_head, moments
from .likelihoods import get_likelihood
from .nets import get_net


class BaseVAE(nn.Module):
    """What every model here shares: the likelihood, the encoder (of x and an optional condition
    of width ``cond_dim``) feeding a guide head, the decoder of z and the condition, the N(0, I)
    buffers, β, and the training step's hook :meth:`loss_and_grads`. Subclasses add their Pyro pair.

    ``encoder_cond=False`` keeps the condition out of the encoder (q(z|x) instead of q(z|x, c));
    ``cond_every_layer=True`` feeds it to every decoder layer (see :mod:`pyro_vae.nets`).

    ``estimators`` names the estimators of :data:`pyro_vae.elbos.ELBOS` the model accepts (``None``:
    all that enumerate nothing), checked by :func:`pyro_vae.elbos.check_estimator`.

    ``beta`` (default 1, set by the training loop for KL warm-up) and ``kl_weight`` (default 1, a
    fixed weight of the model) multiply into the scale of the latent site in model and guide
    through ``pyro.poutine.scale``: β·w·KL in the loss. Metrics use the unscaled densities.
    """

    estimators: tuple[str, ...] | None = None  # None: every estimator that enumerates nothing
    default_estimator = "trace"  # --elbo when none is given
    default_epochs = 100  # --epochs when none is given

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int],
        likelihood: str,
        guide: str,
        flow_steps: int,
        net: str,
        image_shape: Sequence[int] | None,
        cond_dim: int = 0,
        *,
        encoder_cond: bool = True,
        cond_every_layer: bool = False,
        kl_weight: float = 1.0,
    ):
        super().__init__()
        self.x_dim, self.z_dim, self.guide_name = x_dim, z_dim, guide
        self.hidden_dims, self.net_name = tuple(hidden_dims), net
        self.lik = get_likelihood(likelihood)
        nets, self.image_shape = get_net(net), tuple(image_shape or (x_dim,))
        self.encoder_cond = encoder_cond
        body = nets.encoder(self.image_shape, hidden_dims, cond_dim if encoder_cond else 0)
        self.encoder = Encoder(body, build_head(guide, body.out_dim, z_dim, flow_steps=flow_steps))
        self.decoder = nets.decoder(
            z_dim, self.image_shape, hidden_dims, self.lik.out_per_pixel, cond_dim, cond_every_layer
        )
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))
        self.beta = 1.0
        if not kl_weight > 0:
            raise ValueError(f"kl_weight must be positive, got {kl_weight!r}")
        self.kl_weight = float(kl_weight)

    def check_x(self, x: Tensor) -> None:
        """Under Pyro's validation (on by default, off in the training loop), check that ``x`` is a
        ``(batch, x_dim)`` floating-point tensor of finite pixels in the likelihood's range.

        :raises ValueError: naming what is wrong and how to fix it.
        """
        if is_validation_enabled():
            check_images(x, name="x", unit_interval=self.lik.unit_interval, x_dim=self.x_dim)

    def _latent_scale(self):
        scale = self.beta * self.kl_weight
        return contextlib.nullcontext() if scale == 1.0 else pyro.poutine.scale(scale=scale)

    @functools.cached_property
    def pair(self) -> tuple:
        """``(model, guide)``, bound once: a JIT estimator keys its compiled graph on their ids, and
        ``self.model`` is a new bound method on every access."""
        return self.model, self.guide

    def loss_and_grads(self, elbo, *args: Tensor) -> float:
        """``elbo.loss_and_grads`` on this pair and the model's arguments (what one training step
        differentiates)."""
        return elbo.loss_and_grads(*self.pair, *args)


class VAE(BaseVAE):
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
        super().__init__(x_dim, z_dim, hidden_dims, likelihood, guide, flow_steps, net, image_shape)

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

    # -- the Pyro pair
    def model(self, x: Tensor) -> None:
        self.check_x(x)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            with self._latent_scale():
                z = pyro.sample("z", self.prior())  # (..., batch, z_dim)
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: Tensor) -> None:
        self.check_x(x)
        with self._latent_scale():
            self.encoder.guide(x)  # site "z" in plate "data": (..., batch, z_dim)

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
