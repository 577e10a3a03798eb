"""The ``pyro-vae`` command end to end in a temp folder, and its one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_idx_folder

from pyro_vae.cli import main

TINY = ["--z-dim", "2", "--hidden-dims", "64", "--epochs", "2", "--num-samples", "10", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def snapshot(folder: Path) -> dict:
    """Every file's bytes, but the lock's (which names the last process that held it)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}


def run_cli(*args, cwd=None):
    """The command in a fresh process, as a user runs it (only where a fresh process matters)."""
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )


def cli(capsys, *args, cwd=None, monkeypatch=None):
    """``main(args)`` in this process: (exit status, stdout, stderr)."""
    if cwd is not None:
        monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_a_run_folder(run_dir, capsys):
    names = set(os.listdir(run_dir))
    assert {
        "config.json",
        "metrics.json",
        "checkpoint.pt",
        "elbo.png",
        "reconstructions.png",
        "samples.png",
        "latent.png",
        "manifold.png",
    } <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == {
        "z_dim": 2,
        "hidden_dims": [64],
        "likelihood": "bernoulli",
        "guide": "diag",
        "flow_steps": 2,
        "model": "vae",
        "net": "mlp",
        "prior": "standard",  # left out, the model's default prior is recorded
        "prior_components": None,
        "kl_weight": None,
        "decoder_y": None,
    }
    assert config["train"]["elbo"] == "trace"  # resolved: the model's default estimator, recorded
    assert config["data"]["pixels"] == "continuous"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["final"]["is_num_samples"] == 10


def test_resume_continues_and_refuses_changes(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", str(copy), "--epochs", "3", "--quiet"]) == 0
    assert len(json.loads((copy / "metrics.json").read_text())["epochs"]) == 3
    before = snapshot(copy)
    assert main(["train", "--resume", str(copy), "--z-dim", "5"]) == 2
    err = capsys.readouterr().err
    assert "--z-dim cannot change on --resume" in err and before == snapshot(copy)


def test_evaluate_on_idx_folder(run_dir, tmp_path, capsys):
    write_idx_folder(tmp_path / "mnist", n_train=5, n_test=30)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data-dir", str(tmp_path / "mnist"), "--num-samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "30 images, continuous pixels" in out and "IS log p(x), K=20" in out and "test ELBO" in out
    saved = json.loads((run_dir / "evaluation.json").read_text())
    (result,) = [v for k, v in saved.items() if str(tmp_path / "mnist") in k]
    assert result["test_size"] == 30 and result["is_log_px"] >= result["elbo"] - 5 * result["elbo_se"]


def test_sample_writes_png(run_dir, tmp_path):
    out = tmp_path / "s.png"
    assert main(["sample", str(run_dir), "--num", "9", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "cifar"], ("--dataset must be one of mnist-5k, mnist, fashion-mnist", "got 'cifar'")),
        (["train", "--likelihood", "gauss"], ("invalid choice: 'gauss'", "'bernoulli'", "continuous-bernoulli")),
        (["train", "--device", "tpu"], ("invalid choice: 'tpu'", "'auto'", "'cpu'", "'cuda'")),
        (["train", "--epochs", "0", "--out", "{tmp}/r"], "epochs must be a positive integer, got 0"),
        (["train", "--data-dir", "{tmp}/nothing", "--out", "{tmp}/r"], "is not a folder"),
        (["evaluate", "{tmp}/nowhere"], "holds no run (no config.json)"),
        (["sample", "{run}", "--num", "0", "--out", "{tmp}/s.png"], "--num must be a positive integer, got 0"),
        (["train", "--guide", "gauss"], ("invalid choice: 'gauss'", "'diag'", "'fullcov'", "'iaf'")),
        (["train", "--elbo", "vimco"], ("invalid choice: 'vimco'", "'trace'", "'iwae'", "'dreg'")),
        (
            ["train", "--guide", "iaf", "--elbo", "meanfield", "--out", "{tmp}/r"],
            "estimator 'meanfield' does not fit guide 'iaf': TraceMeanField_ELBO needs a closed-form KL",
        ),
        (
            ["train", "--guide", "diag-score", "--elbo", "dreg", "--out", "{tmp}/r"],
            "estimator 'dreg' does not fit guide 'diag-score': it needs a reparameterized guide",
        ),
        (["train", "--elbo", "stl", "--jit", "--out", "{tmp}/r"], "estimator 'stl' has no JIT variant"),
        (["compare", "--guides", "diag,nope", "--out", "{tmp}/c"], "--guides must be one of diag, diag-score"),
        (["compare", "--elbos", "iwae:x", "--out", "{tmp}/c"], "--elbos entry 'iwae:x' is not NAME or NAME:K"),
        (
            ["evaluate", "{run}", "--data-dir", "{tmp}/small"],
            "test images have shape (1, 8, 8) but the run was trained on (1, 28, 28)",
        ),
    ],
)
def test_bad_input_is_one_line_without_traceback(run_dir, tmp_path, args, message, capsys, monkeypatch):
    write_idx_folder(tmp_path / "small", n_train=3, n_test=3, size=8)
    args = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    before = snapshot(run_dir)
    code, _, err = cli(capsys, *args, cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(m in err for m in ((message,) if isinstance(message, str) else message)), err
    assert before == snapshot(run_dir)


def test_a_bad_value_in_a_fresh_process_is_one_line(tmp_path):
    """The one test through a real process: what a user's shell shows, with no traceback."""
    proc = run_cli("train", "--epochs", "0", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "pyro-vae train: error: --epochs must be a positive integer, got 0\n"
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoint_one_line_and_untouched(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    before = snapshot(copy)
    for args in (
        ["evaluate", str(copy)],
        ["sample", str(copy), "--out", str(tmp_path / "x.png")],
        ["train", "--resume", str(copy)],
    ):
        code, _, err = cli(capsys, *args)
        assert code == 2 and "is corrupt or truncated" in err and len(err.strip().splitlines()) == 1
    assert before == snapshot(copy)


def test_existing_out_refused_without_damage(run_dir, capsys):
    before = snapshot(run_dir)
    code, _, err = cli(capsys, "train", *TINY, "--out", str(run_dir))
    assert code == 2 and f"{run_dir} already holds a finished run; choose another --out" in err
    assert before == snapshot(run_dir)


def test_every_subcommand_has_help(capsys):
    for sub in ("train", "evaluate", "sample", "compare"):
        code, out, _ = cli(capsys, sub, "--help")
        assert code == 0 and "--device" in out


def test_evaluate_data_flags_name_one_default_the_runs(capsys):
    """evaluate reads the run's data settings: each data flag says so once, instead of the train default."""
    from pyro_vae.cli import build_parser
    from pyro_vae.config import DataConfig, options_of

    ev = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    helps = {a.dest: a.help for a in ev._actions}
    for opt in options_of(DataConfig):
        if opt.name in helps:
            assert helps[opt.name].count("(default") == 1 and helps[opt.name].endswith("(default: the run's)"), opt.name
    assert "as read" not in helps["image_size"] and "as read" in opt_help("image_size")
    _, out, _ = cli(capsys, "draws", "--help")
    assert "95% interval" in out and "%%" not in out


def opt_help(name: str) -> str:
    from pyro_vae.config import DataConfig, options_of

    return next(o for o in options_of(DataConfig) if o.name == name).meta["help"]


def test_train_flags_are_the_config_fields(capsys):
    """Every field of the three config sections is a train flag, with its help and default."""
    from pyro_vae.config import DataConfig, ModelConfig, TrainConfig, options_of

    _, out, _ = cli(capsys, "train", "--help")
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for opt in options_of(cls):
            assert opt.flag in out, opt.flag
    assert "--num-samples" in out and "--eval-num-samples" not in out


def test_compare_end_to_end(tmp_path, capsys):
    folder = tmp_path / "idx"
    write_idx_folder(folder, n_train=64, n_test=32)
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--dataset",
        "mnist",
        "--data-dir",
        str(folder),
        "--guides",
        "diag,iaf",
        "--elbos",
        "trace,dreg:2",
    ]
    args += ["--z-dim", "2", "--hidden-dims", "16", "--epochs", "1", "--num-samples", "4", "--snr-estimates", "3"]
    assert main([*args, "--quiet", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| iaf | dreg | 2 | continuous |" in printed and "wrote" in printed
    assert len(list((out / "cells").iterdir())) == 4 and (out / "results.csv").is_file()


# ----------------------------------------------------------------------------- conditional models
@pytest.fixture(scope="module")
def cvae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "cvae"
    assert main(["train", *TINY, "--model", "cvae", "--prior", "standard", "--out", str(out)]) == 0
    return out


def test_cvae_train_sample_and_evaluate(cvae_dir, tmp_path, capsys):
    config = json.loads((cvae_dir / "config.json").read_text())
    assert config["model"]["model"] == "cvae" and config["model"]["prior"] == "standard"
    final = json.loads((cvae_dir / "metrics.json").read_text())["final"]
    assert final["conditional"] and 0 <= final["generative_accuracy"] <= 1 and final["classify_num_samples"] == 1
    assert {"samples.png", "style_transfer.png", "latent.png"} <= set(os.listdir(cvae_dir))
    capsys.readouterr()
    assert main(["sample", str(cvae_dir), "--label", "3", "--num", "6", "--out", str(tmp_path / "three.png")]) == 0
    assert "wrote 6 samples of class 3" in capsys.readouterr().out
    assert main(["sample", str(cvae_dir), "--num", "20", "--out", str(tmp_path / "grid.png")]) == 0
    assert "wrote 2 samples of each of the 10 classes" in capsys.readouterr().out
    assert (tmp_path / "three.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", str(cvae_dir), "--num-samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "IS log p(x|y), K=20" in out and "KL(q(z|x,y) || p(z|y))" in out and "generative accuracy, K=2/class" in out
    assert "label fidelity" in out and "judge test accuracy" in out and "label sensitivity" in out
    evaluated = next(iter(json.loads((cvae_dir / "evaluation.json").read_text()).values()))
    assert evaluated["label_fidelity"] == final["label_fidelity"]  # the same samples: seed 0, 200 per class
    assert "bits/dim" in out


def test_ssvae_train_reports_accuracy_and_baseline(tmp_path, capsys):
    folder = tmp_path / "idx"
    write_idx_folder(folder, n_train=60, n_test=20)
    out = tmp_path / "ss"
    args = ["train", *TINY, "--dataset", "mnist", "--data-dir", str(folder), "--model", "ssvae", "--labels", "20"]
    assert main([*args, "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "q(y|x) test accuracy" in printed and "with 20 labels (baseline classifier" in printed
    assert "generative classification accuracy" in printed
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["labels"] == 20 and final["baseline_steps"] == 1  # 40 unlabelled images: one batch
    assert json.loads((out / "config.json").read_text())["data"]["labels"] == 20


def test_svhn_trains_end_to_end_from_the_cli(tmp_path, capsys):
    from conftest import write_svhn_folder

    write_svhn_folder(tmp_path / "svhn", n_train=16, n_test=8)
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys,
        "train", "--dataset", "svhn", "--data-dir", str(tmp_path / "svhn"), "--model", "cvae", "--net", "conv",
        "--likelihood", "gaussian", "--z-dim", "3", "--hidden-dims", "16", "--epochs", "1", "--batch-size", "8",
        "--num-samples", "10", "--quiet", "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "bits/dim" in stdout and "generative classification accuracy" in stdout
    assert json.loads((out / "metrics.json").read_text())["data"]["image_shape"] == [3, 32, 32]
    code, _, _ = cli(capsys, "sample", str(out), "--label", "7", "--num", "4", "--out", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["sample", "{run}", "--label", "3", "--out", "{tmp}/s.png"],
            "--label needs a model with classes; a VAE draws from p(z) and takes no label",
        ),
        (
            ["sample", "{cvae}", "--label", "11", "--out", "{tmp}/s.png"],
            "--label must be a class in 0..9 (10 classes), got 11",
        ),
        (
            ["train", "--model", "ssvae", "--labels", "5", "--out", "{tmp}/r"],
            "labels must be at least the number of classes (10) so that every class keeps a label, got 5",
        ),
        (["train", "--prior", "learned", "--out", "{tmp}/r"], "prior 'learned' does not fit model 'vae'"),
        (
            ["train", "--prior", "mixture", "--elbo", "meanfield", "--out", "{tmp}/r"],
            "estimator 'meanfield' does not fit prior 'mixture': TraceMeanField_ELBO needs a closed-form KL",
        ),
        (["train", "--labels", "100", "--out", "{tmp}/r"], "labels applies to model 'ssvae' only"),
        (
            ["train", "--kl-weight", "2", "--out", "{tmp}/r"],
            "--kl-weight applies to the models cvae, ssvae only, got kl_weight=2.0 with model 'vae'",
        ),
        (
            ["train", "--model", "cvae", "--prior", "learned", "--prior-components", "5", "--out", "{tmp}/r"],
            "--prior-components applies to priors 'mixture' and 'vamp' only, got 5 with prior 'learned'",
        ),
        (["train", "--model", "cvae", "--decoder-y", "middle"], ("invalid choice: 'middle'", "'every-layer'")),
        (["train", "--model", "cvae", "--prior", "flat"], ("invalid choice: 'flat'", "'learned'", "'standard'")),
        (["train", "--net", "resnet"], ("invalid choice: 'resnet'", "'mlp'", "'conv'")),
        (
            ["train", "--model", "ssvae", "--labels", "100", "--elbo", "dreg", "--out", "{tmp}/r"],
            "model SSVAE does not accept estimator 'dreg'; use --elbo enum",
        ),
        (
            ["train", "--dataset", "svhn", "--data-dir", "{tmp}/small", "--out", "{tmp}/r"],
            "lacks test_32x32.mat; both SVHN files are needed",
        ),
    ],
)
def test_bad_conditional_input_is_one_line(run_dir, cvae_dir, tmp_path, args, message, capsys, monkeypatch):
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "train_32x32.mat").write_bytes(b"")
    args = [a.format(tmp=tmp_path, run=run_dir, cvae=cvae_dir) for a in args]
    before = snapshot(cvae_dir)
    code, _, err = cli(capsys, *args, cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(m in err for m in ((message,) if isinstance(message, str) else message)), err
    assert before == snapshot(cvae_dir) and not (tmp_path / "r").exists()
