"""A run folder's lock and state.

A run folder is always in one of three states (:func:`run_state`):

- ``new``: no checkpoint; at most a ``config.json`` from a run killed before it wrote its first
  checkpoint, which a new run may replace (nothing trained is lost);
- ``resumable``: ``checkpoint.pt`` exists (possibly the one written at epoch 0, before the first
  step) and no final metrics: ``pyro-vae train --resume DIR`` continues it;
- ``finished``: ``metrics.json`` holds the final test metrics.

Every writer holds the folder's lock (:class:`RunLock`, an OS file lock on ``DIR/.lock``) for the
whole run, taken before it writes anything. A second writer fails at once with one line naming the
process that holds it. The OS drops the lock of a killed process, so a stale lock file never blocks.
Under ``torchrun`` rank 0 writes for the whole launch and holds the lock; the other ranks
(``RANK`` ≠ 0 in the environment) write nothing and take no lock.

Only the standard library is imported here, so that the command can take the lock before it
imports torch.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from pyro_vae.atomic import remove_orphaned_temps
from pyro_vae.errors import RunLocked

LOCK_NAME = ".lock"
CHECKPOINT_NAME = "checkpoint.pt"

try:
    import fcntl
except ImportError:  # not POSIX: no folder lock
    fcntl = None


def writes_run_folders() -> bool:
    """False on the ranks other than 0 of a ``torchrun`` launch (``RANK`` in the environment)."""
    return os.environ.get("RANK", "0") == "0"


_held: dict[str, list] = {}  # realpath ↦ [fd, count]: the locks this process holds (re-entrant)


class RunLock:
    """An exclusive, re-entrant (within this process) lock on a run folder.

    ``with RunLock(dir):`` creates the folder if needed, takes the lock or raises
    :class:`RunLocked` at once, and removes the temp files a killed writer left behind. On release,
    a folder that this lock created and that holds nothing else is removed again.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._created = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if not writes_run_folders():
            return
        if self.folder.exists() and not self.folder.is_dir():
            raise RunLocked(f"{self.folder} is a file, not a run folder; choose another folder")
        self._created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunLocked(f"cannot create run folder {self.folder} ({e.strerror or e})") from None
        key = os.path.realpath(self.folder)
        if key in _held:
            _held[key][1] += 1
            return
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunLocked(
                    f"{self.folder} is in use by {holder}; wait for it to finish or choose another folder"
                ) from None
        os.ftruncate(fd, 0)
        argv = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:3]) if sys.argv and sys.argv[0] else "python"
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} ({argv})\n".encode(), 0)
        _held[key] = [fd, 1]
        remove_orphaned_temps(self.folder)

    def release(self) -> None:
        key = os.path.realpath(self.folder)
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1]:
            return
        del _held[key]
        if self._created and {p.name for p in self.folder.iterdir()} == {LOCK_NAME}:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
            self.folder.rmdir()
        if fcntl is not None:
            fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])


def run_state(folder: str | Path) -> str:
    """``"new"``, ``"resumable"`` or ``"finished"`` (see the module docstring)."""
    folder = Path(folder)
    if not (folder / CHECKPOINT_NAME).is_file():
        return "new"
    try:
        final = "final" in json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        final = False
    return "finished" if final else "resumable"
