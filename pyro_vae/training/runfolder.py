"""A run folder's lock and state.

A run folder is always in one of three states (:func:`run_state`):

- ``new``: no checkpoint; at most a ``config.json`` from a run killed before it wrote its first
  checkpoint, which a new run may replace (nothing trained is lost);
- ``resumable``: ``checkpoint.pt`` exists (possibly the one written at epoch 0, before the first
  step) and no final metrics: ``pyro-vae train --resume DIR`` continues it;
- ``finished``: ``metrics.json`` holds the final test metrics, whatever else is missing (a
  finished run whose checkpoint was deleted is refused, never trained over).

Every writer holds the folder's lock (:class:`RunLock`, an OS file lock on ``DIR/.lock``) for the
whole run, taken before it writes anything. A second writer fails at once with one line naming the
process that holds it. The OS drops the lock of a killed process, so a stale lock file never blocks.
The lock file is opened without following links and must be a regular file of one link holding
a lock line; anything else is refused, and it is never truncated.
Under ``torchrun`` rank 0 writes for the whole launch and holds the lock; the other ranks
(``RANK`` ≠ 0 in the environment) write nothing and take no lock.

Only the standard library is imported here, so that the command can take the lock before it
imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import sys
from pathlib import Path

from pyro_vae.atomic import remove_orphaned_temps
from pyro_vae.errors import RunLocked, UnsafePath, UsageError, WriteError

LOCK_NAME = ".lock"
CHECKPOINT_NAME = "checkpoint.pt"

try:
    import fcntl
except ImportError:  # not POSIX: no folder lock
    fcntl = None


def writes_run_folders() -> bool:
    """False on the ranks other than 0 of a ``torchrun`` launch (``RANK`` in the environment)."""
    return os.environ.get("RANK", "0") == "0"


def run_folder(folder: str | Path, flag: str = "--out") -> Path:
    """``folder`` as a :class:`~pathlib.Path`; an empty or blank name (which would be the current
    directory) is refused.

    :raises UsageError: naming ``flag``.
    """
    if isinstance(folder, str) and not folder.strip():
        raise UsageError(f"{flag} must name a folder, got {folder!r}; pass a folder name, e.g. {flag} runs/r1")
    return Path(folder)


def check_inside(path: str | Path, parent: str | Path) -> Path:
    """``path``, which must be ``parent``'s child of the same name after every link is resolved
    (neither it nor a folder on the way a link elsewhere).

    :raises UnsafePath: naming the path and where it leads.
    """
    path, parent = Path(path), Path(parent)
    real, expected = os.path.realpath(path), os.path.join(os.path.realpath(parent), path.name)
    if real != expected or path.is_symlink():
        raise UnsafePath(
            f"{path} leads to {real}, outside {parent}; pyro_vae writes and deletes only inside its own folders, "
            "so replace the link with a folder or choose another --out"
        )
    return path


def remove_contents(folder: str | Path, keep: tuple[str, ...] = ()) -> None:
    """Delete what ``folder`` holds but the names in ``keep``, never following a link: a link is
    removed, not what it points to."""
    for p in Path(folder).iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


_LOCK_LINE = b"process "  # how every lock line begins
_LOCK_MAX = 4096  # a lock file larger than this is no lock file of pyro_vae's


def _open_lock(path: Path) -> int:
    """The lock file's descriptor, opened without following a link and checked to be a lock file.

    :raises UnsafePath: for a link, a file that is not regular, one with other hard links, or one
        holding something else than a lock line.
    :raises WriteError: when the folder is read-only or not writable.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | nofollow, 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafePath(f"{path} is a symbolic link, not a lock file; remove the link (rm {path})") from None
        raise WriteError(
            f"cannot lock {path.parent} ({e.strerror or e}); pyro_vae writes into its run folders, so choose a "
            "writable folder"
        ) from None
    st = os.fstat(fd)
    content = os.pread(fd, min(st.st_size, 64), 0) if stat.S_ISREG(st.st_mode) else b""
    why = (
        "is not a regular file"
        if not stat.S_ISREG(st.st_mode)
        else "has other hard links"
        if st.st_nlink > 1
        else "holds something else than a lock line"
        if st.st_size > _LOCK_MAX or (content and not content.startswith(_LOCK_LINE))
        else None
    )
    if why is not None:
        os.close(fd)
        raise UnsafePath(f"{path} {why}; it is not a lock file of pyro_vae, so move it away and run again")
    return fd


_held: dict[str, list] = {}  # realpath ↦ [fd, count]: the locks this process holds (re-entrant)


class RunLock:
    """An exclusive, re-entrant (within this process) lock on a run folder.

    ``with RunLock(dir):`` creates the folder if needed, takes the lock or raises
    :class:`RunLocked` at once, and removes the temp files a killed writer left behind. On release,
    a folder that this lock created and that holds nothing else is removed again.
    """

    def __init__(self, folder: str | Path):
        self.folder = run_folder(folder)
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
            raise WriteError(f"cannot create run folder {self.folder} ({e.strerror or e})") from None
        key = os.path.realpath(self.folder)
        if key in _held:
            _held[key][1] += 1
            return
        path = self.folder / LOCK_NAME
        fd = _open_lock(path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunLocked(
                    f"{self.folder} is in use by {holder}; wait for it to finish or choose another folder"
                ) from None
        argv = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:3]) if sys.argv and sys.argv[0] else "python"
        line = f"process {os.getpid()} on {socket.gethostname()} ({argv})".encode()
        size = os.fstat(fd).st_size  # never truncated: the line is padded to the length it had
        try:
            os.pwrite(fd, line.ljust(max(size - 1, len(line)))[: _LOCK_MAX - 1] + b"\n", 0)
        except OSError:  # a full disk: the lock is held all the same, without its holder's name
            pass
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
    try:
        final = "final" in json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError, TypeError):
        final = False
    if final:
        return "finished"
    return "resumable" if (folder / CHECKPOINT_NAME).is_file() else "new"
