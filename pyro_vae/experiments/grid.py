"""Compare guides × estimators on equal footing: the same data, budget and seeds.

Each cell (guide, estimator, K, seed) is an ordinary run folder under ``OUT/cells/``, trained by
:func:`pyro_vae.fit` and then measured: test ELBO, importance-sampled log p(x), their gap, active
units, encoder and decoder gradient SNR of the cell's own estimator, and seconds per epoch. A cell
whose ``cell.json`` exists is kept, so a rerun after an interruption skips it (a cell stopped
mid-training resumes from its checkpoint), but only when its ``fingerprint.json`` matches the
grid's settings. ``results.csv``, ``results.md`` and the plots are rewritten from all cells at the
end (:mod:`pyro_vae.experiments.results`).

Beyond one process:

- :func:`run_in_workers` (``pyro-vae compare --workers N``): N worker processes, each training one
  cell at a time with its share of the CPU threads, or with a GPU of its own when several are
  visible (``CUDA_VISIBLE_DEVICES`` set per worker).
- :func:`list_cells` (``--list-cells``): the cells with their index and state, for a job array.
- :func:`run_cell_at` (``--cell I``): cell I alone; it locks only its own cell folder, so that the
  jobs of an array (SLURM's ``--array``) can run side by side on one ``--out``.
- :func:`collect` (``--collect``): ``results.md``, ``results.csv`` and the plots from the finished
  cells, naming the missing ones.

A cell is the same run folder under ``OUT/cells/`` however it is trained, with its
``fingerprint.json``, lock and checkpoints: finished cells are kept and interrupted ones resume,
whichever of these ran them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from pyro_vae.atomic import atomic_write_text
from pyro_vae.config import MAX_SEED, MAX_SIZE, RunConfig, _registry, check_options, option, resolve_device
from pyro_vae.data.load import load_data
from pyro_vae.errors import ConfigError, DataError, GridMismatch, IncompatiblePair, IncompleteGrid
from pyro_vae.experiments.results import _one_line, aggregate, write_results
from pyro_vae.inference.diagnostics import active_units, gradient_snr
from pyro_vae.inference.elbos import ELBOS, build_elbo
from pyro_vae.inference.evaluate import PER_IMAGE_NAME, load_per_image, paired_difference
from pyro_vae.models.registry import check_config
from pyro_vae.training.runfolder import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    RunLock,
    check_inside,
    remove_contents,
    run_folder,
    run_state,
)
from pyro_vae.training.train import fit, load_run, resume


@dataclass
class CompareConfig:
    """A grid of cells; every cell shares ``base`` (data, model, optimizer, epochs or seconds).

    ``elbos`` entries may carry their own K as ``"iwae:50"``; otherwise ``base.train.particles``.
    """

    guides: tuple[str, ...] = option(
        ("diag",), "q(z|x) families, comma-separated", choices=_registry("inference.guides", "GUIDES")
    )
    elbos: tuple[str, ...] = option(("trace",), "estimators, comma-separated NAME or NAME:K, e.g. trace,iwae:5")
    seeds: tuple[int, ...] = option((0,), "seeds, comma-separated; several give mean ± sd", minimum=0, maximum=MAX_SEED)
    base: RunConfig = field(default_factory=RunConfig)
    snr_estimates: int = option(64, "gradient draws per cell for the SNR", minimum=2, maximum=MAX_SIZE)
    snr_batch_size: int = option(
        128, "the fixed training minibatch the SNR is measured on", positive=True, maximum=MAX_SIZE
    )
    workers: int = option(
        1, "cells trained at once, each in its own process with its share of the CPU threads (or a GPU)", positive=True
    )
    reference: str | None = option(
        None,
        "a finished run folder (or another grid's cell) to pair every cell's IS log p(x) against, image by image "
        "(default: the grid's first guide and estimator, same seed)",
    )

    def cells(self) -> list[tuple[str, str, int, int]]:
        """(guide, estimator, K, seed) for every cell; checks every option and name first.

        :raises ConfigError: naming the option, the value and what is expected.
        """
        check_options(self)
        check_config(self.base)
        for name in ("guides", "seeds"):
            _no_repeats(name, getattr(self, name))
        estimators = []
        for entry in self.elbos:
            name, _, k = entry.partition(":")
            if name not in ELBOS:
                raise ConfigError("elbos", f"must name estimators from {', '.join(ELBOS)}, got {name!r}")
            try:
                particles = int(k) if k else self.base.train.particles
            except ValueError:
                raise ConfigError("elbos", f"entry {entry!r} is not NAME or NAME:K, e.g. iwae:50") from None
            if not 1 <= particles <= MAX_SIZE:
                raise ConfigError("elbos", f"entry {entry!r} needs K between 1 and {MAX_SIZE:,}")
            estimators.append((name, particles))
        _no_repeats("elbos", [f"{name}:{k}" for name, k in estimators])
        if self.reference is not None:
            _check_reference(Path(self.reference))
        return [(guide, name, k, seed) for guide in self.guides for name, k in estimators for seed in self.seeds]

    def cell_config(self, guide: str, elbo: str, particles: int, seed: int) -> RunConfig:
        config = RunConfig.from_dict(self.base.to_dict())
        config.model.guide, config.train.elbo, config.train.particles, config.train.seed = guide, elbo, particles, seed
        return config

    def fingerprint(self, config: RunConfig) -> dict:
        """Everything that defines a cell's results: its run config (data, pixels, budget, model,
        estimator, seed; not the device, whether the networks are compiled, the data's memory budget,
        nor whether a TensorBoard log is written) and the SNR measurement; grids made before these options match."""
        run = config.to_dict()
        for key in (
            "device",
            "compile",
            "tensorboard",
            "fidelity_samples",
        ):  # the last: conditional models read it
            run["train"].pop(key)
        for key in ("max_data_memory", "label_seed"):  # the last: read by semi-supervised models alone
            run["data"].pop(key)
        run.pop("run_id", None)
        fingerprint = {"run": run, "snr_estimates": self.snr_estimates, "snr_batch_size": self.snr_batch_size}
        return json.loads(json.dumps(fingerprint))  # as fingerprint.json reads back (tuples as lists)


FINGERPRINT_NAME = "fingerprint.json"


def _no_repeats(name: str, values) -> None:
    """:raises ConfigError: when ``values`` names one value twice (a cell counted twice)."""
    seen = set()
    for v in values:
        if v in seen:
            raise ConfigError(name, f"must not repeat a value (it would count one cell twice), got {v!r} twice")
        seen.add(v)


def cell_name(guide: str, elbo: str, particles: int, seed: int) -> str:
    """The folder name of a cell under ``OUT/cells/``, e.g. ``diag-iwae-K5-seed0``."""
    return f"{guide}-{elbo}-K{particles}-seed{seed}"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _recorded(cell_dir: Path) -> dict | None:
    """The fingerprint a cell was made with; None for a cell with nothing trained."""
    if not ((cell_dir / "cell.json").is_file() or (cell_dir / CHECKPOINT_NAME).is_file()):
        return None
    try:
        return json.loads((cell_dir / FINGERPRINT_NAME).read_text())
    except (OSError, ValueError):
        return {"unknown": "no fingerprint (made by an older pyro_vae)"}


def changes(old: dict, new: dict) -> list[str]:
    """``key old → new`` for every setting that differs between two fingerprints."""
    old, new = _flat(old), _flat(new)
    # an option added since a grid was made is no change while it is left out (None)
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k, None) != new.get(k, None)]
    return [f"{k.removeprefix('run.')} {old.get(k, '(unset)')!r} → {new.get(k, '(unset)')!r}" for k in keys]


def run_cell(cfg: CompareConfig, guide: str, elbo: str, particles: int, seed: int, cell_dir: Path, data, progress):
    """Train (or resume) one cell and measure it; writes and returns ``cell.json``'s dict."""
    config = cfg.cell_config(guide, elbo, particles, seed)
    identity = {"guide": guide, "elbo": elbo, "K": particles, "seed": seed, "pixels": config.data.pixels}
    check_inside(cell_dir, cell_dir.parent)
    with RunLock(cell_dir):
        try:
            state = run_state(cell_dir)
            if state == "finished":  # trained, but stopped before its cell.json
                run, _ = load_run(cell_dir, config.train.device)
                run.metrics = json.loads((cell_dir / "metrics.json").read_text())
            elif state == "resumable":
                run = resume(cell_dir, progress=progress)
            else:
                atomic_write_text(cell_dir / FINGERPRINT_NAME, json.dumps(cfg.fingerprint(config), indent=2) + "\n")
                run = fit(config, cell_dir, progress=progress, data=data)
        except IncompatiblePair as e:
            result = {**identity, "error": str(e)}
            atomic_write_text(cell_dir / "cell.json", json.dumps(result, indent=2) + "\n")
            return result
        vae, final = run.vae, run.metrics["final"]
        n_active, _ = active_units(vae.posterior, run.data.test_x)
        gen = torch.Generator().manual_seed(seed)
        images = run.data.train_images
        rows = torch.randperm(len(images), generator=gen)[: cfg.snr_batch_size].to(images.device)
        pyro.set_rng_seed(seed)
        snr = gradient_snr(
            build_elbo(elbo, particles, config.train.alpha),
            vae.model,
            vae.guide,
            {"encoder": vae.encoder.parameters(), "decoder": vae.decoder.parameters()},
            images[rows],
            num_estimates=cfg.snr_estimates,
        )
        epochs = run.metrics["epochs"]
        result = {
            **identity,
            "epochs": len(epochs),
            "test_elbo": final["elbo"],
            "is_log_px": final["is_log_px"],
            "is_K": final["is_num_samples"],
            "gap": final["gap"],
            "active_units": n_active,
            "encoder_snr": snr["encoder"]["snr"],
            "decoder_snr": snr["decoder"]["snr"],
            "encoder_grad_variance": snr["encoder"]["variance"],
            "decoder_grad_variance": snr["decoder"]["variance"],
            "seconds_per_epoch": statistics.mean(r["seconds"] for r in epochs),
            "curve": [(r["seconds"], r["test_elbo"]) for r in epochs],
        }
        atomic_write_text(cell_dir / "cell.json", json.dumps(result, indent=2) + "\n")
        return result


def _check_reference(folder: Path) -> None:
    if folder.is_symlink() or not (folder / PER_IMAGE_NAME).is_file():
        raise DataError(f"--reference {folder} holds no {PER_IMAGE_NAME}; give a finished run folder or a grid's cell")


def add_paired_differences(
    cfg: CompareConfig, first: tuple, cells: list[tuple], out_dir: Path, results: list[dict]
) -> None:
    """Add to each finished cell's result (``results[i]`` of ``cells[i]``) ``is_diff``, its IS log p(x)
    minus the reference's over the same test images, and ``is_diff_se``, the paired standard error
    (:func:`pyro_vae.inference.evaluate.paired_difference`). The reference is ``cfg.reference``, or the
    cell ``first`` (the grid's first guide and estimator) with the same seed. Cells finished before runs kept
    their per-image values get none (n/a in the table).

    :raises DataError: when ``cfg.reference`` has no per-image log p(x), naming it.
    """
    given = Path(cfg.reference) if cfg.reference else None
    if given is not None:
        _check_reference(given)
        values = load_per_image(given / PER_IMAGE_NAME)  # one run: the same reference for every seed
        reference = dict.fromkeys(cfg.seeds, values)
        names = {seed: str(given) for seed in cfg.seeds}
    else:
        names = {seed: cell_name(*first[:3], seed) for seed in cfg.seeds}
        files = {seed: out_dir / "cells" / name / PER_IMAGE_NAME for seed, name in names.items()}
        reference = {seed: load_per_image(f) for seed, f in files.items() if f.is_file()}
    for cell, result in zip(cells, results):
        own = out_dir / "cells" / cell_name(*cell) / PER_IMAGE_NAME
        if "error" in result or cell[3] not in reference or not own.is_file():
            continue
        result["is_diff"], result["is_diff_se"] = paired_difference(load_per_image(own), reference[cell[3]])
        result["reference"] = names[cell[3]]


def _print(line: str) -> None:
    print(line, flush=True)


def compare(
    cfg: CompareConfig,
    out_dir: str | Path,
    *,
    progress: bool = False,
    log=_print,
    restart_changed: bool = False,
) -> list[dict]:
    """Run every cell of the grid into ``out_dir`` and write the tables and plots.

    A cell already in ``out_dir`` is kept (finished) or resumed (interrupted) only when it was made
    with the same settings (:meth:`CompareConfig.fingerprint`).

    :param bool restart_changed: train cells made with other settings afresh, instead of refusing.
    :returns: one row per (guide, estimator, K), seeds aggregated as mean and sd.
    :raises GridMismatch: when cells were made with other settings and ``restart_changed`` is off.
    :raises pyro_vae.errors.RunLocked: when another process is writing ``out_dir``.
    """
    cells = cfg.cells()
    out_dir = run_folder(out_dir)
    with RunLock(out_dir):
        check_cells(cfg, cells, out_dir, restart_changed, log)
        cfg.base.save(out_dir / "base_config.json")
        todo = []
        for cell in cells:
            cell_dir = out_dir / "cells" / cell_name(*cell)
            if (cell_dir / "cell.json").is_file():
                log(f"{cell_dir.name}: kept from an earlier run")
            else:
                todo.append(cell)
        if cfg.workers > 1 and len(todo) > 1:
            from pyro_vae.experiments.grid import run_in_workers

            run_in_workers(cfg, out_dir, todo, log)
        else:
            data = None
            for cell in todo:
                if data is None:
                    data = load_data(cfg.base.data, resolve_device(cfg.base.train.device))
                cell_dir = out_dir / "cells" / cell_name(*cell)
                log(_one_line(cell_dir.name, run_cell(cfg, *cell, cell_dir, data, progress)))
        results = [json.loads((out_dir / "cells" / cell_name(*c) / "cell.json").read_text()) for c in cells]
        add_paired_differences(cfg, cells[0], cells, out_dir, results)
        rows = aggregate(results)
        write_results(rows, results, out_dir)
        return rows


def check_cells(cfg: CompareConfig, cells: list[tuple], out_dir: Path, restart_changed: bool, log=_print) -> None:
    """Refuse (or, with ``restart_changed``, clear) the cells of ``out_dir`` made with other settings.

    Clearing never follows a link, and every cell path must lead inside ``OUT/cells``.

    :raises GridMismatch: naming the first changed cell and its changed settings.
    :raises pyro_vae.errors.UnsafePath: for ``OUT/cells`` or a cell folder that is a link elsewhere.
    """
    changed = {}
    if (out_dir / "cells").is_symlink():
        check_inside(out_dir / "cells", out_dir)
    for cell in cells:
        cell_dir = out_dir / "cells" / cell_name(*cell)
        if cell_dir.is_symlink() or cell_dir.exists():
            check_inside(cell_dir, out_dir / "cells")
        old, new = _recorded(cell_dir), cfg.fingerprint(cfg.cell_config(*cell))
        if old is not None and old != new:
            changed[cell_dir] = changes(old, new)
    if changed and not restart_changed:
        first, diff = next(iter(changed.items()))
        others = f" (and {len(changed) - 1} more cells)" if len(changed) > 1 else ""
        raise GridMismatch(
            f"{first}{others} was made with other settings ({'; '.join(diff)}); rerun with --restart-changed "
            "to train the changed cells afresh, or choose another --out"
        )
    for cell_dir in changed:
        with RunLock(cell_dir):
            remove_contents(cell_dir, keep=(LOCK_NAME,))
        log(f"{cell_dir.name}: made with other settings, trained afresh")
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)


def _describe(cell: tuple) -> str:
    guide, elbo, k, seed = cell
    return f"guide {guide}, estimator {elbo}, K {k}, seed {seed}"


def cell_state(cell_dir: Path) -> str:
    """``finished`` (its ``cell.json`` is written), ``interrupted`` (a checkpoint, no results yet) or
    ``not started``."""
    if (cell_dir / "cell.json").is_file():
        return "finished"
    return "not started" if run_state(cell_dir) == "new" else "interrupted"


def list_cells(cfg: CompareConfig, out_dir: str | Path) -> list[str]:
    """One line per cell: ``INDEX  NAME  (guide …, estimator …, K …, seed …)  STATE``; the index
    is what ``--cell`` takes."""
    out_dir = Path(out_dir)
    lines = []
    for i, cell in enumerate(cfg.cells()):
        name = cell_name(*cell)
        lines.append(f"{i}\t{name}\t({_describe(cell)})\t{cell_state(out_dir / 'cells' / name)}")
    return lines


def run_cell_at(
    cfg: CompareConfig, out_dir: str | Path, index: int, *, progress: bool = False, restart_changed: bool = False
) -> dict:
    """Train (or resume, or keep) cell ``index`` of :meth:`CompareConfig.cells` alone, locking only
    its folder; writes its ``cell.json``, not the grid's tables (see :func:`collect`).

    :raises ConfigError: for an index outside the grid.
    :raises GridMismatch: when the cell was made with other settings and ``restart_changed`` is off.
    """
    cells, out_dir = cfg.cells(), Path(out_dir)
    if not 0 <= index < len(cells):
        raise ConfigError("cell", f"must be an index in 0..{len(cells) - 1} of the grid's {len(cells)} cells "
                          f"(see --list-cells), got {index}")  # fmt: skip
    cell = cells[index]
    cell_dir = out_dir / "cells" / cell_name(*cell)
    if cell_dir.is_symlink() or cell_dir.exists():
        check_inside(cell_dir, out_dir / "cells")
    with RunLock(cell_dir):
        check_cells(cfg, [cell], out_dir, restart_changed)
        if (cell_dir / "cell.json").is_file():
            return json.loads((cell_dir / "cell.json").read_text())
        data = load_data(cfg.base.data, resolve_device(cfg.base.train.device))
        return run_cell(cfg, *cell, cell_dir, data, progress)


def collect(cfg: CompareConfig, out_dir: str | Path) -> tuple[list[dict], list[str]]:
    """Write ``results.md``, ``results.csv`` and the plots from the finished cells of ``out_dir``.

    :returns: the rows (as :func:`pyro_vae.experiments.grid.compare` returns them) and one line per missing
        cell (``INDEX NAME (…): STATE``); ``results.md`` ends with the same lines.
    :raises GridMismatch: when cells were made with other settings than ``cfg``.
    :raises IncompleteGrid: when no cell has finished (nothing is written).
    """
    cells, out_dir = cfg.cells(), Path(out_dir)
    with RunLock(out_dir):
        found = [c for c in cells if (out_dir / "cells" / cell_name(*c)).is_dir()]
        check_cells(cfg, found, out_dir, restart_changed=False)
        results, missing, done = [], [], []
        for i, cell in enumerate(cells):
            cell_dir = out_dir / "cells" / cell_name(*cell)
            if (cell_dir / "cell.json").is_file():
                results.append(json.loads((cell_dir / "cell.json").read_text()))
                done.append(cell)
            else:
                missing.append(f"{i} {cell_dir.name} ({_describe(cell)}): {cell_state(cell_dir)}")
        if not results:
            raise IncompleteGrid(
                f"no cell of the grid has finished in {out_dir}; run them first (pyro-vae compare with the same "
                "flags, with --cell I for one cell)"
            )
        add_paired_differences(cfg, cells[0], done, out_dir, results)
        rows = aggregate(results)
        write_results(rows, results, out_dir)
        if missing:
            md = (out_dir / "results.md").read_text()
            note = "\nMissing cells (not in the table):\n\n" + "".join(f"- {m}\n" for m in missing)
            from pyro_vae.atomic import atomic_write_text

            atomic_write_text(out_dir / "results.md", md + note)
        return rows, missing


_data_cache: dict = {}  # a worker's data, loaded once for all its cells


def _init_worker(threads: int, gpus) -> None:
    """Runs first in every worker: its thread share, and its GPU (before CUDA starts)."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    torch.set_num_threads(threads)


def _work(cfg: CompareConfig, out_dir: str, cell: tuple) -> dict:
    """Train one cell in a worker; the data are loaded once per worker."""
    key = json.dumps(cfg.base.data.__dict__, sort_keys=True, default=str)
    if key not in _data_cache:
        _data_cache.clear()
        _data_cache[key] = load_data(cfg.base.data, resolve_device(cfg.base.train.device))
    return run_cell(cfg, *cell, Path(out_dir) / "cells" / cell_name(*cell), _data_cache[key], False)


def worker_resources(workers: int, device: str) -> tuple[int, list[int] | None]:
    """(torch threads per worker, the GPU index of each worker or None): the CPU threads of this
    process shared out, and the visible GPUs dealt round-robin when the cells run on CUDA and more
    than one is visible."""
    threads = max(1, torch.get_num_threads() // workers)
    on_cuda = resolve_device(device).type == "cuda"
    count = torch.cuda.device_count() if on_cuda else 0
    if count < 2:
        return threads, None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",")][:count] if visible else [str(i) for i in range(count)]
    return threads, [ids[i % count] for i in range(workers)]


def run_in_workers(cfg: CompareConfig, out_dir: Path, cells: list[tuple], log=_print) -> None:
    """Train ``cells`` in ``cfg.workers`` processes (spawned, so CUDA and the thread pools start
    fresh in each); each finished cell is logged as it finishes. The first error stops the grid,
    once the cells already running have finished or stopped."""
    workers = min(cfg.workers, len(cells))
    threads, gpus = worker_resources(workers, cfg.base.train.device)
    ctx = multiprocessing.get_context("spawn")
    queue = None
    if gpus is not None:
        queue = ctx.Queue()
        for g in gpus:
            queue.put(g)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, queue)) as pool:
        futures = {pool.submit(_work, cfg, str(out_dir), cell): cell for cell in cells}
        try:
            for future in as_completed(futures):
                log(_one_line(cell_name(*futures[future]), future.result()))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
