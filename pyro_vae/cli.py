"""The ``pyro-vae`` command: ``train``, ``evaluate``, ``sample``, ``plot``, ``compare`` and ``draws``.

The flags of ``train`` and ``compare`` are built from the fields of the config dataclasses
(:func:`pyro_vae.config.options_of`): their names, help, types and defaults live in one place.

Errors in the input end in one line on stderr and exit status 2, never a traceback; so does an
allocation that fails (a size too large for the memory), naming the flags that set the sizes. A command that
writes a run folder (``train``, ``compare``) locks it before the heavy imports (torch, Pyro), so
that a second writer is turned away at once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from pyro_vae.config import MAX_SEED, MAX_SIZE, DataConfig, ModelConfig, Option, RunConfig, TrainConfig, options_of
from pyro_vae.errors import CheckpointError, ConfigError, OutOfMemory, PyroVAEError, UsageError
from pyro_vae.training.runfolder import RunLock, run_folder, writes_run_folders


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and no flag abbreviations."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_option(p: argparse.ArgumentParser, opt: Option, help_default: str | None = None) -> None:
    """One config field as a flag; left out, it is None (the dataclass default applies). Its help
    names the models that take it and their defaults (:func:`pyro_vae.models.registry.option_note`)."""
    from pyro_vae.models.registry import option_note

    default, text = opt.default, opt.meta["help"] + option_note(opt.name)
    if help_default is None:
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_default = "" if default is None or default is False else f" (default {shown})"
    else:
        text = re.sub(r" \(default: [^)]*\)", "", text)  # the given default replaces the one the help names
    kw: dict = {"help": text + help_default, "dest": opt.name}
    if opt.meta.get("metavar") is not None:
        kw["metavar"] = opt.meta["metavar"]
    if opt.type is bool:
        p.add_argument(opt.flag, action="store_true", default=None, **kw)
        return
    if opt.type is tuple and opt.item is str or opt.name == "seeds":
        kw["type"] = lambda text, cast=opt.item: _csv(text, cast)
    elif opt.type is tuple:
        n = opt.meta.get("length")
        kw.update(type=opt.item, nargs=n or "+")
    else:
        kw["type"] = opt.type
        choices = opt.choices()
        if choices is not None:
            kw["choices"] = choices
    p.add_argument(opt.flag, **kw)


def _csv(text: str, cast=str) -> tuple:
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return tuple(cast(t) for t in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


_PER_CELL = {"guide", "elbo", "seed", "model"}  # compare sets these per cell


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pyro-vae`` and its subcommands; the flags of ``train``, ``compare`` and ``draws``
    come from the config dataclasses, their choices from the registries."""
    from pyro_vae.config import ModelConfig
    from pyro_vae.experiments.grid import CompareConfig
    from pyro_vae.models.registry import options_only_for_others

    not_in_compare = _PER_CELL | options_only_for_others(ModelConfig().model)  # compare trains the default model

    parser = _Parser(prog="pyro-vae", description="Variational autoencoders with Pyro.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    tr = sub.add_parser(
        "train", help="train a VAE into a run folder", description="Train a VAE with SVI (Trace_ELBO, Adam)."
    )
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for opt in options_of(cls):
            _add_option(tr, opt)
    tr.add_argument("--out", help="run folder (default runs/<model>-<dataset>-<time>)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser(
        "evaluate",
        help="test ELBO, its terms and IS log p(x) of a run",
        description="Evaluate a trained run on a test set with the same image shape.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--num-samples", type=int, default=1000, help="K importance samples per image (default 1000)")
    for opt in options_of(DataConfig):
        if opt.name not in ("labels", "label_seed"):
            _add_option(ev, opt, " (default: the run's)")
    ev.add_argument("--seed", type=int, default=0, help="default 0")
    _add_option(ev, next(o for o in options_of(TrainConfig) if o.name == "device"))

    co = sub.add_parser(
        "compare",
        help="train a grid of guides × estimators on equal footing",
        description="Train every (guide, estimator, seed) cell on the same data and budget; write "
        "results.md, results.csv, elbo_vs_time.png and gradient_snr.png. Cells made earlier with the same "
        "settings are kept on a rerun.",
    )
    for opt in options_of(CompareConfig):
        _add_option(co, opt)
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for opt in options_of(cls):
            if opt.name not in not_in_compare:
                _add_option(co, opt)
    co.add_argument("--out", required=True, help="results folder (rerun with the same --out to continue)")
    co.add_argument(
        "--restart-changed", action="store_true", help="train afresh the cells made earlier with other settings"
    )
    co.add_argument("--quiet", action="store_true", help="no progress bars")
    job = co.add_mutually_exclusive_group()
    job.add_argument("--list-cells", action="store_true", help="print the cells (index, name, state) and exit")
    job.add_argument("--cell", type=int, metavar="I", help="train cell I alone (for job arrays; see --list-cells)")
    job.add_argument(
        "--collect", action="store_true", help="write the tables and plots from the finished cells, naming the missing"
    )

    dr = sub.add_parser(
        "draws",
        help="repeat a semi-supervised run over several draws of its labels",
        description="Train --model ssvae once per label seed into OUT/label-seed-S and report the mean and 95% "
        "interval of M2's and the baseline's accuracy over the draws (draws.md, draws.json). Finished draws are "
        "kept on a rerun, interrupted ones resumed.",
    )
    dr.add_argument(
        "--label-seeds",
        dest="label_seeds",
        type=lambda text: _csv(text, int),
        default=(0, 1, 2, 3, 4),
        metavar="S,S,...",
        help="seeds of the labelled subsets (default 0,1,2,3,4)",
    )
    for cls in (DataConfig, ModelConfig, TrainConfig):
        for opt in options_of(cls):
            if opt.name != "label_seed":
                _add_option(dr, opt)
    dr.add_argument("--out", required=True, help="results folder (rerun with the same --out to continue)")
    dr.add_argument("--quiet", action="store_true", help="no progress bars")

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
    _add_option(sa, next(o for o in options_of(TrainConfig) if o.name == "device"))

    pl = sub.add_parser(
        "plot",
        help="redraw the plots of a finished run",
        description="Draw every plot of a finished run into its folder again (ELBO curves, reconstructions, "
        "samples, latent scatter), e.g. after a kill or a full disk while they were drawn.",
    )
    pl.add_argument("run_dir", metavar="RUN_DIR")
    _add_option(pl, next(o for o in options_of(TrainConfig) if o.name == "device"))
    return parser


_RESUMABLE = {"epochs", "device", "quiet", "resume", "command"}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of ``train`` (and ``compare``) flags; flags left out keep the dataclass defaults."""
    sections = []
    for cls in (DataConfig, ModelConfig, TrainConfig):
        given = {o.name: getattr(args, o.name, None) for o in options_of(cls)}
        sections.append(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}))
    return RunConfig(*sections)


def cmd_train(args: argparse.Namespace) -> None:
    """``pyro-vae train``: a new run (choosing α' first with ``--class-weight-grid``), or ``--resume``."""
    from pyro_vae.experiments.class_weight import fit_with_selection, resume_with_selection
    from pyro_vae.training import distributed

    if args.resume:
        fixed = [k for k, v in vars(args).items() if v not in (None, False) and k not in _RESUMABLE]
        if fixed:
            flags = ", ".join("--" + k.replace("_", "-") for k in fixed)
            raise UsageError(
                f"{flags} cannot change on --resume (the run keeps its config.json); only --epochs and --device can"
            )
    try:
        if args.resume:
            run = resume_with_selection(args.resume, args.epochs, device=args.device, progress=not args.quiet)
        else:
            run = fit_with_selection(config_from_args(args), args.out, progress=not args.quiet)
    finally:
        distributed.leave()
    if "final" not in run.metrics:  # a rank other than 0 of a torchrun launch: rank 0 reports
        return
    f = run.metrics["final"]
    px = f["evidence"]
    line = (
        f"{run.out_dir}: test ELBO {f['elbo']:.2f} (reconstruction {f['reconstruction']:.2f}, KL {f['kl']:.2f}), "
        f"IS {px} {f['is_log_px']:.2f} (K={f['is_num_samples']}) nats/image = {f['is_bpd']:.3f} bits/dim, "
        f"{f['pixels']} pixels"
    )
    print("; ".join([line, *run.vae.summary(f)]))


def _read_evaluations(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} cannot be read ({e}); move it away or delete it, then evaluate again") from None
    if not isinstance(previous, dict):
        raise UsageError(f"{path} is not a JSON object of evaluations; move it away or delete it, then evaluate again")
    return previous


def cmd_evaluate(args: argparse.Namespace) -> None:
    """``pyro-vae evaluate``: a run's bounds and its model's own metrics on a test set, kept in
    ``RUN/evaluation.json``."""
    import pyro

    from pyro_vae.atomic import atomic_write_text
    from pyro_vae.config import DataConfig
    from pyro_vae.data.load import load_data
    from pyro_vae.training.final import final_metrics
    from pyro_vae.training.train import load_run

    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be a positive integer, got {args.num_samples}")
    if args.num_samples > MAX_SIZE:
        raise UsageError(f"--num-samples must be an integer ≤ {MAX_SIZE:,}, got {args.num_samples}")
    _check_seed(args.seed)
    path = Path(args.run_dir) / "evaluation.json"
    if not (Path(args.run_dir) / "config.json").is_file():
        raise CheckpointError(f"{args.run_dir} holds no run (no config.json); pass a folder written by pyro-vae train")
    with RunLock(args.run_dir):
        previous = _read_evaluations(path)  # before the work: a damaged file is never replaced
        run, _ = load_run(args.run_dir, args.device or "auto", with_data=False)
        cfg = run.config.data
        name = args.dataset or cfg.dataset
        data_dir = args.data_dir if (args.data_dir or args.dataset) else cfg.data_dir
        pixels = args.pixels or cfg.pixels
        data_cfg = DataConfig(**{**vars(cfg), "dataset": name, "data_dir": data_dir, "pixels": pixels, "labels": None})
        data = load_data(data_cfg, next(run.vae.parameters()).device)
        if data.image_shape != run.image_shape:
            raise UsageError(
                f"test images have shape {data.image_shape} but the run was trained on {tuple(run.image_shape)}; "
                "evaluate on a dataset with the same image shape"
            )
        data.check(unit_interval=run.vae.lik.unit_interval)
        run.vae.check_data(data, run.config)
        pyro.set_rng_seed(args.seed)
        result = final_metrics(run.vae, data.test_x, args.num_samples, data.test_y)
        # a run trained with --fidelity-samples 0 is still judged here, with the default samples per class
        fidelity_samples = run.config.train.fidelity_samples or TrainConfig().fidelity_samples
        result.update(run.vae.data_metrics(data, data_dir, fidelity_samples))
        result.update(dataset=name, data_dir=data_dir, pixels=pixels, test_size=len(data.test_x))
        cond = result["evidence"].removeprefix("log p(x").removesuffix(")")  # "|y" or ""
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
        for label, value in run.vae.metric_rows(result):
            print(f"  {label:32s} {value}")
        previous[f"{name}|{data_dir}|{pixels}|K={args.num_samples}"] = result
        atomic_write_text(path, json.dumps(previous, indent=2) + "\n")


def cmd_sample(args: argparse.Namespace) -> None:
    """``pyro-vae sample``: a PNG grid of the means of p(x|z) for z drawn from the prior."""
    import torch

    from pyro_vae import plots
    from pyro_vae.training.train import load_run

    if args.num < 1:
        raise UsageError(f"--num must be a positive integer, got {args.num}")
    if args.num > MAX_SIZE:
        raise UsageError(f"--num must be an integer ≤ {MAX_SIZE:,}, got {args.num}")
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"--out must name a .png file, got {args.out}")
    _check_seed(args.seed)
    run, _ = load_run(args.run_dir, args.device or "auto", with_data=False)
    model = run.vae
    _check_sample_memory(model, args.num)
    if args.label is not None:
        try:
            model.check_label(args.label)
        except ValueError as e:
            raise UsageError(f"--label {e} ({args.run_dir} is a {run.config.model.model} run)") from None
    torch.manual_seed(args.seed)
    if args.label is not None:
        plots.grid(model.sample(args.num, args.label), run.image_shape, path=args.out)
        print(f"wrote {args.num} samples of class {args.label} to {args.out}")
    else:
        plots.samples(model, run.image_shape, args.num, path=args.out)
        print(f"wrote {plots.samples_words(model, args.num)} to {args.out}")


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be an integer between 0 and {MAX_SEED} (2**32 - 1), got {seed}")


def _check_sample_memory(model, num: int) -> None:
    """Refuse ``--num`` samples whose images alone (``num × x_dim`` float32) exceed the memory."""
    from pyro_vae.models.registry import _available_memory

    device = next(model.parameters()).device
    need, available = 4 * num * (model.x_dim + model.z_dim), _available_memory(device)
    if available is not None and need > available:
        raise UsageError(
            f"--num {num} is too large: the samples need about {need / 2**30:.1f} GiB, more than the "
            f"{available / 2**30:.1f} GiB available; draw fewer samples"
        )


def cmd_plot(args: argparse.Namespace) -> None:
    """Redraw every plot of a finished run (:func:`pyro_vae.plots.save_run_plots`), under its lock."""
    from pyro_vae import plots
    from pyro_vae.training.runfolder import run_state
    from pyro_vae.training.train import load_run

    run_dir = run_folder(args.run_dir, "RUN_DIR")
    if run_state(run_dir) != "finished":
        raise CheckpointError(
            f"{run_dir} holds no finished run (no final metrics in metrics.json); a run draws its plots when it "
            f"finishes: pyro-vae train --resume {run_dir}"
        )
    with RunLock(run_dir):
        run, _ = load_run(run_dir, args.device or "auto")
        run.metrics = json.loads((run_dir / "metrics.json").read_text())
        plots.save_run_plots(run)
    print(f"redrew the plots of {run_dir}")


def cmd_compare(args: argparse.Namespace) -> None:
    """``pyro-vae compare``: a grid of guides × estimators × seeds, or one job of it."""
    from pyro_vae.experiments.grid import CompareConfig, compare
    from pyro_vae.experiments.results import results_markdown

    given = {o.name: getattr(args, o.name) for o in options_of(CompareConfig) if getattr(args, o.name) is not None}
    cfg = CompareConfig(base=config_from_args(args), **given)
    if args.list_cells or args.cell is not None or args.collect:
        return grid_command(cfg, args)
    rows = compare(cfg, args.out, progress=not args.quiet, restart_changed=args.restart_changed)
    print(results_markdown(rows), end="")
    print(f"wrote {Path(args.out) / 'results.md'}, results.csv, elbo_vs_time.png, gradient_snr.png")


def cmd_draws(args: argparse.Namespace) -> None:
    """``pyro-vae draws``: a semi-supervised run repeated over draws of its labels."""
    from pyro_vae.experiments.draws import SUMMARIZED, label_draws

    config = config_from_args(args)
    rows, summary = label_draws(config, args.label_seeds, args.out, progress=not args.quiet)
    words = "; ".join(
        f"{SUMMARIZED[k]} {v['mean']:.4f} ± {v['half_width']:.4f}"
        for k, v in summary.items()
        if k in ("accuracy", "baseline_accuracy", "difference")
    )
    print(f"{config.data.labels} labels, {len(rows)} label draws (mean ± 95% interval): {words}")
    print(f"wrote {Path(args.out) / 'draws.md'} and draws.json")


def grid_command(cfg, args: argparse.Namespace) -> int:
    """``--list-cells``, ``--cell I`` and ``--collect``; exit status 1 when ``--collect`` finds
    cells missing (the tables are written from the others)."""
    from pyro_vae.experiments.grid import cell_name, collect, list_cells, run_cell_at
    from pyro_vae.experiments.results import _one_line, results_markdown

    if args.list_cells:
        print("\n".join(list_cells(cfg, args.out)))
        return 0
    if args.cell is not None:
        result = run_cell_at(cfg, args.out, args.cell, progress=not args.quiet, restart_changed=args.restart_changed)
        print(_one_line(cell_name(*cfg.cells()[args.cell]), result))
        return 0
    rows, missing = collect(cfg, args.out)
    print(results_markdown(rows), end="")
    print(f"wrote {Path(args.out) / 'results.md'}, results.csv, elbo_vs_time.png, gradient_snr.png")
    if not missing:
        return 0
    print("missing cells:\n" + "\n".join(missing))
    print(
        f"pyro-vae compare: {len(missing)} of {len(cfg.cells())} cells are missing (listed above); the tables "
        "cover the others; run the missing ones with --cell I, then --collect again",
        file=sys.stderr,
    )
    return 1


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "compare": cmd_compare,
    "draws": cmd_draws,
    "plot": cmd_plot,
}

SIZE_FLAGS = {  # the flags that set the sizes a command allocates, named when an allocation fails
    "train": ("--particles", "--batch-size", "--z-dim", "--hidden-dims", "--flow-steps", "--num-samples"),
    "compare": ("--elbos", "--particles", "--batch-size", "--z-dim", "--hidden-dims", "--snr-batch-size"),
    "draws": ("--particles", "--batch-size", "--z-dim", "--hidden-dims", "--num-samples"),
    "evaluate": ("--num-samples",),
    "sample": ("--num",),
    "plot": (),
}


def _is_allocation_failure(e: BaseException) -> bool:
    """``MemoryError``, ``torch.OutOfMemoryError`` or the allocator's ``RuntimeError``."""
    text = str(e)
    return (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or isinstance(e, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


def _out_of_memory(command: str, argv: list[str]) -> OutOfMemory:
    flags = SIZE_FLAGS.get(command, ())
    given = [f for f in flags if any(a == f or a.startswith(f + "=") for a in argv)] or list(flags)
    which = f"lower {', '.join(given)}" if given else "free some memory or use another --device"
    return OutOfMemory(f"ran out of memory: a size is too large for this machine; {which} and run again")


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``--flag V`` or ``--flag=V`` in ``argv`` (the last one wins), before parsing."""
    value = None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def _early_lock(argv: list[str]) -> RunLock | None:
    """The lock of the folder a ``train`` or ``compare`` will write, taken before torch is imported."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in ("train", "compare", "draws") or "-h" in argv or "--help" in argv:
        return None
    if command == "compare" and ("--list-cells" in argv or _flag_value(argv, "--cell") is not None):
        return None  # reads the grid, or trains one cell under that cell's own lock
    resume = _flag_value(argv, "--resume") if command == "train" else None
    if resume is not None:
        run_folder(resume, "--resume")
        return RunLock(resume) if Path(resume).is_dir() else None
    out = _flag_value(argv, "--out")
    return RunLock(run_folder(out)) if out is not None else None


def _print_error(line: str) -> None:
    """One line on stderr (a message of several lines is joined with "; "); under ``torchrun``, from
    rank 0 alone (every rank meets the same error)."""
    if writes_run_folders():
        print("; ".join(part.strip() for part in line.splitlines() if part.strip()), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "pyro-vae")
    try:
        lock = _early_lock(argv)
        if lock is not None:
            lock.acquire()
    except PyroVAEError as e:  # in use, read-only, a link in place of the lock, an empty --out
        _print_error(f"pyro-vae {command}: error: {e}")
        return 2
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        code = COMMANDS[args.command](args)
    except SystemExit as e:  # argparse: --help, or a bad flag (its one line is printed)
        return e.code if isinstance(e.code, int) else 2
    except ConfigError as e:
        _print_error(f"pyro-vae {command}: error: {e.for_cli()}")
        return 2
    except KeyboardInterrupt as e:
        _print_error(f"pyro-vae {command}: {e or 'interrupted'}")
        return 130
    except PyroVAEError as e:
        _print_error(f"pyro-vae {command}: error: {e}")
        return 2
    except (MemoryError, RuntimeError) as e:  # the one place allocation failures become one line
        if not _is_allocation_failure(e):
            raise
        _print_error(f"pyro-vae {command}: error: {_out_of_memory(command, argv)}")
        return 2
    finally:
        if lock is not None:
            lock.release()
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
