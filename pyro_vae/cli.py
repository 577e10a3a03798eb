"""The ``pyro-vae`` command: ``train``, ``evaluate`` and ``sample``.

Errors in the input end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyro
import torch

from . import plots
from .checkpoint import CheckpointError
from .compare import CompareConfig, compare, results_markdown
from .config import MODEL_NAMES, PRIORS, DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import DATASETS, PIXELS, check_images, check_labels, load_dataset
from .elbos import ELBOS
from .guides import GUIDES
from .io import atomic_write_text
from .likelihoods import LIKELIHOODS
from .nets import NETS
from .train import DEVICES, TrainingDiverged, final_metrics, fit, load_run, resume


def _add_data_flags(p: argparse.ArgumentParser, help_suffix: str = "") -> None:
    p.add_argument("--dataset", choices=list(DATASETS), help=f"dataset name{help_suffix}")
    p.add_argument(
        "--data-dir",
        help="folder with the four MNIST-format IDX files (.gz or not), or a torchvision root; "
        "for svhn, the folder with train_32x32.mat and test_32x32.mat",
    )
    p.add_argument("--pixels", choices=PIXELS, help=f"pixel treatment{help_suffix}")


def _add_guide_flags(p: argparse.ArgumentParser, several: bool = False) -> None:
    m, t = ModelConfig(), TrainConfig()
    if not several:
        p.add_argument("--guide", choices=list(GUIDES), help=f"q(z|x) family (default {m.guide})")
        p.add_argument("--elbo", choices=list(ELBOS), help=f"ELBO estimator (default {t.elbo})")
    p.add_argument("--flow-steps", type=int, help=f"IAF steps K of --guide iaf (default {m.flow_steps})")
    p.add_argument("--particles", type=int, help=f"K vectorized particles per datapoint (default {t.particles})")
    p.add_argument("--alpha", type=float, help=f"α of --elbo renyi (default {t.alpha})")
    p.add_argument(
        "--jit", action="store_true", default=None, help="the estimator's JIT variant (trace, meanfield, tracegraph)"
    )


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, help="auto (CUDA when available), cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-vae", description="Variational autoencoders with Pyro.")
    sub = parser.add_subparsers(dest="command")

    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    tr = sub.add_parser(
        "train", help="train a VAE into a run folder", description="Train a VAE with SVI (Trace_ELBO, Adam)."
    )
    _add_data_flags(tr, f" (default {d.dataset}, {d.pixels})")
    tr.add_argument("--z-dim", type=int, help=f"latent dimension (default {m.z_dim})")
    tr.add_argument(
        "--hidden-dims", type=int, nargs="+", help=f"MLP widths (default {' '.join(map(str, m.hidden_dims))})"
    )
    tr.add_argument("--likelihood", choices=list(LIKELIHOODS), help=f"pixel likelihood (default {m.likelihood})")
    tr.add_argument(
        "--model",
        choices=MODEL_NAMES,
        help=f"vae, cvae (conditional on the label) or ssvae (semi-supervised M2) (default {m.model})",
    )
    tr.add_argument("--net", choices=list(NETS), help=f"encoder/decoder networks (default {m.net})")
    tr.add_argument(
        "--prior", choices=PRIORS, help="p(z|y) of --model cvae: learned per class or N(0, I) (default learned)"
    )
    tr.add_argument(
        "--labels", type=int, help="--model ssvae: keep N training labels, balanced per class (default all)"
    )
    tr.add_argument(
        "--class-weight",
        type=float,
        help=f"--model ssvae: α; each labelled image's −log q(y|x) weighs α·N/N_labelled (default {t.class_weight})",
    )
    _add_guide_flags(tr)
    tr.add_argument("--epochs", type=int, help=f"total epochs (default {t.epochs}); with --resume, the new total")
    tr.add_argument("--batch-size", type=int, help=f"default {t.batch_size}")
    tr.add_argument("--lr", type=float, help=f"Adam learning rate (default {t.lr})")
    tr.add_argument("--seed", type=int, help=f"default {t.seed}")
    tr.add_argument("--kl-warmup-epochs", type=int, help="β warm-up of the KL term over N epochs (default 0: off)")
    tr.add_argument("--max-seconds", type=float, help="time budget: stop after the epoch that reaches it")
    tr.add_argument(
        "--num-samples", type=int, help=f"K of the final importance-sampled log p(x) (default {t.eval_num_samples})"
    )
    _add_device(tr)
    tr.add_argument("--out", help="run folder (default runs/vae-<dataset>-<time>)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser(
        "evaluate",
        help="test ELBO, its terms and IS log p(x) of a run",
        description="Evaluate a trained run on a test set with the same image shape.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--num-samples", type=int, default=1000, help="K importance samples per image (default 1000)")
    _add_data_flags(ev, " (default: the run's)")
    ev.add_argument("--seed", type=int, default=0, help="default 0")
    _add_device(ev)

    co = sub.add_parser(
        "compare",
        help="train a grid of guides × estimators on equal footing",
        description="Train every (guide, estimator, seed) cell on the same data and budget; write "
        "results.md, results.csv, elbo_vs_time.png and gradient_snr.png. Finished cells are kept on a rerun.",
    )
    co.add_argument("--guides", default="diag", help=f"comma-separated, from {', '.join(GUIDES)} (default diag)")
    co.add_argument(
        "--elbos", default="trace", help=f"comma-separated NAME or NAME:K, from {', '.join(ELBOS)} (default trace)"
    )
    co.add_argument("--seeds", default="0", help="comma-separated seeds; several give mean ± sd (default 0)")
    _add_data_flags(co, f" (default {d.dataset}, {d.pixels})")
    co.add_argument("--z-dim", type=int, help=f"latent dimension (default {m.z_dim})")
    co.add_argument("--hidden-dims", type=int, nargs="+", help="MLP widths (default 400)")
    co.add_argument("--likelihood", choices=list(LIKELIHOODS), help=f"pixel likelihood (default {m.likelihood})")
    _add_guide_flags(co, several=True)
    co.add_argument("--epochs", type=int, help=f"epochs per cell (default {t.epochs})")
    co.add_argument("--max-seconds", type=float, help="training seconds per cell (stops after the epoch reaching it)")
    co.add_argument("--batch-size", type=int, help=f"default {t.batch_size}")
    co.add_argument("--lr", type=float, help=f"Adam learning rate (default {t.lr})")
    co.add_argument("--num-samples", type=int, help=f"K of IS log p(x) per cell (default {t.eval_num_samples})")
    co.add_argument("--snr-estimates", type=int, default=64, help="gradient draws per cell for the SNR (default 64)")
    _add_device(co)
    co.add_argument("--out", required=True, help="results folder (rerun with the same --out to continue)")
    co.add_argument("--quiet", action="store_true", help="no progress bars")

    sa = sub.add_parser(
        "sample",
        help="a PNG grid of samples from a run",
        description="Draw z ~ p(z) (p(z|y) for conditional runs) and save the means of p(x|z) as a PNG grid.",
    )
    sa.add_argument("run_dir", metavar="RUN_DIR")
    sa.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
    sa.add_argument("--out", required=True, help="PNG file to write")
    sa.add_argument("--seed", type=int, default=0, help="default 0")
    sa.add_argument(
        "--label",
        type=int,
        help="class of the samples (cvae, ssvae runs); without it a conditional run draws one row per class",
    )
    _add_device(sa)
    return parser


_RESUMABLE = {"epochs", "device", "quiet", "resume", "command"}
_MODEL_FLAGS = ("z_dim", "likelihood", "guide", "flow_steps", "model", "net", "prior")
_TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "device",
    "kl_warmup_epochs",
    "elbo",
    "particles",
    "alpha",
    "jit",
    "class_weight",
)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of ``train`` (and ``compare``) flags; flags left out keep the dataclass defaults."""
    pick = {k: v for k, v in vars(args).items() if v is not None}
    data = DataConfig(**{k: pick[k] for k in ("dataset", "data_dir", "pixels", "labels") if k in pick})
    model = ModelConfig(**{k: pick[k] for k in _MODEL_FLAGS if k in pick})
    if "hidden_dims" in pick:
        model.hidden_dims = tuple(pick["hidden_dims"])
    train = TrainConfig(**{k: pick[k] for k in _TRAIN_FLAGS if k in pick})
    if "num_samples" in pick:
        train.eval_num_samples = pick["num_samples"]
    if "max_seconds" in pick:
        train.max_seconds = pick["max_seconds"]
    return RunConfig(data, model, train)


def cmd_train(args: argparse.Namespace) -> None:
    if args.resume:
        fixed = [k for k, v in vars(args).items() if v not in (None, False) and k not in _RESUMABLE]
        if fixed:
            flags = ", ".join("--" + k.replace("_", "-") for k in fixed)
            raise ValueError(
                f"{flags} cannot change on --resume (the run keeps its config.json); only --epochs and --device can"
            )
        run = resume(args.resume, args.epochs, device=args.device, progress=not args.quiet)
    else:
        run = fit(config_from_args(args), args.out, progress=not args.quiet)
    f = run.metrics["final"]
    px = "log p(x|y)" if f.get("conditional") else "log p(x)"
    line = (
        f"{run.out_dir}: test ELBO {f['elbo']:.2f} (reconstruction {f['reconstruction']:.2f}, KL {f['kl']:.2f}), "
        f"IS {px} {f['is_log_px']:.2f} (K={f['is_num_samples']}) nats/image = {f['is_bpd']:.3f} bits/dim, "
        f"{f['pixels']} pixels"
    )
    if "generative_accuracy" in f:
        line += f"; generative classification accuracy {f['generative_accuracy']:.4f}"
    if "accuracy" in f:
        line += f"; q(y|x) test accuracy {f['accuracy']:.4f} with {f['labels']} labels"
        line += f" (baseline classifier {f['baseline_accuracy']:.4f})"
    print(line)


def cmd_evaluate(args: argparse.Namespace) -> None:
    run, _ = load_run(args.run_dir, args.device or "auto", with_data=False)
    cfg = run.config.data
    name = args.dataset or cfg.dataset
    data_dir = args.data_dir if (args.data_dir or args.dataset) else cfg.data_dir
    pixels = args.pixels or cfg.pixels
    data = load_dataset(name, data_dir, pixels, next(run.vae.parameters()).device)
    if data.image_shape != run.image_shape:
        raise ValueError(
            f"test images have shape {data.image_shape} but the run was trained on {tuple(run.image_shape)}; "
            "evaluate on a dataset with the same image shape"
        )
    check_images(data.test_x, name="test images", unit_interval=run.vae.lik.unit_interval)
    if run.vae.conditional:
        check_labels(data.test_y, run.vae.num_classes, n=len(data.test_x), name="test labels")
    pyro.set_rng_seed(args.seed)
    result = final_metrics(run.vae, data.test_x, args.num_samples, data.test_y)
    result.update(dataset=name, data_dir=data_dir, pixels=pixels, test_size=len(data.test_x))
    cond = "|y" if result.get("conditional") else ""
    print(f"{name} test set ({len(data.test_x)} images, {pixels} pixels), nats per image ± standard error:")
    for key, label in (
        ("elbo", "test ELBO"),
        ("reconstruction", f"  reconstruction E_q log p(x|z{',y' if cond else ''})"),
        ("kl", f"  KL(q(z|x{',y' if cond else ''}) || p(z{cond}))"),
        ("is_log_px", f"IS log p(x{cond}), K={args.num_samples}"),
    ):
        print(f"  {label:32s} {result[key]:10.2f} ± {result[key + '_se']:.2f}")
    print(f"  {f'gap log p(x{cond}) - ELBO':32s} {result['gap']:10.2f}")
    print(f"  {'bits/dim: ELBO, IS':32s} {result['elbo_bpd']:10.4f}, {result['is_bpd']:.4f}")
    if "generative_accuracy" in result:
        k = result["classify_num_samples"]
        print(f"  {f'generative accuracy, K={k}/class':32s} {result['generative_accuracy']:10.4f}")
    if "accuracy" in result:
        print(f"  {'q(y|x) accuracy':32s} {result['accuracy']:10.4f}")
    path = Path(args.run_dir) / "evaluation.json"
    try:
        previous = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        previous = {}
    previous[f"{name}|{data_dir}|{pixels}|K={args.num_samples}"] = result
    atomic_write_text(path, json.dumps(previous, indent=2) + "\n")


def cmd_sample(args: argparse.Namespace) -> None:
    if args.num < 1:
        raise ValueError(f"--num must be a positive integer, got {args.num}")
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must name a .png file, got {args.out}")
    run, _ = load_run(args.run_dir, args.device or "auto", with_data=False)
    model = run.vae
    if args.label is not None and not model.conditional:
        raise ValueError(
            f"--label needs a conditional run (--model cvae or ssvae); {args.run_dir} is a {run.config.model.model}"
        )
    if args.label is not None and not 0 <= args.label < model.num_classes:
        raise ValueError(
            f"--label must be a class in 0..{model.num_classes - 1} ({model.num_classes} classes), got {args.label}"
        )
    torch.manual_seed(args.seed)
    if not model.conditional:
        plots.samples(model, run.image_shape, args.num, path=args.out)
        print(f"wrote {args.num} samples to {args.out}")
    elif args.label is not None:
        plots.grid(model.sample(args.num, args.label), run.image_shape, path=args.out)
        print(f"wrote {args.num} samples of class {args.label} to {args.out}")
    else:
        per_class = max(1, args.num // model.num_classes)
        plots.class_samples(model, run.image_shape, per_class, path=args.out)
        print(f"wrote {per_class} samples of each of the {model.num_classes} classes to {args.out}")


def _csv(text: str, cast=str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def cmd_compare(args: argparse.Namespace) -> None:
    if args.snr_estimates < 2:
        raise ValueError(f"--snr-estimates must be at least 2, got {args.snr_estimates}")
    cfg = CompareConfig(
        guides=_csv(args.guides),
        elbos=_csv(args.elbos),
        seeds=_csv(args.seeds, int),
        base=config_from_args(args),
        snr_estimates=args.snr_estimates,
    )
    rows = compare(cfg, args.out, progress=not args.quiet)
    print(results_markdown(rows), end="")
    print(f"wrote {Path(args.out) / 'results.md'}, results.csv, elbo_vs_time.png, gradient_snr.png")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        COMMANDS[args.command](args)
    except (ValueError, CheckpointError, TrainingDiverged, OSError) as e:
        print(f"pyro-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"pyro-vae {args.command}: interrupted; the last checkpoint is kept (continue with --resume)",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
