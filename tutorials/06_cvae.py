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
# the ELBO of log p(x|y). The decoder sees [z, one-hot y], the encoder sees x and y, and the prior over z can depend on
# the class too. `pyro_vae.CVAE` offers both choices:
#
# - `prior="learned"`: p(z|y) = N(μ_y, diag σ_y²), one mean and one scale per class, trained with the rest;
# - `prior="standard"`: p(z|y) = N(0, I) for every class, as in most CVAE code.
#
# Because the label is given, z no longer has to encode the class: it is left with what varies *within* a class, the
# "style" (slant, stroke width, shape), which we can transfer from one class to another. And since the model assigns a
# likelihood p(x|y) to an image under each label, it is also a classifier: argmax_y p(x|y) p(y).
#
# We train both priors on the same data with the same budget and seed, and compare them.

# %%
# %matplotlib inline
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.distributions import kl_divergence

import pyro_vae
from pyro_vae import plots
from pyro_vae.evaluate import elbo_terms

SMOKE = os.environ.get("PYRO_VAE_SMOKE") == "1"  # set by tests/test_tutorials.py: tiny sizes, the same code path
DATASET = "mnist-5k"  # "svhn" downloads SVHN (needs internet): colour 32×32 digits, conv nets, Gaussian pixels
EPOCHS = 1 if SMOKE else 40  # per prior (about 30 s each on 2 CPU cores with mnist-5k)
EVAL_K = 10 if SMOKE else 1000  # importance samples per test image for log p(x|y); K/10 per class to classify

Path("runs").mkdir(exist_ok=True)
RUNS = Path(tempfile.mkdtemp(prefix="06_cvae-", dir="runs"))  # a fresh folder per execution; runs/ is gitignored


# %% [markdown]
# ## Training both priors
#
# The configuration differs from notebook 02 in one field, `config.model.model = "cvae"`, and in the prior. On SVHN the
# networks are convolutional (`net = "conv"`) and the pixels Gaussian with a learned scale per pixel, since a Bernoulli
# is a poor fit for colour. The command line equivalent is
# `pyro-vae train --model cvae --prior learned --epochs 40`.


# %%
def config_for(prior):
    config = pyro_vae.RunConfig()
    config.data.dataset = DATASET
    config.model.model, config.model.prior = "cvae", prior
    config.model.z_dim = 20
    if DATASET == "svhn":
        config.model.net, config.model.likelihood = "conv", "gaussian"
    config.train.epochs = EPOCHS
    config.train.eval_num_samples = EVAL_K
    return config


runs = {}
for prior in ("learned", "standard"):
    start = time.perf_counter()
    runs[prior] = pyro_vae.fit(config_for(prior), RUNS / prior, progress=False)
    print(f"{prior:8s} prior: {EPOCHS} epochs in {time.perf_counter() - start:.0f} s")
data = runs["learned"].data

# %% [markdown]
# ## The numbers
#
# For each prior, nats per test image (± standard error over the test images):
#
# - the test ELBO of log p(x|y) and its two terms;
# - the importance-sampled log p(x|y) with K samples from q(z|x, y), a tighter bound, and in bits per dimension
#   (−log p / (D ln 2), for the density as scored on grey levels in [0, 1]; not the discrete bits of the literature);
# - the accuracy of the generative classifier argmax_y [log p̂(x|y) + log p(y)] with a uniform p(y), using K/10
#   importance samples for each of the 10 classes.

# %%
rows = [
    ("elbo", "test ELBO of log p(x|y)"),
    ("reconstruction", "  E_q log p(x|z, y)"),
    ("kl", "  KL(q(z|x,y) ‖ p(z|y))"),
    ("is_log_px", f"IS log p(x|y), K = {EVAL_K}"),
    ("is_bpd", "  in bits per dimension"),
    ("generative_accuracy", "generative classification accuracy"),
]
print(f"{'':38s} {'learned':>16s} {'standard':>16s}")
for key, label in rows:
    cells = []
    for prior in ("learned", "standard"):
        f = runs[prior].metrics["final"]
        se = f.get(key + "_se")
        cells.append(f"{f[key]:9.3f} ± {se:.2f}" if se is not None else f"{f[key]:16.3f}")
    print(f"{label:38s} {cells[0]:>16s} {cells[1]:>16s}")

for prior, run in runs.items():
    f = run.metrics["final"]
    assert abs(f["elbo"] - (f["reconstruction"] - f["kl"])) < 1e-3  # ELBO = reconstruction − KL
    assert 0 <= f["generative_accuracy"] <= 1

# %% [markdown]
# How to read the table:
#
# - **The KL term is smaller with the learned prior.** With N(0, I) every class must squeeze its codes around the
#   origin; a learned prior moves each class's prior to where its codes are, so the same posteriors cost fewer nats.
# - **log p(x|y)** is the honest comparison of the two models (same data, same budget, same K). A learned prior is a
#   strictly larger model family (it starts at N(0, I)), but it is also more to fit in a short budget.
# - **Generative classification** uses no classifier at all, only the two densities: an image is assigned to the class
#   whose model explains it best. It is far above chance (10%) but well below a discriminative classifier: a
#   likelihood is dominated by pixel detail, not by the few features that decide the class.
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
# One row per class: z ~ p(z|y), decoded with that y. Every row holds the class it was asked for; the variety within a
# row is the style that z carries.

# %%
plots.class_samples(runs["learned"].vae, data.image_shape, n=10)

# %%
plots.class_samples(runs["standard"].vae, data.image_shape, n=10)

# %% [markdown]
# ## Style transfer
#
# Each row: a test image x (first column), encoded with its own label, z = the mean of q(z|x, y); then z decoded with
# each label 0, 1, ..., 9. The class changes, the style of the input stays.
#
# With a learned prior, z itself also says which class it came from: class y's codes sit around μ_y. Decoding the
# unchanged z with another label y' asks the decoder about a code far from where class y' lives, and it mostly answers
# with class y. So `plots.style_transfer` moves the code through the prior first, keeping its standardized position
# ε = (z − μ_y)/σ_y and taking z' = μ_{y'} + σ_{y'} ε (`CVAE.transfer`; under the standard prior z' = z).

# %%
plots.style_transfer(runs["learned"].vae, data.test_x[:8], data.test_y[:8], data.image_shape)

# %% [markdown]
# ## The latent space and the learned prior
#
# The posterior means of the test images, projected onto their first two principal components and coloured by label,
# with each class's prior drawn on top (mean ×, 1-sd ellipse; the projection is linear, so the projected prior is the
# exact Gaussian marginal). With the learned prior the class priors sit where that class's codes are; with the standard
# prior all ten coincide at N(0, I), and the codes of every class overlap around the origin, since the label already
# tells the decoder the class.

# %%
plots.latent_scatter(runs["learned"].vae, data.test_x, data.test_y, prior=True)

# %%
plots.latent_scatter(runs["standard"].vae, data.test_x, data.test_y, prior=True)

# %% [markdown]
# ## Next
#
# - `pyro-vae sample RUN_DIR --label 3 --num 16 --out three.png` draws one class from a trained run;
#   `pyro-vae evaluate RUN_DIR` prints log p(x|y) and the generative accuracy.
# - Every guide and estimator of notebooks 04–05 works here too: `config.model.guide = "iaf"`,
#   `config.train.elbo = "iwae"`, ...
# - Notebook 07 drops most of the labels: y becomes a latent variable where it is missing.
