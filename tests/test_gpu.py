"""The CUDA path: ``train``, ``--resume``, ``--compile``, ``evaluate`` and ``compare`` with ``--device cuda``.

Marked ``gpu``: skipped where CUDA is not available; ``pytest -m gpu`` (and ``benchmarks/gpu_check.sh``)
runs them on a GPU.
"""

import json

import pytest
import torch
from conftest import write_idx_folder

from pyro_vae.cli import main
from pyro_vae.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.gpu


@pytest.fixture
def data(tmp_path):
    write_idx_folder(tmp_path / "idx", n_train=64, n_test=32)
    return ["--dataset", "mnist", "--data-dir", str(tmp_path / "idx")]


SMALL = ["--z-dim", "2", "--hidden-dims", "16", "--batch-size", "16", "--num-samples", "8", "--quiet"]


@pytest.mark.parametrize("extra", [[], ["--compile"], ["--guide", "iaf", "--elbo", "dreg", "--particles", "3"]])
def test_train_resume_and_evaluate_on_cuda(data, tmp_path, capsys, extra):
    run = tmp_path / "run"
    assert main(["train", *data, *SMALL, *extra, "--epochs", "1", "--device", "cuda", "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--device", "cuda", "--quiet"]) == 0
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and not any("_orig_mod" in k for k in ckpt["model"])
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())  # loaded onto the CPU by default
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert torch.isfinite(torch.tensor([final["elbo"], final["is_log_px"]])).all()
    assert main(["evaluate", str(run), "--num-samples", "16", "--device", "cuda"]) == 0
    assert "test ELBO" in capsys.readouterr().out


def test_compare_with_two_workers_on_cuda(data, tmp_path, capsys):
    out = tmp_path / "grid"
    args = ["compare", *data, *SMALL, "--epochs", "1", "--device", "cuda", "--guides", "diag,iaf", "--elbos", "stl"]
    args += ["--snr-estimates", "3", "--out", str(out)]
    assert main([*args, "--workers", "2"]) == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",error" not in r for r in rows[1:])
    assert main([*args, "--collect"]) == 0
