"""``--compile``: which networks are compiled, every guide × estimator pair trains compiled, resume,
checkpoints without ``_orig_mod.``, the fallback notice, and ``--jit`` without its deprecation warning.

The default tests compile with the ``aot_eager`` backend: dynamo captures the networks and AOTAutograd
their backward, as with inductor, but the captured graphs run as eager torch ops (seconds per pair,
where inductor takes tens of seconds on CPU), so the compiled step must equal the eager one exactly.
The ``slow`` tests use the default backend (inductor).
"""

import warnings

import pyro
import pytest
import torch
from conftest import fits, write_idx_folder

from pyro_vae.cli import main
from pyro_vae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyro_vae.errors import ConfigError
from pyro_vae.inference.elbos import ELBOS, build_elbo, check_pair
from pyro_vae.inference.guides import GUIDES
from pyro_vae.models.registry import build_model
from pyro_vae.training import compiling
from pyro_vae.training.compiling import compile_networks, networks
from pyro_vae.training.train import fit, load_run, make_optimizer, resume, train_step

PAIRS = [(g, e) for g in GUIDES for e in ELBOS if e != "enum" and fits(e, g)]
# every guide and every estimator at least once; the other pairs run under -m slow
REPRESENTATIVE = [
    ("diag", "trace"),
    ("diag", "renyi"),
    ("diag-score", "tracegraph"),
    ("fullcov", "meanfield"),
    ("fullcov", "iwae"),
    ("iaf", "stl"),
    ("iaf", "dreg"),
]
PAIR_PARAMS = [p if p in REPRESENTATIVE else pytest.param(*p, marks=pytest.mark.slow) for p in PAIRS]


def tiny_vae(guide: str, seed: int = 0):
    cfg = RunConfig(model=ModelConfig(z_dim=3, hidden_dims=(8,), guide=guide))
    torch.manual_seed(seed)
    return build_model(cfg, (12,))


def steps(vae, elbo_name: str, n: int = 3, seed: int = 0) -> list[float]:
    """``n`` training steps of pyro_vae's step, K = 2 particles, on fixed random batches."""
    particles = 2 if ELBOS[elbo_name].multi_particle else 1
    elbo = build_elbo(elbo_name, particles)
    opt = make_optimizer(vae, 1e-2)
    x = torch.rand(n, 6, 12, generator=torch.Generator().manual_seed(1))
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return [train_step(elbo, vae, opt, x[i]) for i in range(n)]


def test_networks_are_encoder_decoder_and_guide_head_networks():
    names = [n for n, _ in networks(tiny_vae("iaf"))]
    assert names == [
        "encoder.body",
        "encoder.head.base.loc",
        "encoder.head.base.scale",
        "encoder.head.context",
        "encoder.head.flows.0.nn",
        "encoder.head.flows.1.nn",
        "decoder",
    ]
    assert [n for n, _ in networks(tiny_vae("fullcov"))] == [
        "encoder.body",
        "encoder.head.loc",
        "encoder.head.tril",
        "decoder",
    ]


@pytest.mark.parametrize("guide,elbo", PAIR_PARAMS)
def test_every_pair_trains_compiled_as_eager(guide, elbo):
    """Same weights, seed and batches: the compiled networks (aot_eager) give the eager losses and
    weights to float round-off, and the state_dict keys do not change."""
    eager, compiled = tiny_vae(guide), tiny_vae(guide)
    keys = list(eager.state_dict())
    check_pair(elbo, guide, compiled.model, compiled.guide, torch.rand(2, 12))
    assert compile_networks(compiled, backend="aot_eager")
    expected, got = steps(eager, elbo), steps(compiled, elbo)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert list(compiled.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture
def data_config(tmp_path):
    write_idx_folder(tmp_path / "idx", n_train=40, n_test=10)
    return DataConfig(dataset="mnist", data_dir=str(tmp_path / "idx"))


def run_config(data_config, **train) -> RunConfig:
    t = TrainConfig(**{"epochs": 2, "batch_size": 16, "eval_num_samples": 4, "device": "cpu", **train})
    return RunConfig(data_config, ModelConfig(z_dim=2, hidden_dims=(8,), guide="iaf"), t)


def test_compiled_run_resumes_and_its_checkpoint_loads_eager(data_config, tmp_path, monkeypatch):
    """A compiled run cut after epoch 1 and resumed compiled ends where the uninterrupted eager run
    ends; its checkpoint holds plain keys, so an eager model loads it."""
    monkeypatch.setattr(compiling, "BACKEND", "aot_eager")
    full = fit(run_config(data_config), tmp_path / "eager", progress=False)
    cut = run_config(data_config, compile=True)
    cut.train.epochs = 1
    fit(cut, tmp_path / "compiled", progress=False)
    resumed = resume(tmp_path / "compiled", epochs=2, progress=False)
    assert all(m._compiled_call_impl is not None for _, m in networks(resumed.vae))
    loaded, ckpt = load_run(tmp_path / "compiled")
    assert not any("_orig_mod" in k for k in ckpt["model"])
    assert all(m._compiled_call_impl is None for _, m in networks(loaded.vae))
    for name, a in full.vae.state_dict().items():
        torch.testing.assert_close(loaded.vae.state_dict()[name], a, rtol=1e-5, atol=1e-6, msg=name)
    assert resumed.metrics["final"]["elbo"] == pytest.approx(full.metrics["final"]["elbo"], rel=1e-5)


def test_unavailable_compiler_falls_back_with_one_line(data_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compiling, "unavailable", lambda backend: "RuntimeError: no C++ compiler")
    run = fit(run_config(data_config, compile=True, epochs=1), tmp_path / "r", progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pyro-vae: torch.compile is unavailable here (RuntimeError: no C++ compiler); training with eager networks"
    ]
    assert all(m._compiled_call_impl is None for _, m in networks(run.vae))
    assert "final" in run.metrics


def test_probe_reports_an_unknown_backend():
    assert compiling.unavailable("no-such-backend").startswith("InvalidBackend")


def test_compile_and_jit_together_are_refused(data_config, tmp_path, capsys):
    with pytest.raises(ConfigError, match="compile replaces --jit and cannot be combined with it"):
        run_config(data_config, compile=True, jit=True).validate()
    code = main(["train", "--compile", "--jit", "--dataset", "mnist", "--data-dir", data_config.data_dir,
                 "--out", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pyro-vae train: error: --compile replaces --jit") and err.count("\n") == 1


def test_jit_trains_without_the_deprecation_warning():
    """``--jit`` rests on torch.jit.trace, whose FutureWarning would be an error here."""
    vae, elbo = tiny_vae("diag"), build_elbo("trace", jit=True)
    opt = make_optimizer(vae, 1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        check_pair("trace", "diag", vae.model, vae.guide, torch.rand(2, 12), jit=True)
        losses = [train_step(elbo, vae, opt, torch.rand(4, 12)) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))


# inductor generates and compiles C++ per pair (30–90 s each on 2 cores): the flows' path derivatives and one pair
# of each other guide; every pair's graph capture and autograd are checked above with aot_eager
INDUCTOR_PAIRS = [("iaf", "dreg"), ("iaf", "stl"), ("diag", "trace"), ("fullcov", "meanfield"), ("diag-score", "trace")]


@pytest.mark.slow
@pytest.mark.parametrize("guide,elbo", [p for p in INDUCTOR_PAIRS if p in PAIRS])
def test_pairs_train_with_inductor(guide, elbo):
    """The default backend (inductor, generated C++ on CPU): the same losses to float tolerance
    (fused kernels reorder sums)."""
    eager, compiled = tiny_vae(guide), tiny_vae(guide)
    assert compile_networks(compiled)
    torch.testing.assert_close(
        torch.tensor(steps(compiled, elbo)), torch.tensor(steps(eager, elbo)), rtol=1e-4, atol=1e-4
    )
