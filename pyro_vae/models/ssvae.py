"""Semi-supervised learning with the M2 model of Kingma et al. (2014), as a Pyro model/guide pair.

Model: y ~ Cat(π) (uniform), z ~ N(0, I), x ~ p(x|z, y). Guide: the classifier q(y|x) and
q(z|x, y). A labelled image contributes the conditional ELBO

    L(x, y) = E_q(z|x,y)[log p(x|z, y) + log p(y) + log p(z) − log q(z|x, y)];

an unlabelled one the bound U(x) = Σ_y q(y|x) L(x, y) + H(q(y|x)), computed exactly over the
classes by enumerating y in the guide (the ``enum`` estimator, ``TraceEnum_ELBO``). Since q(y|x)
gets no gradient from labelled images through L, the model also observes each label a second
time, at the auxiliary site ``"y_aux"`` ~ q(y|x), scaled by α with ``pyro.poutine.scale`` (as
Pyro's ``examples/vae/ss_vae_M2.py`` does): its log density is α·log q(y|x), and the estimator's
loss on a labelled batch is −L(x, y) + α·(−log q(y|x)). The whole objective is

    J^α = Σ_labelled [−L(x, y) + α (−log q(y|x))] + Σ_unlabelled [−U(x)],

α per labelled image (``aux_weight``; Pyro's script uses 46 on MNIST). Kingma et al. write the same
term as α'·N times the *mean* cross-entropy over the N_l labelled images: α = α'·N/N_l.

Each step pairs a batch of B_u unlabelled images with B_l labelled ones drawn with replacement and
scales the labelled batch by (B_u/N_u)(N_l/B_l) (:func:`semi_supervised_batches`), so that a step
is an unbiased estimate of J^α · B_u/N_u: an epoch over the unlabelled images sums to J^α in
expectation. Every gradient comes from the estimator's one backward pass per batch.

The baseline (:func:`train_classifier`) is the same classifier network trained with the
cross-entropy alone on the same N_l labels.

References:
    Kingma, Rezende, Mohamed & Welling, *Semi-Supervised Learning with Deep Generative Models*,
    NeurIPS 2014.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch import Tensor, nn

from pyro_vae.data.images import check_labels
from pyro_vae.errors import DataError, UsageError
from pyro_vae.inference.guides import site_infer
from pyro_vae.models.base import ConditionalModel
from pyro_vae.models.nets import get_net


class Classifier(nn.Module):
    """x ↦ logits of q(y|x): an encoder network (``mlp`` or ``conv``) and a linear layer.

    :param image_shape: (C, H, W) (or ``(D,)`` for ``net="mlp"``).
    :returns: logits ``(..., num_classes)`` for ``x`` of shape ``(..., D)``.
    """

    def __init__(
        self, image_shape: Sequence[int], num_classes: int = 10, hidden_dims: Sequence[int] = (400,), net: str = "mlp"
    ):
        super().__init__()
        self.body = get_net(net).encoder(tuple(image_shape), hidden_dims, 0)
        self.head = nn.Linear(self.body.out_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))  # (..., num_classes)


class SSVAE(ConditionalModel):
    """M2: p(y) p(z) p(x|z, y) with the guide q(y|x) q(z|x, y).

    :meth:`model` and :meth:`guide` take ``x`` ``(batch, x_dim)`` and optionally ``y``
    ``(batch,)``. With ``y`` the site ``"y"`` is observed, and the model observes it again at the
    auxiliary site ``"y_aux"`` ~ q(y|x) scaled by α (``aux_weight``); without it the guide samples
    ``"y"`` from the classifier, marked for parallel enumeration (the ``enum`` estimator sums over
    the classes; a plain trace, as in :func:`pyro_vae.inference.evaluate.importance_log_px`, samples it).
    Sites ``"y"``, ``"y_aux"``, ``"z"`` (event ``(z_dim,)``) and ``"x"`` (event ``(x_dim,)``) all
    sit in ``pyro.plate("data", batch, dim=-1)``. p(z) = N(0, I) for every class.

    The parameters are those of :class:`pyro_vae.models.base.ConditionalModel`; ``hidden_dims`` and ``net``
    also shape the classifier q(y|x). And (keyword only):

    :param float aux_weight: α, the scale of the auxiliary site: each labelled image adds
        α·(−log q(y|x)) to the loss (default 200; a training run sets it per step from
        ``--class-weight``). 0 drops the site.
    :param float kl_weight: w, the weight of KL(q(z|x, y) ‖ p(z)) in the loss (default 4).
    :param str decoder_y: how the decoder reads y, :data:`pyro_vae.models.nets.DECODER_Y` (default ``"input"``).

    Why w = 4: the unlabelled bound U(x) = Σ_y q(y|x) L(x, y) + H(q(y|x)) teaches q(y|x) only
    where L(x, y) depends on y. With w = 1 the encoder puts the class into z (it sees x), the
    decoder reads it from there, L hardly changes with y, and H pulls q(y|x) towards uniform.
    Charging z more leaves the class to y; README.md's M2 tables give the accuracies.
    """

    estimators = ("enum", "tracegraph")  # y summed out (TraceEnum_ELBO), or sampled with a baseline
    default_estimator = "enum"
    semi_supervised = True  # trains on a drawn subset of the labels (config.data.labels, label_seed)
    config_options = ("kl_weight", "decoder_y")
    reads = (*ConditionalModel.reads, "labels", "label_seed", "class_weight", "class_weight_grid")
    defaults = {"kl_weight": 4.0, "decoder_y": "input"}
    legacy = {"kl_weight": 4.0, "decoder_y": "input"}

    def __init__(self, *args, aux_weight: float = 200.0, kl_weight: float = 4.0, decoder_y: str = "input", **kwargs):
        super().__init__(*args, kl_weight=kl_weight, decoder_y=decoder_y, **kwargs)
        if not aux_weight >= 0:
            raise UsageError(f"aux_weight must be 0 or positive, got {aux_weight!r}")
        self.aux_weight = float(aux_weight)
        self.classifier = Classifier(self.image_shape, self.num_classes, self.hidden_dims, self.net_name)
        self.register_buffer("prior_logits", torch.zeros(self.num_classes))  # p(y) uniform
        self.enumerate_y = True  # the guide marks y for enumeration; loss_and_grads sets it per estimator

    def classifier_dist(self, x: Tensor) -> dist.Categorical:
        """q(y|x) for ``x`` ``(batch, x_dim)``: batch shape ``(batch,)``."""
        return dist.Categorical(logits=self.classifier(x))

    # -- the Pyro pair
    def model(self, x: Tensor | None, y: Tensor | None = None, num: int | None = None) -> None:
        """p(z) p(y) p(x|z, y), and α·log q(y|x) on labelled images; ``model(None, y)`` (or
        ``model(None, num=n)``, y ~ p(y)) draws x from the generative model alone."""
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", self._data_size(x, y, num), dim=-1):
            with self._latent_scale():
                z = pyro.sample("z", self.prior())  # (..., batch, z_dim)
            y_obs = pyro.sample("y", dist.Categorical(logits=self.prior_logits), obs=y)  # (batch,) or enumerated
            pyro.sample("x", self.likelihood(z, y_obs), obs=x)
            if x is not None and y is not None and self.aux_weight > 0:
                # the classification term of Kingma et al.: α·log q(y|x) on labelled images
                pyro.module("classifier", self.classifier)
                with poutine.scale(scale=self.aux_weight):
                    pyro.sample("y_aux", self.classifier_dist(x), obs=y)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        pyro.module("classifier", self.classifier)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:
                # enumerated: (classes, 1); sampled (an estimator that enumerates nothing): (batch,)
                q_y = self.classifier_dist(x)
                y = pyro.sample("y", q_y, infer={"enumerate": "parallel"} if self.enumerate_y else site_infer(q_y, "y"))
            q = self.posterior(x, y)
            with self._latent_scale():
                pyro.sample("z", q, infer=site_infer(q))  # (..., batch, z_dim)

    def loss_and_grads(
        self, elbo, x_u: Tensor, x_l: Tensor, y_l: Tensor, labelled_scale: float, aux_weight: float | None = None
    ) -> float:
        """One step of J^α (module docstring): the estimator on the unlabelled batch (−U), then on
        the labelled batch scaled by ``labelled_scale`` (−L − α log q(y|x)); gradients accumulate.

        :param elbo: the ``enum`` estimator (``TraceEnum_ELBO``; it enumerates y for the unlabelled batch),
            or ``tracegraph``, which samples y from q(y|x) and takes its score-function gradient with a
            decaying-average baseline (the "y sampled" row of Kingma et al.'s and Pyro's ablation).
        :param float aux_weight: α for this step instead of ``self.aux_weight`` (callers that keep α
            outside the model).
        :returns: the loss (nats).
        """
        loss = 0.0
        if len(x_u):
            self.enumerate_y = isinstance(elbo, TraceEnum_ELBO)
            try:
                loss += elbo.loss_and_grads(self.model, self.guide, x_u)
            finally:
                self.enumerate_y = True
        if len(x_l):
            kept, self.aux_weight = self.aux_weight, self.aux_weight if aux_weight is None else aux_weight
            try:
                with poutine.scale(scale=labelled_scale), warnings.catch_warnings():
                    # y is observed here: nothing to enumerate, which TraceEnum_ELBO would warn about
                    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
                    loss += elbo.loss_and_grads(self.model, self.guide, x_l, y_l)
            finally:
                self.aux_weight = kept
        return loss

    # -- what training and evaluation pass
    @staticmethod
    def labelled_rows(data, config) -> Tensor:
        """The training images whose labels a run keeps: ``config.data.labels`` of them (all when
        ``None``), balanced per class, drawn with ``config.data.label_seed``; ``(N_l,)`` int64.

        :raises ValueError: when the labels asked for do not fit the classes or the training set."""
        n = config.data.labels if config.data.labels is not None else len(data.train_y)
        rows = labelled_subset(data.train_y, n, data.num_classes, config.data.label_seed)  # seeded: the same each call
        return rows.to(data.train_images.device)

    @classmethod
    def check_data(cls, data, config) -> None:
        super().check_data(data, config)
        cls.labelled_rows(data, config)  # --labels fits the classes and the training set

    def train_batches(self, data, config) -> Iterator[tuple]:
        """:func:`semi_supervised_batches`: ``(x_u, x_l, y_l, labelled scale, α)`` per step."""
        return semi_supervised_batches(
            data.epoch_train_x(),
            data.train_y,
            self.labelled_rows(data, config),
            config.train.batch_size,
            config.train.class_weight,
        )

    def steps_per_epoch(self, data, config) -> int:
        n, n_l = len(data.train_images), len(self.labelled_rows(data, config))
        return math.ceil((n - n_l if n > n_l else n_l) / config.train.batch_size)

    def evaluation_args(self, x: Tensor, y: Tensor | None) -> tuple:
        """``(x,)``: the unlabelled bound, y marginalized (IS proposal q(y|x) q(z|x, y))."""
        return (x,)

    # -- what a run reports
    def epoch_metrics(self, data) -> dict:
        return {"test_accuracy": accuracy(self.classify, data.test_x, data.test_y)}

    def summary(self, final: dict) -> list[str]:
        """Also q(y|x)'s accuracy against the baseline classifier's."""
        out = super().summary(final)
        if "accuracy" in final:
            out.insert(
                min(1, len(out)),
                f"q(y|x) test accuracy {final['accuracy']:.4f} with {final['labels']} labels "
                f"(baseline classifier {final['baseline_accuracy']:.4f})",
            )
        return out

    def metric_rows(self, result: dict) -> list[tuple[str, str]]:
        rows = super().metric_rows(result)
        if "accuracy" in result:
            rows.insert(min(1, len(rows)), ("q(y|x) accuracy", f"{result['accuracy']:10.4f}"))
        return rows

    def extra_metrics(self, x: Tensor, y: Tensor | None, num_samples: int) -> dict:
        """The test accuracy of q(y|x), and that of the model's own posterior p(y|x)
        (:meth:`generative_metrics`), towards which the unlabelled bound pulls q(y|x)."""
        if y is None:
            return {}
        return {"accuracy": accuracy(self.classify, x, y), **self.generative_metrics(x, y, num_samples)}

    @property
    def generative_model(self):
        """:meth:`model` without the auxiliary site ``"y_aux"``: α·log q(y|x) is a term of the
        training objective, not of p(x, y), and would otherwise decide generative classification."""
        return poutine.block(self.model, hide=["y_aux"])

    def run_metrics(self, data, config, steps: int) -> dict:
        """The supervised baseline: this classifier network trained with the cross-entropy alone
        on the same labelled images, for as many Adam steps (``steps``) as M2 took."""
        labelled = self.labelled_rows(data, config)
        clf = train_classifier(
            data.train_images[labelled],
            data.train_y[labelled],
            image_shape=self.image_shape,
            num_classes=self.num_classes,
            hidden_dims=self.hidden_dims,
            net=self.net_name,
            steps=max(1, steps),
            batch_size=config.train.batch_size,
            lr=config.train.lr,
            seed=config.train.seed,
        )
        return {
            "labels": len(labelled),
            "baseline_accuracy": accuracy(predict_with(clf), data.test_x, data.test_y),
            "baseline_steps": max(1, steps),
        }

    # -- helpers (decode, sample, transfer: ConditionalModel)
    @torch.no_grad()
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The mean and marginal standard deviation of q(z|x, y), each ``(batch, z_dim)``; without
        ``y``, with the class q(y|x) finds most likely."""
        return super().encode(x, self.classify(x) if y is None else y)

    @torch.no_grad()
    def classify(self, x: Tensor, batch_size: int = 2000) -> Tensor:
        """argmax_y q(y|x): ``(N, x_dim)`` ↦ ``(N,)`` int64."""
        return torch.cat([self.classifier(b).argmax(-1) for b in x.split(batch_size)])


def semi_supervised_batches(
    x: Tensor, y: Tensor, labelled: Tensor, batch_size: int, class_weight: float | None = None
) -> Iterator[tuple]:
    """One epoch of :meth:`SSVAE.loss_and_grads` arguments.

    Shuffles the unlabelled images (all but ``labelled``) into batches of ``batch_size`` and pairs
    each with B_l = min(batch_size, N_l) labelled images drawn with replacement, scaled by
    (B_u/N_u)(N_l/B_l): over an epoch each labelled image weighs 1 in expectation. With no unlabelled
    images, the labelled ones are batched instead (scale 1).

    :param Tensor x: ``(N, D)`` training images; ``y`` ``(N,)`` their labels (only ``y[labelled]`` is read).
    :param Tensor labelled: ``(N_l,)`` indices of the labelled images.
    :param float class_weight: for callers that give Kingma et al.'s α' (weight of the *mean*
        cross-entropy, times N): each tuple then also carries the per-image α = α'·N/N_l.
    :returns: tuples ``(x_u, x_l, y_l, labelled_scale)`` (and α with ``class_weight``).
    """
    n, n_l = len(x), len(labelled)
    extra = () if class_weight is None else (class_weight * n / n_l,)
    unlabelled_mask = torch.ones(n, dtype=torch.bool, device=x.device)
    unlabelled_mask[labelled] = False
    unlabelled = unlabelled_mask.nonzero().squeeze(1)
    n_u = len(unlabelled)
    if n_u == 0:
        for idx in torch.randperm(n_l, device=x.device).split(batch_size):
            rows = labelled[idx]
            yield (x[:0], x[rows], y[rows], 1.0, *extra)
        return
    b_l = min(batch_size, n_l)
    for idx in torch.randperm(n_u, device=x.device).split(batch_size):
        rows = labelled[torch.randint(n_l, (b_l,), device=x.device)]
        yield (x[unlabelled[idx]], x[rows], y[rows], len(idx) / n_u * n_l / b_l, *extra)


@torch.no_grad()
def accuracy(predict, x: Tensor, y: Tensor) -> float:
    """The fraction of ``(N, D)`` images whose ``predict(x)`` equals ``y``."""
    return (predict(x) == y).float().mean().item()


def train_classifier(
    x: Tensor,
    y: Tensor,
    *,
    image_shape: Sequence[int],
    num_classes: int = 10,
    hidden_dims: Sequence[int] = (400,),
    net: str = "mlp",
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> Classifier:
    """The supervised baseline: a :class:`Classifier` trained with the cross-entropy alone.

    Adam on minibatches of min(batch_size, N) labelled images drawn with replacement.

    :param Tensor x: ``(N_l, D)`` labelled images; ``y`` ``(N_l,)`` their labels.
    :param int steps: Adam steps (``fit`` uses as many as the M2 run took).
    :returns: the trained classifier, in eval mode.
    """
    check_labels(y, num_classes, n=len(x), name="classifier labels")
    if steps < 1:
        raise UsageError(f"steps must be a positive integer, got {steps!r}")
    torch.manual_seed(seed)
    clf = Classifier(tuple(image_shape), num_classes, hidden_dims, net).to(x.device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    b = min(batch_size, len(x))
    for _ in range(steps):
        rows = torch.randint(len(x), (b,), device=x.device)
        loss = F.cross_entropy(clf(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


def predict_with(classifier: nn.Module, batch_size: int = 2000):
    """``x ↦ argmax`` of a classifier's logits, batched, without gradients."""

    @torch.no_grad()
    def predict(x: Tensor) -> Tensor:
        return torch.cat([classifier(b).argmax(-1) for b in x.split(batch_size)])

    return predict


__all__ = [
    "SSVAE",
    "Classifier",
    "semi_supervised_batches",
    "train_classifier",
    "accuracy",
    "predict_with",
]


LABELS_SEED = 0  # the fixed seed of the labelled subset kept by --labels N


def labelled_subset(y: Tensor, num_labels: int, num_classes: int, seed: int = LABELS_SEED) -> Tensor:
    """Indices of ``num_labels`` training images whose labels are kept, balanced over classes.

    Each class gets ``num_labels // num_classes`` images (the first ``num_labels % num_classes``
    classes one more), drawn without replacement with a fixed seed, so every run with the same
    data and N keeps the same labels. N equal to the training set keeps every label, whatever the
    class sizes.

    :param Tensor y: ``(N,)`` training labels.
    :returns: ``(num_labels,)`` int64 indices into the training set, sorted.
    :raises ValueError: when N < num_classes, N exceeds the training set, or a class is too small.
    """
    if not isinstance(num_labels, int) or num_labels < num_classes:
        raise DataError(
            f"labels must be at least the number of classes ({num_classes}) so that every class keeps a label, "
            f"got {num_labels!r}"
        )
    if num_labels > len(y):
        raise DataError(f"labels must be at most the number of training images ({len(y)}), got {num_labels}")
    if num_labels == len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    chosen = []
    for k in range(num_classes):
        want = num_labels // num_classes + (1 if k < num_labels % num_classes else 0)
        members = (y == k).nonzero().squeeze(1)
        if len(members) < want:
            raise DataError(f"class {k} has {len(members)} training images, fewer than the {want} labels it needs")
        chosen.append(members[torch.randperm(len(members), generator=g)[:want]])
    return torch.cat(chosen).sort().values
