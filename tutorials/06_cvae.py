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
# # A conditional VAE with a learned prior p(z|y)
#
# A conditional VAE (Sohn et al. 2015) models images *given their label*. With a label y for every training image, it
# maximizes
#
# E_q(z|x,y)[log p(x|z, y)] − KL(q(z|x, y) ‖ p(z|y)),
#
# the ELBO of log p(x|y). The decoder sees z and y, the encoder sees x and y, and the prior over z can depend on
# the class too. `pyro_vae.CVAE` offers three choices:
#
# - `prior="mixture"` (the default): a learned mixture of Gaussians per class;
# - `prior="learned"`: p(z|y) = N(μ_y, diag σ_y²), one mean and one scale per class, trained with the rest;
# - `prior="standard"`: p(z|y) = N(0, I) for every class, as in most CVAE code.
#
# Because the label is given, z no longer has to encode the class: it is left with what varies *within* a class, the
# "style" (slant, stroke width, shape), which we can transfer from one class to another. And since the model assigns a
# likelihood p(x|y) to an image under each label, it is also a classifier: argmax_y p(x|y) p(y).
#
# We train the three priors on the same data with the same budget and seed, and compare them. A conditional model must
# obey its label: a sample asked for a "3" should show a 3. We do not take that on trust: a small CNN, the *judge*,
# trained on the training digits with all their labels, reads every sample, and the *label fidelity* is the share of
# the samples asked for class k that it reads as k.
#
# **Run it**: `python tutorials/run.py 06` executes it in full and saves the outputs into the `.ipynb`;
# `python tutorials/run.py 06 --smoke` (or `PYRO_VAE_SMOKE=1` in Jupyter's environment) runs it with tiny
# sizes. The cell below says how long each took.

# %%
# The cost of this notebook, as measured by tutorials/run.py (which records it in tutorials/timings.json)
from pyro_vae.notebook import show_cost

show_cost("06_cvae")

# %%
# %matplotlib inline
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display
from torch.distributions import kl_divergence

import pyro_vae
from pyro_vae import plots
from pyro_vae.inference.evaluate import elbo_terms
from pyro_vae.inference.judge import class_mean_accuracy, load_or_train_judge

SMOKE = os.environ.get("PYRO_VAE_SMOKE") == "1"  # set by tests/test_tutorials.py: tiny sizes, the same code path
DATASET = "mnist-5k"  # "svhn" downloads SVHN (needs internet): colour 32×32 digits, conv nets, Gaussian pixels
EPOCHS = 1 if SMOKE else 100  # per run: half the CLI default of 200 for --model cvae; raise it for better models
EVAL_K = 10 if SMOKE else 100  # importance samples per test image for log p(x|y); K/10 per class to classify
SUBSET = (500, 200) if SMOKE else None  # (train, test) images kept in smoke mode
RUNS = Path(tempfile.mkdtemp(prefix="06_cvae-"))  # fit writes a run folder per prior; a fresh one per execution
# the judge is cached per dataset (default ~/.cache/pyro_vae/judges); a fresh cache, so the timings include training it
os.environ["PYRO_VAE_CACHE"] = str(RUNS / "cache")

data = pyro_vae.load_dataset(DATASET)
if SUBSET:
    n_train, n_test = SUBSET
    data = data.subset(n_train, n_test)  # the first images of each set


def knn_accuracy(train_x, train_y, test_x, test_y, k=5):
    """Accuracy of a k-nearest-neighbour vote (Euclidean) of the training rows on the test rows."""
    return (knn_predict(train_x, train_y, test_x, k) == test_y).float().mean().item()


def knn_predict(train_x, train_y, test_x, k=5):
    nearest = torch.cdist(test_x, train_x).topk(k, largest=False).indices  # (N_test, k)
    return train_y[nearest].mode(dim=1).values


def show_grid(images, row_labels, col_labels=None, title=None):
    """A grid of images (rows, cols, D) with a label on every row (and column)."""
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(0.55 * cols + 1.4, 0.55 * rows + 0.5), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            image = images[i, j].detach().reshape(*data.image_shape).permute(1, 2, 0).clamp(0, 1)  # (H, W, C)
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
# ## The judge
#
# `load_or_train_judge` trains a two-layer CNN on the training images with all their labels (random shifts of up to
# two pixels) and caches it per dataset; `fit` uses the same judge for the label fidelity in `metrics.json`, and so does
# `pyro-vae evaluate`. Its own test accuracy bounds what the fidelity can show on sharp images.
#
# What it reads, though, are means of p(x|z, y): averages over the images the model finds plausible for (z, y),
# blurred where they differ. So half of each of its training batches are *class means*, each the average of 2 to 32
# training images of one class. `class_mean_accuracy` checks how it reads such averages of test images (on
# Fashion-MNIST, a judge trained on real images alone reads the mean of 32 sandals as a sandal 0% of the time).

# %%
start = time.perf_counter()
judge = load_or_train_judge(data)
seconds = time.perf_counter() - start
print(f"judge: test accuracy {judge.accuracy:.3f} on {len(data.test_y):,} test digits, trained in {seconds:.0f} s")
for size in (1, 8, 32):
    per_class = class_mean_accuracy(judge, data.test_x, data.test_y, size)
    print(
        f"  means of {size:2d} test digits of a class: read as that class {per_class.mean():.3f} "
        f"(lowest {per_class.min():.2f})"
    )

# %% [markdown]
# ## Training the priors
#
# The configuration differs from notebook 02 in one field, `config.model.model = "cvae"`, and in the prior. On SVHN the
# networks are convolutional (`net = "conv"`) and the pixels Gaussian with a learned scale per pixel, since a Bernoulli
# is a poor fit for colour. The command line equivalent is
# `pyro-vae train --model cvae --prior learned --epochs N`.
#
# Two more options decide whether the samples obey y, and a fourth run shows what they do. The encoder sees x, where
# the class is visible, so nothing stops z from carrying the class too; the decoder then reads it from z as much as
# from y, and a z drawn from p(z|y) where no code of class y lies decodes to another digit. So by default the decoder
# reads y in every layer and y also scales and shifts every hidden unit, h ⊙ (1 + γ_y) + β_y (`decoder_y = "film"`,
# FiLM): each class then drives its own hidden units from z, where a y concatenated to the layers' inputs could only
# shift them. And the KL term weighs w = 2.5 in the training loss (`kl_weight`), which charges z for what it repeats
# of the class. The run labelled "w = 1, y at input" trains the learned prior without both. The first run leaves the
# prior at its default, a learned mixture of Gaussians per class (its number of components is printed below), which
# covers the clusters that the codes of one class form; the sections after the table look at the learned and the
# standard prior.


# %%
def config_for(prior, **options):
    config = pyro_vae.RunConfig()
    config.data.dataset = DATASET
    config.model.model, config.model.prior = "cvae", prior
    config.model.z_dim = 20
    for name, value in options.items():
        setattr(config.model, name, value)
    if DATASET == "svhn":
        config.model.net, config.model.likelihood = "conv", "gaussian"
    config.train.epochs = EPOCHS
    config.train.eval_num_samples = EVAL_K
    return config


settings = {
    "mixture (default)": config_for(None),
    "learned": config_for("learned"),
    "standard": config_for("standard"),
    "w = 1, y at input": config_for("learned", kl_weight=1.0, decoder_y="input"),  # the earlier design
}
runs = {}
for name, config in settings.items():
    start = time.perf_counter()
    runs[name] = pyro_vae.fit(config, RUNS / name.replace(" ", "-"), progress=False, data=data)
    m = runs[name].config.model  # the options the run recorded in its config.json
    print(
        f"{name:18s}: prior {m.prior} (components {m.prior_components}), kl_weight {m.kl_weight}, "
        f"decoder_y {m.decoder_y}; "
        f"{EPOCHS} epochs and the final metrics in {time.perf_counter() - start:.0f} s"
    )

# %% [markdown]
# ## The numbers
#
# For each run, nats per test image (± standard error over the test images):
#
# - the test ELBO of log p(x|y) and its two terms;
# - the importance-sampled log p(x|y) with K samples from q(z|x, y), a tighter bound, and in bits per dimension
#   (−log p / (D ln 2), for the density as scored on grey levels in [0, 1]; not the discrete bits of the literature);
# - the accuracy of the generative classifier argmax_y [log p̂(x|y) + log p(y)] with a uniform p(y), using K/10
#   importance samples for each of the 10 classes;
# - the label fidelity (`config.train.fidelity_samples` samples per class, read by the judge) and the *label
#   sensitivity*: how much the decoded image changes when the same z is decoded with another label, relative to how
#   much two test images differ (about 0 when the decoder ignores y).

# %%
rows = [
    ("elbo", "test ELBO of log p(x|y)"),
    ("reconstruction", "  E_q log p(x|z, y)"),
    ("kl", "  KL(q(z|x,y) ‖ p(z|y))"),
    ("is_log_px", f"IS log p(x|y), K = {EVAL_K}"),
    ("is_bpd", "  in bits per dimension"),
    ("generative_accuracy", "generative classification accuracy"),
    ("label_fidelity", f"label fidelity ({runs['learned'].config.train.fidelity_samples} samples/class)"),
    ("label_sensitivity", "label sensitivity"),
]
print(f"{'':38s} " + " ".join(f"{name:>18s}" for name in runs))
for key, label in rows:
    cells = []
    for run in runs.values():
        f = run.metrics["final"]
        se = f.get(key + "_se")
        cells.append(f"{f[key]:10.3f} ± {se:.2f}" if se is not None else f"{f[key]:18.3f}")
    print(f"{label:38s} " + " ".join(f"{c:>18s}" for c in cells))

pixel_knn = knn_accuracy(data.train_x, data.train_y, data.test_x, data.test_y)
print(f"{'5-NN vote on raw pixels (reference)':38s} {pixel_knn:16.3f}")

for prior, run in runs.items():
    f = run.metrics["final"]
    assert abs(f["elbo"] - (f["reconstruction"] - f["kl"])) < 1e-3  # ELBO = reconstruction − KL
    assert 0 <= f["generative_accuracy"] <= 1

# %% [markdown]
# How to read the table:
#
# - **The KL term.** With N(0, I) every class must squeeze its codes around the origin; a learned prior can move each
#   class's prior to where its codes are, so the same posteriors can cost fewer nats.
# - **log p(x|y)** is the honest comparison of the two models (same data, same budget, same K). A learned prior is a
#   strictly larger model family (it starts at N(0, I)), but it is also more to fit in a short budget.
# - **Generative classification** uses no classifier at all, only the two densities: an image is assigned to the class
#   whose model explains it best. A likelihood is dominated by pixel detail, not by the few features that decide the
#   class; the table puts it beside chance and a plain 5-nearest-neighbour vote on the pixels.

# %%
f_learned, f_standard = runs["learned"].metrics["final"], runs["standard"].metrics["final"]
f_before = runs["w = 1, y at input"].metrics["final"]
display(
    Markdown(
        f"Label fidelity: {f_learned['label_fidelity']:.3f} with the learned prior and "
        f"{f_standard['label_fidelity']:.3f} with the standard one, against the judge's own accuracy "
        f"{judge.accuracy:.3f}; lowest class {min(f_learned['label_fidelity_per_class']):.2f} (learned) and "
        f"{min(f_standard['label_fidelity_per_class']):.2f} (standard). Without FiLM, with y at the input only "
        f"and w = 1, the learned prior's fidelity is {f_before['label_fidelity']:.3f} and its label sensitivity "
        f"{f_before['label_sensitivity']:.3f}, against {f_learned['label_sensitivity']:.3f}: the decoder listens "
        f"{'more' if f_learned['label_sensitivity'] > f_before['label_sensitivity'] else 'less'} to y with both "
        f"options, and its log p(x|y) is {f_learned['is_log_px'] - f_before['is_log_px']:+.2f} nats apart "
        f"(the KL weight trades likelihood for a z that leaves the class to y). The default mixture prior reaches "
        f"{runs['mixture (default)'].metrics['final']['label_fidelity']:.3f}. "
        f"In this run the KL term is {f_learned['kl']:.2f} nats with the learned prior and {f_standard['kl']:.2f} with "
        f"the standard one; log p(x|y), learned − standard, is {f_learned['is_log_px'] - f_standard['is_log_px']:+.2f} "
        f"nats (standard errors {f_learned['is_log_px_se']:.2f} and {f_standard['is_log_px_se']:.2f}, on the "
        f"same images). Generative classification reaches {f_learned['generative_accuracy']:.3f} (learned) and "
        f"{f_standard['generative_accuracy']:.3f} (standard), against chance {1 / data.num_classes:.3f} and "
        f"{pixel_knn:.3f} for the 5-NN vote on pixels."
    )
)

# %% [markdown]
#
# The KL term of the learned prior is the closed form against N(μ_y, σ_y²), checked here against
# `torch.distributions.kl_divergence` on the test digits:

# %%
cvae = runs["learned"].vae
x, y = data.test_x[:500], data.test_y[:500]
mu_y, sd_y = cvae.prior_moments()  # (10, z_dim) each
q = cvae.posterior(x, y)
expected = kl_divergence(q, torch.distributions.Independent(torch.distributions.Normal(mu_y[y], sd_y[y]), 1))
kl = elbo_terms(cvae.model, cvae.guide, x, y)["kl"]
print(f"KL term, mean over {len(x)} digits: {kl.mean():.4f} (pyro_vae) vs {expected.mean():.4f} (torch)")
assert torch.allclose(kl, expected.detach(), atol=1e-4)
print("per-class prior means, |μ_y| (the standard prior has 0 for all):")
print("  ".join(f"{k}: {m:.2f}" for k, m in enumerate(mu_y.norm(dim=1).tolist())))

# %% [markdown]
# ## Class-conditional samples
#
# One row per class y: z ~ p(z|y), decoded with that y. Each row label gives the label fidelity of that class, from
# the judged samples of the table above.

# %%
for name, run in runs.items():
    per_class = run.metrics["final"]["label_fidelity_per_class"]
    show_grid(
        class_samples(run.vae),
        [f"y = {y} ({f:.0%})" for y, f in enumerate(per_class)],
        title=f"{name}: z ~ p(z|y), decoded with y (row: y, and the share the judge reads as y)",
    )

# %% [markdown]
# ## Style transfer
#
# Each row: a test image x (first column), encoded with its own label, z = the mean of q(z|x, y); then z decoded with
# each label 0, 1, ..., 9. Ideally the class changes and the style of the input stays; compare the rows to see
# how far each model gets there.
#
# With a learned prior, z itself can also say which class it came from: class y's codes sit around μ_y. Decoding the
# unchanged z with another label y' asks the decoder about a code far from where class y' lives. So the transfer
# moves the code through the prior first, keeping its standardized position ε = (z − μ_y)/σ_y and taking
# z' = μ_{y'} + σ_{y'} ε (`CVAE.transfer`; under the standard prior z' = z).

# %%
for prior in ("learned", "standard"):
    show_grid(
        style_transfer(runs[prior].vae, data.test_x[:6], data.test_y[:6]),
        [f"test digit, y = {y}" for y in data.test_y[:6].tolist()],
        ["input"] + [f"y' = {k}" for k in range(data.num_classes)],
        title=f"{prior} prior: style transfer",
    )

# %% [markdown]
# ## The latent space and the learned prior
#
# The posterior means of the test images, projected onto their first two principal components and coloured by label,
# with each class's prior drawn on top (mean ×, 1-sd ellipse; the projection is linear, so the projected prior is the
# exact Gaussian marginal). With the standard prior all ten class priors coincide at N(0, I). How much the codes still
# say about the class, now that the decoder is told it, is measured in all dimensions by a 5-nearest-neighbour vote of
# the training codes on the test codes, in each title.

# %%
for prior in ("learned", "standard"):
    vae = runs[prior].vae
    accuracy = knn_accuracy(
        vae.encode(data.train_x, data.train_y)[0], data.train_y, vae.encode(data.test_x, data.test_y)[0], data.test_y
    )
    fig = plots.latent_scatter(vae, data.test_x, data.test_y, prior=True)
    fig.axes[0].set_title(f"{prior} prior: 5-NN accuracy of the codes {accuracy:.3f}", fontsize=9)
    display(fig)

# %% [markdown]
# ## Next
#
# - `pyro-vae sample RUN_DIR --label 3 --num 16 --out three.png` draws one class from a trained run;
#   `pyro-vae evaluate RUN_DIR` prints log p(x|y) and the generative accuracy.
# - Every guide and estimator of notebooks 04–05 works here too: `config.model.guide = "iaf"`,
#   `config.train.elbo = "iwae"`, ...
# - Notebook 07 drops most of the labels: y becomes a latent variable where it is missing.
