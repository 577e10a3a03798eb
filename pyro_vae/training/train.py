"""Training: stochastic variational inference with Trace_ELBO and Adam, one checkpoint per epoch,
exact resume, for every model in :data:`pyro_vae.models.registry.MODELS` (``vae``, ``cvae``, ``ssvae``).

Each step is what ``pyro.infer.SVI.step`` does, written out so that the fast path is the default
(``benchmarks/step_overhead.py``): the estimator's ``loss_and_grads`` (the backward pass inside),
then one fused ``torch.optim.Adam`` over all of the VAE's parameters, where ``pyro.optim.Adam``
would run one optimizer per parameter tensor. Pyro's argument validation runs on the first batch
(:func:`pyro_vae.inference.elbos.check_pair`) and is off inside the batch loop.

What differs between the models (how they are built, what a training step and the test set pass
to them, their extra metrics) is each model class's own (:class:`pyro_vae.models.base.BaseVAE`'s hooks);
this module keeps the loop, :func:`fit` and :func:`resume`.

A run folder holds ``config.json``, ``metrics.json``, ``checkpoint.pt``, the plots and, once finished,
``test_log_px.pt`` (each test image's IS log p(x), :mod:`pyro_vae.training.final`).

Under ``torchrun`` the processes of the launch train one model together (:mod:`pyro_vae.training.distributed`):
each step runs on the rank's shard of the batch, and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyro
import torch
from torch import nn
from tqdm import tqdm

from pyro_vae import plots
from pyro_vae.atomic import atomic_write_text
from pyro_vae.config import RunConfig, TrainConfig, resolve_device
from pyro_vae.data.images import ImageData
from pyro_vae.data.load import check_data_config, load_data
from pyro_vae.errors import CheckpointError, ConfigError, DataError, RunExists, RunInterrupted, TrainingDiverged
from pyro_vae.inference.elbos import accepted_estimators, build_elbo, check_pair
from pyro_vae.inference.evaluate import PER_IMAGE_NAME, elbo_terms, save_per_image, summarize
from pyro_vae.models.base import BaseVAE
from pyro_vae.models.registry import _available_memory, build_model, check_config, get_model
from pyro_vae.training import distributed, tensorboard
from pyro_vae.training.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from pyro_vae.training.compiling import compile_networks
from pyro_vae.training.final import final_metrics
from pyro_vae.training.runfolder import CHECKPOINT_NAME, RunLock, run_folder, run_state

Tune = Callable[[RunConfig, ImageData, Path, bool], dict]  # see fit's tune


@dataclass
class Run:
    """A trained (or training) run: its folder, config, model, data and metrics."""

    out_dir: Path
    config: RunConfig
    vae: BaseVAE
    data: ImageData | None  # None when loaded without data (e.g. for sampling)
    metrics: dict
    image_shape: tuple[int, ...]


def _fill_options(config: RunConfig, values: dict) -> None:
    """Set the model options left ``None`` in ``config`` to ``values`` (the model's, for this config)."""
    for name, value in values.items():
        if getattr(config.model, name) is None:
            setattr(config.model, name, value)


def resolve_defaults(config: RunConfig) -> RunConfig:
    """A copy of ``config`` whose options left out (``None``) hold the model's defaults: its model
    options (:attr:`pyro_vae.models.base.BaseVAE.defaults`), estimator and epochs. :func:`fit` records them."""
    config = RunConfig.from_dict(config.to_dict())
    cls = get_model(config.model.model)
    if config.train.elbo is None:
        config.train.elbo = cls.default_estimator
    if config.train.epochs is None:
        config.train.epochs = cls.default_epochs
    _fill_options(config, cls.defaults_for(config.model))
    return config


def recorded_config(path: Path) -> RunConfig:
    """A run's ``config.json``. Model options it lacks (written before they existed) take what such
    runs were built with (:attr:`pyro_vae.models.base.BaseVAE.legacy`). M2 runs recorded before the ``enum``
    estimator existed name ``trace`` for the ``TraceEnum_ELBO`` they trained with; they are read as
    ``enum``. An estimator left out (``null``) is the model's default."""
    config = RunConfig.load(path)
    cls = get_model(config.model.model)
    if config.train.elbo is None or (config.train.elbo == "trace" and "trace" not in accepted_estimators(cls)):
        config.train.elbo = cls.default_estimator
    if config.train.epochs is None:
        config.train.epochs = cls.default_epochs
    _fill_options(config, cls.legacy_for(config.model))
    return config


def make_elbo(t: TrainConfig):
    """The estimator ``t.elbo`` names, with its particles, α and JIT option."""
    return build_elbo(t.elbo, t.particles, t.alpha, t.jit)


def make_optimizer(vae: nn.Module, lr: float) -> torch.optim.Adam:
    """One ``torch.optim.Adam`` over every parameter of ``vae``, fused on CPU and CUDA."""
    params = list(vae.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def _beta(config: RunConfig, epoch: int) -> float:
    n = config.train.kl_warmup_epochs
    return 1.0 if n == 0 else min(1.0, epoch / n)


def default_out_dir(config: RunConfig) -> Path:
    """``runs/<model>-<dataset>-<time>``: the run folder when none is given."""
    return Path("runs") / f"{config.model.model}-{config.data.dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def fit(
    config: RunConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    data: ImageData | None = None,
    tune: Tune | None = None,
) -> Run:
    """Train a VAE from scratch into a new run folder.

    Takes the folder's lock (:class:`pyro_vae.training.runfolder.RunLock`) for the whole run, clears Pyro's
    param store, seeds every RNG with ``config.train.seed``, loads the data onto the device, writes
    ``config.json`` and an epoch-0 checkpoint, trains for ``config.train.epochs`` and finishes with
    :func:`finish` (test metrics and plots).

    :param RunConfig config: defaults to ``RunConfig()``.
    :param out_dir: the run folder (default ``runs/vae-<dataset>-<time>``); it must not hold a
        checkpoint. A ``config.json`` alone (a run killed before its first checkpoint) is replaced.
    :param ImageData data: already loaded data to train on (e.g. shared by the cells of
        :func:`pyro_vae.experiments.grid.compare`); by default it is loaded from ``config.data``.
    :param tune: ``tune(config, data, out_dir, progress) -> dict``, run under the folder's lock once
        the data are loaded and checked, before the model is built: it may choose options of
        ``config`` (in place) and returns what ``metrics.json`` records of the choice. A
        ``config.train.class_weight_grid`` needs one: :func:`pyro_vae.experiments.class_weight.fit_with_selection`
        passes it.
    :raises ConfigError: for bad config values, naming the field, or a ``config`` that is not a
        :class:`RunConfig`.
    :raises ValueError: for bad data, or an estimator that does not fit the guide.
    :raises RunExists: when ``out_dir`` already holds a run (a finished one even without its checkpoint).
    :raises pyro_vae.errors.RunLocked: when another process is writing ``out_dir``.
    :raises TrainingDiverged: when the loss becomes NaN or infinite.
    :raises pyro_vae.errors.LaunchError: under ``torchrun``, when the launch cannot train
        (see :func:`pyro_vae.training.distributed.join`).
    """
    if config is not None and not isinstance(config, RunConfig):
        raise ConfigError(
            "config", f"must be a RunConfig (pyro_vae.RunConfig()), got {type(config).__name__} {config!r:.60}"
        )
    config = RunConfig.from_dict(config.to_dict()) if config is not None else RunConfig()
    check_config(config)
    config = resolve_defaults(config)
    config.run_id = uuid.uuid4().hex  # written into config.json and every checkpoint
    check_config(config)  # the model's default estimator too
    _check_tune(config, tune)
    if data is None:
        check_data_config(config.data)
    distributed.join(config.train.batch_size, resolve_device(config.train.device))
    out_dir = run_folder(out_dir) if out_dir is not None else default_out_dir(config)
    with RunLock(out_dir):
        state = distributed.from_rank0(run_state(out_dir))
        if state != "new":
            how = "choose another --out" if state == "finished" else f"continue it with --resume {out_dir}"
            raise RunExists(
                f"{out_dir} already holds a {state} run{_missing(out_dir, state)}; {how} or choose another --out"
            )
        return _start(config, out_dir, progress, data, tune)


def _missing(run_dir: Path, state: str) -> str:
    """`` (its checkpoint.pt is missing)`` for a finished run without its checkpoint, else ``""``."""
    if state != "finished" or (run_dir / CHECKPOINT_NAME).is_file():
        return ""
    return f" (metrics.json holds its final metrics; its {CHECKPOINT_NAME} is missing)"


def _check_tune(config: RunConfig, tune: Tune | None) -> None:
    if tune is None and config.train.class_weight_grid:
        raise ConfigError(
            "class_weight_grid",
            "is chosen on a validation split by pyro_vae.experiments.class_weight.fit_with_selection "
            "(what pyro-vae train runs); call that, or set class_weight alone",
        )


def _interrupted_before_training(out_dir: Path) -> RunInterrupted:
    return RunInterrupted(
        f"interrupted before the first checkpoint; nothing was trained and {out_dir} keeps at most its "
        f"config.json; pyro-vae train --resume {out_dir} starts it again"
    )


def _build_and_train(
    config: RunConfig, out_dir: Path, progress: bool, data: ImageData | None, tune: Tune | None
) -> Run:
    device = resolve_device(config.train.device)
    if data is None:
        data = load_data(config.data, device)
    else:
        data = data.to(device)
    n_train, n_test = len(data.train_images), len(data.test_images)
    if n_train == 0 or n_test == 0:
        empty = "training" if n_train == 0 else "test"
        raise DataError(
            f"the {empty} set of {data.name} holds no images; give at least one training and one test image"
        )
    if config.run_id is None:  # a run of a config.json without one (written before ids), started again
        config.run_id = uuid.uuid4().hex
    cls = get_model(config.model.model)
    cls.check_data(data, config)  # labels where the model needs them, --labels against the training set
    tuned = tune(config, data, out_dir, progress) if tune is not None else {}  # may set options in config
    pyro.clear_param_store()
    pyro.set_rng_seed(config.train.seed)
    vae = build_model(config, data.image_shape, data.num_classes).to(device)
    if config.train.compile:
        compile_networks(vae)
    data.check(unit_interval=vae.lik.unit_interval)
    run = Run(out_dir, config, vae, data, {"data": data.describe(), **tuned, "epochs": []}, data.image_shape)
    make_elbo(config.train)  # checks the estimator's name and options
    _check_step_memory(config, data, device)
    args = vae.evaluation_args(data.train_images[:2], None if data.train_y is None else data.train_y[:2])
    check_pair(config.train.elbo, config.model.guide, vae.model, vae.guide, *args, jit=config.train.jit)
    pyro.clear_param_store()
    pyro.set_rng_seed(config.train.seed)
    optim = make_optimizer(vae, config.train.lr)
    if distributed.is_writer():
        config.save(out_dir / "config.json")
    _save(run, optim, 0)  # epoch 0: the run is resumable from its first step on
    return _train(run, optim, progress)


def _check_step_memory(config: RunConfig, data: ImageData, device: torch.device) -> None:
    """:raises ConfigError: naming ``particles`` when one step's likelihood alone (K × batch × pixels,
    float32) exceeds the memory, before anything is allocated."""
    t = config.train
    batch = min(t.batch_size, len(data.train_images))
    need = 4 * t.particles * batch * (math.prod(data.image_shape) + config.model.z_dim)
    available = _available_memory(device)
    if available is not None and need > available:
        raise ConfigError(
            "particles",
            f"{t.particles} with batch_size {t.batch_size} is too large: one step needs at least "
            f"{need / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB available; "
            "lower --particles or --batch-size",
        )


def _start(config: RunConfig, out_dir: Path, progress: bool, data: ImageData | None, tune: Tune | None) -> Run:
    """Load, build, write ``config.json`` and the epoch-0 checkpoint, then train."""
    try:
        return _build_and_train(config, out_dir, progress, data, tune)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise _interrupted_before_training(out_dir) from None


def load_run(run_dir: str | Path, device: str = "cpu", *, with_data: bool = True) -> tuple[Run, dict]:
    """Rebuild a run from its folder: config, model weights, and (optionally) its data.

    The config passes every check that :func:`fit` runs (:func:`pyro_vae.models.registry.check_config`),
    and the checkpoint must carry the run id of ``config.json`` (runs made before ids existed have
    none in either).

    :returns: the :class:`Run` and the raw checkpoint dict.
    :raises CheckpointError: when the folder holds no readable run, or a checkpoint of another run.
    """
    run_dir = run_folder(run_dir, "RUN_DIR")
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} holds no run (no config.json); pass a folder written by pyro-vae train")
    config = recorded_config(run_dir / "config.json")
    check_config(config)
    dev = resolve_device(device)
    ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location=dev)
    if ckpt.get("run_id") != config.run_id:
        raise CheckpointError(
            f"checkpoint {run_dir / CHECKPOINT_NAME} belongs to another run (run id {ckpt.get('run_id')}, but "
            f"{run_dir / 'config.json'} has {config.run_id}); put back this run's own checkpoint"
        )
    data = load_data(config.data, dev) if with_data else None
    vae = build_model(config, tuple(ckpt["image_shape"]), ckpt.get("num_classes", 10)).to(dev)
    try:
        vae.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint in {run_dir} does not match its config.json ({str(e).splitlines()[0]})"
        ) from None
    metrics = {"data": data.describe() if data is not None else {}, "epochs": list(ckpt.get("history", []))}
    metrics.update(_tuned_record(run_dir))
    return Run(run_dir, config, vae, data, metrics, tuple(ckpt["image_shape"])), ckpt


def _tuned_record(run_dir: Path) -> dict:
    """What a model's ``tune`` recorded in the run's ``metrics.json`` (kept across a resume)."""
    try:
        recorded = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in recorded.items() if k not in ("data", "epochs", "final", "pixels")}


def resume(
    run_dir: str | Path,
    epochs: int | None = None,
    *,
    device: str | None = None,
    progress: bool = True,
    tune: Tune | None = None,
) -> Run:
    """Continue a run from its last checkpoint, optionally to a new total of ``epochs``.

    ``tune`` is :func:`fit`'s, for a run killed before its first checkpoint that starts again.

    On CPU the result equals an uninterrupted run with the same seed: parameters, optimizer
    state and RNG states are all restored. A run killed before its first checkpoint (a
    ``config.json`` alone) starts again from the beginning with the same config and seed.

    :raises CheckpointError: when the folder holds no run, or its checkpoint is damaged.
    :raises ConfigError: when ``epochs`` is below the epochs already trained, or the run has
        finished and ``epochs`` adds none.
    """
    run_dir = run_folder(run_dir, "--resume")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} holds no run (no such folder); pass a folder written by pyro-vae train")
    with RunLock(run_dir):
        if not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir} holds no run (no config.json); pass a folder written by pyro-vae train")
        config = recorded_config(run_dir / "config.json")
        if epochs is not None:
            config.train.epochs = epochs
        if device is not None:
            config.train.device = device
        check_config(config)
        _check_tune(config, tune)
        distributed.join(config.train.batch_size, resolve_device(config.train.device))
        state = distributed.from_rank0(run_state(run_dir))
        if state == "new":  # killed before the epoch-0 checkpoint: nothing trained, start again
            return _start(config, run_dir, progress, None, tune)
        if _missing(run_dir, state):
            raise CheckpointError(
                f"{run_dir} holds a finished run{_missing(run_dir, state)}; it cannot train on without it: "
                f"restore {run_dir / CHECKPOINT_NAME}, or train a new run with another --out"
            )
        run, ckpt = load_run(run_dir, config.train.device)
        if config.train.compile:
            compile_networks(run.vae)
        done = ckpt["epoch"]
        if config.train.epochs < done:
            raise ConfigError(
                "epochs", f"is the new total and must be at least the {done} epochs {run_dir} has trained, got {epochs}"
            )
        if state == "finished" and config.train.epochs == done:
            raise ConfigError(
                "epochs", f"must exceed the {done} epochs of the finished run in {run_dir} to train on, got {done}"
            )
        run.config = config
        pyro.clear_param_store()
        optim = make_optimizer(run.vae, config.train.lr)
        try:
            optim.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint in {run_dir} has an optimizer state that does not fit ({e})") from None
        try:
            set_rng_state(ckpt["rng"])
        except (TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint in {run_dir} has RNG states that do not fit ({e})") from None
        if distributed.is_writer():  # every check is done: the first write
            config.save(run_dir / "config.json")
        write_metrics(run)  # drops the final metrics of a finished run that trains on
        return _train(run, optim, progress, start_epoch=done)


def train_step(elbo, vae: BaseVAE, optimizer: torch.optim.Optimizer, *args: torch.Tensor) -> float:
    """One training step on a batch: ``elbo.loss_and_grads`` on the VAE's model/guide pair, then
    ``optimizer.step()`` and ``zero_grad()``; what ``pyro.infer.SVI.step`` does, with a torch optimizer.

    Pyro's argument validation is off for the step (the first batch is checked by
    :func:`pyro_vae.inference.elbos.check_pair`). The parameters are left as they were when the loss is not finite.

    :param vae: a model of :data:`pyro_vae.models.registry.MODELS`; its ``loss_and_grads(elbo, *args)``
        runs the estimator.
    :param args: the arguments of one step, e.g. ``x`` of shape ``(batch, x_dim)`` (``vae``),
        ``x, y`` (``cvae``), or an unlabelled and a labelled batch (``ssvae``).
    :returns: the loss, −ELBO summed over the batch (nats).
    """
    with pyro.validation_enabled(False), _nan_checked_here():
        loss = vae.loss_and_grads(elbo, *args)
    if math.isfinite(loss):
        optimizer.step()
    optimizer.zero_grad()
    return loss


@contextlib.contextmanager
def _nan_checked_here() -> Iterator[None]:
    """Pyro's NaN warnings off: the caller checks the loss and raises :class:`TrainingDiverged`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        yield


def _save(run: Run, optim: torch.optim.Optimizer, epoch: int) -> None:
    if not distributed.is_writer():
        return
    save_checkpoint(
        run.out_dir / CHECKPOINT_NAME,
        epoch=epoch,
        config=run.config.to_dict(),
        model=run.vae.state_dict(),
        optimizer=optim.state_dict(),
        history=run.metrics["epochs"],
        image_shape=list(run.image_shape),
        num_classes=run.data.num_classes,
        **({"run_id": run.config.run_id} if run.config.run_id is not None else {}),
    )


def _train(run: Run, optim: torch.optim.Optimizer, progress: bool, start_epoch: int = 0) -> Run:
    """Train from ``start_epoch`` (whose checkpoint exists) to the end, then :func:`finish`.

    :raises RunInterrupted: on Ctrl-C, saying which epoch the checkpoint keeps.
    """
    saved = start_epoch
    ckpt_path = run.out_dir / CHECKPOINT_NAME
    try:
        for epoch in _epochs(run, optim, progress, start_epoch):
            saved = epoch
        return finish(run)
    except KeyboardInterrupt:
        done = "training is complete, the final evaluation was not" if saved >= run.config.train.epochs else ""
        kept = f"{ckpt_path} keeps epoch {saved} of {run.config.train.epochs}" + (f" ({done})" if done else "")
        raise RunInterrupted(f"interrupted; {kept}; continue with pyro-vae train --resume {run.out_dir}") from None


def _epochs(run: Run, optim: torch.optim.Optimizer, progress: bool, start_epoch: int) -> Iterator[int]:
    """Train epoch after epoch, yielding each epoch number once its checkpoint is written."""
    config, vae, data = run.config, run.vae, run.data
    elbo = make_elbo(config.train)
    ckpt_path = run.out_dir / CHECKPOINT_NAME
    n_train = len(data.train_images)
    n_steps = vae.steps_per_epoch(data, config)
    budget = config.train.max_seconds
    group = distributed.current()
    step_on = functools.partial(train_step, elbo, vae) if group is None else distributed.ParallelStep(vae, elbo)
    writer = distributed.is_writer()
    log = tensorboard.open_log(run, start_epoch) if writer else None  # None without --tensorboard
    for epoch in range(start_epoch + 1, config.train.epochs + 1):
        spent = budget is not None and sum(r["seconds"] for r in run.metrics["epochs"]) >= budget
        if distributed.from_rank0(spent):
            break
        vae.train()
        vae.beta = _beta(config, epoch)
        start = time.perf_counter()
        total = 0.0
        epoch_batches = (
            vae.train_batches(data, config)
            if group is None
            else distributed.epoch_batches(lambda: vae.train_batches(data, config), config.train.seed, epoch)
        )
        bar = tqdm(
            epoch_batches,
            total=n_steps,
            desc=f"epoch {epoch}/{config.train.epochs}",
            disable=not progress or not writer,
            leave=False,
        )
        step = 0
        for step, args in enumerate(bar, 1):
            loss = step_on(optim, *args)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at epoch {epoch}, step {step}; last good checkpoint: {ckpt_path} "
                    f"(epoch {epoch - 1}). Try a lower --lr"
                )
            total += loss
            if step % 10 == 0:
                bar.set_postfix(elbo=f"{-total / min(step * config.train.batch_size, n_train):.1f}")
        seconds = time.perf_counter() - start
        vae.beta = 1.0
        if not writer:  # rank 0 evaluates and writes; the others go on to the next epoch
            yield epoch
            continue
        vae.eval()
        with _nan_checked_here():
            test = summarize(elbo_terms(vae.model, vae.guide, *vae.evaluation_args(data.test_images, data.test_y)))
        if not math.isfinite(test["elbo"]):
            raise TrainingDiverged(
                f"test ELBO became {test['elbo']} after epoch {epoch}; last good checkpoint: {ckpt_path} "
                f"(epoch {epoch - 1}). Try a lower --lr"
            )
        row = {
            "epoch": epoch,
            "train_elbo": -total / n_train,
            "test_elbo": test["elbo"],
            "test_reconstruction": test["reconstruction"],
            "test_kl": test["kl"],
            "beta": _beta(config, epoch),
            "seconds": seconds,
            "steps": step,
            **vae.epoch_metrics(data),
        }
        run.metrics["epochs"].append(row)
        if progress:
            tqdm.write(
                f"epoch {epoch:3d}  train ELBO {row['train_elbo']:9.2f}  test ELBO {row['test_elbo']:9.2f}"
                f"  ({seconds:.1f}s, nats/image, {data.pixels} pixels)"
            )
        _save(run, optim, epoch)
        write_metrics(run)
        if log is not None:
            log.epoch(row, vae, data)
        yield epoch
    if log is not None:
        log.close()


def write_metrics(run: Run) -> None:
    if not distributed.is_writer():
        return
    run.metrics["pixels"] = run.data.pixels
    atomic_write_text(run.out_dir / "metrics.json", json.dumps(run.metrics, indent=2) + "\n")


def finish(run: Run) -> Run:
    """Every plot into the run folder, then the final test metrics into ``metrics.json`` (key
    ``final``), which marks the run finished: a run killed (or out of disk) while drawing is still
    resumable, and ``--resume`` finishes it. By rank 0 alone under ``torchrun``; the other ranks'
    runs have no ``final`` metrics."""
    if not distributed.is_writer():
        return run
    data, vae = run.data, run.vae
    per_image: dict = {}
    final = final_metrics(vae, data.test_x, run.config.train.eval_num_samples, data.test_y, per_image)
    save_per_image(run.out_dir / PER_IMAGE_NAME, per_image["is_log_px"])  # for paired differences
    final.update(vae.data_metrics(data, run.config.data.data_dir, run.config.train.fidelity_samples))
    final.update(vae.run_metrics(data, run.config, sum(r.get("steps", 0) for r in run.metrics["epochs"])))
    final["pixels"] = data.pixels
    run.metrics["final"] = final
    plots.save_run_plots(run)
    write_metrics(run)
    return run


__all__ = [
    "build_model",
    "make_elbo",
    "fit",
    "resolve_defaults",
    "resume",
    "load_run",
    "finish",
    "train_step",
    "make_optimizer",
    "Run",
    "TrainingDiverged",
    "RunInterrupted",
    "RunExists",
    "CheckpointError",
]
