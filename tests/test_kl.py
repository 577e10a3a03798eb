"""The KL facts the lecture states, checked numerically."""

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from pyro_vae.theory.kl import bimodal_mixture, fit_gaussian, gaussian_kl, monte_carlo_kl


def random_gaussian(k, gen):
    a = torch.randn(k, k, generator=gen, dtype=torch.float64)
    return torch.randn(k, generator=gen, dtype=torch.float64), a @ a.T + 0.5 * torch.eye(k, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_gaussian_kl_matches_torch(k):
    gen = torch.Generator().manual_seed(k)
    for _ in range(10):
        (m1, c1), (m2, c2) = random_gaussian(k, gen), random_gaussian(k, gen)
        expected = kl_divergence(MultivariateNormal(m1, c1), MultivariateNormal(m2, c2))
        torch.testing.assert_close(gaussian_kl(m1, c1, m2, c2), expected, rtol=1e-10, atol=1e-10)


def test_gaussian_kl_batched():
    gen = torch.Generator().manual_seed(0)
    pairs = [random_gaussian(3, gen) + random_gaussian(3, gen) for _ in range(4)]
    m1, c1, m2, c2 = (torch.stack(t) for t in zip(*pairs))
    expected = kl_divergence(MultivariateNormal(m1, c1), MultivariateNormal(m2, c2))
    torch.testing.assert_close(gaussian_kl(m1, c1, m2, c2), expected)


def kl_plus_k(m1, c1, m2, c2):
    """The misprinted formula, written out on its own: ½[tr(Σ₂⁻¹Σ₁) + Δᵀ Σ₂⁻¹ Δ + k + log det Σ₂/det Σ₁]."""
    k, inv, d = m1.shape[-1], torch.linalg.inv(c2), m2 - m1
    return 0.5 * (torch.trace(inv @ c1) + d @ inv @ d + k + torch.logdet(c2) - torch.logdet(c1))


def test_slide_mistakes_give_other_numbers():
    """The misprint (+k for −k), computed independently of gaussian_kl, is off from torch's
    kl_divergence by exactly k: it is the same expression but for the sign of k, so any other
    error in either formula would show up here."""
    gen = torch.Generator().manual_seed(1)
    for k in (1, 3, 5):
        (m1, c1), (m2, c2) = random_gaussian(k, gen), random_gaussian(k, gen)
        exact = kl_divergence(MultivariateNormal(m1, c1), MultivariateNormal(m2, c2))
        torch.testing.assert_close(
            kl_plus_k(m1, c1, m2, c2) - exact, torch.tensor(float(k), dtype=torch.float64), rtol=0, atol=1e-8
        )
        torch.testing.assert_close(gaussian_kl(m1, c1, m2, c2), exact, rtol=1e-5, atol=1e-5)


def test_kl_nonnegative_and_zero_iff_equal():
    gen = torch.Generator().manual_seed(2)
    for _ in range(50):
        (m1, c1), (m2, c2) = random_gaussian(4, gen), random_gaussian(4, gen)
        assert gaussian_kl(m1, c1, m2, c2) > 0
        assert gaussian_kl(m1, c1, m1, c1).abs() < 1e-10
    m, c = random_gaussian(4, gen)
    assert gaussian_kl(m, c, m + 1e-3, c) > 0


def test_kl_not_symmetric():
    p, q = Normal(0.0, 1.0), Normal(1.0, 2.0)
    assert abs(kl_divergence(p, q) - kl_divergence(q, p)) > 0.1


def test_monte_carlo_kl_agrees_with_closed_form():
    """20,000 samples: the estimate lies within 4 standard errors of the exact value."""
    torch.manual_seed(0)
    p, q = MultivariateNormal(torch.zeros(2), torch.eye(2)), MultivariateNormal(torch.ones(2), 2 * torch.eye(2))
    est, se = monte_carlo_kl(p, q, 20_000)
    assert abs(est - kl_divergence(p, q)) < 4 * se


def test_forward_kl_covers_both_modes_reverse_locks_onto_one():
    """Forward KL(p‖q) is minimized by moment matching: q's mean → 0 and sd → sqrt(scale² + sep²/4).
    Reverse KL(q‖p) from a start right of 0 settles on the right mode: mean ≈ +sep/2, sd ≈ scale,
    where KL(q‖p) → log 2 (q holds one of two equal modes).
    Tolerances: 2,000 samples per step, Adam noise of order sd/sqrt(2000) ≈ 0.05 on each."""
    p = bimodal_mixture(separation=4.0, scale=0.7)
    forward = fit_gaussian(p, "forward", init_loc=1.0, steps=800)
    reverse = fit_gaussian(p, "reverse", init_loc=1.0, steps=800)
    mixture_sd = (0.7**2 + 2.0**2) ** 0.5
    assert abs(forward.loc) < 0.15 and abs(forward.scale - mixture_sd) < 0.15
    assert abs(reverse.loc - 2.0) < 0.15 and abs(reverse.scale - 0.7) < 0.1
    # and each fit is the better one under its own objective
    fwd = lambda q: monte_carlo_kl(p, q, 50_000)[0]  # noqa: E731
    assert fwd(forward) < fwd(reverse)
    reverse_kl, se = monte_carlo_kl(reverse, p, 50_000)
    assert abs(reverse_kl - torch.log(torch.tensor(2.0))) < 0.02 + 4 * se


def test_fit_gaussian_rejects_unknown_direction():
    with pytest.raises(ValueError, match="direction must be 'forward' or 'reverse'"):
        fit_gaussian(Normal(0.0, 1.0), "sideways")
