"""Cost of an M2 (``--model ssvae``) training step: networks and estimators, on full Fashion-MNIST.

Each contender is an :class:`pyro_vae.SSVAE` built by ``pyro_vae.models.registry.build_model`` from the config
``pyro-vae train --model ssvae --labels N --net NET --elbo ELBO`` would record (w = 3, α' = 25, z_dim 20,
hidden width 400), trained by ``pyro_vae.training.train.train_step`` on the batches ``SSVAE.train_batches`` yields:
``--batch-size`` unlabelled images paired with min(batch, N) labelled ones. ``enum`` sums y over the ten
classes, so the encoder q(z|x, y) and the decoder run ten times per unlabelled image; ``tracegraph`` samples
one y. The contenders: ``mlp``/``conv`` × ``enum``/``tracegraph``, and a plain VAE (``--model vae``, the same
MLP) as the reference for what one pass costs.

Timing: each contender runs blocks of ``--steps`` steps, interleaved round-robin in one process for
``--repeats`` rounds; minutes per epoch are the median block time scaled to the steps of one epoch over the
unlabelled images. Ratios are medians of per-round ratios against ``mlp enum`` (M2's default).

    python benchmarks/m2_step_cost.py --threads 1                  # 5 steps x 5 rounds
    python benchmarks/m2_step_cost.py --threads 1 --repeats 1 --steps 1   # quick
"""

from __future__ import annotations

import itertools
import math
import statistics

from common import (
    data_flag,
    interleave,
    load_fashion_mnist,
    own_param_store,
    paired_ratios,
    parser,
    print_footer,
    print_header,
    print_table,
    quartiles,
    setup,
)

from pyro_vae.config import RunConfig
from pyro_vae.models.registry import build_model
from pyro_vae.training.train import make_elbo, make_optimizer, resolve_defaults, train_step

BASELINE = "ssvae mlp enum"


def config(model: str, net: str, elbo: str, labels: int, batch_size: int) -> RunConfig:
    cfg = RunConfig()
    cfg.model.model, cfg.model.net, cfg.train.elbo, cfg.train.batch_size = model, net, elbo, batch_size
    if model == "ssvae":
        cfg.data.labels, cfg.model.kl_weight, cfg.train.class_weight = labels, 3.0, 25.0
    return resolve_defaults(cfg)


def step_block(cfg: RunConfig, data, steps: int, device):
    vae = build_model(cfg, data.image_shape, data.num_classes).to(device)
    elbo, opt = make_elbo(cfg.train), make_optimizer(vae, cfg.train.lr)
    batches = itertools.cycle(list(itertools.islice(vae.train_batches(data, cfg), steps)))

    @own_param_store
    def run() -> None:
        total = sum(train_step(elbo, vae, opt, *next(batches)) for _ in range(steps))
        if not math.isfinite(total):
            raise RuntimeError(f"loss became {total}")

    return run, vae.steps_per_epoch(data, cfg)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    data_flag(p)
    p.add_argument("--labels", type=int, default=100, help="labelled images, N")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    args = p.parse_args()
    device = setup(args)
    print_header(f"M2 step cost: minutes per epoch, {args.labels} labels", device)
    data = load_fashion_mnist(args.data_dir, device)

    blocks, epoch_steps = {}, {}
    contenders = [("vae", "mlp", "trace")] + [("ssvae", n, e) for n in ("mlp", "conv") for e in ("enum", "tracegraph")]
    for model, net, elbo in contenders:
        label = f"{model} {net} {elbo}"
        cfg = config(model, net, elbo, args.labels, args.batch_size)
        blocks[label], epoch_steps[label] = step_block(cfg, data, args.steps, device)
    times = interleave(blocks, args.repeats, device, warmup=1)

    rows = []
    for label, ts in times.items():
        q1, q2, q3 = quartiles(paired_ratios(times, label, BASELINE))
        per_step = statistics.median(ts) / args.steps
        minutes = per_step * epoch_steps[label] / 60
        rows.append([label, f"{per_step * 1e3:.0f}", f"{minutes:.1f}", f"{q2:.2f} ({q1:.2f}–{q3:.2f})"])
    headers = ["model net estimator", "ms / step", "min / epoch", f"÷ {BASELINE} (IQR)"]
    title = f"blocks of {args.steps} steps, {args.repeats} interleaved rounds, batch {args.batch_size}"
    print_table(headers, rows, title)
    print_footer()


if __name__ == "__main__":
    main()
