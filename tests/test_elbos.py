"""The estimator registry, checked against the exact linear-Gaussian testbed.

Statistical tolerances: an average of M independent gradient (or loss) draws has standard error
sd/√M, estimated from the same draws; we assert within 5 standard errors. Under the null, one
coordinate fails with probability about 1e-6 (t with M − 1 ≥ 199 degrees of freedom), so the ~40
coordinates of a test fail together with probability < 1e-4. Every test is seeded.
"""

import math

import pyro
import pytest
import torch
from conftest import descends, fits
from pyro.infer import SVI
from pyro.poutine.messenger import Messenger

from pyro_vae.errors import IncompatiblePair
from pyro_vae.inference.elbos import ELBOS, build_elbo, check_pair
from pyro_vae.inference.evaluate import importance_log_px, log_weights
from pyro_vae.inference.guides import GUIDES
from pyro_vae.models.vae import VAE
from pyro_vae.theory.linear_gaussian import LinearGaussian, amortized_guide

GAUSSIAN_GUIDES = ["diag", "diag-score", "fullcov"]  # closed-form ELBO on the testbed; iaf has none
M = 200  # gradient draws per estimate
N = 20  # datapoints


@pytest.fixture
def testbed():
    lg = LinearGaussian.correlated(seed=0)
    lg.W.requires_grad_(True)
    lg.b.requires_grad_(True)
    x = lg.sample(N, seed=1).detach()
    return lg, x


def guide_for(lg, name, seed=3):
    torch.manual_seed(seed)
    return amortized_guide(lg, name)


def params_of(lg, encoder):
    return [lg.W, lg.b, *encoder.parameters()]


def flat_grad(params):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])


def draws(elbo, lg, encoder, x, m=M):
    """m gradient draws of the loss (−estimate) with respect to W, b and the guide's parameters."""
    params = params_of(lg, encoder)
    out, losses = [], []
    for _ in range(m):
        for p in params:
            p.grad = None
        losses.append(elbo.loss_and_grads(lg.model, encoder.guide, x))
        out.append(flat_grad(params))
    return torch.stack(out), torch.tensor(losses, dtype=torch.float64)


def exact_loss_grad(lg, encoder, x):
    params = params_of(lg, encoder)
    loss = -lg.elbo(x, encoder).sum()
    return loss.detach(), torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def z_scores(samples, target):
    se = samples.std(0) / math.sqrt(len(samples))
    varies = se > 0
    assert torch.allclose(samples.mean(0)[~varies], target[~varies], atol=1e-10)
    return ((samples.mean(0) - target)[varies] / se[varies]).abs()


@pytest.mark.parametrize("guide", GAUSSIAN_GUIDES)
@pytest.mark.parametrize("name", list(ELBOS))
def test_k1_gradient_and_loss_are_unbiased_for_the_exact_elbo(testbed, name, guide):
    """With one particle every registered estimator targets the ELBO: its loss and gradient
    average to the exact −ELBO and its exact gradient (5 standard errors, see module doc)."""
    lg, x = testbed
    if not fits(name, guide):
        pytest.skip(f"{name} does not fit {guide} (tested in test_every_pair_trains_or_raises)")
    encoder = guide_for(lg, guide)
    exact_loss, exact_grad = exact_loss_grad(lg, encoder, x)
    grads, losses = draws(build_elbo(name, 1), lg, encoder, x)
    assert z_scores(grads, exact_grad).max() < 5
    assert abs(losses.mean() - exact_loss) < 5 * losses.std() / math.sqrt(M) + 1e-9


def test_trace_and_meanfield_agree_in_expectation_and_meanfield_has_lower_variance(testbed):
    lg, x = testbed
    encoder = guide_for(lg, "diag")
    g_trace, l_trace = draws(build_elbo("trace"), lg, encoder, x)
    g_mf, l_mf = draws(build_elbo("meanfield"), lg, encoder, x)
    se = torch.sqrt(g_trace.var(0) / M + g_mf.var(0) / M)
    varies = se > 0
    assert ((g_trace.mean(0) - g_mf.mean(0))[varies] / se[varies]).abs().max() < 5
    assert abs(l_trace.mean() - l_mf.mean()) < 5 * math.sqrt(l_trace.var() / M + l_mf.var() / M)
    assert l_mf.var() < l_trace.var()  # the analytic KL removes part of the noise


@pytest.mark.parametrize("guide", ["diag", "fullcov", "iaf"])
def test_iwae_with_one_particle_equals_trace(testbed, guide):
    """Same seed, same draw: RenyiELBO(α=0, K=1) gives Trace_ELBO's loss and gradients exactly."""
    lg, x = testbed
    encoder = guide_for(lg, guide)
    params = params_of(lg, encoder)
    results = []
    for name in ("trace", "iwae"):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(7)
        loss = build_elbo(name, 1).loss_and_grads(lg.model, encoder.guide, x)
        results.append((loss, flat_grad(params)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)


def test_iwae_takes_the_log_mean_exp_per_datapoint(testbed):
    """The same K draws (same seed): the loss is −Σ_n [logsumexp_k log w_kn − log K], not the
    log-mean-exp of the batch sums."""
    lg, x = testbed
    encoder = guide_for(lg, "diag")
    K = 6
    pyro.set_rng_seed(11)
    loss = build_elbo("iwae", K).loss(lg.model, encoder.guide, x)
    pyro.set_rng_seed(11)
    with torch.no_grad():
        log_w = log_weights(lg.model, encoder.guide, x, num_particles=K)  # (K, N)
    per_datapoint = -(torch.logsumexp(log_w, 0) - math.log(K)).sum()
    over_batch = -(torch.logsumexp(log_w.sum(1), 0) - math.log(K))
    assert loss == pytest.approx(per_datapoint.item(), rel=1e-10)
    assert abs(per_datapoint - over_batch) > 1.0


@pytest.mark.parametrize("name", ["iwae", "dreg"])
def test_iwae_bound_is_above_the_elbo_and_rises_with_k(testbed, name):
    """E[IWAE_K] rises with K from the ELBO (K = 1) towards log p(x) (Burda et al. 2016, thm 1)."""
    lg, x = testbed
    encoder = guide_for(lg, "diag")
    with torch.no_grad():
        exact_elbo, log_px = lg.elbo(x, encoder).sum(), lg.log_px(x).sum()
        bounds = []
        for K in (1, 4, 16, 64):
            losses = torch.tensor([build_elbo(name, K).loss(lg.model, encoder.guide, x) for _ in range(100)])
            bounds.append((-losses.mean(), losses.std() / 10))
    (b1, se1), *rest = bounds
    assert abs(b1 - exact_elbo) < 5 * se1
    for (lo, se_lo), (hi, se_hi) in zip(bounds, rest):
        assert hi - lo > 3 * math.sqrt(se_lo**2 + se_hi**2)
    assert bounds[-1][0] < log_px + 5 * bounds[-1][1]


def test_dreg_is_unbiased_for_the_iwae_gradient(testbed):
    """With K = 4 both target ∇ IWAE_4; their mean gradients agree within 5 standard errors."""
    lg, x = testbed
    encoder = guide_for(lg, "fullcov")
    g_iwae, _ = draws(build_elbo("iwae", 4), lg, encoder, x)
    g_dreg, _ = draws(build_elbo("dreg", 4), lg, encoder, x)
    se = torch.sqrt(g_iwae.var(0) / M + g_dreg.var(0) / M)
    varies = se > 0
    assert ((g_iwae.mean(0) - g_dreg.mean(0))[varies] / se[varies]).abs().max() < 5


def exact_fullcov_guide(lg, offset=0.0):
    """The fullcov head on x set to the exact posterior (plus ``offset`` on its mean)."""
    encoder = amortized_guide(lg, "fullcov")
    post = lg.exact_guide()
    head = encoder.head
    with torch.no_grad():
        head.loc.weight.copy_(post.A)
        head.loc.bias.copy_(post.c + offset)
        head.tril.weight.zero_()
        entries = post.scale_tril[head.rows, head.cols]
        diagonal = head.rows == head.cols
        inv_softplus = lambda y: y + torch.log(-torch.expm1(-y))  # noqa: E731
        head.tril.bias.copy_(torch.where(diagonal, inv_softplus(entries - 1e-4), entries))
    return encoder


def encoder_variance(name, K, lg, encoder, x):
    grads, _ = draws(build_elbo(name, K), lg, encoder, x, m=64)
    n_model = lg.W.numel() + lg.b.numel()
    return grads[:, n_model:].var(0).mean()


def test_stl_and_dreg_have_lower_guide_gradient_variance_near_the_optimum(testbed):
    """At q = p(z|x) the path-derivative estimators have zero guide-gradient variance
    (∂ log w / ∂z = 0); near it, far less than trace and iwae (Roeder et al. 2017; Tucker et al. 2019)."""
    lg, x = testbed
    lg.W.requires_grad_(False)
    lg.b.requires_grad_(False)
    exact = exact_fullcov_guide(lg)
    torch.testing.assert_close(lg.posterior_kl(x, exact), torch.zeros(N, dtype=torch.float64), atol=1e-8, rtol=0)
    assert encoder_variance("stl", 1, lg, exact, x) < 1e-20
    assert encoder_variance("dreg", 4, lg, exact, x) < 1e-20
    assert encoder_variance("trace", 1, lg, exact, x) > 1e-3
    near = exact_fullcov_guide(lg, offset=0.01)
    assert encoder_variance("stl", 1, lg, near, x) < 0.1 * encoder_variance("trace", 1, lg, near, x)
    assert encoder_variance("dreg", 4, lg, near, x) < 0.1 * encoder_variance("iwae", 4, lg, near, x)


@pytest.mark.parametrize("guide", list(GUIDES))
def test_importance_log_px_matches_exact_for_every_guide(guide):
    """After a short fit, K = 2000 importance samples give the exact log p(x) within 5 standard
    errors of the per-datapoint errors plus 0.02 nats (the bias shrinks as 1/K). The testbed has a
    nearly uncorrelated posterior, so every family contains a close guide."""
    lg = LinearGaussian.random(d=5, k=2, noise_scale=0.5, seed=0)
    x = lg.sample(50, seed=2)
    encoder = amortized_guide(lg, guide)
    elbo = "trace" if guide == "diag-score" else "stl"
    lr = 0.01 if GUIDES[guide].options else 0.05  # flows (iaf: its gated steps; planar; naf) diverge at the higher rate
    svi = SVI(lg.model, encoder.guide, pyro.optim.Adam({"lr": lr}), build_elbo(elbo))
    for _ in range(300):
        svi.step(x)
    err = importance_log_px(lg.model, encoder.guide, x, num_samples=2000) - lg.log_px(x)
    assert abs(err.mean()) < 5 * err.std() / math.sqrt(len(err)) + 0.02


@pytest.mark.parametrize("guide", list(GUIDES))
@pytest.mark.parametrize("name", list(ELBOS))
def test_every_pair_trains_or_raises(name, guide):
    """Each registered (estimator, guide) pair trains a tiny VAE, or fails check_pair with the
    documented message that names both and says why. Training: three SVI steps stay finite and
    move every parameter, and a small step along the estimator's mean gradient lowers its own
    loss (the gradient points the right way; see ``conftest.descends``)."""
    vae = VAE(16, 3, (12,), guide=guide)
    x = torch.rand(8, 16)
    if not fits(name, guide):
        with pytest.raises(IncompatiblePair, match=f"estimator '{name}' does not fit guide '{guide}'") as info:
            check_pair(name, guide, vae.model, vae.guide, x[:2])
        assert "reparameterized" in str(info.value) or "closed-form KL" in str(info.value)
        return
    check_pair(name, guide, vae.model, vae.guide, x[:2])
    particles = 3 if ELBOS[name].multi_particle else 1
    before, after = descends(lambda: build_elbo(name, particles), vae.model, vae.guide, list(vae.parameters()), x)
    assert after < before
    before = [p.detach().clone() for p in vae.parameters()]
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), build_elbo(name, particles))
    losses = [svi.step(x) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    assert all(not torch.equal(b, p) for b, p in zip(before, vae.parameters()))


def test_bad_estimator_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown estimator 'nope'; choose one of trace, meanfield"):
        build_elbo("nope")
    with pytest.raises(ValueError, match="particles must be a positive integer, got 0"):
        build_elbo("iwae", 0)
    with pytest.raises(ValueError, match="estimator 'dreg' has no JIT variant"):
        build_elbo("dreg", 2, jit=True)
    with pytest.raises(ValueError, match="renyi needs alpha != 1"):
        build_elbo("renyi", 2, alpha=1)


def test_jit_failure_is_reported_for_the_pair():
    """torch cannot JIT-trace its MVN–MVN KL: meanfield + fullcov + --jit is refused up front."""
    vae = VAE(16, 3, (12,), guide="fullcov")
    with pytest.raises(ValueError, match="estimator 'meanfield' with --jit fails on guide 'fullcov'"):
        check_pair("meanfield", "fullcov", vae.model, vae.guide, torch.rand(2, 16), jit=True)


@pytest.mark.parametrize("guide", ["diag", "fullcov", "iaf"])
def test_dreg_with_one_particle_equals_stl(testbed, guide):
    """With K = 1 the normalized weight is 1, so DReG's gradient is STL's, draw for draw."""
    lg, x = testbed
    encoder = guide_for(lg, guide)
    params = params_of(lg, encoder)
    results = []
    for name in ("stl", "dreg"):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(5)
        loss = build_elbo(name, 1).loss_and_grads(lg.model, encoder.guide, x)
        results.append((loss, flat_grad(params)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-8)


class ScaleLatent(Messenger):
    """β on the latent site "z" only (model and guide), as ``poutine.scale`` does for KL warm-up."""

    def __init__(self, beta):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg):
        if msg["name"] == "z":
            msg["scale"] = msg["scale"] * self.beta


@pytest.mark.slow  # 4,000 gradient draws: about 25 s each on 2 idle cores
@pytest.mark.parametrize("path, reference, k", [("dreg", "iwae", 4), ("stl", "trace", 1)])
def test_path_derivative_estimators_are_unbiased_under_beta(testbed, path, reference, k):
    """With the latent site scaled by β = 0.1 (KL warm-up), the log weight is
    log p(x|z) + β(log p(z) − log q(z|x)): STL's and DReG's mean gradients still equal those of
    trace and iwae on the same β-bound. DReG's guide weight is then (1 − β) w̃ + β w̃², not w̃²;
    with w̃² alone the encoder gradients differ by about 5.5 standard errors at 1,000 draws.
    Tolerance: 5 standard errors of the difference of two means of 1,000 draws each."""
    lg, x = testbed
    encoder = guide_for(lg, "fullcov")
    model, guide = ScaleLatent(0.1)(lg.model), ScaleLatent(0.1)(encoder.guide)
    params, m = params_of(lg, encoder), 1000
    means, variances = [], []
    for name in (reference, path):
        elbo, grads = build_elbo(name, k), []
        for _ in range(m):
            for p in params:
                p.grad = None
            elbo.loss_and_grads(model, guide, x)
            grads.append(flat_grad(params))
        grads = torch.stack(grads)
        means.append(grads.mean(0))
        variances.append(grads.var(0) / m)
    se = torch.sqrt(variances[0] + variances[1])
    varies = se > 0
    assert ((means[0] - means[1])[varies] / se[varies]).abs().max() < 5
