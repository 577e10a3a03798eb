"""Importance-sampled log p(x): ``pyro_vae.importance_log_px`` against a hand-written PyTorch reference.

Both estimate log p(x) ≈ logsumexp_k [log p(x, z_k) − log q(z_k|x)] − log K with z_k ~ q(z|x), for the
same pyro_vae.VAE(784, z_dim=50, hidden_dims=(400,)) weights, on Fashion-MNIST test images, in chunks
of at most ``chunk_size`` (particle, image) pairs chosen by the same rule (images per chunk =
chunk_size // K, particles per chunk = chunk_size // images). The reference (:class:`common.TorchVAE`)
keeps a running ``logaddexp`` over particle chunks; pyro_vae traces the model and guide under an outer
``pyro.plate("particles", dim=-2)``.

- time: the two interleaved in one process, ``--repeats`` rounds, median of paired ratios;
- memory: each contender in its own child process per chunk size. The child loads torch, the weights
  and the test images, resets its peak RSS (importing torch alone peaks near 0.5 GiB), runs the estimate
  and reports peak − RSS before: the memory the estimate itself needed, which the chunk size should
  bound whatever the number of images.

    python benchmarks/importance_sampling.py --num-images 1000        # K = 5000; ~10 min on 2 cores
    python benchmarks/importance_sampling.py --num-images 10000       # the full size (~1.5 h)
    python benchmarks/importance_sampling.py --num-samples 500 --num-images 100 --repeats 1   # quick
    python benchmarks/importance_sampling.py --num-images 12 --profile    # + which torch ops differ
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
from common import (
    TorchVAE,
    check_reference,
    data_flag,
    interleave,
    measure_child,
    new_vae,
    parser,
    print_footer,
    print_header,
    print_table,
    ratio_table,
    reset_peak_rss,
    rss_mib,
    setup,
)
from torch import Tensor

import pyro_vae
from pyro_vae.data.builtin import read_idx

BASELINE = "torch"


def chunking(n: int, num_samples: int, chunk_size: int) -> tuple[int, int]:
    """(images, particles) per chunk: at most ``chunk_size`` pairs."""
    images = max(1, min(n, chunk_size // num_samples))
    return images, max(1, min(num_samples, chunk_size // images))


@torch.no_grad()
def torch_importance_log_px(ref: TorchVAE, x: Tensor, num_samples: int, chunk_size: int) -> Tensor:
    """The reference: ``(N,)`` nats, hand-written, chunked like pyro_vae."""
    images, particles = chunking(len(x), num_samples, chunk_size)
    out = []
    for xb in x.split(images):
        acc = torch.full((len(xb),), -math.inf, device=x.device)  # (images,)
        for start in range(0, num_samples, particles):
            k = min(particles, num_samples - start)
            acc = torch.logaddexp(acc, torch.logsumexp(ref.log_weights(xb, num_particles=k), dim=0))
        out.append(acc - math.log(num_samples))
    return torch.cat(out)


def contenders(vae: pyro_vae.VAE, x: Tensor, num_samples: int, chunk_size: int) -> dict:
    ref = TorchVAE(vae)
    return {
        "torch": lambda: torch_importance_log_px(ref, x, num_samples, chunk_size),
        "pyro_vae": lambda: pyro_vae.importance_log_px(
            vae.model, vae.guide, x, num_samples=num_samples, chunk_size=chunk_size
        ),
    }


def test_images(data_dir: str, n: int, device: torch.device) -> Tensor:
    """The first ``n`` Fashion-MNIST test images, ``(n, 784)`` in [0, 1], read without the training set."""
    path = Path(data_dir) / "t10k-images-idx3-ubyte"
    if not path.exists():
        path = path.with_name(path.name + ".gz")
    return torch.as_tensor(read_idx(path)[:n], dtype=torch.float32).reshape(n, -1).div(255).to(device)


def worker(args, device: torch.device) -> None:
    """Child process: one estimate by one contender; prints a JSON line."""
    vae = new_vae(seed=args.seed).to(device)
    vae.load_state_dict(torch.load(args.weights, map_location=device))
    x = test_images(args.data_dir, args.num_images, device)
    run = contenders(vae, x, args.num_samples, args.worker_chunk)[args.worker]
    contenders(vae, x[:1], 8, 8)[args.worker]()  # first-call allocations (thread pools, kernels) before the reset
    reset = reset_peak_rss()
    before, _ = rss_mib()
    start = time.perf_counter()
    log_px = run()
    seconds = time.perf_counter() - start
    _, peak = rss_mib()
    out = {"reset": reset, "before_mib": before, "peak_mib": peak, "seconds": seconds}
    print(json.dumps(out | {"mean_log_px": log_px.mean().item()}))


def memory_rows(args, weights: Path) -> list[list[str]]:
    rows = []
    for chunk in args.chunk_sizes:
        images, particles = chunking(args.mem_images, args.num_samples, chunk)
        one = images * particles * 784 * 4 / 2**20  # MiB of one (pairs, 784) float32 tensor
        for name in ("torch", "pyro_vae"):
            cmd = [sys.executable, __file__, "--worker", name, "--worker-chunk", str(chunk), "--weights", str(weights)]
            cmd += ["--num-images", str(args.mem_images), "--num-samples", str(args.num_samples)]
            cmd += ["--device", args.device, "--threads", str(args.threads), "--data-dir", args.data_dir]
            cmd += ["--seed", str(args.seed)]
            res = measure_child(cmd)
            if res["rc"] != 0:
                raise RuntimeError(f"worker {name} failed:\n{res['output']}")
            out = json.loads(res["output"].strip().splitlines()[-1])
            rows.append(
                [
                    f"{chunk:,}",
                    f"{images} × {particles:,}",
                    f"{one:.0f}",
                    name,
                    f"{out['before_mib']:.0f}",
                    f"{out['peak_mib']:.0f}" + ("" if out["reset"] else " (no reset)"),
                    f"{out['peak_mib'] - out['before_mib']:.0f}",
                    f"{res['peak_mib']:.0f}",
                    f"{out['seconds']:.1f}",
                ]
            )
    return rows


def op_profile(vae: pyro_vae.VAE, x: Tensor, num_samples: int, chunk_size: int) -> tuple[list[str], list[list[str]]]:
    """Self CPU ms of each torch op in one estimate on ``x`` by each contender, largest differences first."""
    from torch.profiler import ProfilerActivity, profile

    per_op = {}
    for name, run in contenders(vae, x, num_samples, chunk_size).items():
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        per_op[name] = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()}

    def extra(k):
        return per_op["pyro_vae"].get(k, (0.0, 0))[0] - per_op["torch"].get(k, (0.0, 0))[0]

    rows = [["all ops", *(f"{sum(t for t, _ in per_op[n].values()):.0f}" for n in per_op), ""]]
    for k in sorted(set().union(*per_op.values()), key=extra, reverse=True)[:8]:
        cells = [per_op[n].get(k, (0.0, 0)) for n in per_op]
        rows.append([k, *(f"{t:.1f} ({c}×)" for t, c in cells), f"{extra(k):+.1f}"])
    return ["op", *(f"{n}: ms (calls)" for n in per_op), "pyro_vae − torch, ms"], rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    data_flag(p)
    p.add_argument("--num-samples", type=int, default=5000, help="K")
    p.add_argument("--num-images", type=int, default=10000, help="test images for the timing")
    p.add_argument("--repeats", type=int, default=1, help="interleaved timing rounds")
    p.add_argument(
        "--chunk-size", type=int, default=pyro_vae.inference.evaluate.DEFAULT_CHUNK, help="chunk of the timing"
    )
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[2**15, 2**13], help="chunks of the memory rows")
    p.add_argument("--mem-images", type=int, default=48, help="test images per memory measurement")
    p.add_argument("--profile", action="store_true", help="also print where each spends its time (torch.profiler)")
    p.add_argument("--worker", choices=("torch", "pyro_vae"), help=argparse.SUPPRESS)
    p.add_argument("--worker-chunk", type=int, help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = setup(args)
    if args.worker:
        worker(args, device)
        return

    print_header("Importance-sampled log p(x): pyro_vae vs a pure-PyTorch reference", device)
    vae = new_vae(seed=args.seed).to(device)
    x = test_images(args.data_dir, args.num_images, device)
    err = check_reference(vae, TorchVAE(vae), x[:64], seed=args.seed)
    print(f"\nreference check: TorchVAE reproduces pyro_vae's log weights to {err:.1e} nats (same seed)")

    # -- the same draws give the same estimates
    small = x[:12]
    runs = contenders(vae, small, args.num_samples, args.chunk_size)
    est = {}
    for name, run in runs.items():
        pyro.set_rng_seed(args.seed)
        est[name] = run()
    print(
        f"same seed, {len(small)} images, K = {args.num_samples}: mean log p(x) torch {est['torch'].mean():.3f}, "
        f"pyro_vae {est['pyro_vae'].mean():.3f}, max |Δ| {(est['torch'] - est['pyro_vae']).abs().max():.1e} nats"
    )

    if args.profile:
        n = chunking(len(x), args.num_samples, args.chunk_size)[0] * 2  # two chunks
        headers, rows = op_profile(vae, x[:n], args.num_samples, args.chunk_size)
        print_table(headers, rows, f"where the time goes: torch.profiler, {n} images (two chunks), top differences")

    # -- time, interleaved
    pairs = args.num_images * args.num_samples
    times = interleave(contenders(vae, x, args.num_samples, args.chunk_size), args.repeats, device, warmup=0)
    headers, rows = ratio_table(times, BASELINE, unit="s", scale=1)
    headers.append("µs per (particle, image) pair")
    for row in rows:
        row.append(f"{float(row[1]) / pairs * 1e6:.2f}")
    title = f"time: K = {args.num_samples}, {args.num_images} images, chunk {args.chunk_size:,}, {args.repeats} rounds"
    print_table(headers, rows, title)
    ratio = float(rows[1][2])
    print(f"\npyro_vae / torch time: {ratio:.3f} (target ≤ 1.2: {'met' if ratio <= 1.2 else 'not met'})")
    if args.num_images != 10000:
        full = float(rows[1][1]) / args.num_images * 10000
        print(f"pyro_vae at 10,000 images and K = {args.num_samples}, by linear extrapolation: {full / 60:.1f} min")

    # -- memory, one child per contender and chunk size
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vae.pt"
        torch.save(vae.state_dict(), weights)
        rows = memory_rows(args, weights)
    print_table(
        [
            "chunk (pairs)",
            "images × particles",
            "MiB of one (pairs, 784) tensor",
            "contender",
            "RSS before, MiB",
            "peak RSS during, MiB",
            "peak − before, MiB",
            "process lifetime peak (wait4), MiB",
            "seconds",
        ],
        rows,
        f"memory: K = {args.num_samples}, {args.mem_images} images, one child process per row",
    )
    print_footer()


if __name__ == "__main__":
    main()
