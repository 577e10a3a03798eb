"""One training epoch on full Fashion-MNIST: pyro_vae's data path against Pyro's VAE tutorial pipeline.

Same model (pyro_vae.VAE(784, z_dim=50, hidden_dims=(400,)), same initial weights), same loss (Trace_ELBO)
and Adam at lr 1e-3, batch 128:

- ``pyro_vae``: as ``pyro-vae train`` runs: the whole training set is one float tensor on the device,
  batched by shuffled indices (``pyro_vae.data.images.batches``), each batch one ``pyro_vae.training.train.train_step``
  (the ``pyro_vae`` step of ``step_overhead.py``: fused torch Adam, validation off);
- ``tutorial``: Pyro's VAE tutorial pipeline: ``torchvision.datasets.FashionMNIST`` with
  ``transforms.ToTensor()`` per image and a ``DataLoader(batch_size, shuffle=True, num_workers=1,
  pin_memory=on CUDA)``, a fresh iterator (and worker) per epoch, and the tutorial's step
  ``svi.step(x.reshape(-1, 784))`` (SVI, ``pyro.optim.Adam``; the ``svi`` step of ``step_overhead.py``);
- ``tutorial-workers0``: the same with ``num_workers=0`` (everything in the training process);
- ``pyro_vae+<step>``: pyro_vae's batching with another step from ``step_overhead.py`` (``--steps``;
  ``--steps svi`` separates the data path's share from the step's).

Epochs are interleaved round-robin in one process (each contender keeps its own model, optimizer and
Pyro param store); speed-ups are medians over rounds of time(tutorial) / time(contender). The data path
alone (iterating the batches to the device, no training) is timed the same way.

    python benchmarks/epoch_throughput.py                 # 3 rounds of full epochs
    python benchmarks/epoch_throughput.py --repeats 1 --limit 50   # quick: 50 batches per "epoch"
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Iterable

from common import (
    X_DIM,
    data_flag,
    interleave,
    load_fashion_mnist,
    new_vae,
    parser,
    print_footer,
    print_header,
    print_table,
    ratio_table,
    setup,
    torchvision_root,
    tutorial_loader,
)
from step_overhead import CONTENDERS as STEPS

from pyro_vae.data.images import batches

BASELINE = "tutorial"


def epoch(step: Callable, make_batches: Callable[[], Iterable], limit: int | None, record: list) -> Callable[[], None]:
    """One pass over ``make_batches()`` (at most ``limit`` batches), the losses summed; the mean loss
    per image is appended to ``record``."""

    def run() -> None:
        total, n = 0.0, 0
        for x in itertools.islice(make_batches(), limit):
            total = total + step(x)
            n += len(x)
        record.append(float(total) / n)

    return run


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    data_flag(p)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of one epoch per contender")
    p.add_argument("--data-repeats", type=int, default=5, help="interleaved rounds of the data path alone")
    p.add_argument("--limit", type=int, default=None, help="batches per epoch (default: the whole epoch)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--steps",
        nargs="*",
        default=["svi+fused-adam-novalidate", "loss_and_grads+fused-adam-novalidate"],
        choices=[n for n in STEPS if not n.startswith("torch")],
    )
    args = p.parse_args()
    device = setup(args)
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
    print_header("Epoch throughput on Fashion-MNIST: pyro_vae batching vs the Pyro tutorial's DataLoader", device)
    data = load_fashion_mnist(args.data_dir, device)
    bs = args.batch_size

    def tensor_batches():
        return (x for (x,) in batches(data.epoch_train_x(), bs))

    with torchvision_root(args.data_dir) as root:
        loaders = {w: tutorial_loader(root, True, bs, device, num_workers=w) for w in (1, 0)}

        def loader_batches(workers):
            def make():
                for x, _ in loaders[workers]:
                    yield x.reshape(-1, X_DIM).to(device, non_blocking=True)

            return make

        # -- the data path alone
        def drain(make):
            def run():
                for x in itertools.islice(make(), args.limit):
                    x.sum()  # touch the batch, as a training step would

            return run

        data_times = interleave(
            {
                "pyro_vae (tensor + randperm batches)": drain(tensor_batches),
                "tutorial (DataLoader, 1 worker)": drain(loader_batches(1)),
                "tutorial-workers0 (DataLoader, 0 workers)": drain(loader_batches(0)),
            },
            args.data_repeats,
            device,
        )
        headers, rows = ratio_table(
            data_times, "tutorial (DataLoader, 1 worker)", unit="s / epoch", scale=1, invert=True
        )
        headers[2] = "median speed-up (tutorial / contender)"
        print_table(
            headers, rows, f"data path alone: one epoch of batches of {bs} to {device}, {args.data_repeats} rounds"
        )

        # -- whole epochs of training
        vae0 = new_vae(seed=args.seed).to(device)
        records: dict[str, list[float]] = {}
        contenders = {}
        sources = {
            "pyro_vae": ("pyro_vae", tensor_batches),
            "tutorial": ("svi", loader_batches(1)),
            "tutorial-workers0": ("svi", loader_batches(0)),
        }
        for name, (step_name, make) in sources.items():
            records[name] = []
            step = STEPS[step_name](copy.deepcopy(vae0), args.lr)
            contenders[name] = epoch(step, make, args.limit, records[name])
        for step_name in args.steps:
            name = f"pyro_vae+{step_name}"
            records[name] = []
            step = STEPS[step_name](copy.deepcopy(vae0), args.lr)
            contenders[name] = epoch(step, tensor_batches, args.limit, records[name])
        times = interleave(contenders, args.repeats, device, warmup=0)

    headers, rows = ratio_table(times, BASELINE, unit="s / epoch", scale=1, invert=True)
    headers[2] = "median speed-up (tutorial / contender)"
    headers.append("train loss / image, per round")
    for row in rows:
        row.append(", ".join(f"{v:.1f}" for v in records[row[0]]))
    print_table(
        headers,
        rows,
        f"training epochs ({args.limit or 'all'} batches of {bs}), {args.repeats} interleaved rounds, same init",
    )
    speedup = float(rows[0][2]) if rows[0][0] == "pyro_vae" else float("nan")
    print(f"\npyro_vae speed-up per epoch: {speedup:.2f}x (target ≥ 1.4x: {'met' if speedup >= 1.4 else 'not met'})")
    print_footer()


if __name__ == "__main__":
    main()
