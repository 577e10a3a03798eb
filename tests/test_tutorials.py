"""The tutorials: each jupytext script ``tutorials/NN_name.py`` is paired with its notebook, the committed
notebooks carry clean outputs, and every script runs top to bottom in smoke mode.

The notebooks read ``PYRO_VAE_SMOKE=1`` in their first cells and shrink their sizes; their own ``assert`` lines
check the key equalities. Each runs in a temporary working directory, so nothing (run folders, plots) is written
into the repository. A new tutorial is picked up by the glob.
"""

import os
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))

# a KL printed as negative: "KL" followed, with no digit in between, by a minus sign and a digit (but not the
# ELBO after a label "reconstruction − KL")
NEGATIVE_KL = re.compile(r"(?<![\-−] )KL[^\d\n\-−]{0,40}[\-−]\d")
# "-0.0000 ± 0.0000": round-off printed with a sign, and an error that says nothing
NEGATIVE_ZERO = re.compile(r"(?<![\w.])[\-−]0\.0+ ± 0\.0+(?![\d.]*[1-9])")


def test_every_notebook_has_its_script():
    assert [p.stem for p in SCRIPTS] == [p.stem for p in NOTEBOOKS]
    assert not (TUTORIALS / "build_notebooks.py").exists()


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_and_notebook_are_in_sync(script):
    """Edit the .py, then ``jupytext --to ipynb --update tutorials/NN_name.py`` (or run it with tutorials/run.py)."""
    notebook = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    assert notebook.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    assert _cells(jupytext.read(script)) == _cells(notebook), f"{script.name} and its .ipynb differ: jupytext --sync"


def _output_texts(cell):
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            yield out.name, out.text
        elif out.output_type == "error":
            yield "error", "\n".join(out.traceback)
        else:
            data = out.get("data", {})
            for mime in ("text/plain", "text/markdown", "text/html"):
                if mime in data:
                    yield mime, data[mime]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_are_clean(path):
    """No stderr, warning, traceback, negative KL or signed zero in what a reader sees; outputs are present."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name} holds unexecuted cells: tutorials/run.py"
    for i, cell in enumerate(nb.cells):
        for kind, text in _output_texts(cell):
            where = f"{path.name}, cell {i}"
            assert kind not in ("stderr", "error"), f"{where}: {kind} output {text[:200]!r}"
            assert "Warning" not in text and "Traceback" not in text, f"{where}: {text[:300]!r}"
            assert not NEGATIVE_KL.search(text), f"{where}: negative KL in {NEGATIVE_KL.search(text).group()!r}"
            assert not NEGATIVE_ZERO.search(text), f"{where}: signed zero {NEGATIVE_ZERO.search(text).group()!r}"


def test_the_output_checks_catch_what_they_should():
    assert NEGATIVE_KL.search("KL(q‖p(z))   -8.1e-17") and NEGATIVE_KL.search("mean KL −0.2")
    assert not NEGATIVE_KL.search("KL 24.25, ELBO -111.01") and not NEGATIVE_KL.search("KL(p‖q) 0.69")
    assert not NEGATIVE_KL.search("test ELBO = reconstruction − KL      -117.89 ± 0.94")
    assert NEGATIVE_ZERO.search("-0.0000 ± 0.0000") and not NEGATIVE_ZERO.search("-0.0012 ± 0.0000, 0.0000 ± 0.0000")


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_tutorial_runs_in_smoke_mode(script, tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_SMOKE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend; Agg would warn on plt.show()
    # the kernel inherits this environment: make the package importable from any working directory
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = jupytext.read(script)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    assert not list(TUTORIALS.glob("runs")), "a notebook wrote into the repository"
    stderr = [o.text for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, f"{script.name} wrote to stderr in smoke mode: {stderr[0][:300]!r}"
