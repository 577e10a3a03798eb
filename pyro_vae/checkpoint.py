"""Checkpoints: networks, optimizer, param store, RNG states, epoch, config and metrics in one
file, written atomically at the end of every epoch."""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path

import pyro
import torch

from .io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing or cannot be read."""


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
    """Write ``state`` plus the param store and RNG states to ``path``, atomically."""
    store = pyro.get_param_store()
    state = {
        **state,
        "param_store": {name: store[name].detach() for name in store.keys()},
        "rng": rng_state(),
    }
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` safe loading).

    :raises CheckpointError: one line saying what is wrong with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train a run first (pyro-vae train --out DIR)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
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
