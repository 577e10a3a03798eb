"""Data-parallel training: one model trained by the N processes of a ``torchrun`` launch.

``torchrun --nproc-per-node N -m pyro_vae train ...`` starts N copies of the command. Each joins
the launch's ``torch.distributed`` process group (:func:`join`): backend ``gloo`` on the CPU,
``nccl`` on CUDA with one GPU per process (``LOCAL_RANK``). Then, at every step:

- every rank draws the same global batch, from a random stream that all ranks share (seeded by
  the run's seed and the epoch), and takes its shard of it (:func:`shard`);
- it runs the estimator on its shard with its own noise (seeded by the seed, the epoch and its
  rank), through :class:`ELBOLoss`, a module that ``DistributedDataParallel`` wraps and whose
  gradients it averages over the ranks;
- the loss is multiplied by N, so that the average of the N shards' gradients is the gradient of
  the loss summed over the global batch, as one process computes it; the reported loss is the sum
  of the shards' losses (one ``all_reduce`` of a number).

Rank 0 alone writes: it holds the run folder's lock (:class:`pyro_vae.training.runfolder.RunLock` takes
none on the other ranks), writes ``config.json``, the checkpoints, ``metrics.json`` and the plots,
and evaluates the test set; the other ranks train on. Because every epoch reseeds the data order
and each rank's noise from (seed, epoch, rank), ``--resume`` under the same launch continues
exactly where the checkpoint stopped, with no per-rank random state to save.

Outside a launch (no ``RANK`` and ``WORLD_SIZE`` in the environment) nothing here is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pyro_vae.errors import ConfigError, LaunchError


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or anything else that sets ``RANK`` and
    ``WORLD_SIZE``, as ``torch.distributed``'s ``env://`` initialization reads them)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass(frozen=True)
class Group:
    """This process's place in the launch.

    :ivar rank: 0 … ``world_size`` − 1; rank 0 writes the run folder.
    :ivar local_rank: the index of this process on its node, and of its GPU under CUDA.
    :ivar device: the device this process trains on.
    :ivar backend: ``gloo`` (CPU) or ``nccl`` (CUDA).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


_group: Group | None = None


def current() -> Group | None:
    """The group this process has joined (:func:`join`), or None in a single process."""
    return _group


def is_writer() -> bool:
    """Whether this process writes the run folder: a single process, or rank 0 of a launch."""
    return _group is None or _group.rank == 0


def join(batch_size: int, device: torch.device) -> Group | None:
    """Join the process group of the launch that started this process; None outside a launch.

    Checks the launch before anything is loaded or written, in one line each, then initializes
    ``torch.distributed`` from the environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
    ``WORLD_SIZE``) unless it is already initialized. Under CUDA, the process takes GPU
    ``LOCAL_RANK``.

    :param int batch_size: the global batch; every rank takes ``batch_size / world_size`` of it.
    :param device: the device the run asked for (``cpu`` or ``cuda``).
    :raises ConfigError: when the world size does not divide ``batch_size``.
    :raises LaunchError: when the device's backend is unavailable in this torch, or a CUDA process
        has no GPU of its own.
    """
    global _group
    if not launched():
        return None
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if batch_size % world:
        below = batch_size - batch_size % world
        choices = f"{below} or {below + world}" if below else f"{world}"
        raise ConfigError(
            "batch_size",
            f"must be divisible by the {world} processes of the launch (each takes an equal share of every "
            f"batch), got {batch_size}; use --batch-size {choices}, or another --nproc-per-node",
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    available = dist.is_available() and (dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available())
    if not available:
        other = "--device cpu (gloo)" if backend == "nccl" else "a torch build with torch.distributed"
        raise LaunchError(
            f"the {backend} backend that training on {device.type} needs is not available in this torch build; "
            f"use {other}"
        )
    if backend == "nccl":
        gpus, per_node = torch.cuda.device_count(), int(os.environ.get("LOCAL_WORLD_SIZE", local + 1))
        if max(per_node, local + 1) > gpus:
            raise LaunchError(
                f"each of the {max(per_node, local + 1)} processes of this node needs a GPU of its own, and the "
                f"node shows {gpus}; start at most {gpus} processes per node (--nproc-per-node {gpus})"
            )
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if _group is not None:
        return _group
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    _group = Group(dist.get_rank(), dist.get_world_size(), local, device, backend)
    return _group


def leave() -> None:
    """Leave the process group that :func:`join` joined (nothing outside a launch)."""
    global _group
    if _group is not None and dist.is_initialized():
        dist.destroy_process_group()
    _group = None


def from_rank0(value):
    """``value`` as rank 0 has it, on every rank (a decision rank 0 takes from the run folder)."""
    if _group is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------- seeds and batches
def derived_seed(seed: int, epoch: int, stream: str) -> int:
    """A seed for one epoch's ``stream`` (``"order"``, or a rank's noise ``"rank3"``), from the
    run's seed: the same on every process, different for every (seed, epoch, stream)."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # < 2**32, as NumPy's seed needs


class _SharedStream:
    """A random stream that every rank draws alike: the global RNG states (CPU, and the GPU of
    ``device``) are swapped in while it is active and swapped out after."""

    def __init__(self, seed: int, device: torch.device):
        self.devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(self.devices):
            torch.manual_seed(seed)
            self.state = self._get()

    def _get(self) -> tuple:
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(self.devices):
            cpu, cuda = self.state
            torch.set_rng_state(cpu)
            for d, s in zip(self.devices, cuda):
                torch.cuda.set_rng_state(s, d)
            yield
            self.state = self._get()


def epoch_batches(make: Callable[[], Iterator[tuple]], seed: int, epoch: int) -> Iterator[tuple]:
    """This rank's shards of one epoch's global batches.

    The global batches come from ``make()`` (e.g. ``model.train_batches(data, config)``: the shuffle, and the
    binarization of ``--pixels dynamic``) drawn from the stream ``(seed, epoch, "order")`` that
    every rank shares, so all ranks shard the same batches. The rank's own noise (the estimator's
    samples) is reseeded from ``(seed, epoch, rank)`` first.
    """
    group = _group
    pyro.set_rng_seed(derived_seed(seed, epoch, f"rank{group.rank}"))
    stream = _SharedStream(derived_seed(seed, epoch, "order"), group.device)
    with stream.active():
        batches = make()
    while True:
        with stream.active():
            args = next(batches, None)
        if args is None:
            return
        yield shard(args, group.rank, group.world_size)


def shard(args: tuple, rank: int, world_size: int) -> tuple:
    """Rank ``rank``'s share of one step's arguments: every tensor with a batch dimension is cut
    into ``world_size`` consecutive pieces (sizes differing by at most one, as
    ``torch.tensor_split``), numbers (e.g. M2's labelled scale) are kept.

    :param args: e.g. ``(x,)`` with x ``(batch, D)``; ``(x, y)``; M2's ``(x_u, x_l, y_l, scale)``.
    """
    return tuple(a.tensor_split(world_size)[rank] if torch.is_tensor(a) and a.dim() else a for a in args)


# ----------------------------------------------------------------------------- the loss as a module
@contextlib.contextmanager
def _collected_backward(into: list[Tensor]) -> Iterator[None]:
    """Inside, ``Tensor.backward`` keeps the tensor it is called on (its sum with ``gradient``)
    in ``into`` instead of differentiating it."""
    original = torch.Tensor.backward

    def keep(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        into.append(self if gradient is None else (self * gradient).sum())

    torch.Tensor.backward = keep
    try:
        yield
    finally:
        torch.Tensor.backward = original


class ELBOLoss(nn.Module):
    """A model's training loss as a module: what ``DistributedDataParallel`` wraps.

    This is Pyro's route to data parallelism (``Trace_ELBO()(model, guide)`` is a module whose
    ``forward`` is the estimator's ``differentiable_loss``; ``examples/svi_lightning.py``), for
    every estimator of :data:`pyro_vae.inference.elbos.ELBOS` and every model of
    :data:`pyro_vae.models.registry.MODELS`. Not every estimator has a ``differentiable_loss`` (Pyro's
    ``TraceGraph_ELBO`` and ``RenyiELBO`` do not, nor does DReG, whose guide gradient comes from
    hooks on the latent values), and M2's step sums two estimator calls. So ``forward`` runs the
    model's own step (``model.loss_and_grads(elbo, *args)``, the single-process code path) with
    ``Tensor.backward`` held back: the surrogate losses the step would have differentiated are
    returned, summed, for ``DistributedDataParallel``'s backward pass. Their gradient is the
    estimator's gradient, hooks included, and there is still one backward pass per step.

    :param model: a model of :data:`pyro_vae.models.registry.MODELS` (its parameters are this module's).
    :param elbo: the estimator (``pyro.infer.ELBO``).
    :param float scale: multiplies the surrogate: the world size, so that the ranks' averaged
        gradients are those of the loss summed over the global batch.
    """

    def __init__(self, model: nn.Module, elbo, scale: float = 1.0):
        super().__init__()
        self.model, self.elbo, self.scale = model, elbo, scale

    def forward(self, *args) -> tuple[Tensor, Tensor]:
        """:returns: the surrogate to differentiate (scaled), and the loss of this shard (nats,
        −ELBO summed over the shard), a 0-dimensional tensor without gradient."""
        surrogates: list[Tensor] = []
        loss = 0.0
        if any(len(a) for a in args if torch.is_tensor(a) and a.dim()):
            with _collected_backward(surrogates):
                loss = self.model.loss_and_grads(self.elbo, *args)
        if not surrogates:  # an empty shard: a zero that reaches every parameter, for the averaging
            surrogates.append(sum(p.sum() for p in self.model.parameters()) * 0.0)
        device = surrogates[0].device
        return self.scale * sum(surrogates), torch.as_tensor(loss, dtype=torch.float64, device=device)


# no broadcast of the buffers at every forward pass (torch ≥ 2.14 names the option forward_sync_buffers)
_NO_BUFFER_SYNC = {
    (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else "broadcast_buffers"
    ): False
}


class ParallelStep:
    """One training step of a rank: what :func:`pyro_vae.training.train.train_step` does in one process.

    ``step(optimizer, *shard_args)`` runs :class:`ELBOLoss` on the shard under
    ``DistributedDataParallel`` (which averages the gradients over the ranks during the backward
    pass), sums the ranks' losses, and steps the optimizer when that sum is finite (on every rank
    alike, so the ranks stay equal).

    :returns: the loss of the global batch, −ELBO summed over it (nats), as one process reports it.
    """

    def __init__(self, model: nn.Module, elbo, group: Group | None = None):
        group = group or _group
        self.group = group
        self.ddp = DistributedDataParallel(
            ELBOLoss(model, elbo, scale=group.world_size),
            device_ids=[group.local_rank] if group.device.type == "cuda" else None,
            **_NO_BUFFER_SYNC,  # the buffers (the prior's N(0, I)) never change
        )

    def __call__(self, optimizer: torch.optim.Optimizer, *args) -> float:
        with pyro.validation_enabled(False):
            surrogate, loss = self.ddp(*args)
        surrogate.backward()
        dist.all_reduce(loss)
        total = loss.item()
        if math.isfinite(total):
            optimizer.step()
        optimizer.zero_grad()
        return total


__all__ = [
    "ELBOLoss",
    "Group",
    "LaunchError",
    "ParallelStep",
    "current",
    "derived_seed",
    "epoch_batches",
    "from_rank0",
    "is_writer",
    "join",
    "launched",
    "leave",
    "shard",
]
