"""Data-parallel training over 2 CPU processes (gloo), spawned by the tests themselves: the same
parameters as one process on the same global batches, the same test ELBO within noise, resume
after an interruption, rank 0 alone writing, and bad launches refused in one line."""

import json
import math
import os
import re
import socket

import numpy as np
import pyro
import pytest
import torch
import torch.multiprocessing as mp
from conftest import DeltaHead

from pyro_vae.cli import main
from pyro_vae.config import DataConfig, RunConfig
from pyro_vae.data.images import batches
from pyro_vae.data.load import load_data
from pyro_vae.errors import ConfigError
from pyro_vae.inference.elbos import ELBOS, build_elbo
from pyro_vae.models.ssvae import SSVAE
from pyro_vae.models.vae import VAE
from pyro_vae.training import distributed
from pyro_vae.training.train import fit, train_step

WORLD = 2
D, Z, H, C = 12, 3, 8, 3
ESTIMATORS = tuple(n for n, e in ELBOS.items() if not e.enumerates)  # "enum" trains M2 below


# ----------------------------------------------------------------------------- spawning
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, fn, args) -> None:
    """A rank of a 2-process launch: the environment torchrun would set, then ``fn(rank, *args)``."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    pyro.enable_validation(True)
    try:
        fn(rank, *args)
    finally:
        distributed.leave()


def launch(fn, *args) -> None:
    """Run ``fn(rank, *args)`` in 2 processes joined by gloo; a failure in either raises here."""
    mp.spawn(_entry, args=(_free_port(), fn, args), nprocs=WORLD, join=True)


# ----------------------------------------------------------------------------- a deterministic guide
def _models() -> dict:
    """Every estimator on a VAE, and M2's enum on an SSVAE, each with a Delta guide: q(z|x) = δ(z − μ(x)),
    so no step draws noise and the ranks' sums must equal one process's sum exactly."""
    out = {}
    for name in ESTIMATORS:
        pyro.set_rng_seed(0)
        vae = VAE(D, Z, (H,))
        vae.encoder.head = DeltaHead(H, Z)
        out[name] = (vae, build_elbo(name, num_particles=2 if ELBOS[name].multi_particle else 1))
    pyro.set_rng_seed(0)
    m2 = SSVAE(D, C, Z, (H,))
    m2.encoder.head = DeltaHead(H, Z)
    out["enum"] = (m2, build_elbo("enum"))
    return out


def _global_batches(name: str) -> list[tuple]:
    """Batches of 8, 5 and 1 images: even shards, uneven ones (3 and 2) and an empty one on rank 1."""
    g = torch.Generator().manual_seed(1)
    if name != "enum":
        return [(torch.rand(n, D, generator=g),) for n in (8, 5, 1)]
    return [
        (torch.rand(n, D, generator=g), torch.rand(4, D, generator=g), torch.arange(4) % C, 0.75) for n in (8, 5, 1)
    ]


def _sgd(model) -> torch.optim.SGD:
    """SGD, not Adam: Adam's step hardly changes when the gradient is scaled, SGD's does, so a
    wrong loss scale (the sum of the ranks' gradients, or their mean, instead of the global
    batch's) cannot pass."""
    return torch.optim.SGD(model.parameters(), lr=1e-3)


def _train_delta(rank: int, out: str) -> None:
    torch.set_default_dtype(torch.float64)
    distributed.join(batch_size=8, device=torch.device("cpu"))
    results = {}
    for name, (model, elbo) in _models().items():
        step, optim = distributed.ParallelStep(model, elbo), _sgd(model)
        losses = [step(optim, *distributed.shard(args, rank, WORLD)) for args in _global_batches(name)]
        results[name] = {"losses": losses, "params": {k: v.clone() for k, v in model.state_dict().items()}}
    shards, noise = [], []
    for (x,) in distributed.epoch_batches(lambda: batches(torch.arange(10.0), 4), seed=0, epoch=1):
        shards.append(x)
        noise.append(torch.randn(()))  # what the estimator would draw on this rank
    results["epoch"] = {"shards": shards, "noise": noise}
    torch.save(results, f"{out}/rank{rank}.pt")


def test_ranks_shard_one_shuffle_and_draw_their_own_noise(delta_runs):
    """Both ranks shard the same shuffled global batches of an epoch (together they hold each batch
    of 4, 4 and 2 once, and every image once), and draw different noise."""
    rank0, rank1 = (r["epoch"] for r in delta_runs)
    whole = [torch.cat([a, b]) for a, b in zip(rank0["shards"], rank1["shards"])]
    assert [len(b) for b in whole] == [4, 4, 2] and sorted(torch.cat(whole).tolist()) == list(range(10))
    assert all(len(a) == len(b) for a, b in zip(rank0["shards"], rank1["shards"]))
    assert all(a != b for a, b in zip(rank0["noise"], rank1["noise"]))


@pytest.fixture(scope="module")
def delta_runs(tmp_path_factory) -> list[dict]:
    """What :func:`_train_delta` saved on each of the 2 ranks."""
    out = tmp_path_factory.mktemp("delta")
    launch(_train_delta, str(out))
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_two_processes_equal_one_on_the_same_global_batches(delta_runs):
    """With a Delta guide, 3 SGD steps over 2 processes (each on its shard, gradients averaged by
    DistributedDataParallel, the loss scaled by the world size) give the parameters and losses
    of one process stepping on the whole batches, to 1e-5, for every estimator that fits the guide
    and for M2's enumeration; both ranks hold the same parameters."""
    ranks = delta_runs
    torch.set_default_dtype(torch.float64)
    try:
        for name, (model, elbo) in _models().items():
            optim = _sgd(model)
            losses = [train_step(elbo, model, optim, *args) for args in _global_batches(name)]
            for r, got in enumerate(ranks):
                assert got[name]["losses"] == pytest.approx(losses, rel=1e-9), (name, r)
                for key, value in model.state_dict().items():
                    torch.testing.assert_close(got[name]["params"][key], value, rtol=0, atol=1e-5, msg=f"{name} {key}")
            assert any(
                not torch.equal(a, b)
                for a, b in zip(model.state_dict().values(), _models()[name][0].state_dict().values())
            )
    finally:
        torch.set_default_dtype(torch.float32)


# ----------------------------------------------------------------------------- real runs through fit
@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> str:
    """512 training and 500 test digits of MNIST-5k in an .npz file (``--dataset array``), so that a
    resumed run, which reloads its data from its config, trains on the same images."""
    data = load_data(DataConfig(), "cpu")
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=data.train_store[:512].reshape(-1, 28, 28), x_test=data.test_store[:500].reshape(-1, 28, 28))
    return str(path)


def _config(digits: str) -> RunConfig:
    cfg = RunConfig()
    cfg.data.dataset, cfg.data.data_dir = "array", digits
    cfg.model.z_dim, cfg.model.hidden_dims = 4, (64,)
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_num_samples, cfg.train.device = 3, 64, 10, "cpu"
    return cfg


def _full_and_interrupted(rank: int, cfg: dict, out: str) -> None:
    """An uninterrupted run, and a run stopped by Ctrl-C in its second epoch and then resumed."""
    from pyro_vae.errors import RunInterrupted
    from pyro_vae.training.train import resume

    config = RunConfig.from_dict(cfg)
    full = fit(config, f"{out}/full", progress=False)
    batches = distributed.epoch_batches

    def interrupted(make, seed, epoch):
        for step, args in enumerate(batches(make, seed, epoch)):
            if epoch == 2 and step == 3:
                raise KeyboardInterrupt
            yield args

    distributed.epoch_batches = interrupted
    with pytest.raises(RunInterrupted, match="keeps epoch 1 of 3"):
        fit(config, f"{out}/cut", progress=False)
    distributed.epoch_batches = batches
    resumed = resume(f"{out}/cut", progress=False)
    torch.save({"full": full.vae.state_dict(), "resumed": resumed.vae.state_dict()}, f"{out}/rank{rank}.pt")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, digits):
    """The folder of the runs that :func:`_full_and_interrupted` made over 2 processes."""
    out = tmp_path_factory.mktemp("two")
    launch(_full_and_interrupted, _config(digits).to_dict(), str(out))
    return out


def test_two_processes_reach_the_test_elbo_of_one(two_process_runs, digits, tmp_path):
    """The real guide, 3 epochs on 512 digits: 2 processes and 1 process draw other noise and other
    batch orders, so their final test ELBOs differ by the spread of training runs, which lies below the
    resolution of the 500-image test set; 4 standard errors of the difference of two test means
    (each about 2 nats) bound it, with a false-failure probability of 6e-5 under normality.
    Rank 0 alone wrote the run folder: the same files as one process writes."""
    one = fit(_config(digits), tmp_path / "one", progress=False).metrics["final"]
    two = json.loads((two_process_runs / "full" / "metrics.json").read_text())["final"]
    assert two["elbo"] > -450 and one["elbo"] > -450  # trained: an untrained decoder gives about −543
    assert abs(two["elbo"] - one["elbo"]) < 4 * math.hypot(one["elbo_se"], two["elbo_se"])
    assert sorted(p.name for p in (two_process_runs / "full").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


def test_resume_under_two_processes_equals_an_uninterrupted_run(two_process_runs):
    """Each epoch reseeds the data order and each rank's noise from (seed, epoch, rank), so a run
    interrupted in epoch 2 and resumed from its epoch-1 checkpoint under the same launch ends with
    the parameters, epoch rows and final metrics of an uninterrupted run, bit for bit, on both ranks."""
    for r in range(WORLD):
        got = torch.load(two_process_runs / f"rank{r}.pt")
        for key, value in got["full"].items():
            assert torch.equal(got["resumed"][key], value), (r, key)
    full, cut = (json.loads((two_process_runs / d / "metrics.json").read_text()) for d in ("full", "cut"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert [r["epoch"] for r in cut["epochs"]] == [1, 2, 3]
    assert strip(full["epochs"]) == strip(cut["epochs"]) and full["final"] == cut["final"]


# ----------------------------------------------------------------------------- pieces and bad launches
def test_shard_cuts_every_batch_tensor_and_keeps_numbers():
    x, y = torch.arange(10).reshape(5, 2), torch.arange(5)
    parts = [distributed.shard((x, y, 0.5), r, 2) for r in range(2)]
    assert [len(p[0]) for p in parts] == [3, 2] and all(p[2] == 0.5 for p in parts)
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_derived_seeds_differ_by_epoch_and_stream_and_repeat():
    seeds = {distributed.derived_seed(0, e, s) for e in range(3) for s in ("order", "rank0", "rank1")}
    assert len(seeds) == 9 and distributed.derived_seed(0, 1, "rank1") == distributed.derived_seed(0, 1, "rank1")
    assert all(0 <= s < 2**32 for s in seeds)


@pytest.fixture
def rank0_of_3(monkeypatch):
    for k, v in dict(RANK="0", WORLD_SIZE="3", LOCAL_RANK="0", LOCAL_WORLD_SIZE="3").items():
        monkeypatch.setenv(k, v)


def test_world_size_must_divide_the_batch(rank0_of_3, tmp_path, capsys):
    with pytest.raises(ConfigError, match="batch_size must be divisible by the 3 processes of the launch"):
        distributed.join(128, torch.device("cpu"))
    code = main(["train", "--device", "cpu", "--batch-size", "128", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--batch-size must be divisible by the 3 processes of the launch" in err
    assert "got 128; use --batch-size 126 or 129, or another --nproc-per-node" in err
    assert not (tmp_path / "run").exists() and distributed.current() is None


def test_an_unavailable_backend_is_refused(rank0_of_3, monkeypatch):
    monkeypatch.setattr(distributed.dist, "is_gloo_available", lambda: False)
    with pytest.raises(distributed.LaunchError, match="the gloo backend that training on cpu needs is not available"):
        distributed.join(129, torch.device("cpu"))


def test_more_processes_than_gpus_are_refused(rank0_of_3, monkeypatch):
    monkeypatch.setattr(distributed.dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(distributed.LaunchError, match="each of the 3 processes of this node needs a GPU of its own"):
        distributed.join(129, torch.device("cuda"))


def test_other_ranks_print_no_error_and_take_no_lock(monkeypatch, tmp_path, capsys):
    for k, v in dict(RANK="1", WORLD_SIZE="3").items():
        monkeypatch.setenv(k, v)
    assert main(["train", "--device", "cpu", "--batch-size", "128", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "" and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_torchrun_launch_is_interrupted_resumed_and_finishes(tmp_path, digits):
    """The command line end to end: ``torchrun --nproc-per-node 2 -m pyro_vae train``, Ctrl-C (SIGINT
    to the launch's process group) once epoch 1 is written, then ``--resume`` under the same launch."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    torchrun = shutil.which("torchrun") or pytest.skip("torchrun is not on PATH")
    out = tmp_path / "run"
    launch_ = [torchrun, "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "pyro_vae", "train"]
    flags = ["--dataset", "array", "--data-dir", digits, "--z-dim", "4", "--hidden-dims", "64", "--device", "cpu"]
    flags += ["--batch-size", "16", "--epochs", "5", "--num-samples", "10", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen(launch_ + flags, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if (out / "metrics.json").is_file() and json.loads((out / "metrics.json").read_text())["epochs"]:
            break
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGINT)
    err = first.communicate(timeout=120)[1]
    kept = re.search(rf"checkpoint.pt keeps epoch (\d) of 5; continue with pyro-vae train --resume {out}", err)
    assert kept and 1 <= int(kept[1]) < 5, err[-2000:]
    resumed = subprocess.run(
        [*launch_, "--resume", str(out), "--quiet"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.count(f"{out}: test ELBO") == 1  # rank 0 alone reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3, 4, 5] and "final" in metrics
