"""A run folder written by pyro_vae 0.1.0 before the sub-package layout (``tests/fixtures/run-0.1.0``:
its ``config.json``, ``metrics.json`` and ``checkpoint.pt``, from
``pyro-vae train --epochs 1 --num-samples 10 --hidden-dims 16 --z-dim 2 --quiet``) still loads,
evaluates, samples and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pyro_vae.cli import main
from pyro_vae.training.train import load_run

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


def _copy(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def test_the_earlier_checkpoint_loads_with_its_weights(tmp_path):
    run, ckpt = load_run(_copy(tmp_path), with_data=False)
    assert run.config.model.z_dim == 2 and run.config.model.hidden_dims == (16,)
    assert ckpt["epoch"] == 1 and len(run.metrics["epochs"]) == 1
    state = run.vae.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ckpt["model"].items())


def test_the_earlier_run_evaluates_and_samples(tmp_path, capsys):
    run = _copy(tmp_path)
    assert main(["evaluate", str(run), "--num-samples", "5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test ELBO" in out and "IS log p(x), K=5" in out
    assert main(["sample", str(run), "--num", "4", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_the_earlier_run_resumes_to_a_second_epoch(tmp_path, capsys):
    run = _copy(tmp_path)
    before = json.loads((run / "metrics.json").read_text())["epochs"][0]
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet", "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][0] == before  # the first epoch is the earlier run's, kept
    assert metrics["final"]["is_num_samples"] == 10  # the run's own K, from its config.json
    assert load_run(run, with_data=False)[1]["epoch"] == 2
