"""Per-step overhead of pyro_vae's training step against a hand-written pure-PyTorch step.

The model is pyro_vae.VAE(784, z_dim=50, hidden_dims=(400,)) on Fashion-MNIST batches. Every contender
starts from the same weights and minimizes the same loss, the negative ELBO summed over the batch at one
reparameterized z per image (Bernoulli log-likelihood with logits, Monte Carlo log p(z) − log q(z|x), as
Trace_ELBO computes it), with Adam at lr 1e-3:

- ``torch``: :class:`common.TorchVAE`, the same networks written in plain PyTorch, ``torch.optim.Adam``
  (default settings), the loss summed on the device (no ``.item()`` per step). The baseline.
- ``pyro_vae``: exactly the step of ``pyro-vae train``: ``pyro_vae.training.train.train_step`` with the estimator
  that ``pyro_vae.inference.elbos.build_elbo`` builds for the default config (Trace_ELBO) and the optimizer of
  ``pyro_vae.training.train.make_optimizer`` (one fused ``torch.optim.Adam``): ``loss_and_grads`` with validation
  off, ``optimizer.step()``, ``zero_grad()``; ``math.isfinite(loss)`` and ``total += loss`` as ``_train``.
  ``pyro_vae-jit``: the same with ``--jit`` (JitTrace_ELBO). ``pyro_vae-compile``: the same with ``--compile``
  (the encoder, decoder and guide-head networks under ``torch.compile``, Pyro's tracing eager).
- ``torch-compile``: ``torch`` with its whole loss under ``torch.compile`` (default backend, inductor). The
  first step of each contender (compilation included) is timed separately and reported.
- ``svi``: the step of Pyro's VAE tutorial, and of pyro_vae before ``train_step``: ``SVI(model, guide,
  pyro.optim.Adam, Trace_ELBO())`` (``pyro.optim.Adam`` makes one torch Adam per parameter tensor),
  ``loss = svi.step(x)``. Validation on (Pyro's default unless ``python -O``).
- ``svi-novalidate``: the same under ``pyro.validation_enabled(False)``.
- ``svi-jit``: the same SVI with ``JitTrace_ELBO``.
- ``diffloss+torch-adam``: ``Trace_ELBO().differentiable_loss`` + one ``torch.optim.Adam`` over
  ``vae.parameters()`` and ``zero_grad()`` (grads set to None, not to fresh zeros as SVI does); the loss
  summed on the device. Validation on. ``-novalidate``: without validation.
- ``loss_and_grads+fused-adam``: ``Trace_ELBO().loss_and_grads`` (the backward pass inside, as
  ``svi.step`` does; every ELBO class has it, unlike ``differentiable_loss``) + one fused torch Adam over
  ``vae.parameters()``, ``zero_grad()``. ``-novalidate``: without validation.
- ``logprob-sum+fused-adam-novalidate``: the ELBO as Pyro's custom-objective docs write it,
  ``-(model_trace.log_prob_sum() - guide_trace.log_prob_sum())`` on a guide trace and a replayed model
  trace (right for reparameterized guides such as pyro_vae's ``diag``), + fused Adam, no validation:
  no ``.item()`` anywhere in the step (Trace_ELBO calls ``.item()`` on every site's log-prob sum).
- ``...+fused-adam``: Adam with ``fused=True`` (for ``svi``: ``pyro.optim.Adam({"lr": lr, "fused": True})``);
  ``torch+fused-adam`` is the like-for-like baseline for those.

Timing: blocks of ``--steps`` steps, the contenders interleaved round-robin in one process, ``--repeats``
rounds; ratios are medians of per-round ratios. Two more tables: a 16-8-2 VAE, whose arithmetic is
negligible, so that what is left is each framework's own cost per step; and the Adam update alone, as
``pyro.optim.Adam`` runs it (one torch optimizer per parameter tensor) and as one torch optimizer does.

Correctness: from the same weights and seed, each contender trains ``--check-steps`` steps on the same
batches, and the per-step losses are compared with the ``torch`` baseline (the same random draws give the
same losses up to float round-off); then the same at lr 0, where the mean ± SE of the paired differences
tests for the same loss distribution even where the draws differ (JIT's first call draws through
``torch.normal``).

    python benchmarks/step_overhead.py                   # batch 128 and 256, 4 steps x 60 rounds
    python benchmarks/step_overhead.py --threads 1       # on a machine shared with other work
    python benchmarks/step_overhead.py --threads 1 --profile loss_and_grads+fused-adam-novalidate  # + op table
    python benchmarks/step_overhead.py --repeats 3 --check-steps 10 --batch-sizes 128   # quick
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial

import pyro
import torch
from common import (
    TorchVAE,
    adam_args,
    check_reference,
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
    ratio_table,
    setup,
    tutorial_svi,
)
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import Tensor

import pyro_vae
from pyro_vae.inference.elbos import build_elbo
from pyro_vae.training.compiling import compile_networks
from pyro_vae.training.train import make_optimizer, train_step

BASELINE = "torch"
Step = Callable[[Tensor], "Tensor | float"]  # one training step on a batch; returns the loss


# ----------------------------------------------------------------------------- the contenders
def torch_step(vae: pyro_vae.VAE, lr: float, fused: bool = False) -> Step:
    ref = TorchVAE(vae)
    opt = torch.optim.Adam(ref.parameters(), **adam_args(lr, fused))

    def step(x):
        loss = ref.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def torch_compile_step(vae: pyro_vae.VAE, lr: float) -> Step:
    """``torch``, with the loss (both networks and the ELBO) under ``torch.compile`` (inductor)."""
    ref = TorchVAE(vae)
    opt = torch.optim.Adam(ref.parameters(), **adam_args(lr, False))
    loss_fn = torch.compile(ref.loss)

    def step(x):
        loss = loss_fn(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def pyro_vae_step(vae: pyro_vae.VAE, lr: float, jit: bool = False, compile: bool = False) -> Step:
    """The inner-loop body of ``pyro_vae.training.train._train``, on the estimator and optimizer pyro_vae builds;
    ``compile``: the networks compiled as ``pyro-vae train --compile`` compiles them."""
    if compile:
        compile_networks(vae)
    elbo = build_elbo("trace", jit=jit)
    opt = make_optimizer(vae, lr)

    def step(x):
        loss = train_step(elbo, vae, opt, x)
        if not math.isfinite(loss):
            raise RuntimeError(f"loss became {loss}")
        return loss

    return own_param_store(step)


def svi_step(vae: pyro_vae.VAE, lr: float, jit: bool = False, validate: bool = True, fused: bool = False) -> Step:
    """``svi.step(x)`` on the SVI of Pyro's VAE tutorial (:func:`common.tutorial_svi`)."""
    svi = tutorial_svi(vae, lr, jit=jit, fused=fused)

    def step(x):
        with pyro.validation_enabled(validate):
            loss = svi.step(x)
        if not math.isfinite(loss):
            raise RuntimeError(f"loss became {loss}")
        return loss

    return own_param_store(step)


def diffloss_step(vae: pyro_vae.VAE, lr: float, validate: bool = True, fused: bool = False) -> Step:
    elbo = Trace_ELBO()
    opt = torch.optim.Adam(vae.parameters(), **adam_args(lr, fused))
    model, guide = vae.model, vae.guide

    def step(x):
        with pyro.validation_enabled(validate):
            loss = elbo.differentiable_loss(model, guide, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return own_param_store(step)


def loss_and_grads_step(vae: pyro_vae.VAE, lr: float, validate: bool = True, fused: bool = False) -> Step:
    elbo = Trace_ELBO()
    opt = torch.optim.Adam(vae.parameters(), **adam_args(lr, fused))
    model, guide = vae.model, vae.guide

    def step(x):
        with pyro.validation_enabled(validate):
            loss = elbo.loss_and_grads(model, guide, x)  # a float; backward done
        opt.step()
        opt.zero_grad()
        if not math.isfinite(loss):
            raise RuntimeError(f"loss became {loss}")
        return loss

    return own_param_store(step)


def logprob_sum_step(vae: pyro_vae.VAE, lr: float, fused: bool = False) -> Step:
    opt = torch.optim.Adam(vae.parameters(), **adam_args(lr, fused))
    model, guide = vae.model, vae.guide

    def step(x):
        with pyro.validation_enabled(False):
            guide_tr = poutine.trace(guide).get_trace(x)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
            loss = guide_tr.log_prob_sum() - model_tr.log_prob_sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return own_param_store(step)


CONTENDERS: dict[str, Callable[[pyro_vae.VAE, float], Step]] = {
    "torch": torch_step,
    "torch+fused-adam": partial(torch_step, fused=True),
    "pyro_vae": pyro_vae_step,
    "pyro_vae-jit": partial(pyro_vae_step, jit=True),
    "torch-compile": torch_compile_step,
    "pyro_vae-compile": partial(pyro_vae_step, compile=True),
    "svi": svi_step,
    "svi-novalidate": partial(svi_step, validate=False),
    "svi-jit": partial(svi_step, jit=True),
    "svi+fused-adam": partial(svi_step, fused=True),
    "svi+fused-adam-novalidate": partial(svi_step, fused=True, validate=False),
    "svi-jit+fused-adam": partial(svi_step, jit=True, fused=True),
    "diffloss+torch-adam": diffloss_step,
    "loss_and_grads+fused-adam": partial(loss_and_grads_step, fused=True),
    "loss_and_grads+fused-adam-novalidate": partial(loss_and_grads_step, validate=False, fused=True),
    "diffloss+fused-adam-novalidate": partial(diffloss_step, validate=False, fused=True),
    "logprob-sum+fused-adam-novalidate": partial(logprob_sum_step, fused=True),
}
FUSED_BASELINE = "torch+fused-adam"  # like-for-like baseline for the fused-Adam contenders


# ----------------------------------------------------------------------------- measurements
def block(step: Step, x_all: Tensor, batch_size: int, steps: int) -> Callable[[], float]:
    """``steps`` training steps on random batches, the losses summed, one host sync at the end."""

    def run() -> float:
        total = 0.0
        for idx in torch.randint(len(x_all), (steps, batch_size), device=x_all.device):
            total = total + step(x_all[idx])
        return float(total)

    return run


FIRST_STEP: dict[tuple[str, int], float] = {}  # (contender, batch size) ↦ seconds of its first step


def time_steps(vae0, names, x_all, batch_size, args) -> dict[str, list[float]]:
    """Blocks of steps, interleaved; the first step of each contender (compilation, for the compiled
    ones) is timed alone first, into :data:`FIRST_STEP`."""
    steps = {name: CONTENDERS[name](copy.deepcopy(vae0), args.lr) for name in names}
    for name, step in steps.items():
        start = time.perf_counter()
        float(step(x_all[:batch_size]))
        FIRST_STEP[name, batch_size] = time.perf_counter() - start
    blocks = {name: block(step, x_all, batch_size, args.steps) for name, step in steps.items()}
    return interleave(blocks, args.repeats, args.device_, warmup=2, progress=False)


def _losses(vae0, name, x_all, idx, lr, seed) -> Tensor:
    step = CONTENDERS[name](copy.deepcopy(vae0), lr)
    pyro.set_rng_seed(seed)
    return torch.tensor([float(step(x_all[i])) for i in idx], dtype=torch.float64)


def correctness(vae0, names, x_all, batch_size, steps, lr, seed) -> tuple[list[str], list[list[str]]]:
    """Each contender from the same weights, seed and batches, ``steps`` steps: once training at ``lr``
    (per-step losses against ``torch``: identical draws give identical losses up to round-off), once at
    lr 0 (the loss at fixed weights, so step-to-step differences from ``torch`` are independent draws and
    their mean ± SE tests for the same loss distribution, also where the random draws differ)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randint(len(x_all), (steps, batch_size), generator=g).to(x_all.device)
    train = {name: _losses(vae0, name, x_all, idx, lr, seed) for name in names}
    fixed = {name: _losses(vae0, name, x_all, idx, 0.0, seed + 1) for name in names}
    rows = []
    for name in names:
        ls, rel = train[name], ((train[name] - train[BASELINE]).abs() / train[BASELINE].abs()).max().item()
        diff = (fixed[name] - fixed[BASELINE]) / batch_size
        se = diff.std().item() / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        rows.append(
            [
                name,
                f"{ls[0].item() / batch_size:.3f}",
                f"{ls.mean().item() / batch_size:.3f}",
                f"{rel:.1e}",
                f"{diff.mean().item():+.3f} ± {se:.3f}",
            ]
        )
    headers = [
        "contender",
        "step-1 loss / image",
        f"mean loss / image over {steps} training steps",
        "max rel. |Δ| vs torch, per training step",
        "fixed weights: mean Δ vs torch ± SE, nats / image",
    ]
    return headers, rows


def op_profile(vae0, names, x_all, batch_size, lr, steps: int = 50) -> tuple[list[str], list[list[str]]]:
    """Self CPU time per step of each torch op (``torch.profiler``), for the contenders ``names``;
    rows sorted by how much more the second contender spends than the first."""
    from torch.profiler import ProfilerActivity, profile

    per_op = {}
    for name in names:
        step = CONTENDERS[name](copy.deepcopy(vae0), lr)
        idx = torch.randint(len(x_all), (steps + 10, batch_size), device=x_all.device)
        for i in idx[:10]:
            step(x_all[i])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in idx[10:]:
                step(x_all[i])
        per_op[name] = {e.key: (e.self_cpu_time_total / steps, e.count / steps) for e in prof.key_averages()}
    a, b = names[0], names[1]

    def extra(k):
        return per_op[b].get(k, (0.0, 0.0))[0] - per_op[a].get(k, (0.0, 0.0))[0]

    keys = sorted(set().union(*per_op.values()), key=extra, reverse=True)
    rows = [["all ops", *(f"{sum(t for t, _ in per_op[n].values()):.0f}" for n in names), ""]]
    for k in keys[:12]:
        cells = [per_op[n].get(k, (0.0, 0.0)) for n in names]
        rows.append([k, *(f"{t:.0f} ({c:g}×)" for t, c in cells), f"{cells[1][0] - cells[0][0]:+.0f}"])
    headers = ["op", *(f"{n}: µs / step (calls)" for n in names), f"{b} − {a}, µs"]
    return headers, rows


def optimizer_times(vae0, args) -> dict[str, list[float]]:
    """Adam updates alone, on copies of the model's parameter tensors with fixed random gradients."""
    params = [q.detach().clone().requires_grad_() for q in vae0.parameters()]
    for q in params:
        q.grad = torch.randn_like(q)
    per_tensor = {fused: [torch.optim.Adam([q], **adam_args(args.lr, fused)) for q in params] for fused in (0, 1)}
    optimizers = {
        "pyro.optim.Adam (one torch Adam per tensor)": lambda: [o.step() for o in per_tensor[0]],
        "pyro.optim.Adam, fused=True": lambda: [o.step() for o in per_tensor[1]],
        "torch.optim.Adam": torch.optim.Adam(params, lr=args.lr).step,
        "torch.optim.Adam, foreach=True": torch.optim.Adam(params, lr=args.lr, foreach=True).step,
        "torch.optim.Adam, fused=True": torch.optim.Adam(params, lr=args.lr, fused=True).step,
    }

    def block(update):
        def run():
            for _ in range(args.steps):
                update()

        return run

    return interleave({k: block(u) for k, u in optimizers.items()}, args.repeats, args.device_, progress=False)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    data_flag(p)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--steps", type=int, default=4, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=60, help="interleaved rounds")
    p.add_argument("--no-tiny", dest="tiny", action="store_false", help="skip the framework and Adam tables")
    p.add_argument("--check-steps", type=int, default=200, help="steps of each correctness check (0: skip)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    p.add_argument(
        "--profile",
        nargs="*",
        metavar="CONTENDER",
        help="also print torch ops' self CPU time per step for torch, pyro_vae and these contenders",
    )
    args = p.parse_args()
    device = args.device_ = setup(args)
    names = [BASELINE] + [n for n in args.contenders if n != BASELINE]
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)

    print_header("Training-step overhead: pyro_vae vs pure PyTorch", device)
    x_all = load_fashion_mnist(args.data_dir, device).train_x
    vae0 = new_vae(seed=args.seed).to(device)
    err = check_reference(vae0, TorchVAE(vae0), x_all[:64], seed=args.seed)
    print(f"reference check: TorchVAE reproduces pyro_vae's log weights to {err:.1e} nats (same seed)")

    summary, summary_fused = [], []
    for bs in args.batch_sizes:
        times = time_steps(vae0, names, x_all, bs, args)
        headers, rows = ratio_table(times, BASELINE, per=args.steps)
        headers[1] = "median ms / step"
        title = f"batch {bs}: time, blocks of {args.steps} steps, {args.repeats} interleaved rounds"
        print_table(headers, rows, title)
        for name in names:
            summary.append((bs, name, quartiles(paired_ratios(times, name, BASELINE))[1]))
            if FUSED_BASELINE in names:
                summary_fused.append((bs, name, quartiles(paired_ratios(times, name, FUSED_BASELINE))[1]))
        if args.check_steps:
            headers, rows = correctness(vae0, names, x_all, bs, args.check_steps, args.lr, args.seed)
            print_table(headers, rows, f"batch {bs}: correctness, {args.check_steps} training steps from one seed")

    if args.tiny:
        # a 16-8-2 VAE: the arithmetic is negligible, so the time per step is the framework's own
        tiny = pyro_vae.VAE(16, z_dim=2, hidden_dims=(8,))
        tiny_x = torch.rand(4096, 16, device=device)
        times = time_steps(tiny.to(device), names, tiny_x, 128, args)
        headers, rows = ratio_table(times, BASELINE, per=args.steps)
        headers[1] = "median ms / step"
        headers.append("overhead over torch, ms / step")
        base = float(rows[0][1])
        for row in rows:
            row.append(f"{float(row[1]) - base:+.2f}")
        title = f"framework cost alone: VAE 16-8-2, batch 128, blocks of {args.steps} steps, {args.repeats} rounds"
        print_table(headers, rows, title)

    if args.tiny:
        times = optimizer_times(vae0, args)
        headers, rows = ratio_table(times, "torch.optim.Adam", per=args.steps)
        headers[0], headers[1] = "optimizer", "median ms / update"
        n = sum(q.numel() for q in vae0.parameters())
        title = f"Adam alone: one update of the {n:,} parameters in {len(list(vae0.parameters()))} tensors"
        print_table(headers, rows, title)

    if args.profile is not None:
        prof_names = ["torch", "pyro_vae", *args.profile]
        bs = args.batch_sizes[0]
        headers, rows = op_profile(vae0, prof_names, x_all, bs, args.lr)
        print_table(headers, rows, f"where the time goes: torch.profiler, batch {bs}, 50 steps, top differences")

    rows = []
    for name in names:
        ratios = [r for _, n, r in summary if n == name]
        like = [r for _, n, r in summary_fused if n == name] if "fused" in name and summary_fused else []
        rows.append(
            [
                name,
                *(f"{r:.3f}" for r in ratios),
                "yes" if all(r <= 1.10 for r in ratios) else "no",
                *(["/".join(f"{r:.3f}" for r in like)] if summary_fused else []),
            ]
        )
    headers = ["contender", *(f"÷ torch, batch {bs}" for bs in args.batch_sizes), "≤ 1.10 at every size"]
    if summary_fused:
        headers.append(f"÷ {FUSED_BASELINE}, batch {'/'.join(map(str, args.batch_sizes))}")
    print_table(headers, rows, "summary: median time ratio to the pure-PyTorch step")
    slow_first = [n for n in names if "compile" in n or "jit" in n]
    if slow_first:
        rows = [[n, *(f"{FIRST_STEP[n, bs]:.1f}" for bs in args.batch_sizes)] for n in slow_first]
        headers = ["contender", *(f"first step, s, batch {bs}" for bs in args.batch_sizes)]
        print_table(headers, rows, "compilation: the first training step (tracing and compiling included)")
    pyro_names = [n for n in names if not n.startswith("torch")]
    best = min(pyro_names, key=lambda n: statistics.mean(r for _, m, r in summary if m == n))
    print(f"\nfastest Pyro contender (mean ratio over batch sizes): {best}")
    print_footer()


if __name__ == "__main__":
    main()
