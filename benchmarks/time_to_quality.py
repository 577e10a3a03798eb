"""Wall time to reach a test ELBO on full Fashion-MNIST: pyro_vae's defaults vs Pyro's VAE tutorial setup.

Same model (pyro_vae.VAE(784, z_dim, (400,)), z_dim 50 as in the tutorial), same initial weights, same
loss (Trace_ELBO) and Adam at lr 1e-3, batch 128, continuous pixels. ``pyro_vae`` trains as
``pyro-vae train`` does (one tensor batched by shuffled indices, ``pyro_vae.training.train.train_step``);
``tutorial`` as Pyro's VAE tutorial does (torchvision's FashionMNIST + ``ToTensor`` +
``DataLoader(shuffle=True, num_workers=1)``, ``svi.step``); see ``epoch_throughput.py``. Extra
contenders (``--steps``) use pyro_vae's batching with another step from ``step_overhead.py``.

Epochs are interleaved (epoch 1 of each contender, then epoch 2 of each, ...), so they share the
machine's load. After each epoch the test ELBO on all 10,000 test images is measured with
``pyro_vae.elbo_terms`` (one z per image, analytic KL), outside the clock. A contender stops at the first
epoch whose test ELBO reaches ``--threshold``; its time is its summed training time up to the end of that
epoch, and, since both contenders cross the threshold somewhere inside an epoch, also that time
interpolated linearly between the test ELBO before and after the epoch (less sensitive to a threshold
that one contender misses by a hair at an epoch's end).

    python benchmarks/time_to_quality.py                       # threshold -250 nats, at most 8 epochs
    python benchmarks/time_to_quality.py --threshold -270 --max-epochs 2   # quick
"""

from __future__ import annotations

import copy
import itertools
import sys
import time
import warnings

from common import (
    X_DIM,
    data_flag,
    load_fashion_mnist,
    new_vae,
    own_param_store,
    parser,
    print_footer,
    print_header,
    print_table,
    setup,
    sync,
    torchvision_root,
    tutorial_loader,
)
from step_overhead import CONTENDERS as STEPS

import pyro_vae
from pyro_vae.data.images import batches

BASELINE = "tutorial"


def test_elbo(vae: pyro_vae.VAE, test_x) -> float:
    """Mean test ELBO, nats per image: ``pyro_vae.elbo_terms`` (one z per image, analytic KL)."""
    return own_param_store(pyro_vae.elbo_terms)(vae.model, vae.guide, test_x)["elbo"].mean().item()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    data_flag(p)
    p.add_argument("--threshold", type=float, default=-250.0, help="test ELBO to reach, nats per image")
    p.add_argument("--max-epochs", type=int, default=8)
    p.add_argument("--z-dim", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--limit", type=int, default=None, help="batches per epoch (default: the whole epoch)")
    p.add_argument(
        "--steps",
        nargs="*",
        default=["svi+fused-adam-novalidate"],
        choices=[n for n in STEPS if not n.startswith("torch")],
    )
    args = p.parse_args()
    device = setup(args)
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
    print_header("Time to a test ELBO on Fashion-MNIST: pyro_vae vs the Pyro tutorial pipeline", device)
    data = load_fashion_mnist(args.data_dir, device)
    bs = args.batch_size

    def tensor_batches():
        return (x for (x,) in batches(data.epoch_train_x(), bs))

    with torchvision_root(args.data_dir) as root:
        loader = tutorial_loader(root, True, bs, device, num_workers=1)

        def loader_batches():
            return (x.reshape(-1, X_DIM).to(device, non_blocking=True) for x, _ in loader)

        vae0 = new_vae(z_dim=args.z_dim, seed=args.seed).to(device)
        runs = {
            "pyro_vae": ("pyro_vae", tensor_batches),
            "tutorial": ("svi", loader_batches),
            **{f"pyro_vae+{s}": (s, tensor_batches) for s in args.steps},
        }
        elbo0 = test_elbo(vae0, data.test_x)
        if elbo0 >= args.threshold:
            p.error(f"--threshold {args.threshold:g}: the untrained model already has test ELBO {elbo0:.2f}")
        state = {}
        for name, (step_name, source) in runs.items():
            vae = copy.deepcopy(vae0)
            step = STEPS[step_name](vae, args.lr)
            state[name] = {"vae": vae, "step": step, "source": source, "seconds": 0.0, "elbo": elbo0}

        history, reached = [], {}
        names = list(runs)
        for epoch in range(1, args.max_epochs + 1):
            k = (epoch - 1) % len(names)
            for name in names[k:] + names[:k]:
                if name in reached:
                    continue
                s = state[name]
                sync(device)
                start = time.perf_counter()
                total, n = 0.0, 0
                for x in itertools.islice(s["source"](), args.limit):
                    total = total + s["step"](x)
                    n += len(x)
                total = float(total)
                sync(device)
                seconds = time.perf_counter() - start
                s["seconds"] += seconds
                elbo = test_elbo(s["vae"], data.test_x)
                history.append(
                    [epoch, name, f"{seconds:.1f}", f"{s['seconds']:.1f}", f"{-total / n:.2f}", f"{elbo:.2f}"]
                )
                print(f"  epoch {epoch} {name}: {seconds:.1f}s, test ELBO {elbo:.2f}", flush=True, file=sys.stderr)
                if elbo >= args.threshold:
                    # linear in time within the epoch, from the previous evaluation to this one
                    before = s["seconds"] - seconds
                    rise = elbo - s["elbo"]
                    fraction = min(1.0, max(0.0, (args.threshold - s["elbo"]) / rise)) if rise > 0 else 1.0
                    interpolated = before + seconds * fraction
                    reached[name] = (epoch, s["seconds"], interpolated)
                s["elbo"] = elbo
            if len(reached) == len(names):
                break

    print_table(
        ["epoch", "contender", "epoch s", "cumulative s", "train ELBO", "test ELBO"],
        history,
        f"per epoch (batch {bs}, z_dim {args.z_dim}, {args.limit or 'all'} batches per epoch)",
    )
    rows = []
    base = reached.get(BASELINE)
    for name in names:
        if name in reached:
            epoch, seconds, interpolated = reached[name]
            speedup = f"{base[1] / seconds:.2f}" if base else "n/a"
            speedup_i = f"{base[2] / interpolated:.2f}" if base else "n/a"
            rows.append([name, str(epoch), f"{seconds:.1f}", speedup, f"{interpolated:.1f}", speedup_i])
        else:
            rows.append([name, f"not within {args.max_epochs}", "—", "—", "—", "—"])
    print_table(
        [
            "contender",
            "epochs to threshold",
            "training s, to the end of that epoch",
            "speed-up (tutorial / contender)",
            "training s, interpolated within the epoch",
            "speed-up, interpolated",
        ],
        rows,
        f"time to a test ELBO ≥ {args.threshold:g} nats (continuous pixels, Bernoulli likelihood)",
    )
    print_footer()


if __name__ == "__main__":
    main()
