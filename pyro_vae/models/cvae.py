"""The conditional VAE: a Pyro model p(z|y) p(x|z, y) and its guide q(z|x, y), side by side. The
conditional metrics (log p(x|y) per class, generative classification, label fidelity) live in
:mod:`pyro_vae.inference.evaluate`.

The objective per labelled image is E_q(z|x,y)[log p(x|z, y)] − KL(q(z|x, y) ‖ p(z|y)), where
p(z|y) is learned (a mixture of Gaussians or one Gaussian per class) or N(0, I). The networks and
the label helpers are :class:`pyro_vae.models.base.ConditionalModel`'s.

References:
    Sohn, Lee & Yan, *Learning Structured Output Representation using Deep Conditional Generative
    Models*, NeurIPS 2015.
    Kingma, Rezende, Mohamed & Welling, *Semi-Supervised Learning with Deep Generative Models*,
    NeurIPS 2014 (the conditional generative model M2 shares).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_vae.errors import LabelError
from pyro_vae.inference.guides import site_infer
from pyro_vae.models.base import ConditionalModel
from pyro_vae.models.priors import build_prior, check_prior, get_prior


class CVAE(ConditionalModel):
    """p(z|y), p(x|z, y) = likelihood(decoder(z, y)), q(z|x, y) = guide head(encoder(x, y)).

    Both :meth:`model` and :meth:`guide` take ``x`` of shape ``(batch, x_dim)`` and ``y`` of shape
    ``(batch,)`` (int64 class indices), and sample the latent site ``"z"`` (event shape
    ``(z_dim,)``) inside ``pyro.plate("data", batch, dim=-1)``; the model observes ``"x"``. Every
    registered guide head (``diag``, ``diag-score``, ``fullcov``, ``iaf``) and estimator works; the
    ``meanfield`` estimator uses torch's closed-form KL between q and a Gaussian p(z|y).

    The parameters are those of :class:`~pyro_vae.models.base.ConditionalModel`, and (keyword only):

    :param str prior: a name in :data:`pyro_vae.models.priors.PRIORS` for a conditional model:
        ``"mixture"`` (the default: a :class:`~pyro_vae.models.priors.MixturePrior`, ``prior_components``
        learned Gaussians per class), ``"learned"`` (a :class:`~pyro_vae.models.priors.LearnedPrior`:
        one learned Gaussian per class) or ``"standard"`` (N(0, I)).
    :param int prior_components: mixture components per class, for ``prior="mixture"`` (default 30).
    :param float kl_weight: w, the weight of KL(q(z|x, y) ‖ p(z|y)) in the training loss (default 2.5;
        a run with ``prior="standard"`` records 2.75, :meth:`defaults_for`).
    :param str decoder_y: how the decoder reads y, :data:`pyro_vae.models.nets.DECODER_Y` (default ``"film"``).

    Why these defaults: a class-conditional sample is the decoder's answer to a z drawn from
    p(z|y). The encoder sees x, where the class is visible, so z carries the class (with a learned
    prior at no KL cost: the class's prior moves to its codes) and the decoder reads it from z
    as much as from y; a z from p(z|y) in a region that no code of class y filled then decodes to
    another digit or a blend. Four things leave the class to y: a decoder in which y scales every
    hidden unit (FiLM) rather than only shifting it, so that each class drives its own units from z;
    a KL weight w = 2.5 (2.75 under N(0, I), which cannot move to the codes), which charges for what z
    repeats of x's class; a mixture per class, which covers the codes' clusters; and a longer training
    (300 epochs by default). README.md's CVAE tables give the label fidelity of each step.
    """

    config_options = ("prior", "prior_components", "kl_weight", "decoder_y")
    default_epochs = 300
    evidence = "log p(x|y)"
    defaults = {"prior": "mixture", "prior_components": 30, "kl_weight": 2.5, "decoder_y": "film"}
    standard_kl_weight = 2.75  # the default w of prior="standard": N(0, I) cannot move to the codes
    option_notes = {"kl_weight": "2.5 (2.75 with --prior standard)"}

    @classmethod
    def defaults_for(cls, m) -> dict:
        """The defaults for a config whose prior may be chosen: w = 2.75 with the standard prior, and
        mixture components only for a mixture prior."""
        out = super().defaults_for(m)
        if (m.prior or out["prior"]) == "standard":
            out["kl_weight"] = cls.standard_kl_weight
        return cls._components_only_for_mixture(m, out)

    legacy = {"prior": "learned", "prior_components": 30, "kl_weight": 1.0, "decoder_y": "input"}

    @classmethod
    def legacy_for(cls, m) -> dict:
        return cls._components_only_for_mixture(m, super().legacy_for(m))

    @staticmethod
    def _components_only_for_mixture(m, values: dict) -> dict:
        if get_prior(m.prior or values["prior"]).components is None:
            values.pop("prior_components", None)
        return values

    def __init__(
        self,
        *args,
        prior: str = "mixture",
        prior_components: int = 30,
        kl_weight: float = 2.5,
        decoder_y: str = "film",
        **kwargs,
    ):
        super().__init__(*args, kl_weight=kl_weight, decoder_y=decoder_y, **kwargs)
        check_prior(prior, "cvae", True, self.guide_name)
        self.prior_name = prior
        self.prior_net = build_prior(prior, self.z_dim, self.num_classes, prior_components, self.x_dim)

    # -- the prior
    def prior(self, y: Tensor | None = None) -> dist.TorchDistribution:
        """p(z|y) for ``y`` of shape ``(...)``: batch shape ``(...)`` (``()`` for the standard
        prior, which plates broadcast), event shape ``(z_dim,)``. Without ``y``, the marginal
        p(z) = Σ_y p(y) p(z|y) with p(y) uniform, batch shape ``()``."""
        return self.prior_net(y, self.posterior)

    # -- the Pyro pair
    def model(self, x: Tensor | None, y: Tensor | None = None) -> None:
        """p(z|y) p(x|z, y) with x observed; ``model(None, y)`` draws z ~ p(z|y) and x ~ p(x|z, y)
        for the ``(n,)`` labels y (``Predictive(cvae.model, num_samples=S)(None, y)``)."""
        if y is None:
            raise LabelError("the CVAE's model(x, y) needs the labels y of x, (batch,) class indices")
        pyro.module("decoder", self.decoder)
        pyro.module("prior_net", self.prior_net)
        with pyro.plate("data", self._data_size(x, y, None), dim=-1):
            with self._latent_scale():
                z = pyro.sample("z", self.prior(y))  # (..., batch, z_dim)
            pyro.sample("x", self.likelihood(z, y), obs=x)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        if y is None:
            raise LabelError("the CVAE's guide(x, y) needs the labels y of x, (batch,) class indices")
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            q = self.posterior(x, y)
            with self._latent_scale():
                pyro.sample("z", q, infer=site_infer(q))  # (..., batch, z_dim)

    # -- what a run reports
    def evaluation_args(self, x: Tensor, y: Tensor | None) -> tuple:
        """``(x, y)``: the test ELBO and IS estimate are of log p(x|y)."""
        if y is None:
            raise LabelError("a CVAE is evaluated on labelled images; give the test labels y")
        return (x, y)

    def extra_metrics(self, x: Tensor, y: Tensor | None, num_samples: int) -> dict:
        """The prior's name and generative classification (:meth:`generative_metrics`)."""
        x, y = self.evaluation_args(x, y)
        return {"conditional": True, "prior": self.prior_name, **self.generative_metrics(x, y, num_samples)}

    # -- helpers
    @torch.no_grad()
    def prior_moments(self) -> tuple[Tensor, Tensor]:
        """:returns: the per-class mean and standard deviation of p(z|y), each ``(num_classes, z_dim)``."""
        y = torch.arange(self.num_classes, device=self.prior_loc.device)
        p = self.prior(y).expand((self.num_classes,))
        return p.mean, p.stddev
