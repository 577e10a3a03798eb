"""An image folder of 100,000 generated 32×32×3 PNGs: one epoch of a conv VAE with the training set in
memory, and streamed from disk (``--max-data-memory`` below its size); peak RSS and images per second.

The PNGs are written once into a cache folder (``--cache``; kept for later runs, with a ``COMPLETE``
marker). Each row is one ``pyro-vae train`` child process:

- peak RSS of the epoch: the child's ``VmHWM`` (``/proc/PID/status``) read when ``metrics.json``
  appears, i.e. after loading, the training epoch and its test ELBO, before the final estimate;
- peak RSS of the run: ``ru_maxrss`` from ``os.wait4`` (the largest of the process and the DataLoader
  workers it waited for), which includes the final importance-sampled log p(x) with K samples;
- images per second: the training images over the epoch's ``seconds`` in ``metrics.json`` (the
  training loop alone; the wall time adds loading, the test ELBO, the final estimate and the plots).

The two rows run one after the other, so other work on the machine can favour either. The paired
table (``--rounds``) compares the two data paths side by side in one process instead: one conv VAE,
one optimizer, and two endless epoch iterators (in memory, streamed), timed in blocks of ``--block``
training steps, round-robin (``common.interleave``); the ratio is the median of the per-round ratios.
The streamed iterator's worker may decode up to 4 batches ahead while the other block runs (at most
4 / ``--block`` of a block in its favour) and takes CPU from it (in its disfavour).

    python benchmarks/streaming.py --threads 1
    python benchmarks/streaming.py --images 2000 --threads 1   # quick
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import interleave, parser, print_footer, print_header, print_table, ratio_table, setup

SIZE = 32


def write_pngs(folder: Path, n: int, seed: int = 0) -> float:
    """``n`` 32×32 RGB PNGs: smooth colour gradients with a random rectangle and noise, so that they
    compress like photographs rather than like noise or flat colour. :returns: seconds taken."""
    from PIL import Image

    marker = folder / "COMPLETE"
    if marker.is_file() and marker.read_text().strip() == str(n):
        return 0.0
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    for i in range(n):
        a, b, c = rng.random((3, 3, 1, 1))
        img = 255 * (a * xx + b * yy + c * (1 - xx) * (1 - yy)) / 2  # (3, 32, 32) gradients
        r0, c0 = rng.integers(0, SIZE - 8, 2)
        img[:, r0 : r0 + 8, c0 : c0 + 8] = rng.integers(0, 256, (3, 1, 1))
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img.transpose(1, 2, 0), mode="RGB").save(folder / f"{i:06d}.png")
    marker.write_text(f"{n}\n")
    return time.perf_counter() - start


def vm_hwm_mib(pid: int) -> float:
    """The peak resident memory of a live process so far, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(cmd: list[str], env: dict, metrics: Path) -> dict:
    """Run ``cmd``; its exit status, wall seconds, peak RSS of the whole run (``ru_maxrss``, MiB),
    peak RSS when ``metrics`` first appears (``VmHWM``, MiB), and its output."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        epoch_peak = float("nan")
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if epoch_peak != epoch_peak and metrics.is_file():
                epoch_peak = vm_hwm_mib(proc.pid)
            time.sleep(0.05)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "seconds": wall, "peak_mib": usage.ru_maxrss / 1024, "epoch_peak_mib": epoch_peak, "output": text}


def paired(folder: Path, args, device) -> None:
    """Blocks of training steps on batches from memory and from disk, interleaved (see the module doc)."""
    import pyro_vae.data.images as data
    from pyro_vae.config import DataConfig, RunConfig
    from pyro_vae.inference.elbos import build_elbo
    from pyro_vae.models.registry import build_model
    from pyro_vae.training.train import make_optimizer, train_step

    sets = {
        "in memory": data.load_data(DataConfig(dataset="folder", data_dir=str(folder))),
        "streamed": data.load_data(DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=args.stream_gib)),
    }
    assert not sets["in memory"].streamed and sets["streamed"].streamed
    cfg = RunConfig()
    cfg.model.net, cfg.model.likelihood, cfg.train.device = "conv", "continuous-bernoulli", str(device)
    vae = build_model(cfg, sets["streamed"].image_shape).to(device)
    optim, elbo = make_optimizer(vae, 1e-3), build_elbo("trace", 1, 0.5, False)

    def endless(d):
        while True:
            yield from data.batches(d.epoch_train_x(), args.batch_size)

    def block(it):
        def run():
            for _ in range(args.block):
                (x,) = next(it)
                train_step(elbo, vae, optim, x.to(device))

        return run

    iters = {name: endless(d.to(device)) for name, d in sets.items()}
    times = interleave({name: block(it) for name, it in iters.items()}, args.rounds, device)
    headers, rows = ratio_table(times, "in memory", per=args.block * args.batch_size, unit="ms per image")
    print_table(
        headers,
        rows,
        f"paired: blocks of {args.block} steps (batch {args.batch_size}), {args.rounds} rounds, one process",
    )
    ratios = [a / b for a, b in zip(times["in memory"], times["streamed"])]
    print(f"\nstreamed ÷ in memory, images per second, median of paired rounds: {sorted(ratios)[len(ratios) // 2]:.3f}")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    cache = Path(os.environ.get("PYRO_VAE_DATA", Path.home() / ".cache" / "pyro_vae"))
    p.add_argument("--images", type=int, default=100_000, help="PNGs in the folder")
    p.add_argument("--cache", type=Path, help="the PNG folder (default: $PYRO_VAE_DATA or ~/.cache/pyro_vae, /pngs-N)")
    p.add_argument("--stream-gib", type=float, default=0.1, help="--max-data-memory of the streamed row (GiB)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-samples", type=int, default=10, help="K of the final IS estimate (kept small)")
    p.add_argument("--rounds", type=int, default=8, help="rounds of the paired table (0: skip it)")
    p.add_argument("--block", type=int, default=60, help="training steps per timed block of the paired table")
    p.add_argument("--skip-children", action="store_true", help="only the paired table")
    args = p.parse_args()
    device = setup(args)
    folder = args.cache or cache / f"pngs-{args.images}"
    print_header(f"Image folder of {args.images:,} PNGs (32×32×3): in memory and streamed", device)
    wrote = write_pngs(folder, args.images)
    n_train = args.images - max(1, round(0.1 * args.images))
    train_bytes = n_train * 3 * SIZE * SIZE
    print(
        f"\nfolder: {folder} ({'written in %.0f s' % wrote if wrote else 'cached'}); "
        f"training set {n_train:,} images = {train_bytes / 2**20:.0f} MiB as uint8\n"
    )
    if args.stream_gib * 2**30 >= train_bytes:
        raise SystemExit(f"--stream-gib {args.stream_gib} does not lie below the training set's {train_bytes:,} bytes")
    cli = [sys.executable, "-c", "import sys; from pyro_vae.cli import main; sys.exit(main())"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows, rates = [], {}
    if args.rounds:
        paired(folder, args, device)
    if args.skip_children:
        print_footer()
        return
    with tempfile.TemporaryDirectory(prefix="pyro-vae-stream-") as tmp:
        for name, budget in (("in memory", []), ("streamed", ["--max-data-memory", str(args.stream_gib)])):
            out = Path(tmp) / name.replace(" ", "-")
            cmd = [*cli, "train", "--dataset", "folder", "--data-dir", str(folder), "--net", "conv"]
            cmd += ["--likelihood", "continuous-bernoulli", "--epochs", "1", "--batch-size", str(args.batch_size)]
            cmd += ["--num-samples", str(args.num_samples), "--device", args.device, "--quiet", "--out", str(out)]
            cmd += budget
            print(f"  running: {' '.join(cmd)}", file=sys.stderr, flush=True)
            load_before = os.getloadavg()[0]
            res = measure(cmd, env, out / "metrics.json")
            if res["rc"] != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed with status {res['rc']}:\n{res['output'][-2000:]}")
            metrics = json.loads((out / "metrics.json").read_text())
            epoch = metrics["epochs"][0]["seconds"]
            rates[name] = metrics["data"]["train_size"] / epoch
            assert metrics["data"].get("streamed", False) == (name == "streamed")
            rows.append(
                [
                    name,
                    f"{res['epoch_peak_mib']:.0f}",
                    f"{res['peak_mib']:.0f}",
                    f"{rates[name]:.0f}",
                    f"{epoch:.1f}",
                    f"{res['seconds']:.1f}",
                    f"{load_before:.1f}",
                ]
            )
    print_table(
        [
            "training set",
            "peak RSS of the epoch, MiB",
            f"peak RSS with K = {args.num_samples}, MiB",
            "images/s (epoch)",
            "epoch s",
            "wall s",
            "load avg at start",
        ],
        rows,
        f"one epoch of a conv VAE on {n_train:,} training images (batch {args.batch_size}, {args.threads} thread(s))",
    )
    print(f"\nstreamed ÷ in memory, images per second: {rates['streamed'] / rates['in memory']:.3f}")
    print_footer()


if __name__ == "__main__":
    main()
