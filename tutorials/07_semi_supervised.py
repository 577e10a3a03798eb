# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Semi-supervised learning with M2
#
# Kingma et al. (2014) turn the conditional model of notebook 06 into a semi-supervised learner. The model is
# p(y) p(z) p(x|z, y) with a uniform p(y) = 1/10 and p(z) = N(0, I); the guide is q(y|x) q(z|x, y), where q(y|x) is
# a classifier.
#
# - A **labelled** image contributes the bound L(x, y) = E_q(z|x,y)[log p(x|z, y) + log p(y) + log p(z) − log
#   q(z|x, y)] ≤ log p(x, y). It is notebook 06's conditional ELBO plus the constant log p(y) = −log 10.
# - For an **unlabelled** image y is a latent variable. Its bound U(x) = Σ_y q(y|x) L(x, y) + H(q(y|x)) ≤ log p(x)
#   sums over the ten classes exactly. Pyro *enumerates* the guide's site `"y"` (`config_enumerate`), and
#   `TraceEnum_ELBO` computes the sum in one vectorized pass.
# - Labelled images give q(y|x) no gradient through L. So the model observes each label a second time, at an
#   auxiliary site `"y_aux"` ~ q(y|x) wrapped in `poutine.scale(scale=α)`: a labelled image's loss becomes
#   −L(x, y) + α·(−log q(y|x)).
#
# What is trained here is not exactly that bound. As in notebook 06, the KL term of z carries a weight w: each L
# becomes E_q[log p(x|z, y) + log p(y)] − w·KL(q(z|x, y) ‖ p(z)). The package's M2 uses w = 4 by default (the
# cells below print it), which leaves the class to y rather than to z. With w > 1 the objective is looser than
# the bound; with w = 1 it is the bound.
#
# We write M2 in Pyro, check it against the package's `SSVAE`, train it with 100 and 1,000 labels over several
# draws of the labelled images, and compare the accuracy of q(y|x) on the test set with a **baseline**: the same
# classifier network trained on the same labels with the cross-entropy alone, for as many steps.
#
# Every sentence about a result below is rendered by the cell that computes it, or asserted there; the last cells
# count the claims and say what this notebook cost to run.

# %%
from pyro_vae.notebook import Claims  # first: it also silences tqdm's notice about ipywidgets

claims = Claims()  # asserts each claim in a full run; PYRO_VAE_SMOKE=1 (tiny sizes) checks only exact ones

# %matplotlib inline
import math
import os
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.poutine.util import site_is_subsample
from torch import nn

import pyro_vae
from pyro_vae.inference.judge import load_or_train_judge
from pyro_vae.models.ssvae import SSVAE, semi_supervised_batches

SMOKE = claims.smoke
DATASET = "mnist-5k"  # 4,000 training digits; "fashion-mnist" with DATA_DIR for the README's table
DATA_DIR = None
LABELS = [100] if SMOKE else [100, 1000]  # labelled training images kept, balanced per class
DRAWS = 1 if SMOKE else 3  # draws of the labelled images (and of the initial weights) per number of labels
EPOCHS = 1 if SMOKE else 15  # per run: far fewer than the default 100 of --model ssvae
EVAL_K = 10 if SMOKE else 50  # importance samples per test image for log p(x) and per class for p(y|x)
SUBSET = (500, 200) if SMOKE else None  # (train, test) images kept in smoke mode
RUNS = Path(tempfile.mkdtemp(prefix="07_semi_supervised-"))  # fit writes a run folder per run; fresh each time
torch.set_num_threads(1)  # a busy 2-core machine: one thread each

# the judge of the label fidelity is cached per dataset; a fresh cache, so the cost includes training it
os.environ["PYRO_VAE_CACHE"] = str(RUNS / "cache")

data = pyro_vae.load_dataset(DATASET, DATA_DIR)
if SUBSET:
    data = data.subset(*SUBSET)  # the first images of each set


def show_grid(images, row_labels, col_labels=None, title=None):
    """A grid of images (rows, cols, D) with a label on every row (and column)."""
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(0.55 * cols + 1.4, 0.55 * rows + 0.5), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(images[i, j].detach().reshape(*data.image_shape).permute(1, 2, 0).clamp(0, 1), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
            if col_labels and i == 0:
                ax.set_title(col_labels[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    plt.subplots_adjust(wspace=0.05, hspace=0.05)
    plt.show()


def class_samples(model, n=10):
    """n samples per class y (z ~ p(z|y), decoded with y): ``(classes, n, D)``."""
    with torch.no_grad():
        return torch.stack([model.sample(n, y) for y in range(data.num_classes)])


def style_transfer(model, x, y):
    """Each row: x, then x's code moved to every class y' through the prior (CVAE.transfer) and decoded with y'."""
    classes = torch.arange(model.num_classes)
    with torch.no_grad():
        z = model.encode(x, y)[0]  # (n, z_dim)
        rows = [
            torch.cat(
                [x[i : i + 1], model.decode(model.transfer(z[i].expand(len(classes), -1), y[i], classes), classes)]
            )
            for i in range(len(x))
        ]
    return torch.stack(rows)  # (n, 1 + classes, D)


# %% [markdown]
# ## M2 in Pyro
#
# Three networks, each one hidden layer of 400 ReLU units:
#
# - the **classifier** x ↦ logits of q(y|x);
# - the **encoder** [x, one-hot y] ↦ (μ, σ) of q(z|x, y) = N(μ, diag σ²), with σ = softplus(·) + 10⁻⁴;
# - the **decoder** [z, one-hot y] ↦ 784 Bernoulli logits of p(x|z, y).
#
# Under enumeration y arrives with a shape of its own, `(10, 1)`, while x is `(batch, 784)`. So the encoder and
# decoder join their two inputs after broadcasting the leading dimensions (`join` below). A plain
# `torch.cat` would fail there.


# %%
def join(a, b):
    """[a, b] along the last dimension, the leading dimensions of both broadcast: (..., n_a + n_b)."""
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*lead, a.shape[-1]), b.expand(*lead, b.shape[-1])], -1)


class Encoder(nn.Module):  # q(z|x, y)
    def __init__(self, x_dim=784, y_dim=10, hidden_dim=400, z_dim=20):
        super().__init__()
        self.fc = nn.Linear(x_dim + y_dim, hidden_dim)
        self.fc_loc = nn.Linear(hidden_dim, z_dim)
        self.fc_scale = nn.Linear(hidden_dim, z_dim)

    def forward(self, x, y_onehot):
        h = F.relu(self.fc(join(x, y_onehot)))  # (..., batch, hidden_dim)
        return self.fc_loc(h), F.softplus(self.fc_scale(h)) + 1e-4  # (..., batch, z_dim) each


class Decoder(nn.Module):  # p(x|z, y)
    def __init__(self, z_dim=20, y_dim=10, hidden_dim=400, x_dim=784):
        super().__init__()
        self.fc = nn.Linear(z_dim + y_dim, hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, x_dim)

    def forward(self, z, y_onehot):
        return self.fc_out(F.relu(self.fc(join(z, y_onehot))))  # (..., batch, x_dim): logits


class Classifier(nn.Module):  # q(y|x)
    def __init__(self, x_dim=784, hidden_dim=400, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(x_dim, hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, num_classes)

    def forward(self, x):
        return self.fc_out(F.relu(self.fc(x)))  # (batch, num_classes): logits


# %% [markdown]
# The model and the guide. Read them line by line:
#
# - **One pair for both kinds of data.** With `y` given, the model's site `"y"` is observed and the guide does
#   not sample it; with `y=None` the guide samples `"y"` from q(y|x), and the model scores that value under p(y).
# - **`config_enumerate`** marks every discrete site of the guide for parallel enumeration. `TraceEnum_ELBO` then
#   does not draw y: it evaluates the model and guide at all ten classes at once and sums with the weights
#   q(y|x). That gives U(x) exactly. `max_plate_nesting=1` tells it that one plate dimension is in use (dim −1), so
#   the enumerated values go in dim −2.
# - **The KL weight w** is `poutine.scale(scale=w)` around `"z"` in *both* model and guide: the log p(z) and log
#   q(z|x, y) terms of the loss are multiplied by w, and so is their difference, the KL.
# - **The auxiliary site.** On labelled images the model observes y again at `"y_aux"` ~ q(y|x), scaled by α. The
#   classifier is a network of the guide, but the model uses it here, so the model registers it too
#   (`pyro.module("classifier", …)`); its parameters are the same in both.


# %%
class M2(nn.Module):
    def __init__(self, z_dim=20, num_classes=10, kl_weight=4.0, aux_weight=200.0):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.kl_weight, self.aux_weight = kl_weight, aux_weight
        self.encoder = Encoder(z_dim=z_dim)  # built in the package's order: encoder, decoder, classifier
        self.decoder = Decoder(z_dim=z_dim)
        self.classifier = Classifier(num_classes=num_classes)

    def model(self, x, y=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.scale(scale=self.kl_weight):
                prior = dist.Normal(torch.zeros(self.z_dim), torch.ones(self.z_dim)).to_event(1)
                z = pyro.sample("z", prior)  # (batch, z_dim), or (10, batch, z_dim) with y enumerated
            p_y = dist.Categorical(logits=torch.zeros(self.num_classes))  # uniform: log p(y) = −log 10
            y_value = pyro.sample("y", p_y, obs=y)  # (batch,) observed, or (10, 1) enumerated
            logits = self.decoder(z, F.one_hot(y_value, self.num_classes).float())  # (..., batch, 784)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
            if y is not None:  # the classification term: α·log q(y|x) on labelled images
                pyro.module("classifier", self.classifier)
                with poutine.scale(scale=self.aux_weight):
                    pyro.sample("y_aux", dist.Categorical(logits=self.classifier(x)), obs=y)

    @config_enumerate
    def guide(self, x, y=None):
        pyro.module("classifier", self.classifier)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:
                y = pyro.sample("y", dist.Categorical(logits=self.classifier(x)))  # enumerated: (10, 1)
            loc, scale = self.encoder(x, F.one_hot(y, self.num_classes).float())
            with poutine.scale(scale=self.kl_weight):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


# %% [markdown]
# ## The same as the package's
#
# `pyro_vae.models.ssvae.SSVAE` holds the same three networks, built in the same order, and the same pair (its
# guide marks `"y"` with `infer={"enumerate": "parallel"}`, which is what `config_enumerate` writes). From the
# same seed both start with the same weights. On the same unlabelled and labelled batches, from the same seed,
# `TraceEnum_ELBO(max_plate_nesting=1)` gives both the same loss.

# %%
pyro.set_rng_seed(0)
ours = M2()
pyro.set_rng_seed(0)
package_m2 = SSVAE(data.x_dim, data.num_classes, z_dim=20)  # α = 200 and w = 4 by default, as in M2() above
same_weights = all(torch.equal(a, b) for a, b in zip(ours.parameters(), package_m2.parameters()))
same_weights &= [p.shape for p in ours.parameters()] == [p.shape for p in package_m2.parameters()]
print(
    f"α = {package_m2.aux_weight:g} and w = {package_m2.kl_weight:g} in the package; ours {ours.aux_weight:g}, "
    f"{ours.kl_weight:g}"
)

elbo = TraceEnum_ELBO(max_plate_nesting=1)
x_u, x_l, y_l = data.train_x[:64], data.train_x[64:96], data.train_y[64:96]
losses = {}
for name, pair in {"ours": ours, "package": package_m2}.items():
    pyro.set_rng_seed(3)
    unlabelled = elbo.loss(pair.model, pair.guide, x_u)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
        labelled = elbo.loss(pair.model, pair.guide, x_l, y_l)  # y observed: nothing to enumerate
    losses[name] = (unlabelled, labelled)
for i, kind in enumerate(("64 unlabelled images, −Σ U(x)", "32 labelled images, −Σ [L(x, y) + α log q(y|x)]")):
    print(f"loss of {kind}: ours {losses['ours'][i]:.4f}, package {losses['package'][i]:.4f}")
worst = max(abs(a - b) / abs(b) for a, b in zip(losses["ours"], losses["package"]))
claims.state(
    same_weights and worst < 1e-6,
    f"The two have the same {sum(p.numel() for p in ours.parameters()):,} weights, and both losses agree "
    + (
        "exactly."
        if worst == 0
        else f"to {worst:.0e} of the loss (round-off: the package adds the two halves of the "
        "encoder's first layer instead of concatenating its inputs)."
    ),
    exact=True,
)

# %% [markdown]
# **One backward pass, not two.** Pyro's own example (`examples/vae/ss_vae_M2.py`) writes the auxiliary term as a
# separate pair, `model_classify` with an empty `guide_classify`, and trains it with a second `SVI` object. Each
# batch then takes two optimizer steps, one for the ELBO and one for α·(−log q(y|x)). Here the scaled site sits
# inside the model, so one `TraceEnum_ELBO` loss holds both terms, and each batch takes one backward pass and one
# step. The `poutine.scale` pattern is the same; the single pass is this package's choice.
#
# ## What enumeration does
#
# One unlabelled batch of 4 digits through our guide under Pyro's enumeration handler (`TraceEnum_ELBO` applies the
# same handler, with `first_available_dim` one left of the plates).

# %%
x4, y4 = data.train_x[:4], data.train_y[:4]
with poutine.enum(first_available_dim=-2):
    guide_trace = poutine.trace(ours.guide).get_trace(x4)
for name in ("y", "z"):
    site = guide_trace.nodes[name]
    print(
        f"site {name!r}: value shape {tuple(site['value'].shape)}, distribution batch shape "
        f"{tuple(site['fn'].batch_shape)}, event shape {tuple(site['fn'].event_shape)}"
    )
claims.check(
    guide_trace.nodes["y"]["value"].shape == (10, 1) and guide_trace.nodes["z"]["value"].shape == (10, 4, 20),
    "enumerated y (10, 1), z (10, 4, 20)",
    exact=True,
)

# %% [markdown]
# Read the shapes from the right:
#
# - `"y"`'s distribution q(y|x) has batch shape `(4,)`, one Categorical per image, in the plate's dim −1. Its
#   *value* is not a draw of shape `(4,)` but the ten classes `0…9`, shape `(10, 1)`: a new dimension at −2, the
#   first left of the plate, and size 1 in the plate's dim, so that it broadcasts against every image.
# - Everything computed from y inherits that dimension. The encoder's input [x, one-hot y] broadcasts to
#   `(10, 4, 794)`, and q(z|x, y) has batch shape `(10, 4)`: one Gaussian for every (class, image) pair, and one
#   draw of z each, event shape `(20,)`.
# - In the model, p(x|z, y) gets the same `(10, 4)` batch shape. `TraceEnum_ELBO` weighs the ten values of each
#   image's L(x, y) by q(y|x) and adds the entropy, which is U(x).
#
# ## What the auxiliary site adds
#
# The model's trace on a labelled batch holds the site `"y_aux"` with the scale α that `poutine.scale` set. Its log
# density is α·log q(y|x). The list of sites below leaves out the plate `"data"`, which a trace records as a node
# of its own.

# %%
model_trace = poutine.trace(ours.model).get_trace(x4, y4)
aux = model_trace.nodes["y_aux"]
print(
    "sample sites:",
    [n for n, site in model_trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)],
)
aux_log_prob = model_trace.log_prob_sum(lambda name, site: name == "y_aux")
expected = ours.aux_weight * dist.Categorical(logits=ours.classifier(x4)).log_prob(y4).sum()
print(
    f"site 'y_aux': observed {aux['is_observed']}, scale {aux['scale']:g}; log density {aux_log_prob:.3f} = "
    f"α·Σ log q(y|x) {expected:.3f}"
)
claims.check(aux["scale"] == ours.aux_weight and torch.allclose(aux_log_prob, expected), "the scaled site", exact=True)

# %% [markdown]
# ## Batches of two kinds
#
# How big is α? Kingma et al. weigh the *mean* cross-entropy over the N_l labelled images by α'·N, with N the
# training images. Per labelled image that is α = α'·N/N_l (`config.train.class_weight` is α', 5 by default).
#
# Each step pairs B_u unlabelled images with B_l = min(128, N_l) labelled ones drawn with replacement. The
# labelled loss is scaled by (B_u/N_u)(N_l/B_l), so that over an epoch every labelled image weighs 1 in
# expectation, like every unlabelled one. One step with 100 labels, as `SSVAE.train_batches` builds it:

# %%
config = pyro_vae.RunConfig()
config.model.model, config.data.labels = "ssvae", LABELS[0]
labelled_rows = SSVAE.labelled_rows(data, config)
x_u, x_l, y_l, scale, alpha = next(
    semi_supervised_batches(data.train_x, data.train_y, labelled_rows, 128, config.train.class_weight)
)
n_train = len(data.train_x)
print(
    f"unlabelled batch {tuple(x_u.shape)}, labelled batch {tuple(x_l.shape)} (labels per class "
    f"{torch.bincount(data.train_y[labelled_rows]).tolist()}), labelled scale {scale:.4f}, α = {alpha:g}"
)
claims.check(
    abs(alpha - config.train.class_weight * n_train / len(labelled_rows)) < 1e-9
    and abs(scale - len(x_u) / (n_train - len(labelled_rows)) * len(labelled_rows) / len(x_l)) < 1e-12,
    "α = α'·N/N_l and the labelled scale",
    exact=True,
)

# %% [markdown]
# A step is then `loss_and_grads` on the unlabelled batch (with y enumerated) plus `loss_and_grads` on the labelled
# batch inside `poutine.scale(scale=…)`, with α set for that step: gradients add up, and one Adam step follows.
#
# ## Training with few labels
#
# `config.data.labels = N` keeps N labels, N/10 per class, drawn with `config.data.label_seed`; the other training
# images are used without their labels. At the end `fit` trains the baseline classifier on the same labels, for
# as many Adam steps. Each number of labels is run over several draws; draw d uses label seed d and training seed
# d, so the runs differ in the labelled images and in their initial weights. The command line equivalent of one
# run is `pyro-vae train --model ssvae --labels 100 --label-seed 0`.

# %%
runs = {}
for n in LABELS:
    for draw in range(DRAWS):
        config = pyro_vae.RunConfig()
        config.data.dataset, config.data.data_dir, config.data.labels = DATASET, DATA_DIR, n
        config.data.label_seed, config.train.seed = draw, draw
        config.model.model = "ssvae"
        config.train.epochs, config.train.eval_num_samples = EPOCHS, EVAL_K
        runs[n, draw] = pyro_vae.fit(config, RUNS / f"labels-{n}-draw-{draw}", progress=False, data=data)
        f = runs[n, draw].metrics["final"]
        alpha = config.train.class_weight * len(data.train_x) / n
        print(
            f"{n:5d} labels, draw {draw}: α = {alpha:g}, w = {runs[n, draw].vae.kl_weight:g}; q(y|x) "
            f"{f['accuracy']:.3f}, baseline {f['baseline_accuracy']:.3f} ({f['baseline_steps']} steps each)"
        )
        claims.check(f["labels"] == n and runs[n, draw].vae.kl_weight == 4.0, "labels kept and w", exact=True)

# %% [markdown]
# Over training: the test accuracy of q(y|x) (left; dashed, each draw's baseline at its end), and the bound U(x) on
# the test images with unit KL weight (right), for every draw. The training objective weighs KL by w = 4, so it
# is not this bound; the right panel shows what happens to the bound while that objective is optimized.

# %%
fig, (ax_acc, ax_bound) = plt.subplots(1, 2, figsize=(11, 3.8))
colours = dict(zip(LABELS, ("tab:blue", "tab:orange")))
for (n, draw), run in runs.items():
    rows = run.metrics["epochs"]
    epochs = [r["epoch"] for r in rows]
    label = f"M2, {n} labels" if draw == 0 else None
    ax_acc.plot(epochs, [r["test_accuracy"] for r in rows], color=colours[n], lw=1, alpha=0.8, label=label)
    ax_acc.axhline(
        run.metrics["final"]["baseline_accuracy"],
        color=colours[n],
        ls="--",
        lw=0.8,
        label=f"baseline, {n} labels" if draw == 0 else None,
    )
    ax_bound.plot(epochs, [r["test_elbo"] for r in rows], color=colours[n], lw=1, alpha=0.8, label=label)
for ax in (ax_acc, ax_bound):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
ax_acc.set_ylabel("test accuracy of q(y|x)")
ax_bound.set_ylabel("test U(x), w = 1 (nats per image)")
ax_acc.legend(fontsize=8, loc="lower right")
ax_bound.legend(fontsize=8, loc="lower right")
ax_acc.set_title(f"{DRAWS} draws of the labels per count", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# Does M2 beat its baseline? For each draw the difference M2 − baseline is taken on the same labels and the same
# test images. Its mean over the draws comes with the standard error over draws and a 95% Student-t interval
# (two degrees of freedom with three draws, so t = 4.30). The binomial standard error of one accuracy on
# the test images, √(p(1 − p)/N), is printed beside it for scale.

# %%
T_975 = {2: 4.303, 3: 3.182, 4: 2.776}  # Student-t 97.5% quantiles by degrees of freedom
lines = []
for n in LABELS:
    finals = [runs[n, d].metrics["final"] for d in range(DRAWS)]
    acc = torch.tensor([f["accuracy"] for f in finals], dtype=torch.float64)
    base = torch.tensor([f["baseline_accuracy"] for f in finals], dtype=torch.float64)
    diff = acc - base
    binomial = math.sqrt(acc.mean() * (1 - acc.mean()) / len(data.test_y))
    if DRAWS > 1:
        se = (diff.std() / math.sqrt(DRAWS)).item()
        half = T_975[DRAWS - 1] * se
        low, high = diff.mean().item() - half, diff.mean().item() + half
        verdict = ("above" if low > 0 else "below") if low > 0 or high < 0 else "not distinguishable from"
        interval = f"{diff.mean():+.3f} ± {se:.3f} (95% interval {low:+.3f} … {high:+.3f})"
    else:
        verdict, interval = "not measured against (one draw)", f"{diff.mean():+.3f}"
    lines.append(
        f"- **{n} labels:** M2 {acc.mean():.3f} against the baseline's {base.mean():.3f} (means over {DRAWS} "
        f"draws; per draw M2 − baseline " + ", ".join(f"{d:+.3f}" for d in diff.tolist()) + f"). Difference "
        f"{interval}: M2 is **{verdict}** the baseline. Binomial s.e. of one accuracy: {binomial:.3f}."
    )
tail = min(3, EPOCHS - 1) or 1
bound_rise = (
    max(
        (r["epochs"][-1]["test_elbo"] - r["epochs"][-1 - tail]["test_elbo"]) / tail
        for r in (run.metrics for run in runs.values())
        if len(r["epochs"]) > tail
    )
    if EPOCHS > 1
    else float("nan")
)
display(
    Markdown(
        f"Test accuracy of q(y|x) after {EPOCHS} epochs:\n\n"
        + "\n".join(lines)
        + f"\n\nThese runs are short: the test bound U(x) still rises by up to {bound_rise:.1f} nats per epoch over "
        f"the last {tail} epochs (right panel), so the verdicts hold for {EPOCHS} epochs and may change with longer "
        "training; `pyro-vae train --model ssvae` defaults to 100 epochs."
    )
)

# %% [markdown]
# Pyro's example script defaults to 100 epochs on 50,000 MNIST images. The README's M2 section reports longer runs,
# on MNIST-5k and on full Fashion-MNIST, over several label draws.
#
# ### Where the unlabelled bound pulls q(y|x)
#
# For one unlabelled image, U(x) = Σ_y q(y|x) L(x, y) + H(q(y|x)) is an expectation under q(y|x) plus its
# entropy. For fixed L it is largest at q(y|x) ∝ exp L(x, y): the model's own posterior p(y|x), with each log p(x,
# y) replaced by its bound. So the bound pulls q(y|x) towards the generative model's answer, while the auxiliary
# cross-entropy pulls it towards the few labels.
#
# `fit` measures that posterior as well: argmax_y of the importance-sampled log p(x|y) (`generative_accuracy`, K
# samples per class). It scores the model p(y) p(z) p(x|z, y) *without* the auxiliary site, whose α·log q(y|x) is
# a term of the training objective, not of the model. `SSVAE.generative_model` is `model` with that site hidden by
# `poutine.block`:

# %%
m2 = runs[LABELS[-1], 0].vae
x4, y4 = data.test_x[:4], data.test_y[:4]
for name, fn in (("model", m2.model), ("generative_model", m2.generative_model)):
    trace = poutine.trace(fn).get_trace(x4, y4)
    print(
        f"{name:17s} sample sites:",
        [n for n, site in trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)],
    )
claims.check("y_aux" not in poutine.trace(m2.generative_model).get_trace(x4, y4).nodes, "blocked", exact=True)

# %% [markdown]
# The accuracies of both, next to the baseline's:

# %%
lines, classifier_ahead = [], []
for n in LABELS:
    finals = [runs[n, d].metrics["final"] for d in range(DRAWS)]
    q = torch.tensor([f["accuracy"] for f in finals])
    p = torch.tensor([f["generative_accuracy"] for f in finals])
    classifier_ahead.append(bool((q > p).all()))
    lines.append(
        f"- {n} labels: q(y|x) "
        + ", ".join(f"{v:.3f}" for v in q.tolist())
        + "; the model's p(y|x) "
        + ", ".join(f"{v:.3f}" for v in p.tolist())
        + f" (K = {finals[0]['classify_num_samples']} per class); baseline "
        + ", ".join(f"{f['baseline_accuracy']:.3f}" for f in finals)
        + "."
    )
display(Markdown("Test accuracy of the classifier and of the model's posterior, per draw:\n\n" + "\n".join(lines)))
if all(classifier_ahead):
    claims.state(
        True,
        "In every run the classifier q(y|x) is *more* accurate than the posterior p(y|x) of the model it trains "
        "with. So p(y|x) is not a ceiling on q(y|x) here: the labelled cross-entropy carries the classifier past "
        "the generative model, and the unlabelled bound pulls it back towards a weaker answer.",
    )
elif not any(classifier_ahead):
    display(
        Markdown(
            "At every number of labels, the model's posterior p(y|x) is at least as accurate as q(y|x) "
            "in some draw: the bound pulls the classifier towards an answer that is not worse than its own."
        )
    )
else:
    display(
        Markdown(
            "The order of q(y|x) and p(y|x) depends on the number of labels (above): the classifier is "
            "ahead in every draw only at "
            + ", ".join(str(n) for n, a in zip(LABELS, classifier_ahead) if a)
            + " labels."
        )
    )

# %% [markdown]
# M2 is also a conditional generative model. `fit` measures how well it obeys its label with the same judge as
# notebook 06 (a CNN trained on the training images with *all* their labels; M2 itself saw only N of them): the label
# fidelity is the share of the samples asked for each class that the judge reads as the class asked for, and the label
# sensitivity how much decoding the same z with another label changes the image, relative to how much two test images
# differ.

# %%
judge = load_or_train_judge(data)  # the cached judge fit used
for (n, draw), run in runs.items():
    f = run.metrics["final"]
    print(
        f"{n:5d} labels, draw {draw}: label fidelity {f['label_fidelity']:.3f} (lowest class "
        f"{min(f['label_fidelity_per_class']):.2f}), label sensitivity {f['label_sensitivity']:.3f}"
    )
print(f"judge test accuracy {judge.accuracy:.3f}; {f['fidelity_samples_per_class']} samples per class")

# %% [markdown]
# Class-conditional samples (z ~ N(0, I), decoded with y, one row per class; each row label gives that class's label
# fidelity) and style transfer, from the first draw with the most labels:

# %%
best = runs[LABELS[-1], 0]
show_grid(
    class_samples(best.vae),
    [f"y = {y} ({f:.0%})" for y, f in enumerate(best.metrics["final"]["label_fidelity_per_class"])],
    title=f"M2, {LABELS[-1]} labels: z ~ N(0, I), decoded with y (row: y, and the share the judge reads as y)",
)

# %%
show_grid(
    style_transfer(best.vae, data.test_x[:6], data.test_y[:6]),
    [f"test digit, y = {y}" for y in data.test_y[:6].tolist()],
    ["input"] + [f"y' = {k}" for k in range(data.num_classes)],
    title=f"M2, {LABELS[-1]} labels: style transfer",
)

# %% [markdown]
# ## Summary
#
# - M2 in Pyro is one model/guide pair for both kinds of data: y observed when given, and, when missing, summed out
#   by `config_enumerate` on the guide and `TraceEnum_ELBO(max_plate_nesting=1)`. The classification term is one
#   more observed site, `"y_aux"`, under `poutine.scale(scale=α)`, so one backward pass trains everything. Our pair
#   equals the package's `SSVAE`.
# - Enumeration adds a dimension left of the plates: y's value is `(10, 1)`, and everything computed from it
#   carries the ten classes.
# - The KL weight w (4 here) and α (α'·N/N_l) are the knobs; with w ≠ 1 the objective is not the bound U(x). The
#   baseline, over several label draws, tells whether the unlabelled images helped. The cells above give that
#   verdict with its interval, and compare q(y|x) with the model's own posterior p(y|x).
# - The label fidelity tells whether the decoder obeys y.
#
# Notebook 08 writes a new model and guide from scratch.

# %%
claims.show_report()

# %%
from pyro_vae.notebook import show_cost

show_cost("07_semi_supervised")
