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
# works through the lecture's facts about them, each with numbers, and writes the one model it needs in Pyro:
#
# - **(0)** Maximum likelihood is minimum KL(p_data‖p_θ), the lecture's starting point.
# - **(a)** KL is not symmetric: fitting a Gaussian to a two-mode target by forward KL(p‖q) covers both modes, by
#   reverse KL(q‖p) it picks one, and which one depends on where it starts.
# - **(b)** KL(p‖q) ≥ 0, and KL(p‖q) = 0 only when p = q; with the two slips of the lecture's definition and proof.
# - **(c)** The closed form of the KL between two Gaussians, checked against `torch` and Monte Carlo; the two forms
#   the lecture prints, computed; and the special case every VAE uses, a diagonal Gaussian against N(0, I).
# - **(d)** The ELBO, derived with Jensen's inequality and through the identity
#   log p(x) − KL(q‖p(z|x)) = E_q[log p(x|z)] − KL(q‖p(z)), on a linear-Gaussian model written in Pyro, where every
#   term is known exactly. The ELBO and the importance-sampled log p(x) are computed by hand from Pyro traces
#   (`poutine.trace`, `poutine.replay`), and asserted equal to the package's own.
# - **(e)** The lecture's analogy with the EM algorithm, run on the same model.
#
# Every sentence about a result below is rendered by the cell that computes it, or asserted there; the last cells
# count the claims and say what this notebook cost to run.

# %%
from pyro_vae.notebook import Claims  # first: it also silences tqdm's notice about ipywidgets

claims = Claims()  # asserts each claim in a full run; PYRO_VAE_SMOKE=1 (tiny sizes) checks only exact ones

import math

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_vae.inference.evaluate import importance_log_px, log_weights
from pyro_vae.theory.kl import bimodal_mixture, fit_gaussian, gaussian_kl, monte_carlo_kl
from pyro_vae.theory.linear_gaussian import AffineGaussianGuide, LinearGaussian

SMOKE = claims.smoke
FIT_STEPS = 300 if SMOKE else 2000  # SGD steps of each Gaussian fit in (0) and (a)
DATA_POINTS = 2000 if SMOKE else 20_000  # samples of p_data in (0)
NUM_PAIRS = 200 if SMOKE else 2000  # random Gaussian pairs in (b)
MC_SAMPLES = 100_000 if SMOKE else 2_000_000  # Monte Carlo draws per KL estimate in (a) and (c)
N_POINTS = 100  # datapoints x in (d) and (e)
ELBO_PARTICLES = 500 if SMOKE else 20_000  # draws z ~ q per datapoint for the Monte Carlo ELBO in (d)
IS_KS = [1, 10, 100, 1000] if SMOKE else [1, 3, 10, 30, 100, 300, 1000, 3000, 10_000]  # K of IS log p(x) in (d)
EM_STEPS = 5 if SMOKE else 30  # EM iterations in (e)

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
# KL(p_data‖p_θ). Below, p_data is the two-mode mixture of part (a) and p_θ = N(m, s²).
#
# - (i) On N draws of p_data, the Monte Carlo KL and the average negative log-likelihood differ by the Monte Carlo
#   −H(p_data) on the same draws. This holds by algebra (the cell checks it to round-off, not as evidence), so the
#   two curves over m are the same curve shifted, with the same minimizer.
# - (ii) Two ways to the same Gaussian: the closed-form maximum-likelihood fit on those N fixed draws (their mean and
#   standard deviation), and `fit_gaussian`, which minimizes the forward KL by SGD with fresh draws of p_data at every
#   step. Both estimate the population optimum, p_data's mean 0 and standard deviation √(2² + 0.7²); the cell says
#   how close each lands.

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
claims.check(
    torch.allclose(offset, torch.full_like(offset, -entropy.item()), rtol=0, atol=1e-4),  # float32 sums
    "KL − NLL is −H(p_data) at every m",
    exact=True,
)
claims.check(nll.argmin() == kl_grid.argmin(), "the NLL and the KL have the same minimizer on the grid", exact=True)

ml = samples.mean(), samples.std(unbiased=False)  # the maximum-likelihood Gaussian, in closed form
by_kl = fit_gaussian(target, "forward", steps=FIT_STEPS)
m_star, s_star = 0.0, math.sqrt(2.0**2 + 0.7**2)
ml_se = ml[1].item() / math.sqrt(DATA_POINTS)  # standard error of the sample mean
print(f"population optimum:               m = {m_star:.3f}, s = {s_star:.3f}")
print(f"maximum likelihood (closed form): m = {num(ml[0], 3):.3f} ± {ml_se:.3f}, s = {ml[1]:.3f}")
print(f"argmin KL(p_data‖q) by SGD:       m = {num(by_kl.loc, 3):.3f}, s = {by_kl.scale:.3f}")
ml_z = (ml[0].item() - m_star) / ml_se
claims.state(
    abs(ml_z) < 4 and abs(by_kl.loc) < 0.1 and abs(by_kl.scale - s_star) < 0.1,
    f"The maximum-likelihood mean lies {abs(ml_z):.1f} standard errors from 0, and the SGD fit of the forward KL "
    f"lands within {max(abs(by_kl.loc.item()), abs(by_kl.scale.item() - s_star)):.3f} of (0, {s_star:.3f}): "
    "close, not equal, as two estimates of the same optimum by different draws should be.",
)

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
#   and variance, so q is broad, and its peak sits in the valley between the modes (the cell below measures how
#   much of q lies where).
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
forward_fit = fits["forward"]
claims.check(
    abs(forward_fit.loc) < 0.1 and abs(forward_fit.scale - math.sqrt(half**2 + scale**2)) < 0.1,
    "the forward fit matches p's mean and variance",
)
claims.check(abs(fits["reverse"].loc - half) < 0.1 and abs(fits["reverse"].scale - scale) < 0.1, "right mode")
claims.check(
    abs(fits["reverse, start −1"].loc + half) < 0.1 and abs(fits["reverse, start −1"].scale - scale) < 0.1,
    "left mode",
)
claims.check(
    kls["forward"][0] < kls["reverse"][0] and kls["reverse"][1] < kls["forward"][1],
    "each fit wins in the direction it minimized",
)

# where the forward fit puts its mass, by quadrature on a fine grid
grid = torch.linspace(-12, 12, 24_001)
q_density, p_density = forward_fit.log_prob(grid).exp(), target.log_prob(grid).exp()
dz = (grid[1] - grid[0]).item()
low = 0.05  # "p has almost no density": below a sixth of its peak height
mass_low = (q_density * (p_density < low)).sum().item() * dz
mass_modes = (q_density * ((grid.abs() - half).abs() < scale)).sum().item() * dz
p_at_peak = target.log_prob(forward_fit.loc).exp().item()
claims.state(
    p_at_peak < 0.1 * p_density.max() and mass_low < 0.5,
    f"The forward fit's **peak** sits in the valley: at z = m = {num(forward_fit.loc, 2)}, p's density is "
    f"{p_at_peak:.3f}, {p_at_peak / p_density.max():.0%} of its peak {p_density.max():.3f}. Its **mass** is spread: "
    f"{mass_low:.0%} of it lies where p(z) < {low} (the valley and the far tails), {mass_modes:.0%} within one "
    f"mode scale ({scale}) of the two modes, and the rest on their flanks.",
)

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
# −KL(p‖q) = E_p[log q(z)/p(z)] ≤ log E_p[q(z)/p(z)] = log ∫_{p>0} q(z) dz ≤ log 1 = 0,
#
# with equality only when q/p is constant where p > 0 and q puts no mass where p = 0, that is when q = p.
#
# **Two slips in the lecture.** Its definition reads
#
# $$D_{KL}[p||q] = \int_X p(x) \log \frac{q(x)}{p(x)} dx$$
#
# which is −KL(p‖q): the ratio is upside down (its second line, $E_x \left[\log \frac{p(x)}{q(x)} \right]$, has it
# right). Its proof of non-negativity ends in
#
# $$\int \log \frac{q(x)}{p(x)} p(x) dx = \int \log 1 dx = 0$$
#
# "where the above follows from Jensen's inequality". But no inequality is written, and q/p is not 1: Jensen's
# inequality moves the log outside the integral, ∫ p log(q/p) ≤ log ∫ p · q/p = log ∫ q = log 1 = 0, which is the
# line above. (The same proof also names its left side D_KL[q‖p] while integrating against p.)
#
# Below, with the closed form of part (c): random pairs of 3-D Gaussians all have positive KL; every Gaussian has
# KL 0 with itself (up to float64 round-off); and nudging a Gaussian by ε gives a KL that falls to 0 as ε², never
# reaching it for ε > 0. (KL is locally quadratic: its second derivative at q = p is the Fisher information.)

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
claims.check((kl_pairs > 0).all(), "every random pair has positive KL", exact=True)
claims.check(kl_self.abs().max() < 1e-10, "KL of a Gaussian with itself is 0 to round-off", exact=True)
claims.check((kl_eps > 0).all() and abs(slope - 2) < 0.05, "KL ∝ ε² near p = q", exact=True)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
upper = kl_pairs.quantile(0.9).item()
ax1.hist(kl_pairs.clamp(max=upper), bins=40, range=(0, upper), color="C0", label=f"{NUM_PAIRS} random pairs")
ax1.axvline(0, color="C1", lw=3, label=f"each Gaussian with itself: KL = 0 (all {NUM_PAIRS})")
ax1.set_xlim(-0.02 * upper, upper)
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
# ## (c) The Gaussian closed form, the lecture's printed forms, and the diagonal case
#
# For p = N(μ₁, Σ₁) and q = N(μ₂, Σ₂) in k dimensions,
#
# KL(p‖q) = ½ [ tr(Σ₂⁻¹Σ₁) + (μ₂ − μ₁)ᵀ Σ₂⁻¹ (μ₂ − μ₁) − k + log(det Σ₂ / det Σ₁) ].
#
# Below we compute it three ways: by hand from its three ingredients; with `pyro_vae.theory.kl.gaussian_kl`, which
# writes the formula as above; and with `torch.distributions.kl_divergence`, which is what library code should use.
# Then we estimate it with no formula at all, by Monte Carlo: KL(p‖q) ≈ mean of log p(z) − log q(z) over z ~ p.

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
claims.check(torch.allclose(library, reference, rtol=1e-10, atol=0.0), "gaussian_kl equals torch", exact=True)
claims.check(torch.allclose(by_hand, reference, rtol=1e-10, atol=0.0), "by hand equals torch", exact=True)
claims.state(
    abs(mc - reference) < 5 * mc_se,  # a correct formula fails this with probability 6e-7
    f"Monte Carlo agrees with the closed form: {mc:.4f} ± {mc_se:.4f} against {reference:.4f}, "
    f"{abs(mc - reference) / mc_se:.1f} standard errors apart.",
)

# %% [markdown]
# **The forms the lecture prints.** Its proposition, for q = N(μ₁, Σ₁) and p = N(μ₂, Σ₂), appears twice:
#
# $$D_{KL}(q||p) = \frac{1}{2} \text{tr} \left(\Sigma_2^{-1} \Sigma_1 +
# (\mu_2 - \mu_1)^T \Sigma_2^{-1} (\mu_2 - \mu_1) \right) +
# \log \frac{\det \Sigma_2}{\det \Sigma_1}$$
#
# and, on the next slide,
#
# $$D_{KL}(q||p) = \frac{1}{2} \text{tr} \left(\Sigma_2^{-1} \Sigma_1 +
# (\mu_2 - \mu_1)^T \Sigma_2^{-1} (\mu_2 - \mu_1) \right) +
# k + \log \frac{\det \Sigma_2}{\det \Sigma_1}$$
#
# Its determinant ratio, log(det Σ₂ / det Σ₁), is the right way up. Its slips are elsewhere: the first form has no
# k at all, the second has **+k where −k belongs**, and in both the **½ covers only the trace and the Mahalanobis
# term** (read as tr(Σ₂⁻¹Σ₁) plus that scalar), leaving k and the log-determinant ratio outside it. The cell
# computes both forms from the ingredients printed above, and beside them the single slips one at a time, each
# against Monte Carlo, which knows no formula.

# %%
T, M, L = trace_term, mahalanobis, log_det_ratio
lecture_forms = {
    "lecture, first form": 0.5 * (T + M) + L,
    "lecture, second form (+k)": 0.5 * (T + M) + k + L,
}
single_slips = {
    "+k instead of −k": 0.5 * (T + M + k + L),
    "½ on the trace only": 0.5 * T + M - k + L,
    "½ forgotten": T + M - k + L,
    "det ratio upside down": 0.5 * (T + M - k - L),
    "Σ₁⁻¹ in the Mahalanobis term": 0.5 * (T + diff @ torch.linalg.inv(cov1) @ diff - k + L),
}
print(f"{'formula':30s} {'value':>8s}   distance from Monte Carlo")
print(f"{'correct':30s} {reference:8.4f}   {(reference - mc) / mc_se:+9.1f} standard errors")
for name, value in {**lecture_forms, **single_slips}.items():
    z_score = (value - mc) / mc_se
    print(f"{name:30s} {value:8.4f}   {z_score:+9.1f} standard errors")
    claims.check(abs(z_score) > 5, f"{name} is told apart from Monte Carlo")

first, second = lecture_forms.values()
# at p = q: T = k, M = 0, L = 0, so the forms give k/2 and 3k/2 instead of 0
at_self = [0.5 * k, 0.5 * k + k]
claims.state(
    abs(first - reference - 0.5 * (L + k)) < 1e-12 and abs(second - first - k) < 1e-12,
    f"From these ingredients the lecture's two forms give **{first:.2f}** and **{second:.2f}** nats, against the "
    f"correct **{reference:.2f}**. They exceed it by (log det Σ₂/det Σ₁ + k)/2 and by k more, so even at q = p "
    f"(trace k, no Mahalanobis term, ratio 1) they give {at_self[0]:.1f} and {at_self[1]:.1f} nats instead of 0: "
    "neither is a divergence.",
    exact=True,
)

# %% [markdown]
# **The diagonal Gaussian against N(0, I).** A VAE's guide is q(z|x) = N(μ, diag σ²) and its prior N(0, I). In the
# closed form, Σ₂ = I, so the trace is Σⱼ σⱼ², the Mahalanobis term Σⱼ μⱼ², and log det Σ₂/det Σ₁ = −Σⱼ log σⱼ²:
#
# KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σⱼ (μⱼ² + σⱼ² − 1 − log σⱼ²),
#
# a sum of one term per latent dimension, each ≥ 0 and 0 only at μⱼ = 0, σⱼ = 1. Checked below on a batch of
# random (μ, σ) in 20 dimensions against `kl_divergence` of Pyro's `Normal(μ, σ).to_event(1)`, the distribution a
# VAE's guide samples, and against the general formula.

# %%
z_dim = 20
mu = torch.randn(1000, z_dim, generator=gen, dtype=torch.float64)  # (1000, z_dim)
sigma = torch.exp(0.5 * torch.randn(1000, z_dim, generator=gen, dtype=torch.float64))  # (1000, z_dim)
diagonal_kl = 0.5 * (mu**2 + sigma**2 - 1 - torch.log(sigma**2)).sum(-1)  # (1000,)
prior = dist.Normal(torch.zeros(z_dim, dtype=torch.float64), 1.0).to_event(1)
by_torch = kl_divergence(dist.Normal(mu, sigma).to_event(1), prior)  # (1000,)
eye = torch.eye(z_dim, dtype=torch.float64)
by_general = gaussian_kl(mu, torch.diag_embed(sigma**2), torch.zeros_like(mu), eye)
print(f"½ Σ (μ² + σ² − 1 − log σ²) on 1000 random (μ, σ), 20-D: mean {diagonal_kl.mean():.4f} nats")
print(
    f"largest difference from kl_divergence {(diagonal_kl - by_torch).abs().max():.1e}, from the general formula "
    f"{(diagonal_kl - by_general).abs().max():.1e}"
)
claims.check(torch.allclose(diagonal_kl, by_torch, rtol=1e-12, atol=1e-12), "diagonal KL = torch", exact=True)
claims.check(torch.allclose(diagonal_kl, by_general, rtol=1e-10, atol=1e-10), "diagonal KL = general", exact=True)

# %% [markdown]
# ## (d) The ELBO
#
# **By Jensen's inequality.** For any q(z|x) that is positive wherever p(x, z) is,
#
# log p(x) = log ∫ p(x|z) p(z) dz = log ∫ q(z|x) · p(x, z)/q(z|x) dz = log E_q[p(x, z)/q(z|x)]
#
# ≥ E_q[log p(x, z)/q(z|x)] = E_q[log p(x|z)] + E_q[log p(z)/q(z|x)] = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)),
#
# the inequality being Jensen's for the concave log, as in part (b). The right side is the ELBO. The lecture's
# derivation writes the inequality the other way round,
#
# $$\log E_Z \left[\frac{p(x; z)}{q(z|x)} \right] \underset{\text{Jensen}}{\leq}
# E_Z \left[\log \frac{p(x; z)}{q(z|x)} \right]$$
#
# (for a concave log, the log of a mean is *at least* the mean of the logs), and ends with
# $= D_{KL}(q(z|x) || p(z))$ for the term E_q[log p(z)/q(z|x)], which is −KL(q(z|x) ‖ p(z)).
#
# **Through the identity.** Jensen says the ELBO is below log p(x), not by how much. Write p(x, z) = p(z|x) p(x)
# inside E_q[log p(x, z) − log q(z|x)] instead: the log p(x) comes out and what stays is −KL(q(z|x) ‖ p(z|x)). So
#
# **log p(x) − KL(q(z|x) ‖ p(z|x)) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) = ELBO.**
#
# The left side says what the ELBO *is*: the evidence minus how far q is from the true posterior, so the Jensen gap
# is exactly that KL. It is intractable in a VAE. The right side says how to *compute* it: a reconstruction term and
# a KL to the prior, both estimated with draws z ~ q. The ELBO is tight exactly when q = p(z|x), and since log p(x)
# does not depend on q, raising the ELBO over q is the same as lowering the reverse KL of part (a).
#
# ### The model and the guides, in Pyro
#
# A model where all of it is in closed form is the linear-Gaussian one (probabilistic PCA), z ~ N(0, I₂),
# x | z ~ N(Wz + b, 0.5² I₅), with affine Gaussian guides q(z|x) = N(Ax + c, SSᵀ). In Pyro:
#
# - the model and the guide are plain functions of the data, with a sample site of the same name, `"z"`, in each;
# - `pyro.plate("data", N, dim=-1)` declares the N datapoints independent, along the rightmost batch dimension;
# - `.to_event(1)` makes the 5 pixels of x one event, so that `log_prob` returns one number per datapoint; a
#   `MultivariateNormal` is already one event of size 2;
# - `obs=x` makes `"x"` an observed site: the model scores the data instead of drawing it.

# %%
lg = LinearGaussian.random(d=5, k=2, noise_scale=0.5, seed=0)  # the testbed's W (5, 2), b (5,) and σ
W, b, noise = lg.W, lg.b, lg.noise_scale
d, k = W.shape


def model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z_prior = dist.MultivariateNormal(torch.zeros(k, dtype=x.dtype), scale_tril=torch.eye(k, dtype=x.dtype))
        z = pyro.sample("z", z_prior)  # (..., N, k)
        pyro.sample("x", dist.Normal(z @ W.T + b, noise).to_event(1), obs=x)  # log_prob (..., N)


def make_guide(A, c, S):
    """The guide q(z|x) = N(A x + c, S Sᵀ), for fixed A (k, d), c (k,) and lower-triangular S (k, k)."""

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(x @ A.T + c, scale_tril=S))  # (..., N, k)

    return guide


# three guides: the exact posterior (Pyro_vae computes its A, c, S in closed form), a wide one (mean shifted by
# 0.2, scale × 1.5) and a narrow one (mean shifted by 0.2, scale × 0.7)
exact = lg.exact_guide()
packaged = {
    "exact": exact,
    "wide": AffineGaussianGuide(exact.A, exact.c + 0.2, 1.5 * exact.scale_tril),
    "narrow": AffineGaussianGuide(exact.A, exact.c + 0.2, 0.7 * exact.scale_tril),
}
guides = {name: make_guide(g.A, g.c, g.scale_tril) for name, g in packaged.items()}
x = lg.sample(N_POINTS, seed=1)  # (N_POINTS, 5) datapoints x ~ p(x)
log_px = lg.log_px(x)  # (N_POINTS,) exact log p(x)

# %% [markdown]
# ### The ELBO by hand, from Pyro's traces
#
# `poutine.trace(guide).get_trace(x)` runs the guide and records every site: its distribution `"fn"` and its drawn
# `"value"`. `poutine.replay(model, trace=guide_trace)` runs the model with each latent site set to the guide's value
# of the same name; tracing that run gives the model's densities at the guide's draws. Around both, a
# `pyro.plate("particles", K, dim=-2)` draws K values of z per datapoint at once, one more batch dimension to the
# left of the data plate. Then
#
# log w = log p(x, z) − log q(z|x), one number per (particle, datapoint): its mean over particles estimates the
# ELBO, and log (1/K) Σ_k w_k is the importance-sampled estimate of log p(x) (Burda et al., 2016).
#
# The cell checks this against the package, on the same draws (the same seed before each): the model above against
# `LinearGaussian.model`, the weights against `pyro_vae.inference.evaluate.log_weights`, the ELBO against Pyro's
# `Trace_ELBO`, and the IS estimate against `importance_log_px`. `Trace_ELBO(num_particles=K,
# vectorize_particles=True, max_plate_nesting=1)` averages over K particles in one batched pass rather than a Python
# loop; `max_plate_nesting=1` tells it that the model uses one plate, so its particle plate can go at dim −2; its
# `loss` is −ELBO summed over the datapoints.


# %%
def log_weights_by_hand(model, guide, x, num_particles):
    """log p(x, z_k) − log q(z_k|x) for z_k ~ q(z|x): (num_particles, N)."""
    with pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    log_p = sum(site["fn"].log_prob(site["value"]) for site in model_trace.nodes.values() if site["type"] == "sample")
    log_q = guide_trace.nodes["z"]["fn"].log_prob(guide_trace.nodes["z"]["value"])
    return log_p - log_q  # (num_particles, N)


guide, q = guides["wide"], packaged["wide"]
pyro.set_rng_seed(1)
guide_trace = poutine.trace(guide).get_trace(x)
ours = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
theirs = poutine.trace(poutine.replay(lg.model, trace=guide_trace)).get_trace(x)
ours.compute_log_prob()
theirs.compute_log_prob()
print(guide_trace.format_shapes())
claims.check(
    all(torch.allclose(ours.nodes[s]["log_prob"], theirs.nodes[s]["log_prob"], rtol=0, atol=1e-12) for s in "zx"),
    "the model above scores the guide's draws as LinearGaussian.model does",
    exact=True,
)

K = 100
pyro.set_rng_seed(2)
by_hand = log_weights_by_hand(model, guide, x, K)  # (K, N)
pyro.set_rng_seed(2)
package_weights = log_weights(lg.model, q, x, num_particles=K)  # (K, N)
pyro.set_rng_seed(2)
loss = Trace_ELBO(num_particles=K, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, x)
pyro.set_rng_seed(2)
package_is = importance_log_px(lg.model, q, x, num_samples=K)  # (N,)

hand_elbo = by_hand.mean(0)  # (N,) the ELBO estimate of each datapoint
hand_is = torch.logsumexp(by_hand, 0) - math.log(K)  # (N,)
rows = [
    ("log weights: by hand − log_weights", (by_hand - package_weights).abs().max()),
    ("ELBO: by hand + Trace_ELBO loss / N", abs(hand_elbo.mean() + loss / N_POINTS)),
    ("IS log p(x): by hand − importance_log_px", (hand_is - package_is).abs().max()),
]
for label, difference in rows:
    print(f"{label:42s} largest difference {difference:.1e}")
claims.state(
    all(difference < 1e-9 for _, difference in rows),
    f"On the same draws, the log weights, the ELBO ({hand_elbo.mean():.4f} nats per datapoint, K = {K}) and the IS "
    f"log p(x) ({hand_is.mean():.4f}) computed by hand equal the package's and `Trace_ELBO`'s: the largest "
    f"difference is {max(float(dif) for _, dif in rows):.1e} nats.",
)

# %% [markdown]
# ### The identity, exactly and by Monte Carlo
#
# For Gaussian guides every term is in closed form (`LinearGaussian` computes them). The table gives, averaged over
# the 100 datapoints in nats, both sides of the identity for each guide; the check holds datapoint by datapoint.
# Below it, the Monte Carlo ELBO by hand with many draws against the exact one.

# %%
print(
    f"{'':8s} {'log p(x)':>9s} {'KL(q‖p(z|x))':>13s} {'left side':>10s}   "
    f"{'E_q log p(x|z)':>15s} {'KL(q‖p(z))':>11s} {'ELBO':>9s}"
)
posterior_kls = {}
for name, g in packaged.items():
    posterior_kls[name] = lg.posterior_kl(x, g)
    reconstruction, prior_kl = lg.expected_log_likelihood(x, g), lg.prior_kl(x, g)
    left, right = log_px - posterior_kls[name], reconstruction - prior_kl
    print(
        # KL ≥ 0: at the exact guide float64 round-off can leave −1e-16, printed as 0
        f"{name:8s} {log_px.mean():9.4f} {max(posterior_kls[name].mean().item(), 0.0):13.4f} {left.mean():10.4f} = "
        f"{reconstruction.mean():15.4f} {prior_kl.mean():11.4f} {right.mean():9.4f}"
    )
    claims.check(torch.allclose(left, right, rtol=1e-10, atol=1e-9), f"the identity, {name}", exact=True)
claims.check(posterior_kls["exact"].abs().max() < 1e-9, "no posterior KL at q = p(z|x)", exact=True)
claims.check(
    torch.allclose(lg.elbo(x, exact), log_px, rtol=1e-10, atol=1e-9), "ELBO = log p(x) at q = p(z|x)", exact=True
)
claims.check((posterior_kls["wide"] > 0).all() and (posterior_kls["narrow"] > 0).all(), "positive gaps", exact=True)

pyro.set_rng_seed(3)
per_draw = log_weights_by_hand(model, guide, x, ELBO_PARTICLES).mean(1)  # (ELBO_PARTICLES,) averaged over x
mc_elbo, mc_elbo_se = per_draw.mean(), per_draw.std() / math.sqrt(ELBO_PARTICLES)
exact_elbo = lg.elbo(x, q).mean()
claims.state(
    abs(mc_elbo - exact_elbo) < 5 * mc_elbo_se,
    f"The wide guide's Monte Carlo ELBO by hand, {ELBO_PARTICLES:,} draws per datapoint: {mc_elbo:.4f} ± "
    f"{mc_elbo_se:.4f}, against the exact {exact_elbo:.4f}, {abs(mc_elbo - exact_elbo) / mc_elbo_se:.1f} "
    "standard errors apart.",
)

# %% [markdown]
# ### Importance sampling closes the gap
#
# With K draws z₁ … z_K ~ q(z|x), log p̂_K(x) = log (1/K) Σ_k p(x, z_k)/q(z_k|x) is the estimate computed by hand
# above. Its mean over datapoints is, **in expectation**, a lower bound on log p(x) (Jensen again: the mean of the
# weights is unbiased for p(x), and the log of it is biased low), it equals the ELBO in expectation at K = 1, and its
# expectation rises to log p(x) as K grows. One run gives one draw of each estimate, so single rows can fall between
# two values of K or lie above log p(x) by Monte Carlo noise. The table therefore gives each estimate's error
# log p̂_K(x) − log p(x), averaged over the 100 datapoints, with its standard error over them.

# %%
is_errors = {}  # name ↦ list of (mean error, standard error) over IS_KS
for name, g in packaged.items():
    is_errors[name] = []
    for K in IS_KS:
        error = importance_log_px(lg.model, g, x, num_samples=K) - log_px  # (N,)
        is_errors[name].append((error.mean().item(), error.std().item() / math.sqrt(N_POINTS)))
print(f"log p̂_K(x) − log p(x), mean over {N_POINTS} datapoints ± standard error (log p(x) = {log_px.mean():.4f})")
print(f"{'K':>6s} " + " ".join(f"{name:>19s}" for name in packaged))
for i, K in enumerate(IS_KS):
    print(f"{K:6d} " + " ".join(f"{num(is_errors[n][i][0], 4):+9.4f} ± {is_errors[n][i][1]:.4f}" for n in packaged))

claims.check(
    torch.allclose(importance_log_px(lg.model, exact, x, num_samples=7), log_px, rtol=1e-8, atol=1e-8),
    "with the exact guide every weight equals p(x): the estimate is exact at any K",
    exact=True,
)
noisy = [(m, se) for name in ("wide", "narrow") for m, se in is_errors[name] if se > 0]
above = [(m, se) for m, se in noisy if m > 0]
largest_z = max((m / se for m, se in above), default=0.0)
claims.state(
    all(m < 4 * se for m, se in noisy),
    (
        f"None of the {len(noisy)} estimates of the wide and narrow guides lies above log p(x)."
        if not above
        else f"{len(above)} of the {len(noisy)} estimates of the wide and narrow guides "
        f"{'lies' if len(above) == 1 else 'lie'} above log p(x), by at "
        f"most {largest_z:.2f} standard errors: Monte Carlo noise, not a failure of the bound."
    ),
)
gap = {name: posterior_kls[name].mean().item() for name in ("wide", "narrow")}
last = {name: is_errors[name][-1][0] for name in ("wide", "narrow")}
claims.state(
    gap["narrow"] < gap["wide"] and abs(last["wide"]) < 0.05 and abs(last["narrow"]) > abs(last["wide"]),
    f"The **narrow** guide has the smaller ELBO gap ({gap['narrow']:.3f} nats against the wide guide's "
    f"{gap['wide']:.3f}), yet at K = {IS_KS[-1]:,} its IS estimate is still {abs(last['narrow']):.4f} nats off, "
    f"where the wide guide's is {abs(last['wide']):.4f} off. A proposal wider than the target is what importance "
    "sampling likes; a narrow one rarely draws the tails of p(z|x), where the large weights live. A mode-seeking "
    "(reverse-KL) fit tends to be narrow, which is why a VAE's IS log p(x) needs many draws.",
)

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
for i, name in enumerate(packaged):
    means_, ses = zip(*is_errors[name])
    ax.errorbar(IS_KS, means_, yerr=[2 * s for s in ses], fmt="o-", color=f"C{i}", capsize=2, label=f"{name} guide")
    if name != "exact":
        ax.axhline(-gap[name], color=f"C{i}", ls=":", lw=1, label=f"ELBO − log p(x), {name} guide")
ax.axhline(0, color="k", ls="--", lw=1, label="log p(x)")
ax.set_xscale("log")
ax.set_xlabel("K, importance samples per datapoint")
ax.set_ylabel("log p̂_K(x) − log p(x), nats\n(mean over datapoints, ± 2 s.e.)")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# ## (e) The analogy with EM
#
# The lecture introduces q(z|x) with "Approach is similar to the EM algorithm." Expectation–maximization maximizes
# the same lower bound, ELBO(θ, q) = log p_θ(x) − KL(q ‖ p_θ(z|x)), by coordinate ascent:
#
# - **E step:** with θ fixed, set q = p_θ(z|x). The KL vanishes and the bound touches log p_θ(x).
# - **M step:** with q fixed, maximize E_q[log p_θ(x, z)] over θ (the entropy of q does not depend on θ).
#
# So log p_θₜ(x) = ELBO(θₜ, qₜ) ≤ ELBO(θₜ₊₁, qₜ) ≤ log p_θₜ₊₁(x): the likelihood never falls. Below, EM fits W and b
# of the linear-Gaussian model (σ fixed) to the 100 datapoints of part (d), from a random start. Both steps are in
# closed form: the E step is `LinearGaussian.posterior`, and the M step a least-squares regression of x on
# z̃ = (z, 1) under q, W̃ = (Σₙ xₙ E_q[z̃ₙ]ᵀ)(Σₙ E_q[z̃ₙ z̃ₙᵀ])⁻¹ with W̃ = (W b). The maximum-likelihood fit, for
# comparison, is also in closed form (Tipping & Bishop, 1999): b = the sample mean, and W from the top k eigenpairs
# (λ, u) of the sample covariance, with columns u √(λ − σ²).
#
# A VAE takes both steps at once, by gradient ascent on the same ELBO over θ and q together; and its q is an encoder
# of a fixed family, so its E step is never exact: the bound does not touch log p(x), and the gap stays (notebooks
# 02 and 04 measure it).


# %%
def em_step(current, x):
    """One EM iteration from the LinearGaussian ``current``: the E step's q = p(z|x), then the M step's new W, b."""
    posterior = current.posterior(x)  # batch (N,), event (k,)
    mean = torch.cat([posterior.loc, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # (N, k + 1): E_q[z̃]
    second = mean[:, :, None] * mean[:, None, :]  # (N, k + 1, k + 1)
    second[:, :k, :k] += posterior.covariance_matrix  # E_q[z̃ z̃ᵀ]
    Wb = (x.T @ mean) @ torch.linalg.inv(second.sum(0))  # (d, k + 1)
    return LinearGaussian(Wb[:, :k], Wb[:, k], current.noise_scale), posterior


def elbo_under(theta, posterior, x):
    """ELBO(θ, q) per datapoint, for q the E step's fixed MultivariateNormal of batch (N,)."""
    return theta.elbo(x, lambda _x: posterior)  # a guide is anything that maps x to q(z|x)


theta = LinearGaussian.random(d=5, k=2, noise_scale=noise, seed=7)  # the random start
history = []  # (log p_θₜ(x), ELBO(θₜ, qₜ), ELBO(θₜ₊₁, qₜ)), means over the datapoints
for _ in range(EM_STEPS):
    new_theta, q_t = em_step(theta, x)
    history.append((theta.log_px(x).mean(), elbo_under(theta, q_t, x).mean(), elbo_under(new_theta, q_t, x).mean()))
    theta = new_theta
final_log_px = theta.log_px(x).mean()

sample_cov = torch.cov(x.T, correction=0)
eigenvalues, eigenvectors = torch.linalg.eigh(sample_cov)  # ascending
top_values, top_vectors = eigenvalues[-k:], eigenvectors[:, -k:]
ml_theta = LinearGaussian(top_vectors * (top_values - noise**2).clamp(min=0).sqrt(), x.mean(0), noise)
ml_log_px = ml_theta.log_px(x).mean()

print(f"{'step':>4s} {'log p_θ(x)':>11s} {'ELBO(θₜ, qₜ)':>13s} {'ELBO(θₜ₊₁, qₜ)':>15s}   (nats per datapoint)")
for t, (lp, elbo_t, elbo_next) in enumerate(history):
    if t < 4 or t == len(history) - 1:
        print(f"{t:4d} {lp:11.4f} {elbo_t:13.4f} {elbo_next:15.4f}")
print(f"after {EM_STEPS} steps log p_θ(x) = {final_log_px:.4f}; maximum likelihood, closed form: {ml_log_px:.4f}")

lps = [h[0] for h in history] + [final_log_px]
claims.check(all(abs(lp - elbo_t) < 1e-9 for lp, elbo_t, _ in history), "the E step makes the bound tight", exact=True)
claims.check(
    all(elbo_next >= elbo_t - 1e-9 for _, elbo_t, elbo_next in history), "the M step raises the bound", exact=True
)
claims.check(all(b >= a - 1e-9 for a, b in zip(lps, lps[1:])), "EM never lowers log p(x)", exact=True)
claims.check(final_log_px <= ml_log_px + 1e-9, "EM stays below the maximum likelihood", exact=True)
claims.state(
    all(b >= a - 1e-9 for a, b in zip(lps, lps[1:])),
    f"Each E step made the bound touch log p_θ(x), each M step raised it, and log p_θ(x) rose at every step, from "
    f"{lps[0]:.3f} to {final_log_px:.3f} nats per datapoint, {ml_log_px - final_log_px:.2g} below the maximum "
    "likelihood.",
    exact=True,
)

# %% [markdown]
# ## Summary
#
# - Maximum likelihood minimizes KL(p_data‖p_θ): the two differ by the entropy of the data, a constant.
# - KL(p‖q) ≠ KL(q‖p): forward KL covers modes (a broad q with its peak in the valley), reverse KL seeks one, and has
#   one optimum per mode. Variational inference uses the reverse one.
# - KL ≥ 0 by Jensen's inequality, with equality only at p = q. The lecture's definition has the ratio upside down,
#   and its proof replaces Jensen's step by ∫ log 1 dx.
# - The Gaussian closed form ½[tr(Σ₂⁻¹Σ₁) + (μ₂−μ₁)ᵀΣ₂⁻¹(μ₂−μ₁) − k + log(det Σ₂/det Σ₁)] matches torch and Monte
#   Carlo. The lecture's two printed forms (no k, or +k, with the ½ over the trace and Mahalanobis terms only) do
#   not, and are not zero at q = p. A VAE's KL, a diagonal Gaussian against N(0, I), is ½ Σ (μ² + σ² − 1 − log σ²).
# - The ELBO: log p(x) ≥ E_q[log p(x|z)] − KL(q‖p(z)) by Jensen (the lecture writes ≤), and the gap is exactly
#   KL(q‖p(z|x)). In Pyro, a model and a guide with the same site names; the ELBO and IS log p(x) are log weights
#   from `poutine.trace` and `poutine.replay`, equal to what `Trace_ELBO` and the package compute.
# - EM maximizes the same bound by exact E steps and M steps; a VAE ascends it with an encoder, whose gap stays.
#
# Notebook 02 writes a VAE on MNIST in Pyro the same way and reports exactly these quantities: the reconstruction
# term, the KL to the prior, the ELBO, and the importance-sampled log p(x).

# %%
claims.show_report()

# %%
from pyro_vae.notebook import show_cost

show_cost("01_kl_and_elbo")
