"""Every notebook in tutorials/ runs top to bottom in smoke mode without a cell error.

The notebooks read ``PYRO_VAE_SMOKE=1`` in their first cell and shrink their sizes; their own
``assert`` lines check the key equalities. Each runs in a temporary working directory, so nothing
(run folders, plots) is written into the repository. A new notebook is picked up by the glob.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_SMOKE", "1")
    # the kernel inherits this environment: make the package importable from any working directory
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    assert not list(ROOT.glob("tutorials/runs")), "a notebook wrote into the repository"
