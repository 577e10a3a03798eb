"""A ``compare`` grid beyond one process: cells in worker processes, and one cell per job of a job array.

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
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from .compare import (
    CompareConfig,
    GridMismatch,
    _one_line,
    _print,
    aggregate,
    cell_name,
    check_cells,
    run_cell,
    write_results,
)
from .config import ConfigError
from .data import load_data
from .runfolder import RunLock, run_state
from .train import resolve_device


class IncompleteGrid(ValueError):
    """``--collect`` on a grid folder with no finished cell."""


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
    with RunLock(cell_dir):
        check_cells(cfg, [cell], out_dir, restart_changed)
        if (cell_dir / "cell.json").is_file():
            return json.loads((cell_dir / "cell.json").read_text())
        data = load_data(cfg.base.data, resolve_device(cfg.base.train.device))
        return run_cell(cfg, *cell, cell_dir, data, progress)


def collect(cfg: CompareConfig, out_dir: str | Path) -> tuple[list[dict], list[str]]:
    """Write ``results.md``, ``results.csv`` and the plots from the finished cells of ``out_dir``.

    :returns: the rows (as :func:`pyro_vae.compare.compare` returns them) and one line per missing
        cell (``INDEX NAME (…): STATE``); ``results.md`` ends with the same lines.
    :raises GridMismatch: when cells were made with other settings than ``cfg``.
    :raises IncompleteGrid: when no cell has finished (nothing is written).
    """
    cells, out_dir = cfg.cells(), Path(out_dir)
    with RunLock(out_dir):
        found = [c for c in cells if (out_dir / "cells" / cell_name(*c)).is_dir()]
        check_cells(cfg, found, out_dir, restart_changed=False)
        results, missing = [], []
        for i, cell in enumerate(cells):
            cell_dir = out_dir / "cells" / cell_name(*cell)
            if (cell_dir / "cell.json").is_file():
                results.append(json.loads((cell_dir / "cell.json").read_text()))
            else:
                missing.append(f"{i} {cell_dir.name} ({_describe(cell)}): {cell_state(cell_dir)}")
        if not results:
            raise IncompleteGrid(
                f"no cell of the grid has finished in {out_dir}; run them first (pyro-vae compare with the same "
                "flags, with --cell I for one cell)"
            )
        rows = aggregate(results)
        write_results(rows, results, out_dir)
        if missing:
            md = (out_dir / "results.md").read_text()
            note = "\nMissing cells (not in the table):\n\n" + "".join(f"- {m}\n" for m in missing)
            from .io import atomic_write_text

            atomic_write_text(out_dir / "results.md", md + note)
        return rows, missing


# ----------------------------------------------------------------------------- worker processes
_data_cache: dict = {}


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


__all__ = ["list_cells", "run_cell_at", "collect", "run_in_workers", "cell_state", "IncompleteGrid", "GridMismatch"]
