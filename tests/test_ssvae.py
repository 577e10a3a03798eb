"""M2: enumeration of y against the explicit sum, the labelled/unlabelled weighting, the
labelled subset, the baseline classifier, and a semi-supervised run on MNIST-5k."""

import json
import math
import warnings

import pyro
import pytest
import torch
from conftest import DeltaHead
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_vae.config import RunConfig
from pyro_vae.data.load import load_dataset
from pyro_vae.errors import ConfigError, IncompatibleEstimator
from pyro_vae.experiments.class_weight import fit_with_selection, select_class_weight, validation_split
from pyro_vae.experiments.draws import mean_interval
from pyro_vae.inference.elbos import accepted_estimators, build_elbo, check_estimator
from pyro_vae.inference.evaluate import importance_log_px, log_weights
from pyro_vae.inference.labels import class_log_likelihoods
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.ssvae import (
    SSVAE,
    accuracy,
    labelled_subset,
    predict_with,
    semi_supervised_batches,
    train_classifier,
)
from pyro_vae.models.vae import VAE
from pyro_vae.training.train import fit, resolve_defaults, resume

D, C, Z = 12, 3, 2


@pytest.fixture
def tiny():
    torch.set_default_dtype(torch.float64)
    model = SSVAE(D, C, Z, (8,), aux_weight=0.0, kl_weight=1.0)
    model.encoder.head = DeltaHead(8, Z)
    yield model
    torch.set_default_dtype(torch.float32)


def test_enumerating_y_equals_the_explicit_sum_over_y(tiny):
    """TraceEnum_ELBO's unlabelled loss −U(x) = −Σ_x [Σ_y q(y|x) L(x, y) + H(q(y|x))], where L(x, y)
    is the labelled ELBO of the model conditioned on y (from a plain trace, y observed); with a
    deterministic q(z|x, y) both sides are exact, so they agree to float64 round-off, and so do
    their gradients."""
    x = torch.rand(5, D)
    params = list(tiny.parameters())

    enum_loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(tiny.model, tiny.guide, x)
    enum_grads = torch.autograd.grad(enum_loss, params, allow_unused=True)

    q = torch.softmax(tiny.classifier(x), -1)  # (5, C)
    labelled = torch.stack(
        [log_weights(tiny.model, tiny.guide, x, torch.full((5,), k), num_particles=1)[0] for k in range(C)], -1
    )  # L(x, y=k): (5, C)
    explicit = -((q * labelled).sum(-1) - (q * q.log()).sum(-1)).sum()
    explicit_grads = torch.autograd.grad(explicit, params, allow_unused=True)

    assert enum_loss.item() == pytest.approx(explicit.item(), rel=1e-12)
    for a, b in zip(enum_grads, explicit_grads):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_labelled_loss_is_the_conditional_elbo(tiny):
    """With y given nothing is enumerated: TraceEnum_ELBO gives Trace_ELBO's loss, which is −L
    (α = 0 here: no auxiliary site)."""
    x, y = torch.rand(5, D), torch.tensor([0, 1, 2, 2, 0])
    enum = TraceEnum_ELBO(max_plate_nesting=1).loss(tiny.model, tiny.guide, x, y)
    trace = Trace_ELBO().loss(tiny.model, tiny.guide, x, y)
    exact = -log_weights(tiny.model, tiny.guide, x, y, num_particles=1).sum()
    assert enum == pytest.approx(trace, rel=1e-12) and trace == pytest.approx(exact.item(), rel=1e-12)


def test_the_auxiliary_site_is_scaled_by_exactly_alpha(tiny):
    """The model observes a label twice: at "y" under p(y), and at "y_aux" ~ q(y|x) inside
    ``poutine.scale(α)``; its scaled log density is α Σ log q(y|x). Without labels there is no
    auxiliary site, and α = 0 drops it."""
    tiny.aux_weight = 0.37
    x, y = torch.rand(5, D), torch.tensor([0, 1, 2, 2, 0])
    tr = pyro.poutine.trace(tiny.model).get_trace(x, y)
    site = tr.nodes["y_aux"]
    assert site["is_observed"] and site["scale"] == 0.37 and tr.nodes["y"]["scale"] == 1.0
    log_q = torch.log_softmax(tiny.classifier(x), -1).gather(1, y.unsqueeze(1)).sum()
    tr.compute_log_prob()
    torch.testing.assert_close(site["log_prob_sum"], 0.37 * log_q)
    with pyro.poutine.scale(scale=2.0):  # an outer scale (the labelled batch's weight) multiplies in
        assert pyro.poutine.trace(tiny.model).get_trace(x, y).nodes["y_aux"]["scale"] == 0.74
    assert "y_aux" not in pyro.poutine.trace(tiny.model).get_trace(x).nodes
    tiny.aux_weight = 0.0
    assert "y_aux" not in pyro.poutine.trace(tiny.model).get_trace(x, y).nodes


def test_generative_classification_scores_p_x_given_y_without_the_auxiliary_site(tiny):
    """The model's own posterior p(y|x) ∝ p(y) p(x|y): with a deterministic q(z|x, y) each class
    score is exactly L(x, y) of the model without "y_aux" (α = 0), whatever α is, while the model
    with the site adds log q(y|x) (metrics read unscaled densities), q's own vote. ``extra_metrics`` reports the
    accuracy of that argmax with K/10 samples per class."""
    x, y = torch.rand(7, D), torch.tensor([0, 1, 2, 2, 0, 1, 2])
    exact = torch.stack(
        [log_weights(tiny.model, tiny.guide, x, torch.full((7,), k), num_particles=1)[0] for k in range(C)], -1
    )  # (7, C), α = 0
    tiny.aux_weight = 1e4
    scores = class_log_likelihoods(tiny.generative_model, tiny.guide, x, C, num_samples=3)
    torch.testing.assert_close(scores, exact)
    with_site = class_log_likelihoods(tiny.model, tiny.guide, x, C, num_samples=3)
    log_q = torch.log_softmax(tiny.classifier(x), -1)
    torch.testing.assert_close(with_site, exact + log_q)
    metrics = tiny.extra_metrics(x, y, num_samples=30)
    assert metrics["classify_num_samples"] == 3
    assert metrics["generative_accuracy"] == pytest.approx((exact.argmax(-1) == y).double().mean().item())
    assert metrics["accuracy"] == pytest.approx((log_q.argmax(-1) == y).double().mean().item())


def test_m2_objective_equals_the_explicit_sum_with_the_classification_term(tiny):
    """One training step, :meth:`SSVAE.loss_and_grads` with the ``enum`` estimator, on an unlabelled
    batch and a labelled batch of weight s, equals the explicit

        Σ_u −[Σ_y q(y|x) L(x, y) + H(q(y|x))] + s Σ_l [−L(x, y) + α (−log q(y|x))],

    loss and gradients, to float64 round-off (a deterministic q(z|x, y) makes every term exact);
    all gradients come from the estimator's backward passes."""
    alpha, s = 2.5, 0.3
    tiny.aux_weight = alpha
    x_u, x_l, y_l = torch.rand(5, D), torch.rand(4, D), torch.tensor([2, 0, 1, 1])
    params = list(tiny.parameters())
    loss = tiny.loss_and_grads(build_elbo("enum"), x_u, x_l, y_l, s)
    grads = [p.grad.clone() if p.grad is not None else None for p in params]
    for p in params:
        p.grad = None

    q = torch.softmax(tiny.classifier(x_u), -1)  # (5, C)
    tiny.aux_weight = 0.0  # L(x, y) alone, from plain traces with y observed
    unlabelled = torch.stack(
        [log_weights(tiny.model, tiny.guide, x_u, torch.full((5,), k), num_particles=1)[0] for k in range(C)], -1
    )  # (5, C)
    labelled = log_weights(tiny.model, tiny.guide, x_l, y_l, num_particles=1)[0]  # (4,)
    cross_entropy = torch.nn.functional.cross_entropy(tiny.classifier(x_l), y_l, reduction="sum")
    explicit = -((q * unlabelled).sum(-1) - (q * q.log()).sum(-1)).sum() + s * (-labelled.sum() + alpha * cross_entropy)
    explicit_grads = torch.autograd.grad(explicit, params, allow_unused=True)

    assert loss == pytest.approx(explicit.item(), rel=1e-12)
    for a, b in zip(grads, explicit_grads):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_models_declare_their_estimators():
    assert accepted_estimators(SSVAE) == ("enum", "tracegraph") and SSVAE.default_estimator == "enum"
    assert "enum" not in accepted_estimators(VAE) and "trace" in accepted_estimators(CVAE)
    check_estimator(SSVAE(D, C, Z, (8,)), "enum")
    with pytest.raises(
        IncompatibleEstimator, match="^model SSVAE does not accept estimator 'trace'; use --elbo enum or tracegraph$"
    ):
        check_estimator(SSVAE, "trace")
    with pytest.raises(IncompatibleEstimator, match="model VAE does not accept estimator 'enum'; use --elbo trace or"):
        check_estimator(VAE(D, 2, (8,)), "enum")
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        check_estimator(VAE, "nope")


def test_enumeration_with_vectorized_particles_and_a_real_guide():
    """K vectorized particles, diag q(z|x, y): the enumerated loss averages K one-particle losses,
    E over z of the same sum; 400 draws of each give standard errors of ~0.05, assert within 5 of them."""
    model = SSVAE(D, C, Z, (8,))
    x = torch.rand(4, D)
    one = torch.tensor([TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x) for _ in range(400)])
    many = TraceEnum_ELBO(max_plate_nesting=1, num_particles=400, vectorize_particles=True)
    loss = many.loss(model.model, model.guide, x)
    se = one.std() / math.sqrt(400)
    assert abs(loss - one.mean()) < 5 * math.sqrt(2) * se


def test_importance_log_px_samples_y_from_the_classifier():
    """A plain trace samples y ~ q(y|x): the IS estimate is a valid bound that rises with K."""
    model = SSVAE(D, C, Z, (8,))
    x = torch.rand(6, D)
    pyro.set_rng_seed(0)
    k1 = torch.stack([importance_log_px(model.model, model.guide, x, num_samples=1) for _ in range(50)]).mean()
    k100 = importance_log_px(model.model, model.guide, x, num_samples=500).mean()
    assert k100 > k1


def test_semi_supervised_batches_cover_and_weight():
    """Every unlabelled image once per epoch, labelled images never among them, and the labelled
    weights sum to one per labelled image over an epoch: Σ scale·B_l = N_l. With ``class_weight``
    α' (Kingma et al.'s weight of the mean cross-entropy), each tuple carries α = α'·N/N_l."""
    n, alpha = 103, 0.7
    x, y = torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n) % 10
    labelled = torch.tensor([3, 17, 40, 41, 77])
    seen, labelled_mass = [], 0.0
    for x_u, x_l, y_l, scale in semi_supervised_batches(x, y, labelled, 16):
        seen += x_u.squeeze(1).long().tolist()
        assert set(x_l.squeeze(1).long().tolist()) <= set(labelled.tolist()) and len(x_l) == 5
        assert torch.equal(y_l, x_l.squeeze(1).long() % 10)
        labelled_mass += scale * len(x_l)
    assert sorted(seen) == sorted(set(range(n)) - set(labelled.tolist()))
    assert labelled_mass == pytest.approx(len(labelled))
    assert all(t[4] == pytest.approx(alpha * n / 5) for t in semi_supervised_batches(x, y, labelled, 16, alpha))
    # all labelled: labelled batches, weight 1
    everything = torch.arange(n)
    steps = list(semi_supervised_batches(x, y, everything, 50))
    assert [len(s[1]) for s in steps] == [50, 50, 3] and all(s[3] == 1.0 for s in steps)
    assert all(len(s[0]) == 0 for s in steps)


def test_labelled_subset_is_balanced_fixed_and_checked():
    y = torch.arange(1000) % 10
    a, b = labelled_subset(y, 100, 10), labelled_subset(y, 100, 10)
    assert torch.equal(a, b) and len(a.unique()) == 100
    assert torch.bincount(y[a], minlength=10).tolist() == [10] * 10
    assert torch.bincount(y[labelled_subset(y, 23, 10)], minlength=10).tolist() == [3, 3, 3] + [2] * 7
    with pytest.raises(ValueError, match=r"labels must be at least the number of classes \(10\) .* got 5"):
        labelled_subset(y, 5, 10)
    with pytest.raises(ValueError, match=r"labels must be at most the number of training images \(1000\), got 2000"):
        labelled_subset(y, 2000, 10)
    with pytest.raises(ValueError, match="class 9 has 0 training images, fewer than the 2 labels it needs"):
        labelled_subset(y % 9, 20, 10)
    unbalanced = torch.cat([torch.zeros(7, dtype=torch.int64), torch.arange(1, 10)])  # class 0: 7 images, others 1
    assert torch.equal(labelled_subset(unbalanced, 16, 10), torch.arange(16))  # all labels: every image


def test_ssvae_without_labels_keeps_them_all(tmp_path):
    """The default (no --labels) is fully supervised: MNIST-5k's classes are unequal (class 1 has
    396 of 4,000), so 'all labels' must not mean '400 per class'; no unlabelled batch remains."""
    cfg = small_ssvae_config(epochs=1)
    cfg.data.labels = None
    run = fit(cfg, tmp_path / "run", progress=False)
    final = run.metrics["final"]
    assert final["labels"] == 4000 and run.metrics["epochs"][0]["steps"] == math.ceil(4000 / 128)
    assert final["accuracy"] > 0.5


def test_baseline_classifier_learns_a_separable_problem():
    """Two Gaussian blobs 6 sd apart: a trained classifier is right on > 99% (the Bayes error is 0.1%)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 2
    x = torch.randn(400, 8, generator=g) + 3.0 * (2 * y - 1).unsqueeze(1).float() / math.sqrt(8) * 2
    clf = train_classifier(x[:200], y[:200], image_shape=(8,), num_classes=2, hidden_dims=(16,), steps=300)
    assert accuracy(predict_with(clf), x[200:], y[200:]) > 0.99
    with pytest.raises(ValueError, match="classifier labels must lie in 0..1"):
        train_classifier(x, y + 1, image_shape=(8,), num_classes=2)


def small_ssvae_config(labels=100, epochs=2) -> RunConfig:
    cfg = RunConfig()
    cfg.model.model, cfg.data.labels = "ssvae", labels
    cfg.model.z_dim, cfg.model.hidden_dims = 8, (128,)
    cfg.train.epochs, cfg.train.eval_num_samples, cfg.train.device = epochs, 10, "cpu"
    return cfg


def test_ssvae_run_on_mnist_5k_reports_accuracy_and_baseline(tmp_path):
    """Three epochs with 100 labels: q(y|x) is far above chance (measured 0.43 with the default KL
    weight 4, which learns more slowly at first, 0.68 at weight 1; chance 0.1), and the baseline
    trained on the same 100 labels for the same number of steps is reported next to it. The
    model's own posterior p(y|x) is above chance too (measured 0.23 with one importance sample per
    class; a chance classifier reads 0.10 ± 0.01 on the 1,000 test digits)."""
    run = fit(small_ssvae_config(epochs=3), tmp_path / "run", progress=False)
    final, rows = run.metrics["final"], run.metrics["epochs"]
    assert final["labels"] == 100 and final["baseline_steps"] == sum(r["steps"] for r in rows) == 3 * 31
    assert final["accuracy"] > 0.3 and final["baseline_accuracy"] > 0.5
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows) and math.isfinite(final["is_log_px"])
    assert final["accuracy"] == pytest.approx(rows[-1]["test_accuracy"])
    assert final["classify_num_samples"] == 1 and final["generative_accuracy"] > 0.15
    assert (tmp_path / "run" / "samples.png").is_file() and (tmp_path / "run" / "style_transfer.png").is_file()


def test_ssvae_resume_equals_uninterrupted(tmp_path):
    full = fit(small_ssvae_config(epochs=2), tmp_path / "full", progress=False)
    fit(small_ssvae_config(epochs=1), tmp_path / "cut", progress=False)
    resumed = resume(tmp_path / "cut", epochs=2, progress=False)
    for (name, a), (_, b) in zip(full.vae.state_dict().items(), resumed.vae.state_dict().items()):
        assert torch.equal(a, b), name
    assert full.metrics["final"] == resumed.metrics["final"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": 5}, r"labels must be at least the number of classes \(10\) so that every class keeps a label"),
        ({"labels": 4001}, r"labels must be at most the number of training images \(4000\), got 4001"),
        ({"elbo": "iwae"}, "model SSVAE does not accept estimator 'iwae'; use --elbo enum"),
        ({"elbo": "trace"}, "model SSVAE does not accept estimator 'trace'; use --elbo enum"),
        ({"model": "vae"}, "labels applies to model 'ssvae' only, got .* drop it or use model 'ssvae'"),
        ({"prior": "learned"}, "prior applies to the models vae, cvae only, got .* with model 'ssvae'"),
    ],
)
def test_bad_ssvae_config(tmp_path, change, message):
    cfg = small_ssvae_config()
    for key, value in change.items():
        section = cfg.data if key == "labels" else cfg.train if key == "elbo" else cfg.model
        setattr(section, key, value)
    with pytest.raises(ValueError, match=message):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_validation_split_and_mean_interval():
    train, val = validation_split(100, 20)
    assert len(val) == 20 and sorted(torch.cat([train, val]).tolist()) == list(range(100))
    assert torch.equal(val, validation_split(100, 20)[1])  # fixed seed
    with pytest.raises(ValueError, match="validation size must be between 1 and 99"):
        validation_split(100, 100)
    # five draws 0.90..0.94: mean 0.92, sd 0.0158, t(4) = 2.776, half-width 0.0196
    mean, half = mean_interval([0.90, 0.91, 0.92, 0.93, 0.94])
    assert mean == pytest.approx(0.92) and half == pytest.approx(2.7764 * 0.015811 / math.sqrt(5), rel=1e-3)
    assert math.isnan(mean_interval([0.5])[1])


def test_the_recorded_estimator_is_the_one_that_ran(tmp_path):
    """A new M2 run records ``enum``; a config.json from before the ``enum`` estimator existed, which
    names ``trace`` for the TraceEnum_ELBO it ran, is read as ``enum``."""
    from pyro_vae.training.train import recorded_config

    cfg = small_ssvae_config()
    cfg.train.epochs = 1
    run = fit(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["elbo"] == "enum" and run.config.train.elbo == "enum"
    saved["train"]["elbo"] = "trace"
    (tmp_path / "old.json").write_text(json.dumps(saved))
    assert recorded_config(tmp_path / "old.json").train.elbo == "enum"
    vae = RunConfig.from_dict({"train": {"elbo": "trace"}})
    (tmp_path / "vae.json").write_text(json.dumps(vae.to_dict()))
    assert recorded_config(tmp_path / "vae.json").train.elbo == "trace"  # a VAE's trace stays trace


def test_class_weight_is_chosen_on_a_validation_split_and_recorded(tmp_path):
    """--class-weight-grid: one run per value on the training images without a tenth of them, scored by
    q(y|x) on that tenth (the test set is never read); the best value is recorded in config.json and
    trains the run, which equals a run given that value directly. A rerun reads the finished
    selection runs instead of training them again."""
    data = load_dataset("mnist-5k").subset(600, 100)
    cfg = small_ssvae_config(labels=50, epochs=1)
    cfg.train.fidelity_samples, cfg.train.class_weight_grid = 0, (0.0, 20.0)
    with pytest.raises(ConfigError, match="class_weight_grid is chosen on a validation split by pyro_vae.experiments"):
        fit(cfg, tmp_path / "refused", progress=False, data=data)  # training alone does not select
    assert not (tmp_path / "refused").exists()
    run = fit_with_selection(cfg, tmp_path / "run", progress=False, data=data)
    selection = run.metrics["class_weight_selection"]
    assert selection["validation_size"] == 60 and set(selection["accuracy"]) == {"0", "20"}
    chosen = max((0.0, 20.0), key=lambda w: selection["accuracy"][f"{w:g}"])
    assert selection["chosen"] == chosen == run.config.train.class_weight
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["class_weight"] == chosen and saved["class_weight_grid"] == [0.0, 20.0]
    for w in ("0", "20"):
        sub = json.loads(
            (tmp_path / "run" / "class-weight-selection" / f"class-weight-{w}" / "metrics.json").read_text()
        )
        assert (sub["data"]["train_size"], sub["data"]["test_size"]) == (540, 60)
        assert sub["final"]["accuracy"] == selection["accuracy"][w]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["class_weight_selection"] == selection
    direct = small_ssvae_config(labels=50, epochs=1)
    direct.train.fidelity_samples, direct.train.class_weight = 0, chosen
    plain = fit(direct, tmp_path / "direct", progress=False, data=data)
    assert plain.metrics["final"]["accuracy"] == run.metrics["final"]["accuracy"]
    checkpoint = tmp_path / "run" / "class-weight-selection" / "class-weight-0" / "checkpoint.pt"
    mtime = checkpoint.stat().st_mtime_ns
    again = resolve_defaults(cfg)  # as a run restarted before its first checkpoint tunes again
    assert select_class_weight(again, data, tmp_path / "run") == {"class_weight_selection": selection}
    assert again.train.class_weight == chosen and checkpoint.stat().st_mtime_ns == mtime


def test_y_sampled_instead_of_enumerated_with_tracegraph(tiny):
    """The "y sampled" ablation: under ``tracegraph`` the guide draws one y per unlabelled image from
    q(y|x) (with a baseline, no enumeration) and the loss is a one-sample estimate of −U(x), whose
    mean over many draws is the enumerated loss; the guide marks y for enumeration again afterwards."""
    model = tiny
    x_u = torch.rand(3, D)
    enumerated = TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x_u)
    elbo = build_elbo("tracegraph")
    model.enumerate_y = False
    trace = poutine.trace(model.guide).get_trace(x_u)
    assert trace.nodes["y"]["value"].shape == (3,) and "enumerate" not in trace.nodes["y"]["infer"]
    model.enumerate_y = True
    pyro.set_rng_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "you need to use TraceEnum_ELBO" warning
        losses = torch.tensor(
            [model.loss_and_grads(elbo, x_u, x_u[:0], torch.zeros(0, dtype=torch.long), 1.0) for _ in range(400)]
        )
    assert model.enumerate_y
    assert abs(losses.mean() - enumerated) < 4 * losses.std() / math.sqrt(len(losses))
