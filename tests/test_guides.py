"""The guide registry: every head gives a distribution of the right shapes, in every model."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import continues_bit_for_bit
from pyro import poutine
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_vae.inference.guides import GUIDES, Encoder, build_head, get_guide, moments, register_guide
from pyro_vae.models.vae import VAE

B, F, Z = 6, 10, 3


@pytest.fixture(params=list(GUIDES))
def head(request):
    return request.param, build_head(request.param, F, Z, flow_steps=2)


def test_shapes_of_q(head):
    name, h = head
    q = h(torch.randn(B, F))
    assert q.batch_shape == (B,) and q.event_shape == (Z,)
    z = q.sample()
    assert z.shape == (B, Z) and q.log_prob(z).shape == (B,)
    assert q.has_rsample == (name != "diag-score")


def test_particles_broadcast_through_every_guide(head):
    name, h = head
    vae = VAE(16, Z, (8,), guide=name)
    x = torch.rand(B, 16)
    with pyro.plate("particles", 4, dim=-2):
        guide_tr = poutine.trace(vae.guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    assert guide_tr.nodes["z"]["value"].shape == (4, B, Z)
    assert guide_tr.nodes["z"]["log_prob"].shape == (4, B)
    assert model_tr.nodes["x"]["log_prob"].shape == (4, B)
    assert guide_tr.nodes["z"]["fn"].event_dim == 1


def test_state_dict_round_trip_reproduces_q(head):
    """A fresh head (other seed, so other weights and flow orders) loads the state exactly: the same
    draws and densities from the same seed (a flow without an inverse knows the density of its own
    samples only)."""
    name, h = head
    torch.manual_seed(123)
    other = build_head(name, F, Z, flow_steps=2)
    other.load_state_dict(h.state_dict())
    features = torch.randn(B, F)
    draws = []
    for head_ in (h, other):
        torch.manual_seed(7)
        q = head_(features)
        z = q.sample()
        draws.append((z, q.log_prob(z)))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_training_resumes_bit_for_bit(head):
    """Weights and Adam's state saved halfway and loaded into a model built under another seed
    (other initial weights, the same flow orders from their fixed seeds) continue exactly."""
    name, _ = head
    continues_bit_for_bit(lambda: VAE(16, Z, (8,), guide=name), torch.rand(B, 16))


def test_moments_are_exact_for_gaussians_and_estimated_for_flows(head):
    name, h = head
    q = h(torch.randn(B, F))
    mean, sd = moments(q, num_samples=4000)
    assert mean.shape == sd.shape == (B, Z) and (sd > 0).all()
    torch.manual_seed(0)
    z = q.sample((4000,))
    # 4,000 draws: the standard error of a mean is sd/63; 5 of them is < 0.1 sd
    assert ((mean - z.mean(0)).abs() < 0.1 * sd).all()


def test_fullcov_scale_tril_is_lower_triangular_with_positive_diagonal():
    q = build_head("fullcov", F, Z)(torch.randn(B, F))
    L = q.scale_tril
    assert torch.equal(L, torch.tril(L)) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert (L.tril(-1) != 0).any()  # off-diagonal entries are free


def test_diag_score_is_not_reparameterized_and_gets_a_baseline():
    vae = VAE(16, Z, (8,), guide="diag-score")
    x = torch.rand(B, 16)
    site = poutine.trace(vae.guide).get_trace(x).nodes["z"]
    assert not site["fn"].has_rsample and not site["value"].requires_grad
    assert site["infer"]["baseline"] == {"use_decaying_avg_baseline": True}


@pytest.mark.parametrize("name", [n for n, g in GUIDES.items() if "flow_steps" in g.options])
def test_flows_take_flow_steps(name):
    one, three = build_head(name, F, Z, flow_steps=1), build_head(name, F, Z, flow_steps=3)
    assert len(one.flows) == 1 and len(three.flows) == 3
    with pytest.raises(ValueError, match="flow_steps must be a positive integer, got 0"):
        build_head(name, F, Z, flow_steps=0)


def test_unknown_guide_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown guide 'nope'; choose one of diag, diag-score, fullcov, iaf"):
        get_guide("nope")


def test_a_user_registered_guide_works_in_the_vae():
    class StudentT(nn.Module):
        def __init__(self, feature_dim, z_dim):
            super().__init__()
            self.loc = nn.Linear(feature_dim, z_dim)

        def forward(self, h):
            return dist.StudentT(4.0, self.loc(h), 1.0).to_event(1)

    register_guide("student-t", StudentT, "Student-t with 4 degrees of freedom")
    try:
        vae = VAE(16, Z, (8,), guide="student-t")
        site = poutine.trace(vae.guide).get_trace(torch.rand(B, 16)).nodes["z"]
        assert isinstance(site["fn"].base_dist, dist.StudentT) and site["value"].shape == (B, Z)
    finally:
        del GUIDES["student-t"]


def test_encoder_is_body_then_head():
    enc = Encoder(nn.Linear(16, F), build_head("diag", F, Z))
    assert enc(torch.rand(B, 16)).batch_shape == (B,)


def test_kl_of_full_covariance_against_diagonal_matches_mvn_form():
    """The registered KL(MVN ‖ diagonal Normal) equals torch's MVN–MVN closed form."""
    q = build_head("fullcov", F, Z)(torch.randn(B, F))
    p = dist.Normal(torch.randn(Z), torch.rand(Z) + 0.5).to_event(1)
    as_mvn = MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag(p.base_dist.scale))
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(q, as_mvn))


def test_a_score_function_guide_trains_on_a_smaller_last_batch(tmp_path):
    """TraceGraph_ELBO's decaying-average baseline is kept per datapoint, shaped like the first batch;
    300 images in batches of 128 end each epoch with 44, and the next epoch starts with 128 again. The
    baseline of another batch size starts again from 0 instead of failing on the shapes."""
    from pyro_vae import RunConfig, fit, load_dataset

    cfg = RunConfig()
    cfg.model.guide, cfg.model.z_dim, cfg.model.hidden_dims = "diag-score", 4, (32,)
    cfg.train.elbo, cfg.train.epochs, cfg.train.eval_num_samples, cfg.train.device = "tracegraph", 2, 2, "cpu"
    run = fit(cfg, tmp_path / "run", progress=False, data=load_dataset("mnist-5k").subset(300, 50))
    assert [r["steps"] for r in run.metrics["epochs"]] == [3, 3] and math.isfinite(run.metrics["final"]["elbo"])


def test_moments_in_blocks_equal_the_moments_of_all_draws_at_once(monkeypatch):
    """Drawn in blocks (here 3 draws of 5 images at a time, the last block shorter), the combined
    mean and sd are those of the same 256 draws taken at once, to float rounding."""
    import pyro_vae.inference.guides as guides

    q = dist.TransformedDistribution(
        dist.Normal(torch.randn(5, Z), torch.rand(5, Z) + 0.5).to_event(1), [dist.transforms.ExpTransform()]
    )
    torch.manual_seed(1)
    z = torch.cat([q.sample((3,)) for _ in range(85)] + [q.sample((1,))])  # the same draws, all kept
    monkeypatch.setattr(guides, "MOMENT_DRAWS", 15)
    torch.manual_seed(1)
    mean, sd = moments(q, num_samples=256)
    assert torch.allclose(mean, z.mean(0), rtol=1e-5) and torch.allclose(sd, z.std(0), rtol=1e-4)
