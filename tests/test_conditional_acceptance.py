"""Acceptance runs of the conditional models on MNIST-5k (``pytest -m slow``; minutes each on 2
cores), through ``fit`` at the defaults exactly as ``pyro-vae train --model cvae`` and
``pyro-vae train --model ssvae --labels 100`` run them: the default CVAE draws the digits it is asked
for, and M2 beats its baseline classifier at 100 labels. Both are seeded, so they pass or fail the
same way every time on one machine."""

import pytest
import torch

from pyro_vae.config import RunConfig
from pyro_vae.training.train import fit

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    """One thread, as the README's runs (``OMP_NUM_THREADS=1``): on CPU the thread count changes the
    order of float reductions and so the path of 9,400 steps; these are the runs the README measured."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "prior, fidelity, log_pxy",
    # the targets: fidelity ≥ 0.97 (learned prior) and ≥ 0.95 (standard), IS log p(x|y)
    # within 1 nat of the earlier defaults' −100.3 and −102.0
    [(None, 0.97, -100.3 - 1.0), ("standard", 0.95, -102.0 - 1.0)],
)
def test_default_cvae_draws_the_digit_asked_for(tmp_path, prior, fidelity, log_pxy):
    """The CVAE at its defaults: label fidelity read by the judge (97.4% on the test digits), 200
    samples per class (binomial SE ≤ 0.004 on the mean at these levels), and IS log p(x|y) with
    K = 1000 (SE 0.9 nats over the 1,000 test digits)."""
    config = RunConfig.from_dict({"model": {"model": "cvae", "prior": prior}})
    final = fit(config, tmp_path / "run", progress=False).metrics["final"]
    assert final["judge_accuracy"] > 0.96
    assert final["label_fidelity"] >= fidelity, final
    assert final["is_log_px"] >= log_pxy, final


def test_m2_beats_its_baseline_with_100_labels(tmp_path):
    """M2 at its defaults (the ``enum`` estimator, α' and w as recorded) against the same classifier
    network trained on the same 100 labels for as many steps; one label draw (label seed 0). The
    README's table gives the mean over 5 draws; one draw must clear 2 points (each accuracy has a
    binomial SE of 0.013 on 1,000 images)."""
    config = RunConfig.from_dict({"model": {"model": "ssvae"}, "data": {"labels": 100}})
    config.train.fidelity_samples = 0
    final = fit(config, tmp_path / "run", progress=False).metrics["final"]
    assert final["accuracy"] >= final["baseline_accuracy"] + 0.02, final
