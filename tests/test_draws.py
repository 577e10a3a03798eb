"""``pyro-vae draws``: one semi-supervised setting over several draws of its labels."""

import json
import math

import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.experiments.draws import draws_markdown, summarize_draws
from pyro_vae.models.ssvae import labelled_subset

TINY_M2 = [
    "--model", "ssvae", "--labels", "20", "--z-dim", "2", "--hidden-dims", "32", "--epochs", "1",
    "--num-samples", "2", "--fidelity-samples", "0", "--quiet", "--device", "cpu",
]  # fmt: skip


def test_summary_is_the_mean_and_student_t_interval():
    rows = [
        {"label_seed": 0, "accuracy": 0.90, "baseline_accuracy": 0.80, "difference": 0.10},
        {"label_seed": 1, "accuracy": 0.92, "baseline_accuracy": 0.81, "difference": 0.11},
        {"label_seed": 2, "accuracy": 0.94, "baseline_accuracy": 0.82, "difference": 0.12},
    ]
    summary = summarize_draws(rows)
    # sample sd 0.02 (0.01 for the others), t_{0.975, 2} = 4.302653: half-width t · sd / √3
    assert summary["accuracy"]["mean"] == pytest.approx(0.92)
    assert summary["accuracy"]["half_width"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert summary["difference"]["half_width"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-6)
    assert set(summary) == {"accuracy", "baseline_accuracy", "difference"} and summary["accuracy"]["draws"] == 3
    table = draws_markdown(rows, summary)
    assert "| mean ± 95% interval (3 draws) | 0.9200 ± 0.0497 | 0.8100 ± 0.0248 | 0.1100 ± 0.0248 |" in table


def test_label_seeds_draw_different_balanced_subsets():
    y = torch.arange(200) % 10
    a, b = labelled_subset(y, 20, 10, seed=0), labelled_subset(y, 20, 10, seed=1)
    assert not torch.equal(a, b)
    assert torch.bincount(y[a], minlength=10).tolist() == [2] * 10 == torch.bincount(y[b], minlength=10).tolist()
    assert torch.equal(a, labelled_subset(y, 20, 10, seed=0))


def test_draws_trains_one_run_per_seed_and_reads_them_back(tmp_path, capsys):
    out = tmp_path / "draws"
    assert main(["draws", *TINY_M2, "--label-seeds", "3,7", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "20 labels, 2 label draws (mean ± 95% interval): M2 q(y|x) test accuracy" in printed
    saved = json.loads((out / "draws.json").read_text())
    assert [r["label_seed"] for r in saved["draws"]] == [3, 7]
    for seed in (3, 7):
        config = json.loads((out / f"label-seed-{seed}" / "config.json").read_text())
        assert config["data"]["label_seed"] == seed and config["train"]["seed"] == 0
    accuracies = [r["accuracy"] for r in saved["draws"]]
    assert saved["summary"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    for r in saved["draws"]:
        assert r["difference"] == pytest.approx(r["accuracy"] - r["baseline_accuracy"])
    stamp = (out / "label-seed-3" / "metrics.json").stat().st_mtime_ns
    assert main(["draws", *TINY_M2, "--label-seeds", "3,7", "--out", str(out)]) == 0  # finished draws are kept
    assert (out / "label-seed-3" / "metrics.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "draws.json").read_text())["summary"] == saved["summary"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--label-seeds", "0"], "--label-seeds needs at least two distinct seeds for an interval, got [0]"),
        (["--label-seeds", "1,1"], "--label-seeds needs at least two distinct seeds for an interval, got [1, 1]"),
        (["--model", "vae"], "--model must be a semi-supervised model for label draws (ssvae), got vae"),
    ],
)
def test_bad_draws_fail_in_one_line(tmp_path, capsys, args, message):
    argv = ["draws", *TINY_M2, *args, "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"pyro-vae draws: error: {message}"
    assert not list((tmp_path / "d").glob("label-seed-*"))


def test_draws_need_a_number_of_labels(tmp_path, capsys):
    argv = [a for a in TINY_M2 if a not in ("--labels", "20")]
    assert main(["draws", *argv, "--out", str(tmp_path / "d")]) == 2
    assert "--labels is required for label draws" in capsys.readouterr().err
