"""The VAE: a Pyro model p(z) p(x|z) and its amortized guide q(z|x), side by side; and what every
model here shares (:class:`BaseVAE`), the conditional models' part included (:class:`ConditionalModel`).

Every model has one signature: ``model(x, y=None)``, ``guide(x, y=None)``, ``prior(y=None)``,
``encode(x, y=None)``, ``decode(z, y=None)``, ``reconstruct(x, y=None)`` and ``sample(n, y=None)``.
The VAE ignores labels; a conditional model reads them (and draws y ~ p(y) where a sample has none).
Each model class also owns how it is built from its config (:meth:`BaseVAE.from_config`), what one
training batch passes to it (:meth:`BaseVAE.train_batches`), its metrics and its plots, so the
training loop, the CLI and the plots never ask which model they hold.

References: Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer.util import is_validation_enabled
from torch import Tensor, nn

from pyro_vae.data.images import batches, check_images, check_labels
from pyro_vae.errors import LabelError, UsageError
from pyro_vae.inference.evaluate import chunk_for_memory
from pyro_vae.inference.guides import Encoder, build_head, moments
from pyro_vae.inference.labels import generative_classify
from pyro_vae.models.likelihoods import get_likelihood
from pyro_vae.models.nets import get_net


def one_hot(y: Tensor, num_classes: int) -> Tensor:
    """``(...)`` int64 labels ↦ ``(..., num_classes)`` float one-hot vectors."""
    return F.one_hot(y, num_classes).float()


class BaseVAE(nn.Module):
    """What every model here shares: the likelihood, the encoder (of x and an optional condition
    of width ``cond_dim``) feeding a guide head, the decoder of z and the condition, the N(0, I)
    buffers, β, and the hooks the training loop calls.

    ``encoder_cond=False`` keeps the condition out of the encoder (q(z|x) instead of q(z|x, c));
    ``decoder_y`` says how the decoder reads it (:data:`pyro_vae.models.nets.DECODER_Y`).

    ``beta`` (default 1, set by the training loop for KL warm-up) and ``kl_weight`` (default 1, a
    fixed weight of the model) multiply into the scale of the latent site in model and guide
    through ``pyro.poutine.scale``: β·w·KL in the loss. Metrics use the unscaled densities.

    Class attributes a model declares:

    :cvar estimators: the estimators of :data:`pyro_vae.inference.elbos.ELBOS` it accepts (``None``: all that
        enumerate nothing), checked up front by :func:`pyro_vae.inference.elbos.check_estimator`.
    :cvar default_estimator: ``--elbo`` when none is given.
    :cvar default_epochs: ``--epochs`` when none is given.
    :cvar config_options: the :class:`~pyro_vae.config.ModelConfig` fields beyond the networks' that
        :meth:`from_config` passes by keyword (and that the config accepts for this model).
    :cvar defaults: the values a new run records for those options left out.
    :cvar legacy: what a ``config.json`` written before an option existed was built with
        (:func:`pyro_vae.training.train.recorded_config` fills them in).
    :cvar reads: the :class:`~pyro_vae.config.DataConfig` and :class:`~pyro_vae.config.TrainConfig`
        fields that only some models read (``labels``, ``class_weight``, ``fidelity_samples``…),
        for the checks and the ``--help`` of :func:`pyro_vae.models.registry.option_note`.
    :cvar option_notes: how ``--help`` words this model's default of an option where the value in
        :attr:`defaults` alone would mislead.
    :cvar semi_supervised: trains on a drawn subset of the labels (``--labels``, ``--label-seed``).
    :cvar evidence: what :meth:`evaluation_args` make the test ELBO bound: ``"log p(x)"`` or ``"log p(x|y)"``.
    """

    estimators: tuple[str, ...] | None = None
    default_estimator = "trace"
    default_epochs = 100
    config_options: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    defaults: dict = {}
    option_notes: dict = {}
    legacy: dict = {}
    semi_supervised = False
    num_classes = 0  # labels lie in 0..num_classes−1; 0: the model takes none
    evidence = "log p(x)"  # what its test ELBO and IS estimate bound, as reports print it

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
        decoder_y: str = "input",
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
        self.decoder = nets.decoder(z_dim, self.image_shape, hidden_dims, self.lik.out_per_pixel, cond_dim, decoder_y)
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))
        self.beta = 1.0
        if not kl_weight > 0:
            raise UsageError(f"kl_weight must be positive, got {kl_weight!r}")
        self.kl_weight = float(kl_weight)

    # -- building from a config
    @classmethod
    def from_config(cls, m, image_shape: Sequence[int], num_classes: int = 10) -> BaseVAE:
        """The model a :class:`~pyro_vae.config.ModelConfig` ``m`` describes, for images of
        ``image_shape``, by keyword; an option of :attr:`config_options` left ``None`` takes the
        class's default (:meth:`defaults_for`)."""
        defaults = cls.defaults_for(m)
        options = {f: defaults.get(f) if getattr(m, f) is None else getattr(m, f) for f in cls.config_options}
        shape = tuple(image_shape)
        return cls(
            x_dim=math.prod(shape),
            z_dim=m.z_dim,
            hidden_dims=m.hidden_dims,
            likelihood=m.likelihood,
            guide=m.guide,
            flow_steps=m.flow_steps,
            net=m.net,
            image_shape=shape,
            **cls._class_options(num_classes),
            **{k: v for k, v in options.items() if v is not None},
        )

    @classmethod
    def _class_options(cls, num_classes: int) -> dict:
        return {}

    @classmethod
    def defaults_for(cls, m) -> dict:
        """The option values a new run with model config ``m`` records where ``m`` leaves them out."""
        return dict(cls.defaults)

    @classmethod
    def legacy_for(cls, m) -> dict:
        """The option values a ``config.json`` written before they existed was built with
        (:attr:`legacy`), for model config ``m``."""
        return dict(cls.legacy)

    @classmethod
    def default_of(cls, option: str) -> str | None:
        """How ``--help`` words this model's default of a config field, or None where it has none
        of its own."""
        if option in cls.option_notes:
            return cls.option_notes[option]
        own = {"epochs": cls.default_epochs, "elbo": cls.default_estimator, **cls.defaults}
        return None if option not in own else f"{own[option]:g}" if isinstance(own[option], float) else str(own[option])

    # -- what training and evaluation pass to model and guide
    @classmethod
    def check_data(cls, data, config) -> None:
        """Fail up front, in one line, when ``data`` cannot train this model (e.g. no labels); called
        before the model is built."""

    def train_batches(self, data, config) -> Iterator[tuple]:
        """One epoch of the argument tuples of :meth:`loss_and_grads`: ``(x,)`` batches here."""
        return batches(data.epoch_train_x(), config.train.batch_size)

    def steps_per_epoch(self, data, config) -> int:
        """How many tuples :meth:`train_batches` yields."""
        return math.ceil(len(data.train_images) / config.train.batch_size)

    def evaluation_args(self, x: Tensor, y: Tensor | None) -> tuple:
        """The arguments of :meth:`model` and :meth:`guide` whose ELBO and IS log-likelihood a run
        reports on test images ``x`` with labels ``y``: ``(x,)``, log p(x)."""
        return (x,)

    # -- metrics beyond the ELBO and log-likelihood
    def epoch_metrics(self, data) -> dict:
        """Added to each epoch's row of ``metrics.json``."""
        return {}

    def extra_metrics(self, x: Tensor, y: Tensor | None, num_samples: int) -> dict:
        """Added to the final test metrics (``metrics.json`` and ``pyro-vae evaluate``)."""
        return {}

    def data_metrics(self, data, data_dir: str | None, n_per_class: int) -> dict:
        """Added to the final metrics and ``pyro-vae evaluate``: what needs the whole dataset."""
        return {}

    def run_metrics(self, data, config, steps: int) -> dict:
        """Added to the final metrics of a training run (``steps``: the optimizer steps it took)."""
        return {}

    # -- how the commands report those metrics
    def summary(self, final: dict) -> list[str]:
        """Phrases that ``pyro-vae train`` adds to its closing line for this model's own entries of
        the final metrics ``final`` (beyond the bounds every model reports)."""
        return []

    def metric_rows(self, result: dict) -> list[tuple[str, str]]:
        """``(label, value)`` rows that ``pyro-vae evaluate`` prints after the bounds, for this
        model's own entries of ``result``."""
        return []

    @property
    def run_plots(self) -> tuple[str, ...]:
        """The names in :data:`pyro_vae.plots.RUN_PLOTS` drawn into the run folder."""
        return ("samples", "manifold") if self.z_dim == 2 else ("samples",)

    # -- shared helpers
    def check_x(self, x: Tensor) -> None:
        """Under Pyro's validation (on by default, off in the training loop), check that ``x`` is a
        ``(batch, x_dim)`` floating-point tensor of finite pixels in the likelihood's range.

        :raises ValueError: naming what is wrong and how to fix it.
        """
        if x is not None and is_validation_enabled():
            check_images(x, name="x", unit_interval=self.lik.unit_interval, x_dim=self.x_dim)

    def _data_size(self, x: Tensor | None, y: Tensor | None, num: int | None) -> int:
        """The size of the data plate: ``len(x)``; without images (the generative idiom,
        ``model(None, num=n)``) ``len(y)`` or ``num``.

        :raises UsageError: when none of them says how many to draw."""
        if x is not None:
            return x.shape[0]
        if y is not None:
            return y.shape[0]
        if num is None or not isinstance(num, int) or num < 1:
            raise UsageError(
                "model(None, num=n) draws n images from the prior predictive; give x, y or a positive num, "
                f"got num={num!r}"
            )
        return num

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

    @staticmethod
    def check_count(n: int) -> None:
        """:raises UsageError: unless ``n``, a number of samples, is a positive integer."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"the number of samples must be a positive integer, got {n!r}")

    def check_label(self, y: int) -> None:
        """:raises LabelError: for a label this model cannot take."""
        raise LabelError(f"needs a model with classes; a {type(self).__name__} draws from p(z) and takes no label")

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode the posterior mean (with the same label): ``(batch, x_dim)`` ↦ ``(batch, x_dim)``."""
        return self.decode(self.encode(x, y)[0], y)


class ConditionalModel(BaseVAE):
    """What the conditional models (:class:`pyro_vae.models.cvae.CVAE`, :class:`pyro_vae.models.ssvae.SSVAE`)
    share: p(x|z, y) = likelihood(decoder(z, one-hot y)) and q(z|x, y) = guide head(encoder(x, y)),
    the helpers that take labels, and the label metrics. A subclass adds its prior and its Pyro pair.

    :param int x_dim: D, pixels per image.
    :param int num_classes: K; labels lie in 0..K−1.
    :param int z_dim: latent dimension.
    :param hidden_dims: widths of the encoder; the decoder mirrors them.
    :param str likelihood: a name in :data:`pyro_vae.models.likelihoods.LIKELIHOODS`.
    :param str guide: a name in :data:`pyro_vae.inference.guides.GUIDES`.
    :param int flow_steps: K, for guides that take it (``iaf``).
    :param str net: a name in :data:`pyro_vae.models.nets.NETS`.
    :param image_shape: (C, H, W); needed by ``net="conv"``.

    A label left out (``y=None``) of :meth:`sample` is drawn from p(y), uniform; :meth:`encode` and
    :meth:`decode` need one (:class:`pyro_vae.models.ssvae.SSVAE` reads it from q(y|x) in :meth:`encode`).
    """

    def __init__(
        self,
        x_dim: int,
        num_classes: int = 10,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        guide: str = "diag",
        flow_steps: int = 2,
        net: str = "mlp",
        image_shape: Sequence[int] | None = None,
        **options,
    ):
        super().__init__(
            x_dim, z_dim, hidden_dims, likelihood, guide, flow_steps, net, image_shape, cond_dim=num_classes, **options
        )
        self.num_classes = num_classes

    @classmethod
    def _class_options(cls, num_classes: int) -> dict:
        return {"num_classes": num_classes}

    def prior(self, y: Tensor | None = None) -> dist.TorchDistribution:
        """p(z|y), event shape ``(z_dim,)``; N(0, I) (batch shape ``()``) unless a subclass learns one."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def likelihood(self, z: Tensor, y: Tensor) -> dist.TorchDistribution:
        """p(x|z, y) for ``z`` ``(..., z_dim)`` and ``y`` broadcastable to ``(...)``: event ``(x_dim,)``."""
        return self.lik.make(self.decoder(z, one_hot(y, self.num_classes)))

    def posterior(self, x: Tensor, y: Tensor) -> dist.TorchDistribution:
        """q(z|x, y) for ``x`` ``(batch, x_dim)``, ``y`` ``(batch,)`` (or enumerated, ``(classes, 1)``):
        batch shape their broadcast, event ``(z_dim,)``."""
        return self.encoder(x, *((one_hot(y, self.num_classes),) if self.encoder_cond else ()))

    # -- what training and evaluation pass
    @classmethod
    def check_data(cls, data, config) -> None:
        data.require_labels(config.model.model)
        check_labels(data.train_y, data.num_classes, n=len(data.train_images), name="training labels")
        check_labels(data.test_y, data.num_classes, n=len(data.test_images), name="test labels")

    def train_batches(self, data, config) -> Iterator[tuple]:
        """``(x, y)`` batches of the labelled training images."""
        return batches(data.epoch_train_x(), config.train.batch_size, data.train_y)

    reads = ("fidelity_samples",)

    def summary(self, final: dict) -> list[str]:
        """Generative classification accuracy, and label fidelity and sensitivity where measured."""
        out = []
        if "generative_accuracy" in final:
            out.append(f"generative classification accuracy {final['generative_accuracy']:.4f}")
        if "label_fidelity" in final:
            out.append(
                f"label fidelity {final['label_fidelity']:.3f} (judge accuracy {final['judge_accuracy']:.3f}), "
                f"label sensitivity {final['label_sensitivity']:.3f}"
            )
        return out

    def metric_rows(self, result: dict) -> list[tuple[str, str]]:
        rows = []
        if "generative_accuracy" in result:
            k = result["classify_num_samples"]
            rows.append((f"generative accuracy, K={k}/class", f"{result['generative_accuracy']:10.4f}"))
        if "label_fidelity" in result:
            per_class = " ".join(f"{v:.2f}" for v in result["label_fidelity_per_class"])
            n = result["fidelity_samples_per_class"]
            rows += [
                ("label fidelity", f"{result['label_fidelity']:10.4f}   (per class {per_class}; {n} samples each)"),
                ("  judge test accuracy", f"{result['judge_accuracy']:10.4f}"),
                ("label sensitivity", f"{result['label_sensitivity']:10.4f}"),
            ]
        return rows

    def data_metrics(self, data, data_dir: str | None, n_per_class: int) -> dict:
        """Label fidelity (``n_per_class`` samples per class, read by a judge trained on all of
        ``data``'s training labels, cached) and label sensitivity
        (:func:`pyro_vae.inference.labels.conditional_metrics`); nothing when ``n_per_class`` is 0."""
        from pyro_vae.inference.labels import conditional_metrics

        return conditional_metrics(self, data, data_dir=data_dir, n_per_class=n_per_class) if n_per_class else {}

    @property
    def run_plots(self) -> tuple[str, ...]:
        return ("samples", "style_transfer")

    @property
    def generative_model(self):
        """``model(x, y)`` with the sites of the generative model alone (p(z|y), p(x|z, y), and p(y)
        where the model has a site for it): what generative classification scores. :meth:`model`
        here; a subclass whose model observes more than that hides the rest."""
        return self.model

    def generative_metrics(self, x: Tensor, y: Tensor, num_samples: int) -> dict:
        """Generative classification: the accuracy of argmax_y log p̂(x|y) + log p(y), the model's own
        posterior p(y|x), uniform p(y), with K/10 importance samples per class (so it costs about as
        much as the IS log p(x) with K).

        :param Tensor x: ``(N, x_dim)`` test images; ``y`` ``(N,)`` their labels.
        :returns: ``{"generative_accuracy", "classify_num_samples"}``.
        """
        k = max(1, num_samples // 10)
        model = self.generative_model
        chunk = chunk_for_memory(self, model, self.guide, x, y)
        predicted, _ = generative_classify(model, self.guide, x, self.num_classes, num_samples=k, chunk_size=chunk)
        return {"generative_accuracy": (predicted == y).float().mean().item(), "classify_num_samples": k}

    # -- helpers (labels are checked here, at the user's boundary; model and guide trust them)
    def check_label(self, y: int) -> None:
        if not 0 <= y < self.num_classes:
            raise LabelError(f"must be a class in 0..{self.num_classes - 1} ({self.num_classes} classes), got {y}")

    def _labels(self, y: Tensor | int | None, n: int) -> Tensor:
        if y is None:
            raise LabelError(f"a {type(self).__name__} needs labels y here, {n} class indices")
        if isinstance(y, int) and not isinstance(y, bool):
            y = torch.full((n,), y, dtype=torch.int64)
        check_labels(y, self.num_classes, n=n)
        return y.to(self.prior_loc.device)

    @torch.no_grad()
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:returns: the mean and marginal standard deviation of q(z|x, y), each ``(batch, z_dim)``."""
        return moments(self.posterior(x, self._labels(y, len(x))))

    @torch.no_grad()
    def decode(self, z: Tensor, y: Tensor | int | None = None) -> Tensor:
        """:returns: the mean of p(x|z, y), ``(batch, x_dim)`` for ``z`` ``(batch, z_dim)``."""
        return self.likelihood(z, self._labels(y, len(z))).mean

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | int | None = None) -> Tensor:
        """:param y: one label for all, ``(n,)`` labels, or ``None``: y ~ p(y), uniform.
        :returns: the means of p(x|z, y) for ``n`` draws z ~ p(z|y), ``(n, x_dim)``."""
        self.check_count(n)
        if y is None:
            y = torch.randint(self.num_classes, (n,), device=self.prior_loc.device)
        y = self._labels(y, n)
        z = self.prior(y).expand((n,)).sample()  # (n, z_dim)
        return self.likelihood(z, y).mean

    @torch.no_grad()
    def transfer(self, z: Tensor, y: Tensor, y_new: Tensor) -> Tensor:
        """Move codes of class ``y`` to class ``y_new`` keeping their place within the prior:
        z' = μ_{y'} + σ_{y'} · (z − μ_y) / σ_y, the prior's reparameterization with the same ε.

        Under N(0, I) for every class this is z itself. With a learned prior, decoding the
        unchanged z with another label would ask the decoder about a code far from that class's
        prior (z carries the class too), so style transfer goes through ε instead.

        :param Tensor z: ``(..., z_dim)``; ``y`` and ``y_new`` class indices broadcastable to ``(...)``.
        :returns: ``(..., z_dim)``.
        """
        old, new = self.prior(y), self.prior(y_new)
        return new.mean + new.stddev * (z - old.mean) / old.stddev
