"""log q(z|x) with the parameters held fixed: a flow's score from its cache equals the score through
its inversion, and STL's and DReG's gradients on ``iaf`` equal those of the inversion they replace."""

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import VAE
from pyro_vae.inference.elbos import build_elbo
from pyro_vae.inference.pathwise import flow_score, path_log_prob


def iaf_site(z_dim: int, particles: int = 0, grad: bool = True):
    torch.manual_seed(0)
    vae = VAE(24, z_dim, (16,), guide="iaf", flow_steps=3)
    x = torch.rand(8, 24)
    guide = vae.guide
    if particles:
        guide = pyro.plate("particles", particles, dim=-2)(guide)
    with torch.set_grad_enabled(grad):
        tr = poutine.trace(guide).get_trace(x)
        tr.compute_log_prob()
    return vae, x, tr.nodes["z"]


@pytest.mark.parametrize("z_dim, particles, grad", [(1, 0, True), (6, 0, True), (6, 3, True), (6, 0, False)])
def test_flow_score_equals_the_score_through_the_inversion(z_dim, particles, grad):
    """float32: both are exact up to round-off, so they agree to 1e-5 relative to the score's size.
    A sample drawn without a graph (``grad=False``) has each flow step recomputed from its cache."""
    _, _, site = iaf_site(z_dim, particles, grad)
    fn, z = site["fn"], site["value"]
    score = flow_score(fn, z)
    at = z.detach().clone().requires_grad_()
    (inverted,) = torch.autograd.grad(fn.log_prob(at).sum(), at)  # Pyro inverts the flow at a new tensor
    assert score.shape == z.shape and not score.requires_grad
    torch.testing.assert_close(score, inverted, rtol=1e-5, atol=1e-5 * inverted.abs().max().item())


def test_path_log_prob_has_the_value_of_log_q_and_the_path_gradient():
    vae, _, site = iaf_site(4)
    fn, z = site["fn"], site["value"]
    path = path_log_prob(site)
    assert torch.equal(path.detach(), site["log_prob"].detach())
    params = list(vae.encoder.parameters())
    got = torch.autograd.grad(path.sum(), params, retain_graph=True, allow_unused=True)
    # the reference: total derivative (through the cache) minus the direct term at fixed z (an inversion)
    at_fixed_z = fn.log_prob(z.detach())
    total = torch.autograd.grad(site["log_prob"].sum(), params, retain_graph=True, allow_unused=True)
    direct = torch.autograd.grad(at_fixed_z.sum(), params, allow_unused=True)
    for g, t, d in zip(got, total, direct):
        expected = (t if t is not None else 0) - (d if d is not None else 0)
        torch.testing.assert_close(g if g is not None else torch.zeros_like(expected), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, k", [("stl", 1), ("dreg", 3)])
def test_estimators_on_iaf_match_the_inversion(name, k, monkeypatch):
    """The same draws (same seed): STL's and DReG's gradients with the cached score equal those with
    log q evaluated by inverting the flow, as the estimators did before."""
    import pyro_vae.inference.pathwise as pathwise

    torch.manual_seed(1)
    vae = VAE(24, 5, (16,), guide="iaf")
    x = torch.rand(8, 24)
    grads = []
    for cached in (True, False):
        if not cached:
            monkeypatch.setattr(pathwise, "_affine_steps", lambda fn: False)
        for p in vae.parameters():
            p.grad = None
        pyro.set_rng_seed(3)
        loss = build_elbo(name, k).loss_and_grads(vae.model, vae.guide, x)
        grads.append((loss, torch.cat([p.grad.flatten() for p in vae.parameters()])))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)
