"""The package's layers: every module imports only from the layers before its own, and no import
circle exists (imports inside functions count).

The order is config → data and inference side by side → models → training → experiments → cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_vae"

# A module's layer is the first entry whose name is its dotted path or a prefix of it.
LAYERS = [
    ("pyro_vae.errors", 0),
    ("pyro_vae.notebook", 0),
    ("pyro_vae.atomic", 1),
    ("pyro_vae.config", 2),
    ("pyro_vae.data", 3),
    ("pyro_vae.inference", 3),
    ("pyro_vae.plots", 3),
    ("pyro_vae.models", 4),
    ("pyro_vae.theory", 4),
    ("pyro_vae.training", 5),
    ("pyro_vae.experiments", 6),
    ("pyro_vae.cli", 7),
    ("pyro_vae.__main__", 8),
]
# sub-packages of one layer that stay apart from each other
APART = [
    ("pyro_vae.data", "pyro_vae.inference"),
    ("pyro_vae.data", "pyro_vae.plots"),
    ("pyro_vae.inference", "pyro_vae.plots"),
]
# pyro_vae/__init__.py names the public API lazily (PEP 562) and imports nothing at import time
EXEMPT = {"pyro_vae"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool = False) -> set[str]:
    """The pyro_vae modules that module ``name`` (its ``source``) imports, at the top or inside
    functions; ``from pkg import mod`` counts as importing ``pkg.mod`` when that is a module."""
    package = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "pyro_vae"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pyro_vae":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in MODULES else target)
    return out - {name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path.read_text(), name, path.name == "__init__.py") for name, path in MODULES.items()}


def layer(name: str) -> tuple[str, int]:
    for prefix, rank in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            return prefix, rank
    raise AssertionError(f"{name} has no layer; add it to LAYERS in {__file__}")


def test_every_module_has_a_layer():
    for name in MODULES:
        if name not in EXEMPT and not name.endswith("__init__"):
            layer(name)


def against_the_order(name: str, targets: set[str]) -> list[str]:
    """The imports of ``name`` that break the layers, one message each naming both modules."""
    where, rank = layer(name)
    bad = []
    for target in sorted(targets - {"pyro_vae"}):
        to, to_rank = layer(target)
        if to_rank == rank and to != where:
            bad.append(f"{name} imports {target}: {where} and {to} share layer {rank} and stay apart")
        elif to_rank > rank:
            bad.append(f"{name} imports {target}: layer {to} ({to_rank}) is not before {where} ({rank})")
    return bad


@pytest.mark.parametrize("name", sorted(set(MODULES) - EXEMPT))
def test_imports_follow_the_layers(name):
    assert against_the_order(name, GRAPH[name]) == []


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == 1:
                circle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])


def test_an_import_inside_a_function_against_the_order_is_found():
    """A model file calling ``fit`` from inside a method (relative import) is named, with both files."""
    source = "def tune():\n    from ..training.train import fit\n    from . import nets\n"
    found = imports_of(source, "pyro_vae.models.ssvae")
    assert found == {"pyro_vae.training.train", "pyro_vae.models.nets"}
    assert against_the_order("pyro_vae.models.ssvae", found) == [
        "pyro_vae.models.ssvae imports pyro_vae.training.train: layer pyro_vae.training (5) is not before "
        "pyro_vae.models (4)"
    ]
    assert against_the_order("pyro_vae.data.load", {"pyro_vae.inference.elbos"}) == [
        "pyro_vae.data.load imports pyro_vae.inference.elbos: pyro_vae.data and pyro_vae.inference share layer 3 "
        "and stay apart"
    ]


def test_sub_package_inits_import_nothing():
    """The command locks its run folder before torch is imported: a sub-package's ``__init__.py``
    must not pull its modules in."""
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name != "pyro_vae":
            assert not GRAPH[name] and "import" not in path.read_text(), f"{path} imports"


def test_no_module_over_600_lines():
    for path in MODULES.values():
        n = len(path.read_text().splitlines())
        assert n <= 600, f"{path.relative_to(PACKAGE.parent)} has {n} lines"
