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
# # KL divergence and the ELBO
#
# A variational autoencoder is trained by maximizing the ELBO, and the ELBO is built from KL divergences. This notebook
# checks four facts about them, each with numbers and, where the mathematics gives an equality, an `assert`:
#
# - **(0)** Maximum likelihood is minimum KL(p_data‖p_θ): the lecture's starting point, checked numerically.
# - **(a)** KL is not symmetric: fitting a Gaussian to a two-mode target by forward KL(p‖q) covers both modes, by
#   reverse KL(q‖p) it picks one, and which one depends on where it starts: reverse KL has two optima.
# - **(b)** KL(p‖q) ≥ 0, and KL(p‖q) = 0 only when p = q.
# - **(c)** The closed form of the KL between two Gaussians, checked against `torch` and against Monte Carlo, and
#   the misprinted forms (the lecture's among them) that give wrong numbers.
# - **(d)** The ELBO identity log p(x) − KL(q‖p(z|x)) = E_q[log p(x|z)] − KL(q‖p(z)), on a linear-Gaussian model
#   where every term is known exactly.
#
# The computations live in `pyro_vae.theory.kl`, `pyro_vae.theory.linear_gaussian` and `pyro_vae.inference.evaluate`;
# this notebook only
# calls them, prints and plots.
#
# **Run it**: `python tutorials/run.py 01` executes it in full and saves the outputs into the `.ipynb`;
# `python tutorials/run.py 01 --smoke` (or `PYRO_VAE_SMOKE=1` in Jupyter's environment) runs it with tiny
# sizes. The cell below says how long each took.

# %%
# The cost of this notebook, as measured by tutorials/run.py (which records it in tutorials/timings.json)
from pyro_vae.notebook import show_cost

show_cost("01_kl_and_elbo")

# %%
import math
import os

import matplotlib.pyplot as plt
import pyro
import torch
from IPython.display import Markdown, display
from pyro.infer import Trace_ELBO
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_vae.inference.evaluate import elbo_terms, importance_log_px
from pyro_vae.theory.kl import bimodal_mixture, fit_gaussian, gaussian_kl, monte_carlo_kl
from pyro_vae.theory.linear_gaussian import AffineGaussianGuide, LinearGaussian

SMOKE = os.environ.get("PYRO_VAE_SMOKE") == "1"  # set by tests/test_tutorials.py: small sizes, the same asserts
FIT_STEPS = 300 if SMOKE else 2000  # SGD steps of each Gaussian fit in (0) and (a)
DATA_POINTS = 2000 if SMOKE else 20_000  # samples of p_data in (0)
NUM_PAIRS = 200 if SMOKE else 2000  # random Gaussian pairs in (b)
MC_SAMPLES = 100_000 if SMOKE else 2_000_000  # Monte Carlo draws per KL estimate in (a) and (c)
N_POINTS = 100  # datapoints x in (d)
REPLICAS = 50 if SMOKE else 2000  # draws z ~ q per datapoint for elbo_terms in (d)
ELBO_PARTICLES = 500 if SMOKE else 20_000  # Trace_ELBO particles in (d)
IS_KS = [1, 10, 100, 1000] if SMOKE else [1, 3, 10, 30, 100, 300, 1000, 3000, 10_000]  # K of IS log p(x) in (d)

pyro.set_rng_seed(0)


def num(value, digits):
    # round first, then add 0.0: a value that rounds to zero prints as 0.000, not -0.000
    return round(float(value), digits) + 0.0


# %% [markdown]
# ## (0) Maximum likelihood is minimum KL(p_data‖p_θ)
#
# Fitting a model p_θ to data by maximum likelihood maximizes the average log-likelihood (1/N) Σ_n log p_θ(x_n), a
# Monte Carlo estimate of E_{p_data}[log p_θ(x)]. And
#
# KL(p_data‖p_θ) = E_{p_data}[log p_data(x)] − E_{p_data}[log p_θ(x)] = −H(p_data) − E_{p_data}[log p_θ(x)],
#
# where the entropy H(p_data) does not depend on θ. So the θ that maximizes the likelihood minimizes the forward
# KL(p_data‖p_θ). Below, p_data is the two-mode mixture of part (a) and p_θ = N(m, s²). On one set of samples from
# p_data: (i) across a grid of m, KL minus the average negative log-likelihood is the same number, −H(p_data), so the
# two curves have the same minimizer; (ii) the closed-form maximum-likelihood Gaussian (the sample mean and standard
# deviation) equals the Gaussian that `fit_gaussian` finds by minimizing the forward KL with SGD.

# %%
target = bimodal_mixture(separation=4.0, scale=0.7)
samples = target.sample((DATA_POINTS,))  # (DATA_POINTS,) draws of p_data
entropy = -target.log_prob(samples).mean()  # Monte Carlo H(p_data), on the same draws

means = torch.linspace(-3, 3, 61)
s_fixed = samples.std()
nll = torch.stack([-torch.distributions.Normal(m, s_fixed).log_prob(samples).mean() for m in means])
kl_grid = torch.stack(
    [(target.log_prob(samples) - torch.distributions.Normal(m, s_fixed).log_prob(samples)).mean() for m in means]
)
offset = kl_grid - nll  # −H(p_data) for every m
print(f"KL(p_data‖p_θ) − average NLL over {len(means)} values of m: {offset.min():.4f} … {offset.max():.4f}")
print(f"−H(p_data), Monte Carlo on the same draws: {-entropy:.4f}")
print(
    f"argmin over the grid: of the NLL m = {num(means[nll.argmin()], 2)}, "
    f"of the KL m = {num(means[kl_grid.argmin()], 2)}"
)

ml = samples.mean(), samples.std(unbiased=False)  # the maximum-likelihood Gaussian, in closed form
by_kl = fit_gaussian(target, "forward", steps=FIT_STEPS)
print(f"maximum likelihood (closed form): m = {num(ml[0], 3):.3f}, s = {ml[1]:.3f}")
print(f"argmin KL(p_data‖q) by SGD:       m = {num(by_kl.loc, 3):.3f}, s = {by_kl.scale:.3f}")
torch.testing.assert_close(offset, torch.full_like(offset, -entropy.item()), rtol=0, atol=1e-4)  # float32 sums
assert nll.argmin() == kl_grid.argmin()
# SGD noise of the fit is ~0.02 and the sampling error of the ML estimate ~2/√N: 0.1 is generous for both
assert abs(by_kl.loc - ml[0]) < 0.1 and abs(by_kl.scale - ml[1]) < 0.1

fig, ax = plt.subplots(figsize=(6.5, 3.2))
ax.plot(means, nll, label="average negative log-likelihood −(1/N) Σ log p_θ(xₙ)")
ax.plot(means, kl_grid, label="KL(p_data‖p_θ), Monte Carlo on the same draws")
ax.axvline(means[nll.argmin()], color="grey", ls=":", lw=1, label="the common minimizer")
ax.set_xlabel(f"m, the mean of p_θ = N(m, s²) (s = {s_fixed:.2f} fixed)")
ax.set_ylabel("nats")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## (a) KL is not symmetric: forward and reverse fits
#
# The target p is an equal mixture of N(−2, 0.7²) and N(+2, 0.7²). `fit_gaussian` fits one Gaussian q = N(m, s²) to
# it by stochastic gradient descent, minimizing one of the two directions of the KL:
#
# - **Forward, KL(p‖q) = E_p[log p(z) − log q(z)].** The average is taken under p, so q pays wherever p has mass and
#   q has little: there log q(z) → −∞. q must **cover every mode**. For a Gaussian q the optimum matches p's mean
#   and variance (printed below). Most of q's mass then sits in the valley between the modes, where p has almost
#   none.
# - **Reverse, KL(q‖p) = E_q[log q(z) − log p(z)].** The average is taken under q, so q pays wherever *q* puts mass
#   that p lacks, and pays nothing for the part of p it ignores. q is **mode-seeking**: it settles on one mode and
#   fits it snugly, at a reverse KL near log 2, the price of ignoring half of p. Which mode it picks depends on the
#   start: reverse KL has **two optima**, one per mode, and we fit it from two starting means, `init_loc=+1` and
#   `init_loc=−1`.
#
# Variational inference, and so the VAE, minimizes the *reverse* direction KL(q(z|x) ‖ p(z|x)) (part (d)). Expect
# variational posteriors to be too narrow and to miss modes, rather than too wide.

# %%
half, scale = 2.0, 0.7  # the modes of bimodal_mixture(separation=4.0, scale=0.7) sit at ±half
fits = {
    "forward": fit_gaussian(target, "forward", steps=FIT_STEPS, init_loc=1.0),
    "reverse": fit_gaussian(target, "reverse", steps=FIT_STEPS, init_loc=1.0),
    "reverse, start −1": fit_gaussian(target, "reverse", steps=FIT_STEPS, init_loc=-1.0),
}

print(f"{'fit':18s} {'m':>6s} {'s':>6s} {'KL(p‖q)':>16s} {'KL(q‖p)':>16s}   (Monte Carlo ± standard error)")
kls = {}
for name, q in fits.items():
    forward, forward_se = monte_carlo_kl(target, q, MC_SAMPLES)
    reverse, reverse_se = monte_carlo_kl(q, target, MC_SAMPLES)
    kls[name] = forward.item(), reverse.item()
    print(
        f"{name:18s} {num(q.loc, 3):6.3f} {q.scale.item():6.3f}"
        f" {forward:9.3f} ± {forward_se:.3f} {reverse:9.3f} ± {reverse_se:.3f}"
    )

print(
    f"theory: forward optimum m = 0, s = √(half² + scale²) = {math.sqrt(half**2 + scale**2):.3f}; "
    f"reverse optima m = ±{half}, s ≈ {scale}, reverse KL ≈ log 2 = {math.log(2):.3f}"
)
# forward KL matches the moments of p; reverse KL sits on one mode (tolerance 0.1: SGD noise is ~0.02)
assert abs(fits["forward"].loc) < 0.1 and abs(fits["forward"].scale - math.sqrt(half**2 + scale**2)) < 0.1
assert abs(fits["reverse"].loc - half) < 0.1 and abs(fits["reverse"].scale - scale) < 0.1
assert abs(fits["reverse, start −1"].loc + half) < 0.1 and abs(fits["reverse, start −1"].scale - scale) < 0.1
# each fit wins in the direction it minimized
assert kls["forward"][0] < kls["reverse"][0] and kls["reverse"][1] < kls["forward"][1]

# %%
z = torch.linspace(-6, 6, 601)
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.fill_between(z, target.log_prob(z).exp(), color="grey", alpha=0.35, label="target p: mixture of two Gaussians")
ax.plot(z, fits["forward"].log_prob(z).exp(), lw=2, label="argmin KL(p‖q), forward: covers both modes")
ax.plot(z, fits["reverse"].log_prob(z).exp(), lw=2, label="argmin KL(q‖p) from m = +1: the right mode")
ax.plot(
    z, fits["reverse, start −1"].log_prob(z).exp(), lw=2, ls="--", label="argmin KL(q‖p) from m = −1: the left mode"
)
ax.set_xlabel("z")
ax.set_ylabel("density")
ax.set_ylim(0, 0.75)
ax.legend(loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# ## (b) KL ≥ 0, and KL = 0 only when p = q
#
# Gibbs' inequality. By Jensen's inequality for the concave log,
#
# −KL(p‖q) = E_p[log q(z)/p(z)] ≤ log E_p[q(z)/p(z)] = log ∫ q(z) dz = 0,
#
# with equality only when q/p is constant, that is when q = p. Below, with the closed form of part (c):
# random pairs of 3-D Gaussians all have positive KL; every Gaussian has KL 0 with itself (up to float64 round-off);
# and nudging a Gaussian by ε gives a KL that falls to 0 as ε², never reaching it for ε > 0. (KL is locally
# quadratic: its second derivative at q = p is the Fisher information.)

# %%
k = 3
gen = torch.Generator().manual_seed(0)


def random_gaussians(n):
    # n random k-D Gaussians: locs (n, k) and covariances L Lᵀ + 0.1 I, (n, k, k)
    loc = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    L = torch.randn(n, k, k, generator=gen, dtype=torch.float64)
    return loc, L @ L.mT + 0.1 * torch.eye(k, dtype=torch.float64)


loc1_pairs, cov1_pairs = random_gaussians(NUM_PAIRS)
loc2_pairs, cov2_pairs = random_gaussians(NUM_PAIRS)
kl_pairs = gaussian_kl(loc1_pairs, cov1_pairs, loc2_pairs, cov2_pairs)  # (NUM_PAIRS,)
kl_self = gaussian_kl(loc1_pairs, cov1_pairs, loc1_pairs, cov1_pairs)  # (NUM_PAIRS,)

# one Gaussian against copies nudged by ε along a fixed direction (mean and covariance)
(dloc,), (dcov,) = random_gaussians(1)
eps = torch.logspace(0, -4, 9, dtype=torch.float64)
kl_eps = torch.stack(
    [gaussian_kl(loc1_pairs[0], cov1_pairs[0], loc1_pairs[0] + e * dloc, cov1_pairs[0] + e * dcov) for e in eps]
)
slope = (kl_eps[-1].log() - kl_eps[-2].log()) / (eps[-1].log() - eps[-2].log())

print(f"{NUM_PAIRS} random pairs: smallest KL {kl_pairs.min():.4f}, median {kl_pairs.median():.2f} nats")
print(f"KL of each Gaussian with itself: largest |KL| {kl_self.abs().max():.1e} (float64 round-off)")
print(f"KL after a nudge of ε = 1e-4: {kl_eps[-1]:.2e}; log-log slope {slope:.3f} (KL ∝ ε²)")
assert (kl_pairs > 0).all()
assert kl_self.abs().max() < 1e-10  # float64 round-off
assert (kl_eps > 0).all() and abs(slope - 2) < 0.05

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
upper = kl_pairs.quantile(0.9).item()
ax1.hist(kl_pairs.clamp(max=upper), bins=40, range=(-0.05 * upper, upper), color="C0", label="random pairs")
ax1.hist(kl_self, bins=40, range=(-0.05 * upper, upper), color="C1", label="each Gaussian with itself")
ax1.axvline(0, color="k", lw=1)
ax1.set_xlabel("KL(p‖q), nats (the top 10% piled up at the right edge)")
ax1.set_ylabel("pairs")
ax1.legend(fontsize=8)
ax2.loglog(eps, kl_eps, "o-", label="KL(N(μ, Σ) ‖ N(μ + εδ, Σ + εΔ))")
ax2.loglog(eps, kl_eps[-1] * (eps / eps[-1]) ** 2, "k--", lw=1, label="∝ ε²")
ax2.set_xlabel("ε")
ax2.set_ylabel("KL (nats)")
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## (c) The Gaussian closed form, and the usual slide mistakes
#
# For p = N(μ₁, Σ₁) and q = N(μ₂, Σ₂) in k dimensions,
#
# KL(p‖q) = ½ [ tr(Σ₂⁻¹Σ₁) + (μ₂ − μ₁)ᵀ Σ₂⁻¹ (μ₂ − μ₁) − k + log(det Σ₂ / det Σ₁) ].
#
# Below we compute it three ways: by hand from its three ingredients; with `pyro_vae.theory.kl.gaussian_kl`, which
# writes
# the formula as above; and with `torch.distributions.kl_divergence`, which is what library code should use. Then we
# estimate it with no formula at all, by Monte Carlo: KL(p‖q) ≈ mean of log p(z) − log q(z) over z ~ p.
#
# The formula is easy to get subtly wrong on a slide. Each variant below is a mistake that has been seen in the wild.
# The lecture's own slide prints the log-determinant ratio upside down, log(det Σ₁ / det Σ₂); we name that variant
# **the lecture's misprint**. Monte Carlo, which knows no formula, tells every variant apart from the right one by
# many standard errors; and the misprint is not even a divergence: it goes negative.

# %%
k = 3
mu1 = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
cov1 = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
mu2 = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
cov2 = torch.tensor([[2.0, 0.0, 0.4], [0.0, 1.0, 0.0], [0.4, 0.0, 1.5]], dtype=torch.float64)
p, q = MultivariateNormal(mu1, cov1), MultivariateNormal(mu2, cov2)

# the three ingredients of the formula
precision2 = torch.linalg.inv(cov2)
trace_term = torch.trace(precision2 @ cov1)
diff = mu2 - mu1
mahalanobis = diff @ precision2 @ diff
log_det_ratio = torch.logdet(cov2) - torch.logdet(cov1)

by_hand = 0.5 * (trace_term + mahalanobis - k + log_det_ratio)
library = gaussian_kl(mu1, cov1, mu2, cov2)
reference = kl_divergence(p, q)
mc, mc_se = monte_carlo_kl(p, q, MC_SAMPLES)

print(f"tr(Σ₂⁻¹Σ₁) = {trace_term:.4f}   Mahalanobis = {mahalanobis:.4f}   log det Σ₂/det Σ₁ = {log_det_ratio:.4f}")
print(f"{'by hand':32s} {by_hand:.6f}")
print(f"{'pyro_vae.theory.kl.gaussian_kl':32s} {library:.6f}")
print(f"{'torch kl_divergence':32s} {reference:.6f}")
print(f"{f'Monte Carlo, {MC_SAMPLES:,} draws':32s} {mc:.6f} ± {mc_se:.6f}")
torch.testing.assert_close(library, reference, rtol=1e-10, atol=0.0)
torch.testing.assert_close(by_hand, reference, rtol=1e-10, atol=0.0)
assert abs(mc - reference) < 5 * mc_se  # a correct formula fails this with probability 6e-7

# %%
mistakes = {
    "+k instead of −k": 0.5 * (trace_term + mahalanobis + k + log_det_ratio),
    "½ on the trace only": 0.5 * trace_term + mahalanobis - k + log_det_ratio,
    "½ forgotten": trace_term + mahalanobis - k + log_det_ratio,
    "lecture's misprint: det Σ₁/det Σ₂": 0.5 * (trace_term + mahalanobis - k - log_det_ratio),
    "Σ₁⁻¹ in the Mahalanobis term": 0.5 * (trace_term + diff @ torch.linalg.inv(cov1) @ diff - k + log_det_ratio),
}
print(f"{'formula':32s} {'value':>8s}   distance from Monte Carlo")
print(f"{'correct':32s} {reference:8.4f}   {(reference - mc) / mc_se:+7.1f} standard errors")
for name, value in mistakes.items():
    z_score = (value - mc) / mc_se
    print(f"{name:32s} {value:8.4f}   {z_score:+7.1f} standard errors")
    assert abs(z_score) > 5, name


def misprinted_kl(loc1, cov1, loc2, cov2):
    # the lecture's misprint: gaussian_kl with log(det Σ₁ / det Σ₂) in place of log(det Σ₂ / det Σ₁)
    log_det_ratio = torch.logdet(cov2) - torch.logdet(cov1)
    return gaussian_kl(loc1, cov1, loc2, cov2) - log_det_ratio


misprint = misprinted_kl(mu1, cov1, mu2, cov2)
print(
    f"\nthe lecture's misprint gives {misprint:.4f} nats where torch gives {reference:.4f}: "
    f"an error of {misprint - reference:+.4f} (= −log det Σ₂/det Σ₁)"
)
misprint_pairs = misprinted_kl(loc1_pairs, cov1_pairs, loc2_pairs, cov2_pairs)
error = misprint_pairs - kl_divergence(
    MultivariateNormal(loc1_pairs, cov1_pairs), MultivariateNormal(loc2_pairs, cov2_pairs)
)
print(
    f"on the {NUM_PAIRS} random pairs of part (b): error median {error.median():+.2f}, largest |error| "
    f"{error.abs().max():.2f} nats; the misprint is negative for {(misprint_pairs < 0).float().mean():.1%} of them"
)
torch.testing.assert_close(
    misprinted_kl(mu1, cov1, mu1, cov1), torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-10
)

# %% [markdown]
# ## (d) The ELBO identity
#
# For any q(z|x), write p(x, z) = p(z|x) p(x) inside the expectation E_q[log p(x, z) − log q(z|x)]: the log p(x)
# comes out and what stays is −KL(q(z|x) ‖ p(z|x)). Writing p(x, z) = p(x|z) p(z) instead gives reconstruction and
# prior KL. So
#
# **log p(x) − KL(q(z|x) ‖ p(z|x)) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) = ELBO.**
#
# The left side says what the ELBO *is*: the evidence minus how far q is from the true posterior. It is intractable
# in a VAE. The right side says how to *compute* it: a reconstruction term and a KL to the prior, both estimated with
# draws z ~ q. Since KL ≥ 0 (part (b)), the ELBO is a lower bound on log p(x), tight exactly when q = p(z|x). And
# since log p(x) does not depend on q, raising the ELBO over q is the same as lowering the reverse KL of part (a).
#
# A model where all of it is in closed form is the linear-Gaussian one (probabilistic PCA), z ~ N(0, I₂),
# x | z ~ N(Wz + b, 0.5² I₅), with affine Gaussian guides q(z|x) = N(Ax + c, SSᵀ). We take three guides:
# the exact posterior, a **wide** one (mean shifted by 0.2, scale × 1.5) and a **narrow** one (mean shifted by 0.2,
# scale × 0.7). Numbers are in nats, averaged over 100 datapoints x ~ p(x); the asserts check every datapoint.

# %%
lg = LinearGaussian.random(d=5, k=2, noise_scale=0.5, seed=0)
x = lg.sample(N_POINTS, seed=1)  # (N_POINTS, 5)
exact = lg.exact_guide()
guides = {
    "exact": exact,
    "wide": AffineGaussianGuide(exact.A, exact.c + 0.2, 1.5 * exact.scale_tril),
    "narrow": AffineGaussianGuide(exact.A, exact.c + 0.2, 0.7 * exact.scale_tril),
}
log_px = lg.log_px(x)  # (N_POINTS,)

print(
    f"{'':8s} {'log p(x)':>9s} {'KL(q‖p(z|x))':>13s} {'left side':>10s}   "
    f"{'E_q log p(x|z)':>15s} {'KL(q‖p(z))':>11s} {'ELBO':>9s}"
)
for name, q in guides.items():
    posterior_kl = lg.posterior_kl(x, q)
    reconstruction, prior_kl = lg.expected_log_likelihood(x, q), lg.prior_kl(x, q)
    left, right = log_px - posterior_kl, reconstruction - prior_kl
    print(
        # KL ≥ 0: at the exact guide float64 round-off can leave −1e-16, printed as 0
        f"{name:8s} {log_px.mean():9.4f} {max(posterior_kl.mean().item(), 0.0):13.4f} {left.mean():10.4f} = "
        f"{reconstruction.mean():15.4f} {prior_kl.mean():11.4f} {right.mean():9.4f}"
    )
    torch.testing.assert_close(left, right, rtol=1e-10, atol=1e-9)  # the identity, per datapoint (float64)

# equality at q = p(z|x): no posterior KL, and the ELBO is log p(x)
assert lg.posterior_kl(x, exact).abs().max() < 1e-9
torch.testing.assert_close(lg.elbo(x, exact), log_px, rtol=1e-10, atol=1e-9)
assert (lg.posterior_kl(x, guides["wide"]) > 0).all() and (lg.posterior_kl(x, guides["narrow"]) > 0).all()

# %% [markdown]
# ### The Monte Carlo ELBO agrees with the exact one
#
# Training never sees the closed form: it estimates the ELBO from draws z ~ q(z|x). Pyro's `Trace_ELBO`, which
# `pyro_vae.fit` uses, averages log p(x, z) − log q(z|x) over particles. `pyro_vae.inference.evaluate.elbo_terms`
# reports the
# reconstruction E_q[log p(x|z)] (one draw per row) and KL(q‖p(z)) (closed form when torch has one, as here)
# separately, which is how notebook 02 reports a trained VAE. Both land within a few standard errors of the exact
# ELBO of the wide guide.

# %%
q = guides["wide"]
exact_elbo = lg.elbo(x, q).mean()

# elbo_terms takes one draw per row: repeat the data to get REPLICAS draws per datapoint
terms = elbo_terms(lg.model, q, x.repeat(REPLICAS, 1))
per_draw = terms["elbo"].view(REPLICAS, N_POINTS).mean(1)  # (REPLICAS,) one draw per datapoint, averaged over x
terms_elbo, terms_se = per_draw.mean(), per_draw.std() / math.sqrt(REPLICAS)

loss = Trace_ELBO(num_particles=ELBO_PARTICLES, vectorize_particles=True, max_plate_nesting=1).loss(lg.model, q, x)
pyro_elbo = -loss / N_POINTS  # the loss is −ELBO summed over the datapoints
pyro_se = per_draw.std() / math.sqrt(ELBO_PARTICLES)  # the same estimator, so the same spread per draw

rows = [
    ("exact ELBO", exact_elbo, None),
    (f"elbo_terms, {REPLICAS:,} draws per datapoint", terms_elbo, terms_se),
    (f"Trace_ELBO, {ELBO_PARTICLES:,} particles", pyro_elbo, pyro_se),
]
for label, value, se in rows:
    print(f"{label:40s} {value:9.4f}" + (f" ± {se:.4f}" if se is not None else ""))
print(
    f"elbo_terms' terms: reconstruction {terms['reconstruction'].mean():.4f} "
    f"(exact {lg.expected_log_likelihood(x, q).mean():.4f}), "
    f"KL {terms['kl'].mean():.4f} (exact {lg.prior_kl(x, q).mean():.4f})"
)
assert abs(terms_elbo - exact_elbo) < 5 * terms_se
assert abs(pyro_elbo - exact_elbo) < 5 * pyro_se

# %% [markdown]
# ### Importance sampling closes the gap
#
# With K draws z₁ … z_K ~ q(z|x), the importance-sampled estimate (Burda et al., 2016)
#
# log p̂_K(x) = log (1/K) Σ_k p(x, z_k) / q(z_k|x)
#
# is, in expectation, a lower bound on log p(x) that equals the ELBO at K = 1 and rises to log p(x) as K grows.
# `pyro_vae.inference.evaluate.importance_log_px` computes it, and notebook 02 uses it to measure how loose a VAE's
# ELBO is.
#
# - With the **exact** guide every weight p(x, z)/q(z|x) equals p(x), so the estimate is exact at any K.
# - The **wide** guide reaches log p(x) after few draws (the cell after the table says how many): a proposal wider
#   than the target is what importance sampling likes. (K = 1 is a one-draw ELBO, so that row is noisy.)
# - The **narrow** guide has a *smaller* ELBO gap than the wide one, yet converges far more slowly: its draws rarely
#   reach the tails of p(z|x), where the large weights live. A mode-seeking (reverse-KL) fit tends to be narrow,
#   which is why a VAE's importance-sampled log p(x) needs many samples.

# %%
is_means = {
    name: [importance_log_px(lg.model, q, x, num_samples=K).mean().item() for K in IS_KS] for name, q in guides.items()
}
print(f"{'K':>6s} " + " ".join(f"{name:>8s}" for name in guides) + f"   (log p(x) = {log_px.mean():.4f})")
for i, K in enumerate(IS_KS):
    print(f"{K:6d} " + " ".join(f"{is_means[name][i]:8.4f}" for name in guides))

close = {
    name: next((K for K, v in zip(IS_KS, is_means[name]) if abs(v - log_px.mean()) < 0.05), None)
    for name in ("wide", "narrow")
}
display(
    Markdown(
        "Smallest K in the table whose estimate is within 0.05 nats of log p(x): "
        + ", ".join(
            f"{name} guide {'K = ' + str(K) if K else f'none up to K = {IS_KS[-1]}'}" for name, K in close.items()
        )
        + "."
    )
)
# the exact guide: every weight equals p(x), so the estimate is exact for any K
torch.testing.assert_close(importance_log_px(lg.model, exact, x, num_samples=7), log_px, rtol=1e-8, atol=1e-8)
# K = 1 is a one-draw ELBO: unbiased, so within 5 standard errors of the exact ELBO
one_draw = importance_log_px(lg.model, guides["wide"], x, num_samples=1) - lg.elbo(x, guides["wide"])
assert abs(one_draw.mean()) < 5 * one_draw.std() / math.sqrt(N_POINTS)
# more draws: the wide guide is within 0.05 nats of log p(x) (at K = 1000 it is off by < 0.01 nats)
assert abs(is_means["wide"][-1] - log_px.mean()) < 0.05
for name in ("wide", "narrow"):
    assert lg.elbo(x, guides[name]).mean() < is_means[name][-1] < log_px.mean() + 0.05

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
for i, (name, q) in enumerate(guides.items()):
    ax.semilogx(IS_KS, is_means[name], "o-", color=f"C{i}", label=f"IS log p(x), {name} guide")
    if name != "exact":
        ax.axhline(lg.elbo(x, q).mean(), color=f"C{i}", ls=":", lw=1, label=f"exact ELBO, {name} guide")
ax.axhline(log_px.mean(), color="k", ls="--", lw=1, label="exact log p(x)")
ax.set_xlabel("K, importance samples per datapoint")
ax.set_ylabel("nats per datapoint")
ax.legend(fontsize=8, loc="center right")
plt.show()

# %% [markdown]
# ## Summary
#
# - Maximum likelihood minimizes KL(p_data‖p_θ): the two differ by the entropy of the data, a constant.
# - KL(p‖q) ≠ KL(q‖p): forward KL covers modes, reverse KL seeks one, and has one optimum per mode. Variational
#   inference uses the reverse one.
# - KL ≥ 0, with equality only at p = q; so the ELBO is a lower bound on log p(x), tight only at q = p(z|x).
# - The Gaussian closed form ½[tr(Σ₂⁻¹Σ₁) + (μ₂−μ₁)ᵀΣ₂⁻¹(μ₂−μ₁) − k + log(det Σ₂/det Σ₁)] matches torch and
#   Monte Carlo; moving the ½, the sign of k, or turning the determinant ratio upside down (the lecture's misprint)
#   does not.
# - log p(x) − KL(q‖p(z|x)) = E_q[log p(x|z)] − KL(q‖p(z)), datapoint by datapoint. Monte Carlo estimates of the
#   right side agree with it, and importance sampling with K draws climbs from the ELBO to log p(x).
#
# Notebook 02 trains a VAE on MNIST and reports exactly these quantities: the reconstruction term, the KL to the
# prior, the ELBO, and the importance-sampled log p(x).
