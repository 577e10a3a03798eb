"""Grids beyond one process: ``--workers``, ``--list-cells``, ``--cell`` and ``--collect``."""

import csv
import json

import pytest
import torch
from conftest import write_idx_folder

from pyro_vae.cli import main
from pyro_vae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyro_vae.errors import ConfigError, IncompleteGrid
from pyro_vae.experiments.grid import CompareConfig, collect, compare, list_cells, run_cell_at, worker_resources

TIMING = {"seconds_per_epoch", "seconds_per_epoch_sd"}


@pytest.fixture
def grid(tmp_path):
    folder = tmp_path / "idx"
    write_idx_folder(folder, n_train=32, n_test=16)
    base = RunConfig(
        DataConfig(dataset="mnist", data_dir=str(folder)),
        ModelConfig(z_dim=2, hidden_dims=(8,)),
        TrainConfig(epochs=1, batch_size=16, eval_num_samples=4, device="cpu"),
    )
    return CompareConfig(guides=("diag", "iaf"), elbos=("stl",), seeds=(0,), base=base, snr_estimates=3)


def flags(cfg: CompareConfig, out) -> list[str]:
    return ["compare", "--dataset", "mnist", "--data-dir", cfg.base.data.data_dir, "--z-dim", "2", "--hidden-dims",
            "8", "--epochs", "1", "--batch-size", "16", "--num-samples", "4", "--device", "cpu", "--guides",
            "diag,iaf", "--elbos", "stl", "--snr-estimates", "3", "--quiet", "--out", str(out)]  # fmt: skip


def table(path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # in-process cells and each of 2 workers then use one thread: the same sums
    yield
    torch.set_num_threads(threads)


def test_two_workers_give_the_results_of_one(grid, tmp_path, one_thread):
    lines = []
    compare(grid, tmp_path / "one", log=lines.append)
    grid.workers = 2
    compare(grid, tmp_path / "two", log=lines.append)
    one, two = table(tmp_path / "one" / "results.csv"), table(tmp_path / "two" / "results.csv")
    assert len(one) == 2 and one == two
    names = ["diag-stl-K1-seed0", "iaf-stl-K1-seed0"]
    assert sorted(line.split(":")[0] for line in lines[2:]) == sorted(names)  # every cell reported once
    for name in names:
        a, b = (json.loads((tmp_path / d / "cells" / name / "cell.json").read_text()) for d in ("one", "two"))
        assert a["test_elbo"] == b["test_elbo"] and a["encoder_snr"] == b["encoder_snr"]
    lines.clear()
    grid.base.train.compile = True  # how the networks run is not a setting of the results
    compare(grid, tmp_path / "two", log=lines.append)  # a rerun keeps every cell
    assert lines == [f"{n}: kept from an earlier run" for n in names]


def test_worker_resources_share_the_threads():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        assert worker_resources(3, "cpu") == (2, None)
        assert worker_resources(16, "cpu") == (1, None)
    finally:
        torch.set_num_threads(threads)


def test_workers_get_a_gpu_each_when_several_are_visible(monkeypatch):
    """Dealt round-robin from CUDA_VISIBLE_DEVICES (or 0..n−1), only for cells that run on CUDA."""
    import pyro_vae.experiments.grid as grid_module

    threads = torch.get_num_threads()
    monkeypatch.setattr(grid_module, "resolve_device", lambda name: torch.device("cuda" if name != "cpu" else "cpu"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert worker_resources(3, "cuda") == (max(1, threads // 3), ["0", "1", "0"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    assert worker_resources(2, "auto")[1] == ["4", "7"]
    assert worker_resources(2, "cpu")[1] is None
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_resources(2, "cuda")[1] is None  # one GPU: the workers share it


def test_list_cells_cell_and_collect(grid, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main([*flags(grid, out), "--list-cells"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [
        "0\tdiag-stl-K1-seed0\t(guide diag, estimator stl, K 1, seed 0)\tnot started",
        "1\tiaf-stl-K1-seed0\t(guide iaf, estimator stl, K 1, seed 0)\tnot started",
    ]
    assert not out.exists()  # listing writes nothing

    assert main([*flags(grid, out), "--cell", "1"]) == 0
    assert capsys.readouterr().out.startswith("iaf-stl-K1-seed0: test ELBO ")
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["iaf-stl-K1-seed0"]
    assert not (out / "results.md").exists()
    assert list_cells(grid, out)[1].endswith("\tfinished") and list_cells(grid, out)[0].endswith("\tnot started")

    assert main([*flags(grid, out), "--collect"]) == 1
    captured = capsys.readouterr()
    assert "| iaf | stl | 1 |" in captured.out and "| diag |" not in captured.out
    assert captured.out.endswith(
        "missing cells:\n0 diag-stl-K1-seed0 (guide diag, estimator stl, K 1, seed 0): not started\n"
    )
    assert captured.err == (
        "pyro-vae compare: 1 of 2 cells are missing (listed above); the tables cover the others; run the missing "
        "ones with --cell I, then --collect again\n"
    )
    assert len(table(out / "results.csv")) == 1
    assert "Missing cells (not in the table):\n\n- 0 diag-stl-K1-seed0" in (out / "results.md").read_text()

    assert run_cell_at(grid, out, 1) == json.loads((out / "cells" / "iaf-stl-K1-seed0" / "cell.json").read_text())
    run_cell_at(grid, out, 0)
    rows, missing = collect(grid, out)
    assert missing == [] and len(rows) == 2
    # the cells run one by one give the same table as one compare over the grid
    compare(grid, tmp_path / "whole", log=lambda s: None)
    assert table(out / "results.csv") == table(tmp_path / "whole" / "results.csv")
    assert main([*flags(grid, out), "--collect"]) == 0
    assert "Missing" not in (out / "results.md").read_text()


def test_bad_cell_index_and_empty_collect(grid, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"cell must be an index in 0..1 of the grid's 2 cells \(see --list-cells\)"):
        run_cell_at(grid, tmp_path / "g", 2)
    assert main([*flags(grid, tmp_path / "g"), "--cell", "-1"]) == 2
    assert capsys.readouterr().err == (
        "pyro-vae compare: error: --cell must be an index in 0..1 of the grid's 2 cells (see --list-cells), got -1\n"
    )
    with pytest.raises(IncompleteGrid, match="no cell of the grid has finished in"):
        collect(grid, tmp_path / "g")
    assert main([*flags(grid, tmp_path / "g"), "--collect"]) == 2
    assert not (tmp_path / "g" / "results.md").exists()
    assert main([*flags(grid, tmp_path / "g"), "--collect", "--cell", "1"]) == 2  # one job at a time
    assert "not allowed with argument" in capsys.readouterr().err
