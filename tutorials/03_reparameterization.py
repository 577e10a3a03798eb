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
# # Score-function and pathwise gradients
#
# Training a VAE means following the gradient of the ELBO with respect to the guide's parameters φ,
#
# ∇_φ E_{q_φ(z|x)}[f_φ(z)],   f_φ(z) = log p(x, z) − log q_φ(z|x).
#
# The expectation is over a distribution that itself depends on φ, so the gradient cannot simply move inside it.
# There are two classical ways to estimate it from draws z ~ q:
#
# - **Score function** (REINFORCE, the likelihood-ratio trick). Since ∇_φ q = q ∇_φ log q,
#   ∇_φ E_q[f] = E_q[f(z) ∇_φ log q_φ(z|x)] (the term E_q[∇_φ f] vanishes here, because E_q[∇_φ log q] = 0).
#   It only needs log q to be differentiable in φ, so it works for any q, discrete ones too. But it uses f only
#   through its *value*: the gradient of f with respect to z is ignored, and a large f multiplies a noisy
#   ∇ log q. Subtracting a **baseline** b, E_q[(f(z) − b) ∇_φ log q], keeps the mean (again because
#   E_q[∇_φ log q] = 0) and, with b close to E_q[f], removes much of the noise.
# - **Pathwise** (the reparameterization trick, Kingma & Welling 2014). Write z = μ_φ(x) + σ_φ(x) ⊙ ε with
#   ε ~ N(0, I): the randomness no longer depends on φ, so ∇_φ E_ε[f_φ(μ + σ ε)] = E_ε[∇_φ f_φ(μ + σ ε)].
#   It differentiates f *through* the sample, using ∂f/∂z, and needs a q that can be written this way.
#
# Both are unbiased; they differ in variance, and variance decides how fast stochastic optimization converges.
# We compare four estimators from `pyro_vae.inference.elbos.ELBOS` with guide heads from
# `pyro_vae.inference.guides.GUIDES`:
#
# | label | estimator | guide head | gradient |
# |---|---|---|---|
# | score function | `trace` | `diag-score` | REINFORCE: Pyro's `Trace_ELBO` on a guide without `rsample` |
# | score function + baseline | `tracegraph` | `diag-score` | REINFORCE with a decaying-average baseline per datapoint |
# | pathwise | `trace` | `diag` | reparameterized: z = μ + σ·ε, one draw per datapoint |
# | pathwise, score term dropped | `stl` | `diag` | "sticking the landing" (Roeder et al. 2017), last section |
#
# `diag` and `diag-score` are the same family, q(z|x) = N(μ(x), diag σ²(x)), with the same parameters; only the
# gradient estimator differs. The testbed is the linear-Gaussian model of notebook 01, where the exact ELBO and
# its exact gradient are known, so every estimate can be checked against the truth.
#
# **Run it**: `python tutorials/run.py 03` executes it in full and saves the outputs into the `.ipynb`;
# `python tutorials/run.py 03 --smoke` (or `PYRO_VAE_SMOKE=1` in Jupyter's environment) runs it with tiny
# sizes. The cell below says how long each took.

# %%
# The cost of this notebook, as measured by tutorials/run.py (which records it in tutorials/timings.json)
from pyro_vae.notebook import show_cost

show_cost("03_reparameterization")

# %%
import math
import os

import matplotlib.pyplot as plt
import pyro
import torch
from IPython.display import Markdown, display
from pyro.infer import SVI

from pyro_vae.inference.elbos import build_elbo
from pyro_vae.theory.linear_gaussian import LinearGaussian, amortized_guide, fit_guide

SMOKE = os.environ.get("PYRO_VAE_SMOKE") == "1"  # set by tests/test_tutorials.py: small sizes, the same asserts
N_POINTS = 100  # datapoints x
DRAWS = 100 if SMOKE else 400  # gradient draws per estimator, one particle, for the means and histograms
PARTICLES = [1, 8, 64]  # K for the variance-vs-K plot
VARIANCE_DRAWS = 60 if SMOKE else 100  # gradient draws per (estimator, K)
STEPS = 400 if SMOKE else 1000  # SVI steps of each training curve
LR = 0.01  # Adam learning rate of the training curves
OPTIMUM_STEPS = 600 if SMOKE else 800  # SVI steps (stl, lr 0.05) to reach the optimum of a family
WARMUP = 30  # draws discarded first, so that tracegraph's decaying-average baseline has settled (0.9³⁰ = 4%)

torch.set_num_threads(1)  # the testbed's tensors are tiny: threads only add overhead (10× on a busy 2-core machine)
ESTIMATORS = {  # label: (estimator, guide head)
    "score function": ("trace", "diag-score"),
    "score function + baseline": ("tracegraph", "diag-score"),
    "pathwise": ("trace", "diag"),
    "pathwise, score term dropped": ("stl", "diag"),
}
pyro.set_rng_seed(0)

# %% [markdown]
# ## The testbed and the exact gradient
#
# z ~ N(0, I₂), x | z ~ N(Wz + b, 0.5² I₅) with random W and b, and 100 datapoints x ~ p(x). The guide head sits
# directly on x (`amortized_guide`): μ(x) = A x + c and σ(x) = softplus(D x + e), 24 parameters φ in all. Every
# estimator starts from the same φ: the `diag-score` head is given the `diag` head's initial weights.
#
# For a Gaussian q the ELBO is a closed-form function of φ (`lg.elbo`), so autograd gives its **exact gradient**.
# Each estimator returns a noisy draw of the gradient of Pyro's loss, −Σₙ ELBO(xₙ); `gradient_draws` below only
# collects such draws (a fresh estimator, `loss_and_grads`, read `.grad`), it computes nothing itself.

# %%
lg = LinearGaussian.random(d=5, k=2, noise_scale=0.5, seed=0)
x = lg.sample(N_POINTS, seed=1)  # (N_POINTS, 5)

encoders = {"diag": amortized_guide(lg, "diag")}
encoders["diag-score"] = amortized_guide(lg, "diag-score")
encoders["diag-score"].load_state_dict(encoders["diag"].state_dict())  # the same φ, another estimator
initial_state = {k: v.clone() for k, v in encoders["diag"].state_dict().items()}
names = [f"{module}[{i}]" for module, p in encoders["diag"].named_parameters() for i in range(p.numel())]

exact_grad = torch.autograd.grad(-lg.elbo(x, encoders["diag"]).sum(), list(encoders["diag"].parameters()))
exact_grad = torch.cat([g.flatten() for g in exact_grad])  # (24,) gradient of the loss −Σ ELBO


def gradient_draws(estimator, encoder, particles=1, num_draws=DRAWS):
    # (num_draws, 24): independent draws of the loss gradient w.r.t. the guide's parameters, at fixed φ
    pyro.clear_param_store()  # a fresh estimator: tracegraph keeps its baseline in the param store
    elbo = build_elbo(estimator, particles)
    params = list(encoder.parameters())
    out = []
    for _ in range(WARMUP + num_draws):
        for p in params:
            p.grad = None
        elbo.loss_and_grads(lg.model, encoder.guide, x)
        out.append(torch.cat([p.grad.flatten() for p in params]))
    return torch.stack(out[WARMUP:])


print(
    f"KL(q‖p(z|x)) at the start: {lg.posterior_kl(x, encoders['diag']).mean():.1f} nats per datapoint; "
    f"|exact gradient| = {exact_grad.norm():.0f}"
)

# %% [markdown]
# ## All four are unbiased
#
# With M independent draws, the mean of each coordinate has standard error sd/√M. If an estimator is unbiased,
# (mean − exact)/standard error is about standard normal for each of the 24 coordinates, and a value beyond 5 has
# probability 6·10⁻⁷ per coordinate (the t distribution with M − 1 ≥ 199 degrees of freedom is close to normal),
# so the assert below fails for a correct estimator with probability below 10⁻⁴. The variance column is the mean
# over the 24 coordinates of the variance of one draw.

# %%
draws = {label: gradient_draws(est, encoders[head]) for label, (est, head) in ESTIMATORS.items()}

print(f"{'estimator':30s} {'largest |z|':>11s} {'variance of one draw':>21s}   ({DRAWS} draws, K = 1)")
for label, g in draws.items():
    z = (g.mean(0) - exact_grad) / (g.std(0) / math.sqrt(len(g)))
    print(f"{label:30s} {z.abs().max():11.2f} {g.var(0).mean():21.4g}")
    assert z.abs().max() < 5, label  # unbiased: every coordinate within 5 standard errors of the exact gradient

variance = {label: g.var(0).mean().item() for label, g in draws.items()}
ratio = variance["score function"] / variance["pathwise"]
print(
    f"\nthe score function's variance is {ratio:.0f}× the pathwise one's: to match one pathwise draw it must "
    f"average about {ratio:.0f} draws"
)
assert ratio > 10  # the estimate from M draws is good to tens of percent; the ratio is far above 10

# %% [markdown]
# The histograms show the draws for two of the 24 coordinates: the gradient with respect to the offset of μ₁ (the
# mean of the first latent) and of the pre-softplus scale σ₁. All four are centred on the exact gradient (black);
# the score-function draws are spread far wider (note the log scale of the density). The baseline narrows them,
# but not to the pathwise width.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, coordinate in zip(axes, ["head.loc.bias[0]", "head.scale.bias[0]"]):
    i = names.index(coordinate)
    spread = draws["score function"][:, i]
    bins = torch.linspace(spread.quantile(0.01).item(), spread.quantile(0.99).item(), 60)
    for label, g in draws.items():
        ax.hist(g[:, i], bins=bins, histtype="step", lw=1.5, density=True, label=label)  # the 2% beyond: not shown
    ax.axvline(exact_grad[i], color="k", lw=1.5, label="exact gradient")
    ax.set_xlabel(f"∂ loss / ∂ {coordinate}")
    ax.set_yscale("log")
axes[0].set_ylabel("density")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Variance against the number of particles
#
# Averaging K independent draws (`num_particles=K`, vectorized) divides the variance by K, for every estimator: on
# a log–log plot all four lines have slope −1, and only their heights differ. So particles cannot close the gap
# between the estimators, they only buy it at K times the cost: the score function needs about as many particles
# as the variance ratio above to match a *single* pathwise draw.
#
# The tolerance: a variance estimated from M draws has a relative standard error of about √(2/M) for Gaussian
# draws, more for heavy-tailed ones. A least-squares slope through the points spread over
# log K ∈ [0, log 64] then has a standard error far below 0.25 for the M used here; we assert within 0.25 of −1.

# %%
variance_k = {
    label: [gradient_draws(est, encoders[head], K, VARIANCE_DRAWS).var(0).mean().item() for K in PARTICLES]
    for label, (est, head) in ESTIMATORS.items()
}
log_k = torch.tensor(PARTICLES, dtype=torch.float64).log()

print(f"{'estimator':30s} " + " ".join(f"{f'K={K}':>9s}" for K in PARTICLES) + "   slope")
for label, v in variance_k.items():
    log_v = torch.tensor(v).log()
    slope = ((log_k - log_k.mean()) * (log_v - log_v.mean())).sum() / ((log_k - log_k.mean()) ** 2).sum()
    print(f"{label:30s} " + " ".join(f"{value:9.3g}" for value in v) + f"   {slope:5.2f}")
    assert abs(slope + 1) < 0.25, label

fig, ax = plt.subplots(figsize=(6.5, 4))
for label, v in variance_k.items():
    ax.loglog(PARTICLES, v, "o-", label=label)
ax.loglog(PARTICLES, [variance_k["pathwise"][0] / K for K in PARTICLES], "k--", lw=1, label="∝ 1/K")
ax.set_xlabel("K, particles averaged per gradient")
ax.set_ylabel("variance of the gradient (mean over φ)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## How fast they converge
#
# Variance matters because it limits stochastic optimization. Below, each estimator trains the guide from the same
# starting φ with Adam (learning rate 0.01, one particle, the model fixed), and after every step we record the
# exact KL(q‖p(z|x)) = log p(x) − ELBO, averaged over the datapoints. The `diag` family cannot represent the
# posterior's correlation, so no guide gets below `lg.mean_field_gap()`, the KL of the best diagonal Gaussian; the
# plot shows the distance to that floor. (One seed per estimator: the ordering below is what the estimators' variances
# predict, and Adam's noise makes the exact step counts vary from seed to seed.)

# %%
floor = lg.mean_field_gap().item()


def training_curve(estimator, head):
    # exact KL(q‖p(z|x)) − floor after each of STEPS SVI steps from the common initial φ
    encoder = amortized_guide(lg, head)
    encoder.load_state_dict(initial_state)
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    svi = SVI(lg.model, encoder.guide, pyro.optim.Adam({"lr": LR}), build_elbo(estimator))
    curve = []
    for _ in range(STEPS):
        svi.step(x)
        with torch.no_grad():
            curve.append(lg.posterior_kl(x, encoder).mean().item() - floor)
    return torch.tensor(curve)


curves = {label: training_curve(est, head) for label, (est, head) in ESTIMATORS.items()}
steps_to_1_nat = {label: int((c < 1).nonzero()[0]) + 1 if (c < 1).any() else None for label, c in curves.items()}

print(f"floor: the best diagonal Gaussian is {floor:.4f} nats from p(z|x)\n")
print(f"{'estimator':30s} {'steps to 1 nat':>14s} {'KL − floor at the end':>22s}")
for label, c in curves.items():
    print(f"{label:30s} {steps_to_1_nat[label]!s:>14s} {c[-20:].mean():22.2g}")
# the pathwise estimators get within 1 nat of the floor first
for pathwise in ("pathwise", "pathwise, score term dropped"):
    for score in ("score function", "score function + baseline"):
        assert steps_to_1_nat[pathwise] < steps_to_1_nat[score], (pathwise, score)

# %%
fig, ax = plt.subplots(figsize=(7, 4.2))
steps = torch.arange(1, STEPS + 1)
for label, c in curves.items():
    ax.loglog(steps, c.clamp(min=1e-6), lw=1.2, label=label)
ax.axhline(1, color="grey", ls=":", lw=1)
ax.set_xlabel("SVI step")
ax.set_ylabel("KL(q‖p(z|x)) − floor (nats per datapoint)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Two phases. Far from the optimum the pathwise gradient, which knows the slope ∂f/∂z, gets within 1 nat of the floor
# first (the table's "steps to 1 nat"). Near the optimum the order can change: plain `trace` with the `diag` head
# keeps jittering at a noise floor of its own, while the score function with a baseline and `stl` can keep descending.
# The cell below reads the end of each curve; why `trace` stalls is the subject of the last section. (In smoke mode
# the curves are short, and only the first phase is visible.)

# %%
ends = {label: c[-20:].mean().item() for label, c in curves.items()}
order = sorted(steps_to_1_nat, key=lambda label: steps_to_1_nat[label] or STEPS + 1)
display(
    Markdown(
        "Steps to get within 1 nat of the floor, fastest first: "
        + ", ".join(f"{label} {steps_to_1_nat[label] or f'not within {STEPS}'}" for label in order)
        + f". After {STEPS} steps (mean of the last 20), KL − floor is "
        + ", ".join(f"{ends[label]:.1e} for {label}" for label in sorted(ends, key=ends.get))
        + " nats."
    )
)

# %% [markdown]
# ## Sticking the landing
#
# Write the pathwise gradient of f_φ(z) = log p(x, z) − log q_φ(z|x) at z = μ + σ ε in full:
#
# ∇_φ f = [∂f/∂z · ∂z/∂φ]  −  [∇_φ log q_φ(z|x) at fixed z].
#
# The second term, the **score term**, has expectation zero but not variance zero. At q = p(z|x) the first term
# vanishes exactly (log p(x, z) − log q(z|x) = log p(x) does not depend on z), and so does the true gradient, but
# the score term remains: `trace` keeps stepping at random around the optimum. `stl` (Roeder et al. 2017) drops the
# score term: still unbiased, and its variance goes to zero as q approaches p(z|x). The score function with a
# baseline lands for a similar reason: at q = p(z|x), f(z) = log p(x) for every z, and the decaying average baseline
# learns exactly that constant, so (f − b) ∇ log q → 0.
#
# To check, we fit two guides to their family's optimum with `fit_guide` (`stl`, learning rate 0.05): the `diag`
# head (the best diagonal Gaussian, a small distance from the posterior), and the `fullcov` head, whose family
# contains p(z|x), so it reaches KL = 0 up to round-off. Then we measure each estimator's variance there.

# %%
best = {"diag": fit_guide(lg, x, "diag", "stl", steps=OPTIMUM_STEPS, lr=0.05)}
best["diag-score"] = amortized_guide(lg, "diag-score")
best["diag-score"].load_state_dict(best["diag"].state_dict())
exact_fullcov = fit_guide(lg, x, "fullcov", "stl", steps=OPTIMUM_STEPS, lr=0.05)
kl_diag = lg.posterior_kl(x, best["diag"]).mean().item()
kl_fullcov = lg.posterior_kl(x, exact_fullcov).mean().item()
print(f"diag head:    KL(q‖p(z|x)) − floor = {kl_diag - floor:.1e} nats")
print(f"fullcov head: KL(q‖p(z|x)) = {kl_fullcov:.1e} nats\n")

at_optimum = {
    label: gradient_draws(est, best[head], num_draws=VARIANCE_DRAWS).var(0).mean().item()
    for label, (est, head) in ESTIMATORS.items()
}
print(f"{'estimator':30s} {'at the start':>13s} {'at the diag optimum':>20s}   (variance of one draw)")
for label in ESTIMATORS:
    print(f"{label:30s} {variance[label]:13.3g} {at_optimum[label]:20.3g}")

fullcov_variance = {
    est: gradient_draws(est, exact_fullcov, num_draws=VARIANCE_DRAWS).var(0).mean().item() for est in ("trace", "stl")
}
print(f"\nfullcov head at q = p(z|x): trace {fullcov_variance['trace']:.3g}, stl {fullcov_variance['stl']:.3g}")

assert kl_fullcov < 1e-4  # the fullcov family contains the posterior
# at q = p(z|x) the stl gradient is zero for every draw; trace's score term keeps a variance of order 10³
assert fullcov_variance["stl"] < 1e-3 * fullcov_variance["trace"]
# at the (nearly exact) diag optimum, stl and the baseline each cut the variance by more than 20×
assert at_optimum["pathwise, score term dropped"] < 0.05 * at_optimum["pathwise"]
assert at_optimum["score function + baseline"] < 0.05 * at_optimum["score function"]

# %% [markdown]
# ## Summary
#
# - Score-function and pathwise gradients of the ELBO are both unbiased; at the same φ the score function's draws
#   have a far larger variance than the pathwise ones, and a baseline removes part of it (the cell below says how
#   much, in this run).
# - K particles divide every estimator's variance by K; they do not change the ordering.
# - The pathwise estimator reaches the optimum's neighbourhood in fewer steps. Near the optimum, Pyro's plain
#   `trace` gradient keeps a noise floor from the score term ∇_φ log q; `stl` drops it, and its variance vanishes
#   at q = p(z|x).
#
# %%
display(
    Markdown(
        f"In this run the score function's variance was {ratio:.0f}× the pathwise one's at the start, and the "
        f"baseline divided it by {variance['score function'] / variance['score function + baseline']:.1f}."
    )
)

# %% [markdown]
# Pyro uses the pathwise gradient automatically for every distribution with `rsample`, which is why `pyro_vae`'s
# default guide is reparameterized; `diag-score` and `tracegraph` exist only to show the difference. Notebook 05
# measures the same variance, as a signal-to-noise ratio, for the estimators of a trained VAE on MNIST.
