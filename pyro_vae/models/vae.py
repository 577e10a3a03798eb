"""The VAE: a Pyro model p(z) p(x|z) and its amortized guide q(z|x), side by side.

References: Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_vae.inference.guides import moments, site_infer
from pyro_vae.models.base import BaseVAE
from pyro_vae.models.priors import PRIORS, build_prior, check_prior, get_prior


class VAE(BaseVAE):
    """p(z) from :data:`pyro_vae.models.priors.PRIORS` (N(0, I) by default), p(x|z) =
    likelihood(decoder(z)), q(z|x) = guide head(encoder(x)).

    With the default ``guide="diag"``, q(z|x) = N(μ(x), diag σ²(x)) as in Kingma & Welling.

    Both :meth:`model` and :meth:`guide` take ``x`` of shape ``(batch, x_dim)`` (and ignore a label
    ``y``) and sample the latent site ``"z"`` (event shape ``(z_dim,)``) inside
    ``pyro.plate("data", batch, dim=-1)``; the model observes ``"x"`` (event shape ``(x_dim,)``).
    Any outer plate (e.g. vectorized particles at ``dim=-2``) broadcasts through both.

    ``model(None, num=n)`` draws z ~ p(z) and x ~ p(x|z) for n images, so that
    ``pyro.infer.Predictive(vae.model, num_samples=S)(None, num=n)`` samples the prior predictive.

    :param int x_dim: D, pixels per image.
    :param int z_dim: latent dimension.
    :param hidden_dims: MLP widths of the encoder; the decoder mirrors them (``net="conv"``: the
        width of the linear layer is the last one).
    :param str likelihood: a name in :data:`pyro_vae.models.likelihoods.LIKELIHOODS`.
    :param str guide: a name in :data:`pyro_vae.inference.guides.GUIDES`.
    :param int flow_steps: K, for guides that take it (``iaf``).
    :param str net: a name in :data:`pyro_vae.models.nets.NETS` (``mlp`` or ``conv``).
    :param image_shape: (C, H, W) with C·H·W = x_dim; needed by ``net="conv"``.
    :param str prior: a name in :data:`pyro_vae.models.priors.PRIORS` for an unconditional model:
        ``standard`` (the default), ``mixture`` or ``vamp``; its parameters (``prior_net``) train
        and resume with the networks.
    :param int prior_components: K of ``mixture`` (default 10) and ``vamp`` (pseudo-inputs, default 50).

    ``beta`` (default 1) scales the latent site in model and guide through
    ``pyro.poutine.scale``: β·KL in the loss, for KL warm-up.
    """

    config_options = ("prior", "prior_components")
    defaults = {"prior": "standard"}
    option_notes = {
        "prior_components": ", ".join(f"{p.components} with --prior {n}" for n, p in PRIORS.items() if p.components)
    }
    legacy = {"prior": "standard"}

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
        *,
        prior: str = "standard",
        prior_components: int | None = None,
    ):
        check_prior(prior, "vae", False, guide)
        super().__init__(x_dim, z_dim, hidden_dims, likelihood, guide, flow_steps, net, image_shape)
        self.prior_name = prior
        self.prior_net = build_prior(prior, z_dim, 0, prior_components, x_dim)

    @classmethod
    def defaults_for(cls, m) -> dict:
        """The defaults for a config whose prior may be chosen: its number of components, if it takes one."""
        out = super().defaults_for(m)
        components = get_prior(m.prior or out["prior"]).components
        if components is not None:
            out["prior_components"] = components
        return out

    # -- the distributions, shared by model, guide and helpers
    def prior(self, y: Tensor | None = None) -> dist.TorchDistribution:
        """p(z): batch shape ``()``, event shape ``(z_dim,)``; plates broadcast it."""
        return self.prior_net(None, self.posterior)

    def likelihood(self, z: Tensor, y: Tensor | None = None) -> dist.TorchDistribution:
        """p(x|z) for ``z`` of shape ``(..., z_dim)``: batch shape ``(...)``, event ``(x_dim,)``."""
        return self.lik.make(self.decoder(z))

    def posterior(self, x: Tensor, y: Tensor | None = None) -> dist.TorchDistribution:
        """q(z|x) for ``x`` of shape ``(batch, x_dim)``: batch ``(batch,)``, event ``(z_dim,)``."""
        return self.encoder(x)

    # -- the Pyro pair
    def model(self, x: Tensor | None, y: Tensor | None = None, num: int | None = None) -> None:
        self.check_x(x)
        pyro.module("decoder", self.decoder)
        pyro.module("prior_net", self.prior_net)
        with pyro.plate("data", self._data_size(x, None, num), dim=-1):
            with self._latent_scale():
                z = pyro.sample("z", self.prior())  # (..., batch, z_dim)
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        self.check_x(x)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            q = self.posterior(x)
            with self._latent_scale():
                pyro.sample("z", q, infer=site_infer(q))  # (..., batch, z_dim)

    # -- helpers
    @torch.no_grad()
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:returns: the mean and marginal standard deviation of q(z|x), each ``(batch, z_dim)``
        (Monte Carlo estimates for flow guides)."""
        return moments(self.posterior(x))

    @torch.no_grad()
    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """:returns: the mean of p(x|z), ``(..., x_dim)``."""
        return self.likelihood(z).mean

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None) -> Tensor:
        """:returns: the means of p(x|z) for ``n`` draws z ~ p(z), ``(n, x_dim)``.

        :raises LabelError: when given a label (a VAE has no classes).
        :raises UsageError: unless ``n`` is a positive integer."""
        self.check_count(n)
        if y is not None:
            self.check_label(y)
        return self.decode(self.prior().sample((n,)))  # (n, z_dim) ↦ (n, x_dim)
