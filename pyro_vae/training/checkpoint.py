"""Checkpoints: networks, optimizer, RNG states, epoch, config and metrics in one file, written
atomically before the first step (epoch 0) and at the end of every epoch.

The file is one header line, ``PYROVAE-CHECKPOINT sha256=<hex>``, then the ``torch.save`` bytes;
the SHA-256 of those bytes is checked on load, so damage anywhere in the file is a one-line error,
never silently altered weights. Files without the header (written by pyro_vae 0.1) load unchecked.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import zipfile
from pathlib import Path

import torch

from pyro_vae.atomic import atomic_write_bytes
from pyro_vae.errors import CheckpointError
from pyro_vae.training.runfolder import CHECKPOINT_NAME

MAGIC = b"PYROVAE-CHECKPOINT sha256="

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "load_checkpoint", "save_checkpoint", "rng_state", "set_rng_state"]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **state) -> None:
    """Write ``state`` plus the RNG states to ``path``, atomically, behind a SHA-256 header.

    :raises pyro_vae.errors.WriteError: when the file cannot be written; the previous one is kept.
    """
    buf = io.BytesIO()
    torch.save({**state, "rng": rng_state()}, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` safe loading).

    :raises CheckpointError: one line saying what is wrong with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train a run first (pyro-vae train --out DIR)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({e.strerror or e})") from None
    if raw.startswith(MAGIC):
        header, _, payload = raw.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != header[len(MAGIC) :]:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its content does not match its SHA-256; "
                "restore it from a backup or train the run again"
            )
        raw = payload
    try:
        state = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({reason[:200]})") from None
    missing = (
        {"epoch", "config", "model", "optimizer", "rng", "image_shape"} - set(state)
        if isinstance(state, dict)
        else {"all"}
    )
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a pyro_vae checkpoint (missing {', '.join(sorted(missing))})")
    return state
