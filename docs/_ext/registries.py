"""Tables the docs read from the code when they are built, so that they cannot drift from it.

- ``registry``: the entries of one of pyro_vae's registries, ``{registry} pyro_vae.inference.guides.GUIDES``,
  one row per registered name with its description and what builds it.
- ``public-names``: every name of ``pyro_vae.__all__``, where it is defined and the first line of its docstring.
- ``tutorial-timings``: the wall times of the committed tutorial runs, from ``tutorials/timings.json``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode

ROOT = Path(__file__).resolve().parents[2]


def _table(header: list[str], rows: list[list[nodes.Node | str]], widths: list[int]) -> nodes.table:
    table = nodes.table(classes=["registry-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    head += _row(header)
    body = nodes.tbody()
    group += body
    for row in rows:
        body += _row(row)
    return table


def _row(cells: list[nodes.Node | str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        paragraph += cell if isinstance(cell, nodes.Node) else nodes.Text(cell)
        entry += paragraph
        row += entry
    return row


def _public_path(obj) -> str | None:
    """``module.name`` of a public class or function of pyro_vae, which the API reference documents."""
    module = getattr(obj, "__module__", "") or ""
    qualname = getattr(obj, "__qualname__", "")
    if not module.startswith("pyro_vae") or not qualname or "<" in qualname:
        return None
    if any(part.startswith("_") for part in f"{module}.{qualname}".split(".")):
        return None
    return f"{module}.{qualname}"


def _xref(path: str) -> nodes.Node:
    ref = addnodes.pending_xref("", refdomain="py", reftype="obj", reftarget=path, refexplicit=True)
    ref += nodes.literal(path, path.rsplit(".", 1)[-1])
    return ref


def _callables(entry) -> list:
    """The entry itself if it is callable, else its fields that are (a spec's ``build``, ``make``, ...)."""
    if callable(entry) and not dataclasses.is_dataclass(entry):
        return [entry]
    if dataclasses.is_dataclass(entry):
        return [getattr(entry, f.name) for f in dataclasses.fields(entry) if callable(getattr(entry, f.name))]
    return []


def _description(entry, builders: list) -> str:
    value = getattr(entry, "description", None)
    if isinstance(value, str) and value:
        return value
    for builder in builders:
        doc = inspect.getdoc(getattr(builder, "__wrapped__", builder))
        if doc and not inspect.isbuiltin(builder):
            return doc.split("\n\n")[0].replace("\n", " ")
    return ""


def _details(entry) -> str:
    """The settings of a spec other than its name, description and callables, the flags that are set:
    ``needs_reparam, multi_particle``."""
    if not dataclasses.is_dataclass(entry):
        return ""
    shown = []
    for field in dataclasses.fields(entry):
        value = getattr(entry, field.name)
        if field.name in ("name", "description") or callable(value) or value in (False, None, (), ""):
            continue
        shown.append(field.name if value is True else f"{field.name}={value!r}")
    return ", ".join(shown)


class RegistryDirective(SphinxDirective):
    """``{registry} dotted.path.TO_REGISTRY``: one row per registered name."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name, _, attr = self.arguments[0].rpartition(".")
        registry = getattr(importlib.import_module(module_name), attr)
        if not isinstance(registry, Mapping) or not registry:
            raise self.error(f"{self.arguments[0]} is not a non-empty mapping of names to entries")
        rows = []
        for name, entry in registry.items():
            builders = _callables(entry)
            paths = [p for p in map(_public_path, builders) if p]
            built = nodes.inline()
            for i, path in enumerate(paths):
                if i:
                    built += nodes.Text(", ")
                built += _xref(path)
            what = _description(entry, builders)
            details = _details(entry)
            rows.append([nodes.literal(str(name), str(name)), f"{what} ({details})" if details else what, built])
        return [_table(["name", "what", "class"], rows, [15, 65, 20])]


class TutorialTimingsDirective(SphinxDirective):
    """``{tutorial-timings}``: the full and smoke wall times in ``tutorials/timings.json``."""

    def run(self) -> list[nodes.Node]:
        path = ROOT / "tutorials" / "timings.json"
        self.env.note_dependency(str(path))
        timings = json.loads(path.read_text())

        def words(run: dict | None) -> str:
            if not run:
                return "not run"
            threads = "thread" if run["threads"] == 1 else "threads"
            return (
                f"{run['seconds']:.0f} s (load {run['load_1min']:.1f}, {run['threads']} {threads} "
                f"on {run['cpus']} cores; {run['date']})"
            )

        rows = [
            [nodes.literal(name, name), words(runs.get("full")), words(runs.get("smoke"))]
            for name, runs in sorted(timings.items())
        ]
        return [_table(["tutorial", "full run", "smoke run"], rows, [25, 40, 40])]


class PublicNamesDirective(SphinxDirective):
    """``{public-names}``: one row per name of ``pyro_vae.__all__``, grouped by the module that defines it."""

    def run(self) -> list[nodes.Node]:
        import pyro_vae

        rows = []
        for name in sorted(pyro_vae.__all__, key=lambda n: (pyro_vae._WHERE[n], n.lower())):
            module = f"pyro_vae.{pyro_vae._WHERE[name]}"
            obj = getattr(pyro_vae, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                doc = inspect.getdoc(obj) or ""
                link = addnodes.pending_xref("", refdomain="py", reftype="obj", reftarget=f"{module}.{name}")
            else:  # a registry or a tuple of names, documented as module data
                doc = f"{type(obj).__name__} of {len(obj)}: " + ", ".join(map(str, obj))
                link = addnodes.pending_xref("", refdomain="py", reftype="data", reftarget=f"{module}.{name}")
            link += nodes.literal(name, name)
            rows.append([link, nodes.literal(module, module), doc.split("\n\n")[0].replace("\n", " ")])
        return [_table(["name", "defined in", "what"], rows, [20, 30, 50])]


def _canonical(target: str) -> str | None:
    """The path where Python finds ``target`` defined: ``pyro_vae.training.runfolder.RunLocked``, which that
    module imports, is ``pyro_vae.errors.RunLocked``; ``pyro_vae.fit`` is ``pyro_vae.training.train.fit``."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        path = _public_path(obj)
        if path is None:
            return None
        owner = path.rsplit(".", 1)[0]
        return ".".join([owner, parts[-1]]) if not path.endswith("." + parts[-1]) else path
    return None


def resolve_reference(app, env, node, contnode):
    """Resolve what Python's imports resolve, but Sphinx's exact lookup does not.

    - a path through an import, ``pyro_vae.fit`` or ``pyro_vae.training.runfolder.RunLocked``: the object
      where it is defined (``pyro_vae.training.train.fit``, ``pyro_vae.errors.RunLocked``);
    - a bare name that a module imported from another, ``:data:`DATASETS``` in ``pyro_vae.data.load``: the
      documented object whose name ends so, preferring one of the same module. A bare name that several
      classes define (``:meth:`model``` in the docstring of a base class that leaves it to subclasses)
      stays plain text.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node.get("reftarget", "")
    if target.startswith("pyro_vae."):
        path = _canonical(target)
        if path and path != target:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], path, node, contnode)
        return None
    if node.get("refspecific"):
        return None
    module, cls = node.get("py:module"), node.get("py:class")
    matches = domain.find_obj(env, module, cls, target, node["reftype"], 1)
    if len(matches) > 1 and module:
        matches = [m for m in matches if m[0].startswith(module + ".")] or matches
    if len(matches) > 1:
        return contnode
    if len(matches) == 1:
        name, obj = matches[0]
        return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, name)
    return None


def clean_docstring(app, what, name, obj, options, lines):
    """Make two habits of the code's docstrings valid reST.

    - A docstring that opens with a field (``:returns: ...`` on its first line) has its continuation lines at
      the docstring's indentation, where ``ruff format`` puts them; reST needs them indented under the field.
    - Module data without a docstring of its own would show its type's (``dict``'s): nothing is shown instead.
    """
    if what == "data" and " ".join(" ".join(lines).split()) == " ".join((type(obj).__doc__ or "").split()):
        lines.clear()
        return
    if lines and lines[0].startswith(":"):
        for i in range(1, len(lines)):
            if not lines[i].strip():
                break
            if not lines[i].startswith((":", " ")):
                lines[i] = "   " + lines[i]


def keep_object_pages_out_of_the_toctree(app, doctree):
    """The one page per object that autosummary writes is linked from its table, not listed in the
    navigation: three hundred entries in every page's sidebar would make the build several times slower.
    The pages are ``:orphan:`` (``docs/_templates/autosummary``), so Sphinx does not ask for them there."""
    from sphinx.ext.autosummary import autosummary_toc

    for node in list(doctree.findall(autosummary_toc)):
        node.parent.remove(node)


def dash_in_field_lists(app, doctree, docname):
    """The " -- " between a parameter and its text is left for smart quotes to turn into a dash; they are
    off for dashes (``smartquotes_action`` in conf.py keeps the CLI's ``--flag`` as typed), so set it here."""
    for body in doctree.findall(nodes.field_body):
        for text in list(body.findall(nodes.Text)):
            if str(text) == " -- ":
                text.parent.replace(text, nodes.Text(" \u2013 "))


def setup(app):
    app.connect("doctree-resolved", dash_in_field_lists)
    app.connect("doctree-read", keep_object_pages_out_of_the_toctree, priority=100)
    app.add_directive("public-names", PublicNamesDirective)
    app.connect("missing-reference", resolve_reference)
    app.connect("autodoc-process-docstring", clean_docstring)
    app.add_directive("registry", RegistryDirective)
    app.add_directive("tutorial-timings", TutorialTimingsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
