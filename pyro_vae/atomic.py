"""Atomic file writes: a temp file in the same folder, then ``os.replace``.

A reader (or a crash) never sees a half-written checkpoint, JSON file or PNG. The file gets the
permissions of a plain ``open()`` under the current umask (0644 under umask 022), not the 0600 of
a temp file. A failed write (a full disk) leaves the previous file untouched and raises
:class:`WriteError`, one line naming the file.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pyro_vae.errors import WriteError

TEMP_SUFFIX = ".tmp"
TEMP_MARK = ".pyrovae-"  # in every temp file name pyro_vae makes: .NAME.pyrovae-XXXXXXXX.tmp
_OWN_TEMP = re.compile(r"\.(.+)" + re.escape(TEMP_MARK) + r"[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}", suffix=TEMP_SUFFIX)
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


def is_own_temp(path: str | Path) -> bool:
    """Whether ``path`` is a temp file :func:`atomic_write` made: its name ``.NAME.pyrovae-XXXXXXXX.tmp``
    (``mkstemp``'s eight characters), a regular file (not a link) of this user."""
    path = Path(path)
    if not _OWN_TEMP.fullmatch(path.name):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (not hasattr(os, "getuid") or st.st_uid == os.getuid())


def remove_orphaned_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files that a killed writer left in ``folder`` (``is_own_temp``); any
    other file, ``.notes.tmp`` among them, is left alone.

    Call it only while holding the folder's lock (:class:`pyro_vae.training.runfolder.RunLock`), so that no
    writer is using them. :returns: the files removed.
    """
    removed = []
    for p in Path(folder).glob(f".*{TEMP_MARK}*{TEMP_SUFFIX}"):
        if is_own_temp(p):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
