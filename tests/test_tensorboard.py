"""``--tensorboard``: the event file holds the numbers of ``metrics.json``, logging draws nothing from
the training's random streams, a resumed run logs every epoch once, ``compare`` logs each cell."""

import json
import sys

import numpy as np
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.config import RunConfig
from pyro_vae.data.images import ImageData
from pyro_vae.training.tensorboard import NUM_IMAGES, scalar_tags

TINY = ["--z-dim", "2", "--hidden-dims", "8", "--batch-size", "8", "--num-samples", "4", "--quiet", "--device", "cpu"]


def tiny_data(labels: bool = False) -> ImageData:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(28, 1, 4, 4, generator=g) * 255).to(torch.uint8)
    y = (torch.arange(20) % 3, torch.arange(8) % 3) if labels else (None, None)
    return ImageData.from_tensors(x[:20], x[20:], *y)


def tiny_config(model="vae", epochs=2, tensorboard=True) -> RunConfig:
    cfg = RunConfig()
    cfg.model.model, cfg.model.z_dim, cfg.model.hidden_dims = model, 2, (8,)
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_num_samples, cfg.train.device = epochs, 8, 4, "cpu"
    cfg.train.tensorboard = tensorboard
    return cfg


def read_log(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def assert_log_equals_metrics(run_dir):
    """Every scalar of every epoch row, at step = epoch, equal to metrics.json's value rounded to
    float32 (TensorBoard stores scalars as float32): an exact check."""
    rows = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    acc = read_log(run_dir)
    tags = scalar_tags(rows[0])
    assert {"train/elbo", "test/elbo", "test/reconstruction", "test/kl", "train/beta", "train/seconds"} <= set(tags)
    assert set(acc.Tags()["scalars"]) == set(tags)
    for tag in tags:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["epoch"] for r in rows]
        assert [e.value for e in events] == [float(np.float32(scalar_tags(r)[tag])) for r in rows], tag
    return acc, rows


def test_event_file_holds_the_numbers_of_metrics_json(tmp_path):
    pytest.importorskip("tensorboard")
    from pyro_vae.training.train import fit

    run = fit(tiny_config(), tmp_path / "run", progress=False, data=tiny_data())
    acc, rows = assert_log_equals_metrics(run.out_dir)
    assert len(rows) == 2
    for tag in ("reconstructions", "samples"):
        images = acc.Images(tag)
        assert [i.step for i in images] == [1, 2]
    recon = acc.Images("reconstructions")[0]
    # NUM_IMAGES inputs and their reconstructions in one grid of 4×4 images
    assert recon.width > 4 and recon.height > 4 and 2 * NUM_IMAGES <= (recon.width // 4) * (recon.height // 4)


def test_logging_leaves_training_unchanged(tmp_path):
    """The images are drawn inside fork_rng: the same seed gives the same run with or without the log."""
    pytest.importorskip("tensorboard")
    from pyro_vae.training.train import fit

    runs = [
        fit(tiny_config(tensorboard=tb), tmp_path / f"run{tb}", progress=False, data=tiny_data())
        for tb in (True, False)
    ]
    for a, b in zip(*(r.metrics["epochs"] for r in runs)):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    for p, q in zip(*(r.vae.parameters() for r in runs)):
        assert torch.equal(p, q)
    assert not (tmp_path / "runFalse" / "tensorboard").exists()


def test_conditional_run_and_resume_log_every_epoch_once(tmp_path):
    pytest.importorskip("tensorboard")
    from pyro_vae.training.train import fit, resume

    data = tiny_data(labels=True)  # in an .npz: a resumed run reads its data from config.data
    arrays = {"x_train": data.train_store, "y_train": data.train_y, "x_test": data.test_store, "y_test": data.test_y}
    np.savez(
        tmp_path / "x.npz",
        **{k: v.numpy().reshape(len(v), *([4, 4] if k[0] == "x" else [])) for k, v in arrays.items()},
    )
    cfg = tiny_config("cvae", epochs=1)
    cfg.data.dataset, cfg.data.data_dir = "array", str(tmp_path / "x.npz")
    out = tmp_path / "run"
    fit(cfg, out, progress=False)
    assert json.loads((out / "config.json").read_text())["train"]["tensorboard"] is True
    run = resume(out, 3, progress=False)
    assert [r["epoch"] for r in run.metrics["epochs"]] == [1, 2, 3]
    acc, _ = assert_log_equals_metrics(out)
    samples = acc.Images("samples")
    assert [i.step for i in samples] == [1, 2, 3]


def test_cli_train_and_compare_write_logs(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    np.savez(tmp_path / "x.npz", x_train=np.zeros((12, 4, 4), np.uint8) + 100, x_test=np.zeros((4, 4, 4), np.uint8))
    data = ["--dataset", "array", "--data-dir", str(tmp_path / "x.npz")]
    out = tmp_path / "run"
    assert main(["train", *TINY, *data, "--epochs", "2", "--tensorboard", "--out", str(out)]) == 0
    assert_log_equals_metrics(out)
    grid = tmp_path / "grid"
    args = ["compare", *TINY, *data, "--epochs", "1", "--guides", "diag,fullcov", "--snr-estimates", "3"]
    assert main([*args, "--tensorboard", "--out", str(grid)]) == 0
    cells = sorted((grid / "cells").iterdir())
    assert len(cells) == 2
    for cell in cells:  # one log per cell: tensorboard --logdir GRID/cells overlays them
        assert_log_equals_metrics(cell)
    capsys.readouterr()
    # the log is not part of a cell's settings: a rerun without it keeps the cells
    assert main([*args, "--out", str(grid)]) == 0


def test_missing_package_is_one_line_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # importlib.util.find_spec: not installed
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", *TINY, "--epochs", "1", "--tensorboard", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "pyro-vae train: error: --tensorboard needs the tensorboard package, which is not installed; "
        'pip install -e ".[tensorboard]"\n'
    )
    assert not out.exists()
