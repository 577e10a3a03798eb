"""Execute tutorials from their jupytext scripts and save the outputs into the paired notebooks.

Usage, from the repository root::

    python tutorials/run.py 03            # full run of 03_*.py, outputs saved into 03_*.ipynb
    python tutorials/run.py 01 02 --smoke # smoke mode (PYRO_VAE_SMOKE=1): tiny sizes, nothing saved
    python tutorials/run.py all --smoke   # every tutorial in smoke mode
    python tutorials/run.py all --cost    # only re-execute each saved notebook's cost cell (after new timings)

Each run executes the script's cells in a fresh ``python3`` kernel, in a temporary working directory (so run
folders never land in the repository), with ``OMP_NUM_THREADS`` set by ``--threads``. Its wall time and the
machine's load average are recorded in ``tutorials/timings.json`` under ``full`` or ``smoke``. After a full run
the notebook's cost cell (the code cell that calls ``show_cost``, which reads ``timings.json``) is executed once
more, so that the saved notebook states the time of the run it holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMINGS = HERE / "timings.json"


def scripts() -> list[Path]:
    """Every tutorial script ``NN_name.py``, in order."""
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def find(key: str) -> list[Path]:
    """``"03"`` or ``"03_reparameterization"`` ↦ that script; ``"all"`` ↦ every one."""
    if key == "all":
        return scripts()
    found = [p for p in scripts() if p.stem == key or p.stem.startswith(f"{key}_")]
    if not found:
        raise SystemExit(f"no tutorial {key!r}; choose one of: {', '.join(p.stem for p in scripts())} or all")
    return found


def kernel_environment(smoke: bool, threads: int | None) -> None:
    """The kernel inherits this process's environment: smoke flag, thread count, the repository on the path,
    and matplotlib's inline backend (an ``MPLBACKEND=Agg`` from CI would make ``plt.show()`` warn)."""
    os.environ.pop("MPLBACKEND", None)
    if smoke:
        os.environ["PYRO_VAE_SMOKE"] = "1"
    else:
        os.environ.pop("PYRO_VAE_SMOKE", None)
    if threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def execute(nb: nbformat.NotebookNode, timeout: int = 1800) -> float:
    """Run every cell of ``nb`` in place, in a temporary working directory. :returns: wall seconds."""
    with tempfile.TemporaryDirectory(prefix="pyro_vae_tutorial-") as tmp:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
        return time.perf_counter() - start


def record(stem: str, mode: str, seconds: float, threads: int | None) -> None:
    timings = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    timings.setdefault(stem, {})[mode] = {
        "seconds": round(seconds, 1),
        "load_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "threads": threads,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    TIMINGS.write_text(json.dumps(dict(sorted(timings.items())), indent=1, ensure_ascii=False) + "\n")


def rerender_cost_cell(nb: nbformat.NotebookNode) -> None:
    """Execute the cost cell alone (the code cell that calls ``show_cost``: it reads timings.json), and keep its
    new outputs."""
    index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "show_cost(" in c.source)
    single = nbformat.v4.new_notebook(cells=[nbformat.from_dict(nb.cells[index])], metadata=nb.metadata)
    execute(single, timeout=120)
    nb.cells[index].outputs = single.cells[0].outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tutorials", nargs="+", help="numbers (03), stems (03_reparameterization) or all")
    parser.add_argument("--smoke", action="store_true", help="PYRO_VAE_SMOKE=1: tiny sizes; the notebook is not saved")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the kernel (default: unset)")
    parser.add_argument("--cost", action="store_true", help="only re-execute the saved notebooks' cost cells")
    args = parser.parse_args(argv)
    paths = [p for key in args.tutorials for p in find(key)]
    kernel_environment(args.smoke, args.threads)
    if args.cost:
        for path in paths:
            notebook = path.with_suffix(".ipynb")
            nb = jupytext.read(notebook)
            rerender_cost_cell(nb)
            jupytext.write(nb, notebook)
            print(f"{notebook.name}: cost cell re-executed", flush=True)
        return
    mode = "smoke" if args.smoke else "full"
    for path in paths:
        nb = jupytext.read(path)
        seconds = execute(nb)
        record(path.stem, mode, seconds, args.threads)
        if not args.smoke:
            rerender_cost_cell(nb)
            jupytext.write(nb, path.with_suffix(".ipynb"))
        print(f"{path.stem}: {mode} run {seconds:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
