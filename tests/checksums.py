"""Checksums of a whole tree, to show that a command changed nothing outside what it may write."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_checksums(root: Path) -> dict[str, str]:
    """``relative path ↦ sha256`` of every file under ``root``, without following links: a link is
    recorded by its target, a folder by its name alone."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link → " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "folder"
    return out


def changed_paths(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """The paths added, removed or changed between two :func:`tree_checksums`."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def assert_only_changed(before: dict[str, str], after: dict[str, str], *allowed: str) -> None:
    """Every changed path is one of ``allowed`` (exact, or a folder prefix ending in ``/``)."""

    def may_change(p: str) -> bool:
        return any(p == a or a.endswith("/") and p.startswith(a) for a in allowed)

    extra = {p for p in changed_paths(before, after) if not may_change(p)}
    assert not extra, f"changed outside what the command may write: {sorted(extra)}"
