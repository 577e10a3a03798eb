"""The CVAE model/guide pair: sites, the learned prior's KL, conditional sampling, labels, every
guide and estimator, conditional metrics, and training on MNIST-5k and on a tiny SVHN file."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import DeltaHead, descends, fits, traces, write_svhn_folder
from pyro.infer import SVI
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

import pyro_vae
from pyro_vae import plots
from pyro_vae.config import RunConfig
from pyro_vae.inference.elbos import ELBOS, build_elbo, check_pair
from pyro_vae.inference.evaluate import elbo_terms, log_weights
from pyro_vae.inference.guides import GUIDES
from pyro_vae.inference.labels import class_log_likelihoods, generative_classify
from pyro_vae.models.cvae import CVAE
from pyro_vae.training.train import fit, resume

B, D, Z, K = 6, 784, 3, 10


def gaussian_cvae(*args, **kwargs) -> CVAE:
    """The CVAE with one learned Gaussian p(z|y) per class, the plain ELBO (KL weight 1) and y at the
    decoder's input, whose terms have closed forms; the defaults (a mixture prior, KL weight 2, y
    scaling every decoder layer (FiLM)) are tested below."""
    kwargs.setdefault("prior", "learned")
    kwargs.setdefault("kl_weight", 1.0)
    kwargs.setdefault("decoder_y", "input")
    return CVAE(*args, **kwargs)


def perturbed(cvae: CVAE, seed: int = 1) -> CVAE:
    """Random weights everywhere, including the prior network (which starts at N(0, I))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cvae.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return cvae


@pytest.mark.parametrize("prior", ["learned", "standard"])
def test_sites_shapes_and_params(prior):
    cvae = gaussian_cvae(D, K, Z, (32,), prior=prior)
    x, y = torch.rand(B, D), torch.arange(B)
    model_tr, guide_tr = traces(cvae.model, cvae.guide, x, y)
    sites = {n: s for n, s in model_tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    assert set(sites) == {"z", "x"} and sites["x"]["is_observed"]
    assert sites["z"]["fn"].event_shape == (Z,) and sites["x"]["fn"].event_shape == (D,)
    assert sites["x"]["fn"].batch_shape == (B,) and guide_tr.nodes["z"]["value"].shape == (B, Z)
    assert [f.name for f in sites["z"]["cond_indep_stack"]] == ["data"]
    params = set(pyro.get_param_store().keys())
    assert any(p.startswith("prior_net$$$") for p in params) == (prior == "learned")
    with pyro.plate("particles", 4, dim=-2):
        model_tr, _ = traces(cvae.model, cvae.guide, x, y)
    model_tr.compute_log_prob()
    assert model_tr.nodes["x"]["log_prob"].shape == (4, B)


def test_learned_prior_starts_standard():
    loc, scale = gaussian_cvae(D, K, Z, (32,)).prior_moments()
    torch.testing.assert_close(loc, torch.zeros(K, Z))
    torch.testing.assert_close(scale, torch.ones(K, Z))


def test_learned_prior_kl_matches_torch():
    """The KL term of the ELBO is KL(q(z|x,y) ‖ N(μ_y, σ_y²)), class by class, as
    torch.distributions.kl_divergence and the closed form ½ Σ [σ_q²/σ_y² + (μ_q−μ_y)²/σ_y² − 1 + 2 log σ_y/σ_q]."""
    cvae = perturbed(gaussian_cvae(D, K, Z, (32,)))
    x, y = torch.rand(B, D), torch.tensor([0, 3, 3, 7, 9, 1])
    kl = elbo_terms(cvae.model, cvae.guide, x, y)["kl"]
    q = cvae.posterior(x, y)
    mu_y, sd_y = cvae.prior_net.loc_scale(y)
    assert not torch.allclose(mu_y[1], mu_y[3]) or torch.equal(y[1], y[3])  # the prior depends on y
    expected = kl_divergence(q, dist.Normal(mu_y, sd_y).to_event(1))
    torch.testing.assert_close(kl, expected)
    mu_q, sd_q = q.base_dist.loc, q.base_dist.scale
    closed = 0.5 * (sd_q**2 / sd_y**2 + (mu_q - mu_y) ** 2 / sd_y**2 - 1 + 2 * (sd_y / sd_q).log()).sum(-1)
    torch.testing.assert_close(kl, closed.detach(), rtol=1e-5, atol=1e-5)
    # the standard prior's KL is against N(0, I)
    std = perturbed(gaussian_cvae(D, K, Z, (32,), prior="standard"))
    q0 = std.posterior(x, y)
    torch.testing.assert_close(elbo_terms(std.model, std.guide, x, y)["kl"], kl_divergence(q0, std.prior(y)))


def test_meanfield_loss_uses_the_learned_prior():
    """TraceMeanField_ELBO's loss is −(E log p(x|z,y) − KL(q ‖ p(z|y))): with the same draw of z,
    it equals −Σ [log p(x|z,y)] + Σ KL computed by torch."""
    cvae = perturbed(gaussian_cvae(D, K, Z, (32,)))
    x, y = torch.rand(B, D), torch.arange(B)
    pyro.set_rng_seed(3)
    loss = build_elbo("meanfield").loss(cvae.model, cvae.guide, x, y)
    pyro.set_rng_seed(3)
    model_tr, guide_tr = traces(cvae.model, cvae.guide, x, y)
    model_tr.compute_log_prob()
    rec = model_tr.nodes["x"]["log_prob"].sum()
    kl = kl_divergence(guide_tr.nodes["z"]["fn"], model_tr.nodes["z"]["fn"]).sum()
    assert loss == pytest.approx(-(rec - kl).item(), rel=1e-5)


@pytest.mark.parametrize("prior", ["learned", "standard"])
def test_conditional_sampling_shapes(prior):
    cvae = perturbed(gaussian_cvae(D, K, Z, (32,), prior=prior))
    assert cvae.sample(5, 3).shape == (5, D) and not cvae.sample(2, 0).requires_grad
    assert cvae.sample(4, torch.tensor([0, 1, 2, 9])).shape == (4, D)
    x, y = torch.rand(B, D), torch.arange(B)
    loc, scale = cvae.encode(x, y)
    assert loc.shape == scale.shape == (B, Z) and (scale > 0).all()
    assert cvae.reconstruct(x, y).shape == (B, D) and cvae.decode(loc, 2).shape == (B, D)
    mu, sd = cvae.prior_moments()
    assert mu.shape == sd.shape == (K, Z)
    # samples of a class come from that class's prior: p(z|y=3) ≠ p(z|y=4) for the learned prior
    pyro.set_rng_seed(0)
    a = cvae.sample(3, 3)
    pyro.set_rng_seed(0)
    b = cvae.sample(3, 4)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "y, message",
    [
        (torch.tensor([0.0, 1.0]), r"labels must be an integer tensor of class indices, got Tensor torch.float32; "),
        (torch.tensor([[0], [1]]), r"labels must have shape \(2,\), one class index per image, got shape \(2, 1\)"),
        (torch.tensor([0, 1, 2]), r"labels must have shape \(2,\), one class index per image, got shape \(3,\)"),
        (torch.tensor([3, 10]), r"labels must lie in 0..9 \(10 classes\), got values in \[3, 10\]"),
        (torch.tensor([-1, 2]), r"labels must lie in 0..9 \(10 classes\), got values in \[-1, 2\]"),
        (11, r"labels must lie in 0..9 \(10 classes\), got values in \[11, 11\]"),
        ([0, 1], r"labels must be an integer tensor of class indices, got list; convert with y.long\(\)"),
    ],
)
def test_bad_labels_are_one_line_errors(y, message):
    cvae = gaussian_cvae(D, K, Z, (32,))
    x = torch.rand(2, D)
    for call in (lambda: cvae.sample(2, y), lambda: cvae.encode(x, y), lambda: cvae.reconstruct(x, y)):
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_fit_refuses_bad_labels(tmp_path):
    data = pyro_vae.load_dataset("mnist-5k")
    data.train_y = data.train_y.float()
    cfg = RunConfig()
    cfg.model.model = "cvae"
    with pytest.raises(ValueError, match="training labels must be an integer tensor of class indices"):
        fit(cfg, tmp_path / "run", data=data, progress=False)
    data.train_y = data.train_y.long()
    data.test_y[5] = 12
    with pytest.raises(ValueError, match=r"test labels must lie in 0..9 \(10 classes\), got values in \[0, 12\]"):
        fit(cfg, tmp_path / "run", data=data, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("prior", "learned", "prior 'learned' does not fit model 'vae': it is for conditional models only; use"),
        ("prior", "flat", "prior must be one of standard, learned, mixture, vamp, got 'flat'"),
        ("model", "gan", "model must be one of vae, cvae, ssvae, got 'gan'"),
    ],
)
def test_bad_model_config(tmp_path, field, value, message):
    cfg = RunConfig()
    setattr(cfg.model, field, value)
    if field == "prior" and value == "flat":
        cfg.model.model = "cvae"
    with pytest.raises(ValueError, match=message):
        fit(cfg, tmp_path / "run", progress=False)


# every flow with every estimator is tested on the VAE (tests/test_elbos.py); here iaf stands for them
# in the default run, and the other flows run with the slow tests
CVAE_GUIDES = [
    g if g in ("diag", "diag-score", "fullcov", "iaf") else pytest.param(g, marks=pytest.mark.slow) for g in GUIDES
]


@pytest.mark.parametrize("guide", CVAE_GUIDES)
@pytest.mark.parametrize("name", list(ELBOS))
def test_every_pair_trains_or_raises(name, guide):
    """Each (estimator, guide) pair trains a tiny CVAE with a learned prior, or fails check_pair
    with the documented message (as for the VAE in test_elbos.py); a small step along the
    estimator's mean gradient lowers its own loss (``conftest.descends``)."""
    cvae = gaussian_cvae(16, 3, 3, (12,), guide=guide)
    x, y = torch.rand(8, 16), torch.arange(8) % 3
    if not fits(name, guide):
        with pytest.raises(ValueError, match=f"estimator '{name}' does not fit guide '{guide}'") as info:
            check_pair(name, guide, cvae.model, cvae.guide, x[:2], y[:2])
        assert "reparameterized" in str(info.value) or "closed-form KL" in str(info.value)
        return
    check_pair(name, guide, cvae.model, cvae.guide, x[:2], y[:2])
    particles = 3 if ELBOS[name].multi_particle else 1
    loss_before, loss_after = descends(
        lambda: build_elbo(name, particles), cvae.model, cvae.guide, list(cvae.parameters()), x, y
    )
    assert loss_after < loss_before
    before = [p.detach().clone() for p in cvae.parameters()]
    svi = SVI(cvae.model, cvae.guide, pyro.optim.Adam({"lr": 1e-2}), build_elbo(name, particles))
    losses = [svi.step(x, y) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    assert all(not torch.equal(b, p) for b, p in zip(before, cvae.parameters()))  # prior_net included


def test_class_log_likelihoods_and_generative_classification_are_exact_with_a_delta_guide():
    cvae = perturbed(gaussian_cvae(20, 4, 2, (8,)))
    cvae.encoder.head = DeltaHead(8, 2)
    x = torch.rand(7, 20)
    scores = class_log_likelihoods(cvae.model, cvae.guide, x, 4, num_samples=3, chunk_size=10)
    assert scores.shape == (7, 4)
    for k in range(4):
        expected = log_weights(cvae.model, cvae.guide, x, torch.full((7,), k), num_particles=1)[0]
        torch.testing.assert_close(scores[:, k], expected, rtol=1e-5, atol=1e-4)
    log_prior = torch.tensor([0.1, 0.2, 0.3, 0.4]).log()
    predicted, posterior = generative_classify(cvae.model, cvae.guide, x, 4, num_samples=2, log_prior_y=log_prior)
    torch.testing.assert_close(posterior, scores + log_prior, rtol=1e-5, atol=1e-4)
    assert torch.equal(predicted, (scores + log_prior).argmax(-1))


@pytest.mark.parametrize("prior", ["learned", "standard"])
def test_transfer_keeps_the_standardized_code(prior):
    """transfer(z, y, y') = μ_{y'} + σ_{y'} ε with ε = (z − μ_y)/σ_y: the same ε under both class
    priors, z itself for y' = y, and the identity under N(0, I)."""
    cvae = perturbed(gaussian_cvae(D, K, 5, (32,), prior=prior))
    z, y, y_new = torch.randn(12, 5), torch.arange(12) % K, (torch.arange(12) * 7 + 3) % K
    moved = cvae.transfer(z, y, y_new)
    loc, scale = cvae.prior_moments()
    torch.testing.assert_close((moved - loc[y_new]) / scale[y_new], (z - loc[y]) / scale[y])
    torch.testing.assert_close(cvae.transfer(z, y, y), z)
    if prior == "standard":
        assert torch.equal(moved, z)
    else:
        assert (moved - z).abs().max() > 0.1  # the perturbed class priors differ


def test_plots_of_a_conditional_model(tmp_path):
    cvae = perturbed(gaussian_cvae(D, K, 5, (32,)))
    x, y = torch.rand(12, D), torch.arange(12) % 10
    fig = plots.class_samples(cvae, (1, 28, 28), n=4, path=tmp_path / "c.png")
    assert fig.axes[0].images[0].get_array().shape[:2] == (10 * 29 + 1, 4 * 29 + 1)  # one row per class
    fig = plots.style_transfer(cvae, x[:3], y[:3], (1, 28, 28), path=tmp_path / "s.png")
    assert fig.axes[0].images[0].get_array().shape[:2] == (3 * 29 + 1, 11 * 29 + 1)  # input + 10 classes
    fig = plots.latent_scatter(cvae, x, y, path=tmp_path / "l.png", prior=True)
    assert len(fig.axes[0].patches) == 10 and fig.axes[0].get_xlabel() == "PC 1"  # one ellipse per class
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in ("c.png", "s.png", "l.png"))


def small_cvae_config(prior="learned", epochs=2) -> RunConfig:
    cfg = RunConfig()
    cfg.model.model, cfg.model.prior = "cvae", prior
    cfg.model.z_dim, cfg.model.hidden_dims = 8, (128,)
    cfg.train.epochs, cfg.train.eval_num_samples, cfg.train.device = epochs, 20, "cpu"
    return cfg


def test_cvae_trains_on_mnist_5k_and_classifies(tmp_path):
    """Ten epochs on MNIST-5k (about 12 s): the conditional ELBO rises and the generative
    classifier argmax_y log p̂(x|y), 10 importance samples per class, is far above chance
    (measured 0.73 on the 1,000 test digits, standard error 0.014; chance is 0.1)."""
    cfg = small_cvae_config(epochs=10)
    cfg.train.eval_num_samples = 100
    run = fit(cfg, tmp_path / "run", progress=False)
    rows, final = run.metrics["epochs"], run.metrics["final"]
    assert rows[-1]["test_elbo"] > rows[0]["test_elbo"] + 5
    assert final["conditional"] and final["prior"] == "learned" and final["classify_num_samples"] == 10
    assert final["generative_accuracy"] > 0.6
    # the judge: 0.975 on these 1,000 test digits (standard error 0.005); fidelity is a share of 10 × 200 samples
    assert final["judge_accuracy"] > 0.95 and final["fidelity_samples_per_class"] == 200
    assert len(final["label_fidelity_per_class"]) == 10
    assert final["label_fidelity"] == pytest.approx(sum(final["label_fidelity_per_class"]) / 10)
    assert final["label_fidelity"] > 0.3 and final["label_sensitivity"] > 0  # far above chance (0.1); y is read
    assert final["is_bpd"] == pytest.approx(-final["is_log_px"] / (784 * math.log(2)))
    for png in ("samples.png", "style_transfer.png", "latent.png", "reconstructions.png"):
        assert (tmp_path / "run" / png).read_bytes()[:4] == b"\x89PNG"
    loc, _ = run.vae.prior_moments()
    assert loc.abs().max() > 0.05  # the prior moved away from N(0, I)


def test_cvae_resume_equals_uninterrupted(tmp_path):
    full = fit(small_cvae_config(epochs=2), tmp_path / "full", progress=False)
    fit(small_cvae_config(epochs=1), tmp_path / "cut", progress=False)
    resumed = resume(tmp_path / "cut", epochs=2, progress=False)
    for (name, a), (_, b) in zip(full.vae.state_dict().items(), resumed.vae.state_dict().items()):
        assert torch.equal(a, b), name
    assert full.metrics["final"] == resumed.metrics["final"]


def test_svhn_trains_end_to_end_from_python(tmp_path):
    """The SVHN path on a tiny .mat file: conv networks, Gaussian likelihood, a CVAE."""
    write_svhn_folder(tmp_path / "svhn", n_train=24, n_test=10)
    cfg = RunConfig()
    cfg.data.dataset, cfg.data.data_dir = "svhn", str(tmp_path / "svhn")
    cfg.model.model, cfg.model.net, cfg.model.likelihood = "cvae", "conv", "gaussian"
    cfg.model.z_dim, cfg.model.hidden_dims = 4, (32,)
    cfg.train.epochs, cfg.train.eval_num_samples, cfg.train.batch_size = 2, 10, 8
    run = fit(cfg, tmp_path / "run", progress=False)
    assert run.data.image_shape == (3, 32, 32) and run.metrics["data"]["train_size"] == 24
    final = run.metrics["final"]
    assert math.isfinite(final["is_log_px"]) and 0 <= final["generative_accuracy"] <= 1
    assert final["is_bpd"] == pytest.approx(-final["is_log_px"] / (3072 * math.log(2)))
    assert run.vae.sample(2, 5).shape == (2, 3072)
    assert (tmp_path / "run" / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_mixture_prior_samples_scores_and_refuses_meanfield():
    """p(z|y) as a mixture per class: the model's z site has that log density (checked against
    the log-sum-exp of the weighted components), sampling and transfer work, and ``meanfield``
    is refused up front since torch has no closed-form KL to a mixture."""
    cvae = perturbed(CVAE(D, K, Z, (12,), prior="mixture", prior_components=4))
    x, y = torch.rand(B, D), torch.arange(B)
    model_tr, _ = traces(cvae.model, cvae.guide, x, y)
    z = model_tr.nodes["z"]["value"]
    p = cvae.prior_net
    comp = dist.Normal(p.loc[y], torch.nn.functional.softplus(p.raw_scale[y]) + 1e-4).log_prob(z.unsqueeze(1)).sum(-1)
    expected = torch.logsumexp(comp + torch.log_softmax(p.logits[y], -1), -1)  # (B,)
    torch.testing.assert_close(model_tr.nodes["z"]["fn"].log_prob(z), expected)
    assert cvae.sample(5, 3).shape == (5, D) and cvae.transfer(z, y, (y + 1) % K).shape == (B, Z)
    with pytest.raises(ValueError, match="estimator 'meanfield' does not fit guide 'diag'.*closed-form KL"):
        check_pair("meanfield", "diag", cvae.model, cvae.guide, x[:2], y[:2])


@pytest.mark.parametrize("net, shape", [("mlp", None), ("conv", (1, 28, 28))])
def test_design_options_shape_the_networks(net, shape):
    """y in every decoder layer and FiLM, q(z|x) without y, and a KL weight w that scales the z site by w."""
    cvae = CVAE(D, K, Z, (12,), net=net, image_shape=shape, decoder_y="film", encoder_cond=False, kl_weight=2.5)
    x, y = torch.rand(B, D), torch.arange(B)
    model_tr, guide_tr = traces(cvae.model, cvae.guide, x, y)
    assert model_tr.nodes["z"]["scale"] == 2.5 and guide_tr.nodes["z"]["scale"] == 2.5
    assert model_tr.nodes["x"]["fn"].batch_shape == (B,)
    assert cvae.decode(torch.zeros(B, Z), y).shape == (B, D)
    # the decoder reads y: the same z decodes differently under two labels
    assert not torch.allclose(cvae.decode(torch.zeros(B, Z), y), cvae.decode(torch.zeros(B, Z), (y + 1) % K))
    # q(z|x) does not read y
    torch.testing.assert_close(cvae.encode(x, y)[0], cvae.encode(x, (y + 1) % K)[0])
    with pytest.raises(ValueError, match="kl_weight must be positive, got 0"):
        CVAE(D, K, Z, (12,), kl_weight=0)


def test_new_runs_record_the_models_defaults_and_old_configs_keep_theirs(tmp_path):
    """A run records the options it was built with; a config.json written before they existed
    (None) rebuilds what such runs had: one Gaussian per class, w = 1, y at the decoder's input."""
    from pyro_vae.models.registry import get_model
    from pyro_vae.training.train import recorded_config, resolve_defaults

    cfg = RunConfig()
    cfg.model.model = "cvae"
    resolved = resolve_defaults(cfg).model
    assert (resolved.prior, resolved.prior_components, resolved.kl_weight, resolved.decoder_y) == (
        "mixture",
        30,
        2.5,
        "film",
    )
    assert resolve_defaults(cfg).train.epochs == 300
    built = get_model("cvae").from_config(resolved, (1, 28, 28), 10)
    assert built.prior_name == "mixture" and built.kl_weight == 2.5 and len(built.decoder.films) == 1
    cfg.model.prior = "standard"  # a chosen prior is kept, components only go with a mixture, w is 2.75
    standard = resolve_defaults(cfg).model
    assert (standard.prior, standard.prior_components, standard.kl_weight) == ("standard", None, 2.75)
    assert get_model("cvae").from_config(cfg.model, (1, 28, 28), 10).kl_weight == 2.75
    cfg_path = tmp_path / "old" / "config.json"
    RunConfig.from_dict({"model": {"model": "cvae"}}).save(cfg_path)  # written before the options existed
    old = get_model("cvae").from_config(recorded_config(cfg_path).model, (1, 28, 28), 10)
    assert old.prior_name == "learned" and old.kl_weight == 1.0 and not old.decoder.every_layer
    ssvae = resolve_defaults(RunConfig.from_dict({"model": {"model": "ssvae"}})).model
    assert (ssvae.kl_weight, ssvae.decoder_y, ssvae.prior, ssvae.prior_components) == (4.0, "input", None, None)
    RunConfig.from_dict({"model": {"model": "ssvae"}}).save(cfg_path)
    old_m2 = get_model("ssvae").from_config(recorded_config(cfg_path).model, (1, 28, 28), 10)
    assert old_m2.kl_weight == 4.0 and not old_m2.decoder.every_layer

    run = fit(small_cvae_config(prior="standard", epochs=1), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["prior"], saved["kl_weight"], saved["decoder_y"], saved["prior_components"]) == (
        "standard",
        2.75,
        "film",
        None,
    )
    assert run.vae.kl_weight == 2.75
