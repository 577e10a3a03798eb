"""Active units and gradient SNR, against values computed by hand from the same draws."""

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.inference.diagnostics import active_units, gradient_snr
from pyro_vae.inference.elbos import build_elbo
from pyro_vae.models.vae import VAE


def test_active_units_counts_dimensions_whose_mean_varies():
    """E_q[z|x] = (x₀, 0.05 x₁, 0): variances ≈ 1, 0.0025, 0 across x ~ N(0, 1); threshold 0.01."""
    x = torch.randn(5000, 3)
    scale = torch.tensor([1.0, 0.05, 0.0])
    n, variance = active_units(lambda x: dist.Normal(x * scale, 1.0).to_event(1), x)
    assert n == 1
    # 5,000 draws: the sample variance of N(0, s²) has standard error s² √(2/5000) = 0.02 s²
    torch.testing.assert_close(variance, scale**2, rtol=0.1, atol=1e-12)


def test_active_units_batches_do_not_change_the_result():
    vae = VAE(16, 4, (8,))
    x = torch.rand(250, 16)
    assert torch.equal(
        active_units(vae.posterior, x, batch_size=1000)[1], active_units(vae.posterior, x, batch_size=7)[1]
    )


def test_gradient_snr_matches_draws_by_hand_and_restores_grads():
    vae = VAE(16, 3, (8,))
    x = torch.rand(10, 16)
    elbo = build_elbo("trace")
    groups = {"encoder": list(vae.encoder.parameters()), "decoder": list(vae.decoder.parameters())}
    marker = torch.full_like(groups["decoder"][0], 7.0)
    groups["decoder"][0].grad = marker
    pyro.set_rng_seed(3)
    out = gradient_snr(elbo, vae.model, vae.guide, groups, x, num_estimates=20)
    assert groups["decoder"][0].grad is marker  # the caller's gradients are restored

    pyro.set_rng_seed(3)
    draws = {k: [] for k in groups}
    for _ in range(20):
        for ps in groups.values():
            for p in ps:
                p.grad = None
        elbo.loss_and_grads(vae.model, vae.guide, x)
        for k, ps in groups.items():
            draws[k].append(torch.cat([p.grad.flatten() for p in ps]))
    for k in groups:
        g = torch.stack(draws[k])
        sd = g.std(0)
        assert abs(out[k]["snr"] - (g.mean(0)[sd > 0].abs() / sd[sd > 0]).mean().item()) < 1e-5
        assert abs(out[k]["variance"] - g.var(0).mean().item()) < 1e-6 * max(1.0, out[k]["variance"])
