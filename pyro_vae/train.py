"""Training: stochastic variational inference with Trace_ELBO and Adam, one checkpoint per epoch,
exact resume.

Each step is what ``pyro.infer.SVI.step`` does, written out so that the fast path is the default
(``benchmarks/step_overhead.py``): the estimator's ``loss_and_grads`` (the backward pass inside),
then one fused ``torch.optim.Adam`` over all of the VAE's parameters, where ``pyro.optim.Adam``
would run one optimizer per parameter tensor. Pyro's argument validation runs on the first batch
(:func:`pyro_vae.elbos.check_pair`) and is off inside the batch loop.

A run folder holds ``config.json``, ``metrics.json``, ``checkpoint.pt`` and the plots.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyro
import torch
from tqdm import tqdm

from . import plots
from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint, set_rng_state
from .config import RunConfig
from .data import ImageData, batches, check_images, load_dataset
from .elbos import build_elbo, check_pair
from .evaluate import elbo_terms, importance_log_px, summarize
from .io import atomic_write_text
from .vae import VAE

DEVICES = ("auto", "cpu", "cuda")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available. :raises ValueError: for unknown or unavailable names."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False; use --device cpu or auto")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


@dataclass
class Run:
    """A trained (or training) run: its folder, config, model, data and metrics."""

    out_dir: Path
    config: RunConfig
    vae: VAE
    data: ImageData | None  # None when loaded without data (e.g. for sampling)
    metrics: dict
    image_shape: tuple[int, ...]


def build_vae(config: RunConfig, x_dim: int) -> VAE:
    m = config.model
    return VAE(x_dim, m.z_dim, m.hidden_dims, m.likelihood, m.guide, m.flow_steps)


def make_optimizer(vae: VAE, lr: float) -> torch.optim.Adam:
    """One ``torch.optim.Adam`` over every parameter of ``vae``, fused on CPU and CUDA."""
    params = list(vae.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.Adam, vae: VAE, state: dict) -> None:
    """Restore ``optimizer`` from a checkpoint's ``optimizer`` entry.

    Checkpoints written before pyro_vae stepped one fused Adam hold ``pyro.optim.Adam``'s state
    instead, one Adam state per Pyro param name (``"decoder$$$net.0.weight"``); it is mapped onto
    the VAE's parameters, so those runs resume where they stopped.
    """
    if "param_groups" not in state:  # pyro.optim.PyroOptim.get_state()
        names = [name.replace(".", "$$$", 1) for name, _ in vae.named_parameters()]
        missing = [n for n in names if n not in state]
        if missing:
            raise CheckpointError(f"checkpoint optimizer state lacks {missing[0]!r}; it was written by another model")
        fresh = optimizer.state_dict()
        state = {
            "state": {i: state[n]["state"][0] for i, n in enumerate(names) if state[n]["state"]},
            "param_groups": fresh["param_groups"],
        }
    optimizer.load_state_dict(state)


def _beta(config: RunConfig, epoch: int) -> float:
    n = config.train.kl_warmup_epochs
    return 1.0 if n == 0 else min(1.0, epoch / n)


def default_out_dir(config: RunConfig) -> Path:
    return Path("runs") / f"vae-{config.data.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def fit(
    config: RunConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    data: ImageData | None = None,
) -> Run:
    """Train a VAE from scratch into a new run folder.

    Clears Pyro's param store, seeds every RNG with ``config.train.seed``, loads the data onto
    the device, trains for ``config.train.epochs`` and finishes with :func:`finish` (test metrics
    and plots).

    :param RunConfig config: defaults to ``RunConfig()``.
    :param out_dir: the run folder (default ``runs/vae-<dataset>-<time>``); it must not hold a run.
    :param ImageData data: already loaded data to train on (e.g. shared by the cells of
        :func:`pyro_vae.compare.compare`); by default it is loaded from ``config.data``.
    :raises ValueError: for bad config values or data, an estimator that does not fit the guide,
        or an ``out_dir`` that already holds a run.
    :raises TrainingDiverged: when the loss becomes NaN or infinite.
    """
    config = config or RunConfig()
    config.validate()
    device = resolve_device(config.train.device)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config)
    if (out_dir / CHECKPOINT_NAME).exists() or (out_dir / "config.json").exists():
        raise ValueError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or choose another --out")
    if data is None:
        data = load_dataset(config.data.dataset, config.data.data_dir, config.data.pixels, device)
    else:
        data = data.to(device)
    pyro.clear_param_store()
    pyro.set_rng_seed(config.train.seed)
    vae = build_vae(config, data.x_dim).to(device)
    check_images(data.train_x, name="training images", unit_interval=vae.lik.unit_interval)
    check_images(data.test_x, name="test images", unit_interval=vae.lik.unit_interval)
    build_elbo(config.train.elbo, config.train.particles, config.train.alpha, config.train.jit)  # checks the names
    check_pair(config.train.elbo, config.model.guide, vae.model, vae.guide, data.train_x[:2], jit=config.train.jit)
    pyro.clear_param_store()
    pyro.set_rng_seed(config.train.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.json")
    metrics = {"data": data.describe(), "epochs": []}
    return _train(
        Run(out_dir, config, vae, data, metrics, data.image_shape), make_optimizer(vae, config.train.lr), progress
    )


def load_run(run_dir: str | Path, device: str = "cpu", *, with_data: bool = True) -> tuple[Run, dict]:
    """Rebuild a run from its folder: config, model weights, and (optionally) its data.

    :returns: the :class:`Run` and the raw checkpoint dict.
    :raises CheckpointError: when the folder holds no readable run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} holds no run (no config.json); pass a folder written by pyro-vae train")
    config = RunConfig.load(run_dir / "config.json")
    dev = resolve_device(device)
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=dev)
    data = load_dataset(config.data.dataset, config.data.data_dir, config.data.pixels, dev) if with_data else None
    vae = build_vae(config, math.prod(ckpt["image_shape"])).to(dev)
    try:
        vae.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint in {run_dir} does not match its config.json ({str(e).splitlines()[0]})"
        ) from None
    metrics = {"data": data.describe() if data is not None else {}, "epochs": list(ckpt.get("history", []))}
    return Run(run_dir, config, vae, data, metrics, tuple(ckpt["image_shape"])), ckpt


def resume(run_dir: str | Path, epochs: int | None = None, *, device: str | None = None, progress: bool = True) -> Run:
    """Continue a run from its last checkpoint, optionally to a new total of ``epochs``.

    On CPU the result equals an uninterrupted run with the same seed: parameters, optimizer
    state and RNG states are all restored.
    """
    config = RunConfig.load(Path(run_dir) / "config.json") if (Path(run_dir) / "config.json").is_file() else None
    if config is not None:
        if epochs is not None:
            config.train.epochs = epochs
        if device is not None:
            config.train.device = device
        config.validate()
    run, ckpt = load_run(run_dir, device or (config.train.device if config else "auto"))
    run.config = config
    pyro.clear_param_store()
    optim = make_optimizer(run.vae, config.train.lr)
    load_optimizer_state(optim, run.vae, ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    config.save(run.out_dir / "config.json")
    return _train(run, optim, progress, start_epoch=ckpt["epoch"])


def train_step(elbo, vae: VAE, optimizer: torch.optim.Optimizer, *args: torch.Tensor) -> float:
    """One training step on a batch: ``elbo.loss_and_grads`` on the VAE's model/guide pair, then
    ``optimizer.step()`` and ``zero_grad()``; what ``pyro.infer.SVI.step`` does, with a torch optimizer.

    Pyro's argument validation is off for the step (the first batch is checked by
    :func:`pyro_vae.elbos.check_pair`). The parameters are left as they were when the loss is not finite.

    :param args: the model's arguments, e.g. ``x`` of shape ``(batch, x_dim)``.
    :returns: the loss, −ELBO summed over the batch (nats).
    """
    with pyro.validation_enabled(False):
        loss = elbo.loss_and_grads(vae.model, vae.guide, *args)
    if math.isfinite(loss):
        optimizer.step()
    optimizer.zero_grad()
    return loss


def _train(run: Run, optim: torch.optim.Optimizer, progress: bool, start_epoch: int = 0) -> Run:
    config, vae, data = run.config, run.vae, run.data
    t = config.train
    elbo = build_elbo(t.elbo, t.particles, t.alpha, t.jit)
    ckpt_path = run.out_dir / CHECKPOINT_NAME
    n_train = len(data.train_x)
    budget = config.train.max_seconds
    for epoch in range(start_epoch + 1, config.train.epochs + 1):
        if budget is not None and sum(r["seconds"] for r in run.metrics["epochs"]) >= budget:
            break
        vae.train()
        vae.beta = _beta(config, epoch)
        start = time.perf_counter()
        total = 0.0
        bar = tqdm(
            batches(data.epoch_train_x(), config.train.batch_size),
            total=math.ceil(n_train / config.train.batch_size),
            desc=f"epoch {epoch}/{config.train.epochs}",
            disable=not progress,
            leave=False,
        )
        for step, (x,) in enumerate(bar, 1):
            loss = train_step(elbo, vae, optim, x)
            if not math.isfinite(loss):
                kept = f"last good checkpoint: {ckpt_path} (epoch {epoch - 1})" if epoch > 1 else "no checkpoint yet"
                raise TrainingDiverged(f"loss became {loss} at epoch {epoch}, step {step}; {kept}. Try a lower --lr")
            total += loss
            if step % 10 == 0:
                bar.set_postfix(elbo=f"{-total / min(step * config.train.batch_size, n_train):.1f}")
        seconds = time.perf_counter() - start
        vae.beta = 1.0
        vae.eval()
        test = summarize(elbo_terms(vae.model, vae.guide, data.test_x))
        row = {
            "epoch": epoch,
            "train_elbo": -total / n_train,
            "test_elbo": test["elbo"],
            "test_reconstruction": test["reconstruction"],
            "test_kl": test["kl"],
            "beta": _beta(config, epoch),
            "seconds": seconds,
        }
        run.metrics["epochs"].append(row)
        if progress:
            tqdm.write(
                f"epoch {epoch:3d}  train ELBO {row['train_elbo']:9.2f}  test ELBO {row['test_elbo']:9.2f}"
                f"  ({seconds:.1f}s, nats/image, {data.pixels} pixels)"
            )
        save_checkpoint(
            ckpt_path,
            epoch=epoch,
            config=config.to_dict(),
            model=vae.state_dict(),
            optimizer=optim.state_dict(),
            history=run.metrics["epochs"],
            image_shape=list(run.image_shape),
        )
        write_metrics(run)
    return finish(run)


def write_metrics(run: Run) -> None:
    run.metrics["pixels"] = run.data.pixels
    atomic_write_text(run.out_dir / "metrics.json", json.dumps(run.metrics, indent=2) + "\n")


@torch.no_grad()
def final_metrics(vae: VAE, x: torch.Tensor, num_samples: int) -> dict:
    """Test ELBO with its two terms, IS log p(x) with K = ``num_samples``, and their gap (nats/image)."""
    vae.eval()
    out = summarize(elbo_terms(vae.model, vae.guide, x))
    log_px = importance_log_px(vae.model, vae.guide, x, num_samples=num_samples)
    out.update(summarize({"is_log_px": log_px}))
    out["is_num_samples"] = num_samples
    out["gap"] = out["is_log_px"] - out["elbo"]
    return out


def finish(run: Run) -> Run:
    """Final test metrics into ``metrics.json`` (key ``final``) and every plot into the run folder."""
    data, vae = run.data, run.vae
    final = final_metrics(vae, data.test_x, run.config.train.eval_num_samples)
    final["pixels"] = data.pixels
    run.metrics["final"] = final
    write_metrics(run)
    plots.save_run_plots(run)
    return run


__all__ = [
    "fit",
    "resume",
    "load_run",
    "finish",
    "train_step",
    "make_optimizer",
    "final_metrics",
    "resolve_device",
    "Run",
    "TrainingDiverged",
    "CheckpointError",
]
