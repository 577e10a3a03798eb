"""The VAE model/guide pair: sites, shapes, event dims, β scaling, helpers, likelihoods."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from conftest import traces
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample

from pyro_vae.inference.evaluate import elbo_terms
from pyro_vae.models.likelihoods import LIKELIHOODS, get_likelihood
from pyro_vae.models.vae import VAE

B, D, Z = 6, 784, 3


@pytest.fixture(params=list(LIKELIHOODS))
def vae(request):
    return VAE(D, Z, (32, 16), likelihood=request.param)


def test_sites_shapes_and_event_dims(vae):
    x = torch.rand(B, D)
    model_tr, guide_tr = traces(vae.model, vae.guide, x)
    model_sites = {n: s for n, s in model_tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    guide_sites = {n: s for n, s in guide_tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    assert set(model_sites) == {"z", "x"} and set(guide_sites) == {"z"}
    for site, event in ((model_sites["z"], (Z,)), (model_sites["x"], (D,)), (guide_sites["z"], (Z,))):
        assert site["fn"].batch_shape == (B,) and site["fn"].event_shape == event
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    assert guide_sites["z"]["value"].shape == (B, Z) and model_sites["x"]["is_observed"]
    assert guide_sites["z"]["fn"].has_rsample  # reparameterized
    params = set(pyro.get_param_store().keys())
    assert any(p.startswith("encoder$$$") for p in params) and any(p.startswith("decoder$$$") for p in params)


def test_vectorized_particles_broadcast(vae):
    x = torch.rand(B, D)
    with pyro.plate("particles", 5, dim=-2):
        model_tr, guide_tr = traces(vae.model, vae.guide, x)
    assert guide_tr.nodes["z"]["value"].shape == (5, B, Z)
    model_tr.compute_log_prob()
    assert model_tr.nodes["x"]["log_prob"].shape == (5, B)


def test_reparameterization_is_loc_plus_scale_times_eps():
    vae = VAE(D, Z, (32,))
    x = torch.rand(B, D)
    torch.manual_seed(1)
    z = poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    torch.manual_seed(1)
    eps = torch.randn(B, Z)
    loc, scale = vae.encode(x)
    torch.testing.assert_close(z, loc + scale * eps)


def test_beta_scales_the_kl_in_model_and_guide():
    """Trace_ELBO loss = −[log p(x|z) + β (log p(z) − log q(z))] at the same draw."""
    vae = VAE(D, Z, (32,))
    x = torch.rand(B, D)
    vae.beta = 0.25
    torch.manual_seed(0)
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    torch.manual_seed(0)
    model_tr, guide_tr = traces(vae.model, vae.guide, x)
    for tr in (model_tr, guide_tr):
        assert tr.nodes["z"]["scale"] == 0.25
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()
    rec = model_tr.nodes["x"]["unscaled_log_prob"].sum()
    kl = (guide_tr.nodes["z"]["unscaled_log_prob"] - model_tr.nodes["z"]["unscaled_log_prob"]).sum()
    assert loss == pytest.approx(-(rec - 0.25 * kl).item(), rel=1e-5)


def test_closed_form_kl_of_diag_gaussian():
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ (σ² + μ² − 1 − log σ²), per datapoint."""
    vae = VAE(D, Z, (32,))
    x = torch.rand(B, D)
    loc, scale = vae.encode(x)
    expected = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    torch.testing.assert_close(elbo_terms(vae.model, vae.guide, x)["kl"], expected)


def test_helpers_shapes_and_ranges(vae):
    x = torch.rand(B, D)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (B, Z) and (scale > 0).all()
    for out in (vae.reconstruct(x), vae.sample(4), vae.decode(torch.zeros(2, 5, Z))):
        assert out.shape[-1] == D and (out >= 0).all() and (out <= 1).all()
    assert vae.sample(4).shape == (4, D) and not vae.sample(2).requires_grad


def test_bernoulli_accepts_grey_levels():
    """Continuous pixels under a Bernoulli: log p = x log σ(l) + (1−x) log(1−σ(l))."""
    logits = torch.tensor([[0.3, -1.2]])
    x = torch.tensor([[0.25, 0.9]])
    p = torch.sigmoid(logits)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(get_likelihood("bernoulli").make(logits).log_prob(x), expected)


def test_unknown_likelihood_lists_choices():
    with pytest.raises(ValueError, match="unknown likelihood 'gauss'; choose one of bernoulli, continuous-bernoulli"):
        VAE(D, Z, likelihood="gauss")
