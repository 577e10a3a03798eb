"""``compare``: a tiny grid end to end, its tables, the n/a cell, and skipping finished cells."""

import csv
import json

import pytest
from conftest import write_idx_folder

from pyro_vae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyro_vae.experiments.grid import CompareConfig, compare
from pyro_vae.experiments.results import COLUMNS


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "idx"
    write_idx_folder(folder, n_train=64, n_test=32)
    base = RunConfig(
        DataConfig(dataset="mnist", data_dir=str(folder)),
        ModelConfig(z_dim=2, hidden_dims=(16,)),
        TrainConfig(epochs=2, batch_size=32, eval_num_samples=8, device="cpu"),
    )
    return CompareConfig(
        guides=("diag", "iaf"), elbos=("trace", "meanfield", "iwae:3"), seeds=(0, 1), base=base, snr_estimates=4
    )


def test_grid_writes_tables_plots_and_na_cells(tiny, tmp_path):
    out = tmp_path / "cmp"
    lines = []
    rows = compare(tiny, out, log=lines.append)
    assert len(lines) == 12 and len(rows) == 6
    assert {p.name for p in out.iterdir()} >= {"results.md", "results.csv", "elbo_vs_time.png", "gradient_snr.png"}
    by_key = {(r["guide"], r["elbo"], r["K"]): r for r in rows}
    assert "does not fit guide 'iaf'" in by_key[("iaf", "meanfield", 1)]["error"]
    iwae = by_key[("diag", "iwae", 3)]
    assert iwae["seeds"] == 2 and iwae["epochs"] == 2 and iwae["is_K"] == 8
    assert iwae["gap"] == pytest.approx(iwae["is_log_px"] - iwae["test_elbo"], abs=1e-9)
    assert iwae["test_elbo_sd"] > 0  # two seeds, two different runs
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[: len(COLUMNS)] == COLUMNS and len(table) == 6
    md = (out / "results.md").read_text()
    assert "| diag | iwae | 3 | continuous |" in md and "n/a: estimator 'meanfield' does not fit guide 'iaf'" in md


def test_rerun_keeps_finished_cells_and_resumes_an_interrupted_one(tiny, tmp_path):
    tiny.guides, tiny.elbos, tiny.seeds = ("diag",), ("trace", "stl"), (0,)
    out = tmp_path / "cmp"
    compare(tiny, out, log=lambda s: None)
    kept = out / "cells" / "diag-trace-K1-seed0" / "cell.json"
    before = kept.read_bytes()
    interrupted = out / "cells" / "diag-stl-K1-seed0"
    first = json.loads((interrupted / "cell.json").read_text())
    (interrupted / "cell.json").unlink()  # as if stopped after its last checkpoint
    lines = []
    compare(tiny, out, log=lines.append)
    assert lines[0] == "diag-trace-K1-seed0: kept from an earlier run" and kept.read_bytes() == before
    again = json.loads((interrupted / "cell.json").read_text())
    assert again["epochs"] == first["epochs"] and again["test_elbo"] == pytest.approx(first["test_elbo"], abs=1e-4)
