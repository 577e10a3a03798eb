"""Shared helpers for the benchmarks in this folder.

- :func:`parser` and :func:`setup`: the flags every script takes (``--device``, ``--threads``, ``--seed``);
- :func:`interleave` and :func:`ratio_table`: time contenders in one process, round-robin, so that they
  share whatever else the machine is doing, and compare them by the median of *paired* ratios;
- :func:`print_table` (GitHub markdown), :func:`print_header` (machine, versions, load average);
- :class:`TorchVAE`: a hand-written pure-PyTorch copy of a :class:`pyro_vae.VAE`, same weights;
- :func:`own_param_store`: give each Pyro contender its own param store, so that two VAEs that
  both call ``pyro.module("decoder", ...)`` do not share parameters;
- data: Fashion-MNIST as pyro_vae loads it, and a torchvision root plus the DataLoader of Pyro's
  VAE tutorial (``ToTensor``, ``shuffle=True``, ``num_workers=1``, ``pin_memory`` on CUDA);
- :func:`measure_child`: wall time and peak RSS of a child process, from ``os.wait4``.

Every script runs from the repository root as ``python benchmarks/<name>.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from torch import Tensor, nn

import pyro_vae
import pyro_vae.training.train
from pyro_vae.config import resolve_device

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
X_DIM = 784
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
MIN_SCALE = 1e-4  # q's scale is softplus(·) + 1e-4, as in pyro_vae's "diag" guide


# ----------------------------------------------------------------------------- flags, device, timing
def parser(description: str) -> argparse.ArgumentParser:
    """An argparse parser with the flags every benchmark takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data order")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Set the thread count and seed; return the device named by ``--device``."""
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    return resolve_device(args.device)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer measures it; nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(
    contenders: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    warmup: int = 1,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Time each contender ``repeats`` times, round-robin: round r runs them all once, in an order
    rotated by r so that none always runs first.

    :param contenders: name ↦ a function doing one unit of work (e.g. 20 training steps).
    :param int warmup: untimed rounds first (allocator, JIT compilation, DataLoader imports).
    :returns: name ↦ ``repeats`` wall-clock seconds; index r of every list is the same round.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            sync(device)
            start = time.perf_counter()
            contenders[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
        if progress:
            print(f"  round {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    return times


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); all three equal for a single value."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def paired_ratios(times: dict[str, list[float]], name: str, baseline: str) -> list[float]:
    """time(name) / time(baseline), round by round."""
    return [a / b for a, b in zip(times[name], times[baseline])]


def ratio_table(
    times: dict[str, list[float]],
    baseline: str,
    per: float = 1.0,
    unit: str = "ms",
    scale: float = 1e3,
    invert: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: median time per unit of work and the median (and IQR) of paired ratios.

    :param float per: units of work in one timed call (e.g. steps per block), to report per unit.
    :param bool invert: report baseline / contender (a speed-up) instead of contender / baseline.
    """
    what = f"{baseline} / contender" if invert else f"contender / {baseline}"
    headers = ["contender", f"median {unit}", f"median ratio ({what})", "ratio IQR"]
    rows = []
    for name, ts in times.items():
        ratios = paired_ratios(times, name, baseline)
        if invert:
            ratios = [1 / r for r in ratios]
        q1, q2, q3 = quartiles(ratios)
        rows.append([name, f"{statistics.median(ts) / per * scale:.2f}", f"{q2:.3f}", f"{q1:.3f}–{q3:.3f}"])
    return headers, rows


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> None:
    """A GitHub markdown table on stdout."""
    if title:
        print(f"\n### {title}\n")
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


# ----------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields.get("Model name", "unknown").strip()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(device: torch.device) -> list[tuple[str, str]]:
    info = [
        ("CPU", f"{cpu_model()}, {os.cpu_count()} logical cores"),
        ("torch threads", str(torch.get_num_threads())),
        ("python / torch / pyro", f"{platform.python_version()} / {torch.__version__} / {pyro.__version__}"),
        ("device", str(device)),
    ]
    if device.type == "cuda":
        info.append(("GPU", torch.cuda.get_device_name(device)))
    info.append(("load average (1, 5, 15 min) at start", load_average()))
    return info


def print_header(title: str, device: torch.device) -> None:
    """Title, the exact command, and the machine, as markdown."""
    print(f"## {title}\n")
    print(f"command: `python {' '.join(sys.argv)}`\n")
    print_table(["machine", ""], machine_info(device))
    load, cores, threads = os.getloadavg()[0], os.cpu_count() or 1, torch.get_num_threads()
    if device.type == "cpu" and threads > 1 and load > 0.5:
        print(
            f"\nwarning: load average {load:.1f} on {cores} cores before this run: other processes share the CPU. "
            f"With {threads} torch threads, OpenMP threads wait on each other whenever one is descheduled, and "
            "times can swing tenfold; on a shared machine prefer --threads 1."
        )


def print_footer() -> None:
    print(f"\nload average at end: {load_average()} (other work on the machine shows up here)")


# ----------------------------------------------------------------------------- the pure-PyTorch reference
class TorchVAE(nn.Module):
    """The networks of a :class:`pyro_vae.VAE` (``diag`` guide, Bernoulli likelihood), copied with their
    weights, and the ELBO written by hand.

    Encoder: ReLU MLP body, then loc = Linear(h), scale = softplus(Linear(h)) + 1e-4.
    Decoder: ReLU MLP ending in logits. Same arithmetic as ``Trace_ELBO`` on the Pyro pair:
    log p(x|z) + log p(z) − log q(z|x) at one reparameterized z = loc + scale · ε per datapoint.
    """

    def __init__(self, vae: pyro_vae.VAE):
        super().__init__()
        if getattr(vae, "guide_name", "diag") != "diag" or vae.lik.name != "bernoulli":
            raise ValueError("TorchVAE copies a VAE with the 'diag' guide and the 'bernoulli' likelihood only")
        enc = [m for m in vae.encoder.modules() if isinstance(m, nn.Linear)]
        dec = [m for m in vae.decoder.modules() if isinstance(m, nn.Linear)]
        self.body = nn.ModuleList(copy.deepcopy(m) for m in enc[:-2])
        self.loc, self.scale = copy.deepcopy(enc[-2]), copy.deepcopy(enc[-1])
        self.dec = nn.ModuleList(copy.deepcopy(m) for m in dec)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x
        for lin in self.body:
            h = F.relu(lin(h))  # (batch, hidden)
        return self.loc(h), F.softplus(self.scale(h)) + MIN_SCALE  # each (batch, z_dim)

    def decode(self, z: Tensor) -> Tensor:
        h = z
        for lin in self.dec[:-1]:
            h = F.relu(lin(h))  # (..., hidden)
        return self.dec[-1](h)  # (..., x_dim) logits

    def log_weights(self, x: Tensor, num_particles: int | None = None) -> Tensor:
        """log p(x, z) − log q(z|x) at z ~ q(z|x): ``(batch,)``, or ``(num_particles, batch)``.

        ε is drawn with ``normal_`` in the shape Pyro uses, so under the same seed the draws match Pyro's.
        """
        loc, scale = self.encode(x)
        shape = loc.shape if num_particles is None else (num_particles, *loc.shape)
        z = loc + scale * torch.empty(shape, dtype=loc.dtype, device=loc.device).normal_()  # (..., batch, z_dim)
        logits = self.decode(z)  # (..., batch, x_dim)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = (-0.5 * z.square() - HALF_LOG_2PI).sum(-1)
        log_qz = (-0.5 * ((z - loc) / scale).square() - scale.log() - HALF_LOG_2PI).sum(-1)
        return log_px + log_pz - log_qz  # (..., batch)

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO summed over the batch, one particle: the value of ``Trace_ELBO``'s loss."""
        return -self.log_weights(x).sum()


def check_reference(vae: pyro_vae.VAE, ref: TorchVAE, x: Tensor, seed: int = 0) -> float:
    """Largest |difference| between pyro_vae's and the reference's log weights under one seed.

    :raises AssertionError: when they differ by more than float32 round-off (the networks changed).
    """
    with torch.no_grad():
        pyro.set_rng_seed(seed)
        a = pyro_vae.log_weights(vae.model, vae.guide, x, num_particles=3)
        pyro.set_rng_seed(seed)
        b = ref.log_weights(x, num_particles=3)
    err = (a - b).abs().max().item()
    assert err < 1e-3 * max(1.0, a.abs().max().item()), f"TorchVAE does not reproduce pyro_vae.VAE (max |Δ| {err})"
    return err


def new_vae(
    z_dim: int = 50, hidden_dims: Sequence[int] = (400,), seed: int = 0, guide: str = "diag", flow_steps: int = 2
) -> pyro_vae.VAE:
    """The benchmark model, pyro_vae.VAE(784, z_dim, hidden_dims, guide=guide), with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return pyro_vae.VAE(X_DIM, z_dim=z_dim, hidden_dims=tuple(hidden_dims), guide=guide, flow_steps=flow_steps)


# ----------------------------------------------------------------------------- Pyro helpers
def adam_args(lr: float, fused: bool = False) -> dict:
    """Keyword arguments of ``torch.optim.Adam``; ``fused=True`` runs each update as one fused kernel
    (CPU and CUDA, float32; torch ≥ 2.4) instead of about ten elementwise ops per parameter tensor."""
    return {"lr": lr, "fused": True} if fused else {"lr": lr}


def tutorial_svi(vae: pyro_vae.VAE, lr: float = 1e-3, jit: bool = False, fused: bool = False) -> SVI:
    """SVI as Pyro's VAE tutorial writes it: ``SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": lr}),
    Trace_ELBO())`` (``JitTrace_ELBO`` with ``jit``), stepped by ``svi.step(x)``. pyro_vae trained this way
    before its own step (``pyro_vae.training.train.train_step``). ``fused`` passes ``fused=True`` to the Adam that
    ``pyro.optim.Adam`` makes for each parameter tensor."""
    elbo = JitTrace_ELBO(ignore_jit_warnings=True) if jit else Trace_ELBO()
    return SVI(vae.model, vae.guide, pyro.optim.Adam(adam_args(lr, fused)), elbo)


def own_param_store(fn: Callable) -> Callable:
    """Wrap ``fn`` so that every call runs with its own, persistent Pyro param store.

    pyro_vae's model and guide register their networks as ``"decoder"`` and ``"encoder"``; without
    this, a second VAE in the same process would be trained through the first one's parameters.
    """
    state: dict = {"params": {}, "constraints": {}}

    def run(*args, **kwargs):
        with pyro.get_param_store().scope(state):
            return fn(*args, **kwargs)

    return run


# ----------------------------------------------------------------------------- data
def data_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=FASHION_MNIST_DIR, help="folder with the four Fashion-MNIST IDX files")


def load_fashion_mnist(data_dir: str, device: torch.device) -> pyro_vae.ImageData:
    """Fashion-MNIST exactly as ``pyro-vae train --dataset fashion-mnist --data-dir DIR`` loads it."""
    return pyro_vae.load_dataset("fashion-mnist", data_dir, "continuous", device)


@contextlib.contextmanager
def torchvision_root(data_dir: str) -> Iterator[Path]:
    """A temporary torchvision root ``ROOT/FashionMNIST/raw/`` holding the IDX files of ``data_dir``.

    torchvision's ``_check_exists`` looks for the *uncompressed* files, so ``.gz`` files are unzipped.
    """
    with tempfile.TemporaryDirectory(prefix="fmnist-root-") as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for path in sorted(Path(data_dir).glob("*-ubyte*")):
            if path.suffix == ".gz":
                with gzip.open(path, "rb") as src, open(raw / path.stem, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                (raw / path.name).symlink_to(path.resolve())
        yield Path(tmp)


def tutorial_loader(
    root: Path, train: bool, batch_size: int, device: torch.device, num_workers: int = 1
) -> torch.utils.data.DataLoader:
    """The data pipeline of Pyro's VAE tutorial, on Fashion-MNIST: a torchvision dataset with
    ``ToTensor`` per image, and a DataLoader with ``num_workers=1``, ``pin_memory`` on CUDA,
    shuffled for training."""
    from torchvision import datasets, transforms

    dataset = datasets.FashionMNIST(str(root), train=train, transform=transforms.ToTensor(), download=False)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )


# ----------------------------------------------------------------------------- child processes
def measure_child(cmd: Sequence[str], env: dict | None = None) -> dict:
    """Run ``cmd``; return its exit status, wall seconds, peak RSS (MiB, from ``os.wait4``) and output.

    The peak is ``ru_maxrss`` of the child (and of any children it waited for, e.g. DataLoader workers,
    whichever is larger), as ``/usr/bin/time -v`` reports it.
    """
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {"rc": proc.returncode, "seconds": wall, "peak_mib": usage.ru_maxrss / 1024, "output": text}


def rss_mib() -> tuple[float, float]:
    """This process's (current RSS, peak RSS since start or the last :func:`reset_peak_rss`), MiB,
    from ``/proc/self/status`` (VmRSS, VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ≥ 4.0: ``5 > /proc/self/clear_refs``).

    Importing torch alone peaks at ~0.5 GiB, so without a reset the peak of a small computation
    would hide under the peak of the imports. :returns: whether the reset worked.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
