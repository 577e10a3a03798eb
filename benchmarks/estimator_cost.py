"""Cost of every registered ELBO estimator: seconds per training epoch on full Fashion-MNIST.

The model is pyro_vae.VAE(784, z_dim=50, hidden_dims=(400,)) with the ``diag`` guide (``--guide``), trained
by ``pyro_vae.training.train.train_step`` exactly as ``pyro-vae train --elbo NAME --particles K`` trains it, batch
128, Adam lr 1e-3. Every estimator in ``pyro_vae.inference.elbos.ELBOS`` that fits the guide is a contender: the
multi-particle ones (``iwae``, ``dreg``, ``renyi``) at each K of ``--ks``, and ``trace`` and ``stl`` too (K
particles averaged), the others at K = 1. Particles are vectorized
(``vectorize_particles=True``: one batched pass over a ``(K, batch)`` plate), so K = 5 should cost far
less than 5× K = 1 while the network's arithmetic is small.

Timing: each contender trains blocks of ``--steps`` steps on random batches, the contenders interleaved
round-robin in one process for ``--repeats`` rounds; seconds per epoch are the median block time scaled
to 60,000 / 128 steps. Ratios are medians of per-round ratios against ``trace`` (K = 1), and, for each
multi-particle estimator, against the same estimator at K = 1.

    python benchmarks/estimator_cost.py                        # K = 1, 5, 50; 20 steps x 7 rounds
    python benchmarks/estimator_cost.py --repeats 2 --steps 5  # quick
    python benchmarks/estimator_cost.py --pairs diag:trace iaf:trace iaf:stl iaf:dreg  # flows ÷ diag + trace
    python benchmarks/estimator_cost.py --guides-with trace stl dreg:5 --z-dim 20   # every guide ÷ diag + trace

``--guides-with`` times every guide of ``pyro_vae.inference.guides.GUIDES`` (flows at ``--flow-steps``) with
each estimator given, against ``diag`` + ``trace``; a pair the estimator refuses up front is listed as skipped.
"""

from __future__ import annotations

import copy
import math
import statistics

import torch
from common import (
    data_flag,
    interleave,
    load_fashion_mnist,
    new_vae,
    own_param_store,
    paired_ratios,
    parser,
    print_footer,
    print_header,
    print_table,
    quartiles,
    setup,
)

from pyro_vae.inference.elbos import ELBOS, build_elbo, check_pair
from pyro_vae.inference.guides import GUIDES
from pyro_vae.training.train import make_optimizer, train_step

BASELINE = "trace K=1"


def contenders(ks: list[int]) -> list[tuple[str, str, int]]:
    """(label, estimator, K) for every registered estimator."""
    out = []
    for name, est in ELBOS.items():
        for k in ks if est.multi_particle or name in ("trace", "stl") else [1]:
            out.append((f"{name} K={k}", name, k))
    return out


def step_block(vae, elbo, x_all: torch.Tensor, batch_size: int, steps: int, lr: float):
    opt = make_optimizer(vae, lr)

    @own_param_store
    def run() -> None:
        total = 0.0
        for idx in torch.randint(len(x_all), (steps, batch_size), device=x_all.device):
            total += train_step(elbo, vae, opt, x_all[idx])
        if not math.isfinite(total):
            raise RuntimeError(f"loss became {total}")

    return run


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    data_flag(p)
    p.add_argument("--guide", default="diag", help="a name in pyro_vae.inference.guides.GUIDES")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 50], help="particle counts")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--z-dim", type=int, default=50, help="latent dimension of the 784-400-z VAE")
    p.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--pairs",
        nargs="+",
        metavar="GUIDE:ELBO[:K]",
        help="time these guide+estimator pairs instead (e.g. diag:trace iaf:stl iaf:dreg:5); the first is the baseline",
    )
    p.add_argument(
        "--guides-with",
        nargs="+",
        metavar="ELBO[:K]",
        help="time every registered guide with these estimators, against diag + trace (e.g. trace stl dreg:5)",
    )
    p.add_argument("--flow-steps", type=int, default=2, help="K of the flow guides")
    args = p.parse_args()
    if args.guides_with:
        pairs = [f"{g}:{e}" for e in args.guides_with for g in GUIDES]
        args.pairs = ["diag:trace"] + [pair for pair in pairs if pair != "diag:trace"]
    device = setup(args)
    what = f"pairs {' '.join(args.pairs)}" if args.pairs else f"guide {args.guide}"
    what += f", z_dim {args.z_dim}, {args.flow_steps} flow steps"
    print_header(f"Estimator cost: seconds per epoch, {what}", device)
    x_all = load_fashion_mnist(args.data_dir, device).train_x

    blocks, skipped = {}, []
    if args.pairs:
        global BASELINE
        entries = []
        for pair in args.pairs:
            guide, name, *k = pair.split(":")
            entries.append((f"{guide}+{name} K={k[0] if k else 1}", guide, name, int(k[0]) if k else 1))
        BASELINE = entries[0][0]
    else:
        entries = [(label, args.guide, name, k) for label, name, k in contenders(args.ks)]
    vaes = {}
    for label, guide, name, k in entries:
        if guide not in vaes:
            vaes[guide] = new_vae(args.z_dim, seed=args.seed, guide=guide, flow_steps=args.flow_steps).to(device)
        vae = copy.deepcopy(vaes[guide])
        try:
            check_pair(name, guide, vae.model, vae.guide, x_all[:2])
        except ValueError as e:
            skipped.append((label, str(e)))
            continue
        blocks[label] = step_block(vae, build_elbo(name, k), x_all, args.batch_size, args.steps, args.lr)
    times = interleave(blocks, args.repeats, device, warmup=1)

    steps_per_epoch = math.ceil(len(x_all) / args.batch_size)
    rows = []
    for label, ts in times.items():
        name, k = label.split(" K=")
        q1, q2, q3 = quartiles(paired_ratios(times, label, BASELINE))
        own = f"{name} K=1"
        vs_k1 = "" if k == "1" or own not in times else f"{statistics.median(paired_ratios(times, label, own)):.2f}"
        per_epoch = statistics.median(ts) / args.steps * steps_per_epoch
        rows.append([name, k, f"{per_epoch:.1f}", f"{q2:.2f} ({q1:.2f}–{q3:.2f})", vs_k1])
    headers = ["estimator", "K", "s / epoch", f"÷ {BASELINE} (IQR)", "÷ same estimator at K=1"]
    title = (
        f"{steps_per_epoch} steps of batch {args.batch_size} per epoch, timed as blocks of {args.steps} steps, "
        f"{args.repeats} interleaved rounds"
    )
    print_table(headers, rows, title)
    for label, why in skipped:
        print(f"- {label}: skipped: {why}")
    print_footer()


if __name__ == "__main__":
    main()
