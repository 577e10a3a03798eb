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


def test_paired_differences_against_the_first_cell_and_a_given_reference(tiny, tmp_path):
    """Δ is the mean over test images of a cell's IS log p(x) minus the reference's, its s.e. the
    sd of those differences / √N, recomputed here from the per-image files the runs kept."""
    import math

    import torch

    from pyro_vae.errors import DataError
    from pyro_vae.inference.evaluate import PER_IMAGE_NAME, load_per_image

    tiny.guides, tiny.elbos, tiny.seeds = ("diag", "planar"), ("trace",), (0,)
    out = tmp_path / "cmp"
    rows = {r["guide"]: r for r in compare(tiny, out, log=lambda s: None)}
    ref = load_per_image(out / "cells" / "diag-trace-K1-seed0" / PER_IMAGE_NAME)
    own = load_per_image(out / "cells" / "planar-trace-K1-seed0" / PER_IMAGE_NAME)
    assert ref.shape == own.shape == (32,) and ref.dtype == torch.float64
    assert float(ref.mean()) == pytest.approx(rows["diag"]["is_log_px"], rel=1e-6)  # metrics.json: a float32 mean
    d = own - ref
    assert rows["planar"]["is_diff"] == pytest.approx(float(d.mean()), abs=1e-12)
    assert rows["planar"]["is_diff_se"] == pytest.approx(float(d.std()) / math.sqrt(32), abs=1e-12)
    assert rows["diag"]["is_diff"] == 0 and rows["diag"]["is_diff_se"] == 0
    md = (out / "results.md").read_text()
    assert md.startswith("Δ: IS log p(x) minus that of diag-trace-K1-seed0, image by image")
    assert f"| {rows['planar']['is_diff']:+.2f} (s.e. {rows['planar']['is_diff_se']:.2f}) |" in md
    assert "| 0 (reference) |" in md

    other = tmp_path / "other"  # a second grid paired against the first grid's planar cell
    tiny.guides, tiny.reference = ("diag",), str(out / "cells" / "planar-trace-K1-seed0")
    (row,) = compare(tiny, other, log=lambda s: None)
    assert row["is_diff"] == pytest.approx(-rows["planar"]["is_diff"], abs=1e-9)  # same diag run, seed 0
    assert row["reference"] == tiny.reference

    tiny.reference = str(tmp_path)  # a folder with no per-image values: one line, nothing trained
    with pytest.raises(DataError, match=r"holds no test_log_px.pt; give a finished run folder or a grid's cell"):
        compare(tiny, tmp_path / "third", log=lambda s: None)
    assert not (tmp_path / "third").exists()
