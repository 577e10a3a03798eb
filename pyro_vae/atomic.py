"""Atomic file writes: a temp file in the same folder, then ``os.replace``.

A reader (or a crash) never sees a half-written checkpoint, JSON file or PNG. The file gets the
permissions of a plain ``open()`` under the current umask (0644 under umask 022), not the 0600 of
a temp file. A failed write (a full disk) leaves the previous file untouched and raises
:class:`WriteError`, one line naming the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pyro_vae.errors import WriteError

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename over ``path``.

    :raises WriteError: when the disk is full or the folder not writable; ``path`` is unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise WriteError(f"cannot write {path} ({e.strerror or e}); {kept}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode())


def remove_orphaned_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files that a killed writer left in ``folder`` (``.NAME.*.tmp``).

    Call it only while holding the folder's lock (:class:`pyro_vae.training.runfolder.RunLock`), so that no
    writer is using them. :returns: the files removed.
    """
    removed = []
    for p in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
