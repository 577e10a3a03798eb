"""One model layer: every model has the same signature and owns its build, batches and metrics;
the registry builds them by name; FiLM conditioning; a CVAE's marginal prior."""

import ast
import math
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae.config import ModelConfig, RunConfig, options_of
from pyro_vae.errors import ConfigError, LabelError, RegistryError
from pyro_vae.models.nets import FiLM, get_net
from pyro_vae.models.registry import MODELS, check_config, get_model, register_model
from pyro_vae.models.ssvae import SSVAE
from pyro_vae.models.vae import VAE

D, Z, K, B = 784, 3, 10, 6


def built(name: str, **options):
    """The model ``name`` with the options given and the model's defaults for the rest."""
    m = ModelConfig(model=name, z_dim=Z, hidden_dims=(16,), **options)
    return get_model(name).from_config(m, (1, 28, 28), K)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_has_one_signature(name):
    """model/guide(x, y=None) where the model allows it; encode, decode, reconstruct, sample and
    prior take an optional label and give the same shapes for every model."""
    model = built(name)
    x, y = torch.rand(B, D), torch.arange(B) % K
    model.model(x, y)
    model.guide(x, y)
    loc, scale = model.encode(x, y)
    assert loc.shape == scale.shape == (B, Z)
    assert model.decode(loc, y).shape == model.reconstruct(x, y).shape == (B, D)
    assert model.sample(4).shape == (4, D)
    assert model.prior().event_shape == (Z,)
    assert model.evaluation_args(x, y)[0] is x


@pytest.mark.parametrize("name", ["cvae", "ssvae"])
def test_conditional_models_draw_the_label_from_p_y_when_none_is_given(name):
    """sample(n) with y=None is ancestral sampling from p(y) p(z|y) p(x|z, y), p(y) uniform: with
    the same seed it equals sample(n, y) for the labels drawn first."""
    model = built(name)
    torch.manual_seed(0)
    free = model.sample(50)
    torch.manual_seed(0)
    y = torch.randint(K, (50,))
    torch.testing.assert_close(free, model.sample(50, y))


def test_a_vae_takes_no_label_and_a_conditional_model_checks_it():
    with pytest.raises(LabelError, match=r"a VAE draws from p\(z\) and takes no label"):
        built("vae").sample(2, 3)
    with pytest.raises(LabelError, match=r"must be a class in 0..9 \(10 classes\), got 10"):
        built("cvae").check_label(10)
    with pytest.raises(LabelError, match="needs labels y"):
        built("cvae").encode(torch.rand(2, D))
    # M2 reads a missing label from q(y|x)
    m2 = built("ssvae")
    x = torch.rand(B, D)
    torch.testing.assert_close(m2.encode(x)[0], m2.encode(x, m2.classify(x))[0])


@pytest.mark.parametrize("prior", ["mixture", "learned", "standard"])
def test_the_cvae_marginal_prior_is_the_average_over_classes(prior):
    """prior() = Σ_y p(y) p(z|y) with uniform p(y): its log density is logsumexp_y log p(z|y) − log K."""
    cvae = built("cvae", prior=prior, prior_components=3 if prior == "mixture" else None)
    with torch.no_grad():
        for p in cvae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(7, Z)
    per_class = torch.stack([cvae.prior(torch.full((7,), k)).log_prob(z) for k in range(K)])  # (K, 7)
    torch.testing.assert_close(cvae.prior().log_prob(z), per_class.logsumexp(0) - math.log(K))


def test_the_registry_builds_by_keyword_and_records_the_models_options():
    assert set(MODELS) >= {"vae", "cvae", "ssvae"}
    assert isinstance(built("vae"), VAE) and isinstance(built("ssvae"), SSVAE)
    cvae = built("cvae", prior="standard", kl_weight=3.0, decoder_y="input")
    assert (cvae.prior_name, cvae.kl_weight, cvae.decoder.every_layer) == ("standard", 3.0, False)
    assert built("cvae").decoder.every_layer and len(built("cvae").decoder.films) == 1
    with pytest.raises(ValueError, match="unknown model 'gan'; choose one of vae, cvae, ssvae"):
        get_model("gan")


def test_options_apply_only_to_the_models_that_declare_them():
    cfg = RunConfig()
    cfg.model.kl_weight = 2.0
    with pytest.raises(ConfigError, match="kl_weight applies to the models cvae, ssvae only, got kl_weight=2.0"):
        check_config(cfg)
    cfg.model.model = "ssvae"
    check_config(cfg)
    cfg.model.prior = "standard"
    with pytest.raises(ConfigError, match="prior applies to the models vae, cvae only, got prior='standard' with mod"):
        check_config(cfg)


def test_a_registered_model_trains_through_fit(tmp_path):
    """A model class of one's own, registered by name, trains, evaluates and plots through the same
    loop: the loop asks the class, not the name."""
    from pyro_vae.data.load import load_dataset
    from pyro_vae.training.train import fit

    class WideVAE(VAE):
        default_epochs = 1

    register_model("wide-vae", WideVAE)
    try:
        cfg = RunConfig()
        cfg.model.model, cfg.model.z_dim, cfg.model.hidden_dims = "wide-vae", 2, (16,)
        cfg.train.eval_num_samples, cfg.train.device = 4, "cpu"
        data = load_dataset("mnist-5k").subset(64, 32)
        run = fit(cfg, tmp_path / "run", progress=False, data=data)
        assert isinstance(run.vae, WideVAE) and len(run.metrics["epochs"]) == 1
        assert (tmp_path / "run" / "manifold.png").is_file()  # z_dim = 2: a VAE's run plots
    finally:
        del MODELS["wide-vae"]
    with pytest.raises(RegistryError, match="subclass of pyro_vae.models.base.BaseVAE"):
        register_model("bad", object)


@pytest.mark.parametrize("net, shape", [("mlp", (1, 28, 28)), ("conv", (1, 28, 28)), ("conv", (3, 32, 32))])
def test_film_starts_as_every_layer_and_then_scales_per_class(net, shape):
    """With zero FiLM weights a film decoder computes what an every-layer one with the same weights
    does; a per-class scale then changes only that class's output."""
    torch.manual_seed(0)
    d = math.prod(shape)
    film = get_net(net).decoder(Z, shape, (16,), 1, K, "film")
    every = get_net(net).decoder(Z, shape, (16,), 1, K, "every-layer")
    every.load_state_dict({k: v for k, v in film.state_dict().items() if "films" not in k})
    z, c = torch.randn(B, Z), torch.nn.functional.one_hot(torch.arange(B) % K, K).float()
    torch.testing.assert_close(film(z, c), every(z, c))
    assert film(z, c).shape == (B, d)
    with torch.no_grad():
        film.films[0].net.weight[:, 0] = 1.0  # class 0 scales and shifts its first hidden layer
    moved = (film(z, c) - every(z, c)).abs().amax(-1)  # (B,)
    assert moved[0] > 0 and torch.all(moved[1:] == 0)


def test_film_layer_formula():
    f = FiLM(2, 3)
    with torch.no_grad():
        f.net.weight.copy_(torch.arange(12.0).reshape(6, 2))
    h, c = torch.ones(3), torch.tensor([0.0, 1.0])
    gamma, beta = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([7.0, 9.0, 11.0])
    torch.testing.assert_close(f(h, c), h * (1 + gamma) + beta)


def test_guides_write_the_latent_site_in_the_model_file():
    """The guide's "z" site is drawn in the model's own guide, in plate "data", β·w-scaled, with
    the head's distribution; the encoder returns that distribution and writes no site."""
    cvae = built("cvae")
    x, y = torch.rand(B, D), torch.arange(B) % K
    tr = poutine.trace(cvae.guide).get_trace(x, y)
    assert tr.nodes["z"]["scale"] == 2.5 and [f.name for f in tr.nodes["z"]["cond_indep_stack"]] == ["data"]
    assert list(poutine.trace(cvae.encoder).get_trace(x, torch.zeros(B, K)).nodes) == ["_INPUT", "_RETURN"]
    pyro.clear_param_store()


def _model_names() -> set[str]:
    """The names a caller could branch on: registered models and the priors' choices."""
    prior = next(o for o in options_of(ModelConfig) if o.name == "prior")
    return set(MODELS) | set(prior.choices())


def _asking(source: str, names: set[str], allowed: set[int] = frozenset()) -> list[int]:
    """Lines of ``source`` with a string literal equal to one of ``names`` (docstrings aside) or
    an attribute ``.conditional``."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in names and node.lineno not in allowed:
                lines.add(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "conditional":
            lines.add(node.lineno)
    return sorted(lines)


def test_callers_never_ask_which_model_they_hold():
    """Outside ``pyro_vae/models/`` no string literal names a registered model or prior, and no
    code asks a ``conditional`` flag: what differs is asked of the model class. The one literal
    allowed is the default of ``--model`` in ``config.py``."""
    import pyro_vae

    package = Path(pyro_vae.__file__).parent
    names = _model_names()
    config_source = (package / "config.py").read_text()
    default_line = next(
        i for i, line in enumerate(config_source.splitlines(), 1) if line.strip() == f'"{ModelConfig().model}",'
    )
    offenders = [
        f"{path.relative_to(package.parent)}:{line}"
        for path in sorted(package.rglob("*.py"))
        if "models" not in path.relative_to(package).parts
        for line in _asking(path.read_text(), names, {default_line} if path.name == "config.py" else set())
    ]
    assert not offenders, offenders


def test_the_guard_sees_a_branch_on_a_model_name():
    source = (
        'def f(config):\n    """The cvae."""\n'
        '    if config.model.model == "cvae":\n        return config.prior in ("mixture",)\n'
    )
    assert _asking(source, _model_names()) == [3, 4]
    assert _asking("x = run.vae.conditional\n", _model_names()) == [1]


def test_option_help_names_no_model_and_the_cli_takes_its_choices_from_the_registries():
    """Help texts of the config fields are the models' business (``option_note`` adds them), and a
    newly registered model, guide or estimator is a ``--help`` choice at once."""
    import re

    from pyro_vae.cli import build_parser
    from pyro_vae.config import DataConfig, TrainConfig
    from pyro_vae.inference.guides import GUIDES

    words = re.compile(r"\b(" + "|".join(sorted(MODELS)) + r")\b")
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for opt in options_of(cls):
            assert not words.search(opt.meta["help"]), (opt.name, opt.meta["help"])

    class Mine(VAE):
        pass

    register_model("mine", Mine)
    try:
        train = next(
            a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.dest == "model"
        )
        assert list(train.choices) == list(MODELS)
        guide = next(
            a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.dest == "guide"
        )
        assert list(guide.choices) == list(GUIDES)
        kl = next(
            a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if a.dest == "kl_weight"
        )
        assert kl.help == (
            "weight w of the KL term of z in the training loss (--model cvae, ssvae; default cvae 2.5 "
            "(2.75 with --prior standard), ssvae 4)"
        )
    finally:
        del MODELS["mine"]
