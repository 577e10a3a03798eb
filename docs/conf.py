"""Sphinx configuration of the pyro_vae documentation.

Build it with ``pip install -e ".[docs]"`` and
``sphinx-build -W --keep-going -n -b html docs docs/_build/html``. Nothing is executed: the
tutorials are rendered with the outputs committed in ``tutorials/*.ipynb``, the CLI reference is
read from the argparse parser, and the API reference from the docstrings.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the package itself, also without an install
sys.path.insert(0, str(DOCS / "_ext"))  # the local extensions
os.environ.setdefault("MPLBACKEND", "Agg")

import pyro_vae  # noqa: E402

project = "pyro_vae"
author = "the pyro_vae authors"
copyright = "2026, the pyro_vae authors"
release = pyro_vae.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",  # Markdown pages (myst-parser) and the committed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",  # sphinx-argparse: the CLI reference from pyro_vae.cli.build_parser
    "sphinx_copybutton",
    "sphinx-mathjax-offline",  # MathJax served from _static, so math renders offline
    "registries",  # docs/_ext/registries.py: tables of the registries, read at build time
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
smartquotes_action = "qe"  # keep "--flag" as typed (the CLI help), not an en dash
nitpicky = True  # every broken cross-reference is a warning, also on Read the Docs

# -- Markdown and notebooks ------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # render the committed outputs; never run a notebook
nb_merge_streams = True
nb_output_stderr = "show"

# -- API reference ---------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"show-inheritance": True}  # members: in the class template, one page each
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autoclass_content = "class"  # the class docstring states the parameters; __init__ would add torch's
autodoc_inherit_docstrings = False  # an undocumented forward() is not nn.Module.forward
napoleon_google_docstring = False
napoleon_numpy_docstring = False
add_module_names = False

# Names of other projects: without network access there are no intersphinx inventories, so
# references to them stay plain text instead of failing the nitpicky build.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|pyro|numpy|np|matplotlib|scipy|tqdm|argparse|pathlib|os|io|json|typing)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Figure|Axes|Distribution|TorchDistribution|Path|PathLike|ndarray)"),
    (r"py:.*", r"(collections\.abc|dataclasses|enum|contextlib|multiprocessing|concurrent)(\..*)?"),
    (r"py:.*", r"(nn|dist|optim|F)\..*"),  # torch.nn, pyro.distributions, torch.optim as the modules import them
    (r"py:.*", r"(.*\.)?_[A-Za-z]\w*(\..*)?"),  # private names, which the reference leaves out
]

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"pyro_vae {release}"
html_static_path = []
html_theme_options = {"navigation_with_keys": True}
copybutton_prompt_text = r"\$ |>>> |\.\.\. "
copybutton_prompt_is_regexp = True


def _copy_tutorials() -> None:
    """Put the committed notebooks beside their index page (Sphinx reads sources under docs/ only)."""
    target = DOCS / "tutorials"
    for notebook in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.ipynb")):
        copy = target / notebook.name
        if not copy.exists() or not filecmp.cmp(notebook, copy, shallow=False):
            shutil.copyfile(notebook, copy)


_copy_tutorials()
