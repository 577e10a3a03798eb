"""The documentation keeps up with the code, without building it (CI builds it with sphinx-build).

- every public name of ``pyro_vae`` has a docstring and a place in the API reference;
- every registry has its table;
- every committed notebook is rendered under the Tutorials toctree;
- the CLI reference is generated from the real parser by sphinx-argparse.
"""

from __future__ import annotations

import configparser
import importlib
import inspect
import re
from pathlib import Path

import pytest

import pyro_vae

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_SOURCES = sorted((DOCS / "api").glob("*.rst"))
REGISTRIES = (
    "pyro_vae.data.builtin.DATASETS",
    "pyro_vae.inference.guides.GUIDES",
    "pyro_vae.inference.elbos.ELBOS",
    "pyro_vae.models.registry.MODELS",
    "pyro_vae.models.nets.NETS",
    "pyro_vae.models.likelihoods.LIKELIHOODS",
    "pyro_vae.models.priors.PRIORS",
)


def _api_text() -> str:
    return "\n".join(p.read_text() for p in API_SOURCES)


def _toctree_entries(page: Path) -> list[str]:
    """The entries of the MyST toctrees of a Markdown page, options left out."""
    blocks = re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and ":" not in line]


def _docstring(name: str) -> str:
    """A class's or function's docstring; for module data, its ``#:`` comment (what autodoc shows)."""
    obj = getattr(pyro_vae, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return inspect.getdoc(obj) or ""
    source = Path(importlib.import_module(f"pyro_vae.{pyro_vae._WHERE[name]}").__file__).read_text()
    comment = re.search(rf"((?:^#:.*\n)+)^{re.escape(name)}\b[^\n]*=", source, re.M)
    return comment.group(1).replace("#:", "") if comment else ""


def test_the_api_reference_has_a_page_per_sub_package():
    assert {p.stem for p in API_SOURCES} >= {
        "index",
        "errors",
        "config",
        "data",
        "inference",
        "models",
        "theory",
        "training",
        "experiments",
    }


def test_every_module_has_its_section_in_the_api_reference():
    """A new module (``pyro_vae/inference/flows.py``…) is documented where its sub-package is."""
    package = Path(pyro_vae.__file__).parent
    modules = {
        ".".join(("pyro_vae", *p.relative_to(package).with_suffix("").parts))
        for p in package.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    documented = set(re.findall(r"^\.\. automodule:: (\S+)", "".join(p.read_text() for p in API_SOURCES), re.M))
    assert sorted(modules - documented) == []


@pytest.mark.parametrize("name", pyro_vae.__all__)
def test_every_public_name_has_a_docstring(name):
    text = _docstring(name).strip()
    assert text, f"pyro_vae.{name} has no docstring"
    assert "TODO" not in text, f"pyro_vae.{name}'s docstring is a placeholder"


@pytest.mark.parametrize("name", pyro_vae.__all__)
def test_every_public_name_is_in_the_api_reference(name):
    """Listed in its module's autosummary table, or documented there as module data."""
    module = f"pyro_vae.{pyro_vae._WHERE[name]}"
    text = _api_text()
    section = re.search(rf"\.\. currentmodule:: {re.escape(module)}\n(.*?)(?=\n\.\. currentmodule::|\Z)", text, re.S)
    assert section, f"the API reference has no section for {module}"
    listed = re.search(rf"^(   {re.escape(name)}|\.\. autodata:: {re.escape(name)})$", section.group(1), re.M)
    assert listed, f"pyro_vae.{name} is not listed under {module} in docs/api/"


@pytest.mark.parametrize("registry", REGISTRIES)
def test_every_registry_has_its_table(registry):
    assert f".. registry:: {registry}" in _api_text()


def test_every_notebook_is_under_the_tutorials_toctree():
    assert "tutorials/index" in _toctree_entries(DOCS / "index.md")
    assert re.search(r":caption: Tutorials\n(:\w+:.*\n)*\ntutorials/index", (DOCS / "index.md").read_text())
    notebooks = sorted(p.stem for p in (ROOT / "tutorials").glob("*.ipynb"))
    assert notebooks, "no notebooks in tutorials/"
    assert _toctree_entries(DOCS / "tutorials" / "index.md") == notebooks


def test_notebooks_are_rendered_without_executing():
    conf = (DOCS / "conf.py").read_text()
    assert re.search(r'^nb_execution_mode = "off"', conf, re.M)


def test_the_cli_reference_is_generated_from_the_parser():
    page = (DOCS / "cli.md").read_text()
    block = re.search(r"```\{argparse\}\n(.*?)```", page, re.S)
    assert block, "docs/cli.md has no sphinx-argparse directive"
    options = dict(re.findall(r"^:(\w+): (.*)$", block.group(1), re.M))
    assert options["module"] == "pyro_vae.cli" and options["func"] == "build_parser"
    assert '"sphinxarg.ext"' in (DOCS / "conf.py").read_text()

    from pyro_vae.cli import COMMANDS, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == set(COMMANDS) >= {"train", "evaluate", "sample", "compare", "draws", "plot"}


def test_the_docs_extra_installs_the_tools():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extra = set(cfg["options.extras_require"]["docs"].split())
    assert extra >= {
        "sphinx",
        "furo",
        "myst-parser",
        "myst-nb",
        "sphinx-argparse",
        "sphinx-copybutton",
        "sphinx-mathjax-offline",
    }


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), f"README.md links to {target}, which does not exist"
