"""Errors with one base: every error raised on purpose is a :class:`PyroVAEError`, which the CLI
turns into one line and exit status 2; any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import pyro_vae
from pyro_vae import cli, errors
from pyro_vae.errors import ConfigError, DataError, PyroVAEError, RunInterrupted

PACKAGE = Path(pyro_vae.__file__).parent
BUILTIN = {"ValueError", "TypeError", "RuntimeError", "OSError", "KeyError", "IndexError", "Exception"}


def test_every_error_type_derives_from_the_base():
    types = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(types) >= 15
    for cls in types:
        assert issubclass(cls, PyroVAEError) or cls in (PyroVAEError, RunInterrupted), cls
    assert not issubclass(RunInterrupted, PyroVAEError) and issubclass(RunInterrupted, KeyboardInterrupt)
    assert issubclass(ConfigError, ValueError) and issubclass(errors.WriteError, OSError)  # earlier except clauses


def test_the_package_raises_no_bare_builtin_error():
    """``raise ValueError(...)`` and the like are for bugs only; the package raises none."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = getattr(node.exc.func, "id", None)
                if name in BUILTIN:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: raise {name}")
    assert found == []


def test_every_error_type_is_public():
    types = {n for n, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__}
    assert types <= set(pyro_vae.__all__)


@pytest.mark.parametrize(
    "error",
    [ConfigError("z_dim", "must be a positive integer, got 0"), DataError("/x holds no images\nsecond line")],
)
def test_the_cli_prints_one_line_and_exits_2_for_a_pyro_vae_error(monkeypatch, capsys, error):
    def command(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "sample", command)
    assert cli.main(["sample", "RUN", "--out", "x.png"]) == 2
    captured = capsys.readouterr()
    expected = error.for_cli() if isinstance(error, ConfigError) else "/x holds no images; second line"
    assert captured.err == f"pyro-vae sample: error: {expected}\n"
    assert captured.out == "" and "Traceback" not in captured.err


@pytest.mark.parametrize("bug", [ValueError("a bug"), ZeroDivisionError("division by zero"), OSError(5, "I/O")])
def test_an_unexpected_exception_keeps_its_traceback(monkeypatch, capsys, bug):
    """Not disguised as bad input: the exception leaves ``main`` as it was raised."""

    def command(args):
        raise bug

    monkeypatch.setitem(cli.COMMANDS, "sample", command)
    with pytest.raises(type(bug)) as raised:
        cli.main(["sample", "RUN", "--out", "x.png"])
    assert raised.value is bug
    assert capsys.readouterr().err == ""
