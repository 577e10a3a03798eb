"""The flow guides of Pyro's conditional transforms: log-density by the change of variables with
torch's own Jacobian, invertibility, the path score that STL and DReG read from the cache, and
the estimators on every flow."""

import pyro
import pytest
import torch
from pyro import poutine
from torch.autograd.functional import jacobian

from pyro_vae import VAE
from pyro_vae.errors import UsageError
from pyro_vae.inference.elbos import build_elbo
from pyro_vae.inference.guides import GUIDES, build_head
from pyro_vae.inference.pathwise import CHEAP_INVERSE, cached_flow_score, path_log_prob

FLOWS = [n for n, g in GUIDES.items() if "flow_steps" in g.options]  # iaf and every Pyro flow
B, F, Z = 3, 6, 3


def perturbed(head: torch.nn.Module, scale: float = 0.5, seed: int = 0) -> torch.nn.Module:
    """The head with every parameter moved by scale·N(0, 1): away from the near-identity start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return head


def flow_of(name: str, steps: int = 2, seed: int = 0, scale: float = 0.5):
    """q(z|h) of a perturbed head, in float64 (so that round-off, ~1e-12, is far below every tolerance)."""
    torch.manual_seed(seed)
    head = perturbed(build_head(name, F, Z, flow_steps=steps), scale, seed).double()
    return head(torch.randn(B, F, dtype=torch.float64))


def push(q, z0: torch.Tensor) -> torch.Tensor:
    """The flow's map f(z0) through every step, as fresh calls (no cache involved)."""
    for t in q.transforms:
        z0 = t(z0 * 1)  # a new tensor: never the cached one
    return z0


def direct_log_q(q, z0: torch.Tensor) -> torch.Tensor:
    """log q(f(z0)) = log q₀(z0) − log|det ∂f/∂z0|, the determinant from torch's Jacobian of the
    whole flow (its (B, Z, B, Z) Jacobian is block diagonal: one (Z, Z) block per datapoint);
    differentiable in z0."""
    full = jacobian(lambda a: push(q, a), z0, create_graph=True)  # (B, Z, B, Z)
    blocks = torch.stack([full[i, :, i, :] for i in range(z0.shape[0])])  # (B, Z, Z)
    return q.base_dist.log_prob(z0) - torch.linalg.slogdet(blocks).logabsdet


@pytest.mark.parametrize("name", FLOWS)
def test_log_density_is_the_change_of_variables_with_torchs_jacobian(name):
    """Pyro's log q(z) of a sample equals log q₀(z0) − log|det J| with J from
    torch.autograd.functional.jacobian, to float64 round-off (1e-8)."""
    q = flow_of(name)
    z = q.sample()  # (B, Z), its intermediates in the cache
    z0 = q.transforms[0]._cached_x_y[0].detach()
    log_q = q.log_prob(z)  # before push overwrites the cache
    expected = direct_log_q(q, z0)
    torch.testing.assert_close(push(q, z0), z)
    # float64 round-off is ~1e-12; NAF adds 1e-8 to its slopes inside a log, hence 1e-6
    torch.testing.assert_close(log_q, expected, rtol=1e-6, atol=1e-6)
    assert expected.shape == (B,) and torch.isfinite(expected).all()


@pytest.mark.parametrize("name", FLOWS)
def test_every_step_is_invertible(name):
    """With its parameters moved away from the start (scale 0.5: log|det J| down to about −10 per
    step), every step's Jacobian stays non-singular at every sampled point, and its log|det| is
    Pyro's; a step with an inverse maps its output back to its input (a fresh tensor: computed,
    not read from the cache). Much further out (scale 1), NAF's output reaches the clamp of its
    inverse sigmoid (|z| ≈ 36 in float64, 16.6 in float32) where its Jacobian is singular, and
    the sequential inverses of iaf lose all precision (log|det J| ≈ −200)."""
    q = flow_of(name, scale=0.5)
    x = q.base_dist.sample((4,))  # (4, B, Z)
    for t in q.transforms:
        y = t(x)
        log_det = t.log_abs_det_jacobian(x, y)
        full = jacobian(lambda a, t=t: t(a * 1), x)  # (4, B, Z, 4, B, Z)
        blocks = torch.stack([full[s, i, :, s, i, :] for s in range(4) for i in range(B)]).reshape(4, B, Z, Z)
        sign, logabsdet = torch.linalg.slogdet(blocks)
        assert (sign != 0).all() and torch.isfinite(logabsdet).all()
        torch.testing.assert_close(log_det.expand(4, B), logabsdet, rtol=1e-6, atol=1e-6)
        if GUIDES[name].inverse:
            torch.testing.assert_close(t.inv(y * 1), x, rtol=1e-6, atol=1e-6)
        x = y.detach()


@pytest.mark.parametrize("name", FLOWS)
def test_cached_score_equals_the_implicit_derivative(name):
    """∇_z log q(z) read from the cache equals J(z0)⁻ᵀ ∇_{z0} [log q(f(z0))], both from torch's
    Jacobian of the whole flow (no inverse, no Pyro log-determinant), to float64 round-off."""
    q = flow_of(name)
    z = q.rsample()
    score = cached_flow_score(q, z)
    z0 = q.transforms[0]._cached_x_y[0].detach().requires_grad_()
    (grad_z0,) = torch.autograd.grad(direct_log_q(q, z0).sum(), z0)
    full = jacobian(lambda a: push(q, a), z0.detach())
    blocks = torch.stack([full[i, :, i, :] for i in range(B)])  # (B, Z, Z)
    expected = torch.linalg.solve(blocks.transpose(-1, -2), grad_z0.unsqueeze(-1)).squeeze(-1)
    assert score.shape == z.shape and not score.requires_grad
    torch.testing.assert_close(score, expected, rtol=1e-7, atol=1e-7 * expected.abs().max().item())


@pytest.mark.parametrize("name", [n for n in FLOWS if GUIDES[n].inverse])
def test_path_log_prob_equals_the_inversion_where_one_exists(name):
    """The value of log q at the sample, and its gradient for the encoder: the total derivative
    minus the direct term at a fixed z (a fresh tensor, so Pyro inverts the flow)."""
    torch.manual_seed(0)
    vae = VAE(12, Z, (8,), guide=name, flow_steps=2).double()
    perturbed(vae.encoder.head)
    x = torch.rand(B, 12, dtype=torch.float64)
    tr = poutine.trace(vae.guide).get_trace(x)
    tr.compute_log_prob()
    site = tr.nodes["z"]
    fn, z = site["fn"], site["value"]
    path = path_log_prob(site)
    torch.testing.assert_close(path.detach(), site["log_prob"].detach())
    params = list(vae.encoder.parameters())
    got = torch.autograd.grad(path.sum(), params, retain_graph=True, allow_unused=True)
    total = torch.autograd.grad(site["log_prob"].sum(), params, retain_graph=True, allow_unused=True)
    direct = torch.autograd.grad(fn.log_prob(z.detach() * 1).sum(), params, allow_unused=True)
    for g, t, d in zip(got, total, direct):
        expected = (t if t is not None else 0) - (d if d is not None else 0)
        g = g if g is not None else torch.zeros_like(expected)
        torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-6)  # the inversion and the solve: ill-conditioned


@pytest.mark.parametrize("name", [n for n in FLOWS if n != "iaf"])
def test_which_flows_read_the_cache(name):
    """Flows without a cheap inverse read the score from the cache; the rest invert."""
    q = flow_of(name)
    cheap = all(isinstance(t, CHEAP_INVERSE) for t in q.transforms)
    assert cheap == (name in ("householder", "coupling"))


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("elbo, k", [("stl", 1), ("dreg", 3)])
def test_path_estimators_match_the_surrogate_of_a_fixed_flow(name, elbo, k):
    """STL and DReG train every flow: the loss equals Trace_ELBO's (STL) or the IWAE bound's
    (DReG) on the same draws, and every encoder parameter gets a finite gradient."""
    torch.manual_seed(0)
    vae = VAE(12, Z, (8,), guide=name, flow_steps=2)
    x = torch.rand(4, 12)
    pyro.set_rng_seed(3)
    loss = build_elbo(elbo, k).loss_and_grads(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    reference = build_elbo("trace" if elbo == "stl" else "iwae", k).loss(vae.model, vae.guide, x)
    assert loss == pytest.approx(reference, rel=1e-5)
    grads = [p.grad for p in vae.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_coupling_needs_two_dimensions():
    with pytest.raises(UsageError, match="guide 'coupling' needs z_dim ≥ 2"):
        build_head("coupling", F, 1, flow_steps=2)
