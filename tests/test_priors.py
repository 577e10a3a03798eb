"""The prior registry: every prior in every model that takes it has the right shapes, the log
density of a direct computation, trains and resumes bit for bit; meanfield and the VampPrior
refuse what they cannot serve up front; ``model(None, …)`` draws from the prior predictive."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from conftest import continues_bit_for_bit, fit_cut_and_resume
from pyro.infer import Predictive

from pyro_vae import CVAE, VAE, RunConfig
from pyro_vae.errors import IncompatiblePair
from pyro_vae.inference.elbos import build_elbo
from pyro_vae.models.priors import PRIORS
from pyro_vae.models.registry import check_config

D, K, Z, B = 16, 10, 3, 6
UNCONDITIONAL = [n for n, p in PRIORS.items() if p.conditional is not True]
CONDITIONAL = [n for n, p in PRIORS.items() if p.conditional is not False]
CASES = [("vae", n) for n in UNCONDITIONAL] + [("cvae", n) for n in CONDITIONAL]


def perturbed(model: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def build(model: str, prior: str):
    torch.manual_seed(0)
    if model == "vae":
        return perturbed(VAE(D, Z, (8,), prior=prior, prior_components=4))
    return perturbed(CVAE(D, K, Z, (8,), prior=prior, prior_components=4))


def direct_log_prior(m, prior: str, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """log p(z) (or log p(z|y)) written out from the prior's parameters, for z of shape (B, Z)."""
    p = m.prior_net
    if prior == "standard":
        return dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    if prior == "learned":
        loc, scale = p.loc_scale(y)
        return dist.Normal(loc, scale).log_prob(z).sum(-1)
    if prior == "mixture":
        row = y if y is not None else torch.zeros(len(z), dtype=torch.int64)
        scale = F.softplus(p.raw_scale[row]) + 1e-4  # (B, M, Z)
        comp = dist.Normal(p.loc[row], scale).log_prob(z.unsqueeze(1)).sum(-1)  # (B, M)
        return torch.logsumexp(comp + p.logits[row].log_softmax(-1), -1)
    if prior == "vamp":
        u = torch.sigmoid(p.pseudo_inputs)  # (K, D)
        per_k = torch.stack([m.posterior(u[k : k + 1]).log_prob(z) for k in range(len(u))])  # (K, B)
        return torch.logsumexp(per_k, 0) - math.log(len(u))
    raise AssertionError(f"no direct computation for prior {prior!r}; add one")


@pytest.mark.parametrize("model, prior", CASES)
def test_log_density_and_shapes(model, prior):
    m = build(model, prior)
    y = torch.arange(B) % K if model == "cvae" else None
    p = m.prior(y)
    assert p.event_shape == (Z,) and p.batch_shape in ((), (B,))
    z = p.sample((B,)) if p.batch_shape == () else p.sample()
    assert z.shape == (B, Z)
    torch.testing.assert_close(p.log_prob(z), direct_log_prior(m, prior, z, y), rtol=1e-5, atol=1e-5)
    assert m.sample(5, *((3,) if model == "cvae" else ())).shape == (5, D)


@pytest.mark.parametrize("model, prior", CASES)
def test_prior_parameters_train_with_the_model(model, prior):
    """Every parameter of the prior gets a gradient from Trace_ELBO and is a Pyro parameter of the model."""
    pyro.clear_param_store()
    m = build(model, prior)
    x = torch.rand(B, D)
    args = (x, torch.arange(B) % K) if model == "cvae" else (x,)
    build_elbo("trace").loss_and_grads(m.model, m.guide, *args)
    params = list(m.prior_net.parameters())
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in params)
    names = set(pyro.get_param_store().keys())
    assert sum(n.startswith("prior_net$$$") for n in names) == len(params)


def tiny(model: str, prior: str, guide: str = "diag", epochs: int = 2) -> RunConfig:
    cfg = RunConfig()
    cfg.model.model, cfg.model.prior, cfg.model.guide = model, prior, guide
    cfg.model.z_dim, cfg.model.hidden_dims = 2, (16,)
    if PRIORS[prior].components is not None:
        cfg.model.prior_components = 3
    cfg.train.epochs, cfg.train.eval_num_samples, cfg.train.device = epochs, 2, "cpu"
    if model == "cvae":
        cfg.train.fidelity_samples = 0
    return cfg


def resumes_bit_for_bit(cfg: RunConfig, tmp_path) -> None:
    full, resumed = fit_cut_and_resume(cfg, tmp_path, cut=1)
    assert full.metrics["final"] == resumed.metrics["final"]


@pytest.mark.parametrize("model, prior", CASES)
def test_prior_parameters_resume_bit_for_bit(model, prior):
    x = torch.rand(B, D)
    args = (x, torch.arange(B) % K) if model == "cvae" else (x,)
    continues_bit_for_bit(lambda: build(model, prior), *args)


@pytest.mark.slow
@pytest.mark.parametrize("model, prior", CASES)
def test_resume_equals_uninterrupted(model, prior, tmp_path):
    """Two epochs on MNIST-5k at once, or one and then one more after a resume: the same weights,
    prior parameters included, and the same final metrics (50–80 s each on 2 shared cores)."""
    resumes_bit_for_bit(tiny(model, prior), tmp_path)


@pytest.mark.parametrize("prior", [n for n, p in PRIORS.items() if not p.closed_form_kl])
def test_meanfield_refuses_priors_without_a_closed_form_kl_up_front(prior):
    cfg = tiny("vae", prior)
    cfg.train.elbo = "meanfield"
    with pytest.raises(IncompatiblePair, match=f"estimator 'meanfield' does not fit prior '{prior}': .* closed-form"):
        check_config(cfg)
    cfg.train.elbo = "trace"
    check_config(cfg)


def test_vamp_refuses_guides_without_an_inverse_and_conditional_models():
    cfg = tiny("vae", "vamp", guide="planar")
    with pytest.raises(IncompatiblePair, match="prior 'vamp' does not fit guide 'planar': .* no inverse"):
        check_config(cfg)
    cfg = tiny("cvae", "vamp")
    with pytest.raises(IncompatiblePair, match="prior 'vamp' does not fit model 'cvae': .* unconditional models only"):
        check_config(cfg)


def moments_agree(a: torch.Tensor, b: torch.Tensor) -> None:
    """Two independent sets of N draws of values in [0, 1] (per pixel, or per coordinate):

    - means: the standard error of the difference is sqrt(var_a/N + var_b/N); assert within 5 of
      them (a false failure has probability < 6e-7 per coordinate, < 1e-3 over every coordinate);
    - variances: the sample variance of N values in [0, 1] has a standard error below
      1/(4 sqrt(N)) (the fourth central moment is at most 1/16), so the difference's is below
      sqrt(2)/(4 sqrt(N)); assert within 5 of that.
    The tests are seeded, so they never flake."""
    n = len(a)
    se = torch.sqrt(a.var(0) / n + b.var(0) / n) + 1e-6
    assert ((a.mean(0) - b.mean(0)).abs() < 5 * se).all()
    assert ((a.var(0) - b.var(0)).abs() < 5 * math.sqrt(2) / (4 * math.sqrt(n))).all()


@pytest.mark.parametrize("model, prior", [("vae", "mixture"), ("vae", "vamp"), ("cvae", "learned")])
def test_predictive_draws_from_the_prior_predictive(model, prior):
    """``Predictive(model.model, num_samples=S)(None, …)``: z from the prior and x from p(x|z); its
    decoded means E[x|z] have the distribution of ``sample(n, y)``'s (4,000 draws each), and the
    Bernoulli x have their mean E[E[x|z]] and variance m̄(1 − m̄)."""
    pyro.set_rng_seed(0)
    m = build(model, prior)
    n, S = 200, 20  # 4,000 draws
    y = torch.full((n,), 3) if model == "cvae" else None
    args = (None, y) if model == "cvae" else (None,)
    kwargs = {} if model == "cvae" else {"num": n}
    with torch.no_grad():
        out = Predictive(m.model, num_samples=S)(*args, **kwargs)
    assert out["z"].shape == (S, n, Z) and out["x"].shape == (S, n, D)
    z = out["z"].flatten(0, 1)  # (S·n, Z)
    means = m.decode(z, None if y is None else y.repeat(S))  # (S·n, D), E[x|z] for the predictive's z
    reference = torch.cat([m.sample(n, None if y is None else 3) for _ in range(S)])  # (S·n, D)
    moments_agree(means, reference)
    x = out["x"].flatten(0, 1)
    m_bar = reference.mean(0)
    moments_agree(x, torch.bernoulli(m_bar.expand(len(x), D)))  # marginally, x ~ Bernoulli(m̄) per pixel


def test_model_without_images_needs_a_size():
    with pytest.raises(ValueError, match=r"model\(None, num=n\) draws n images"):
        VAE(D, Z, (8,)).model(None)
