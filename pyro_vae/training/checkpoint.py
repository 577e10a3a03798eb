"""Checkpoints: networks, optimizer, RNG states, epoch, config and metrics in one file, written
atomically before the first step (epoch 0) and at the end of every epoch.

The file is one header line, ``PYROVAE-CHECKPOINT sha256=<hex>``, then the ``torch.save`` bytes;
the SHA-256 of those bytes is checked on load, so damage anywhere in the file is a one-line error,
never silently altered weights. Files without the header (written by pyro_vae 0.1) load unchecked.
Every field is then checked for its type and shape (``check_fields``), so that a file whose
SHA line holds but whose content is not a run's is refused in one line naming the field, before
anything is written.
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
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # damaged bytes; torch's own words are the reason
            reason = str(e).partition("WeightsUnpickler error:")[2].strip() or str(e).strip()
            reason = reason.splitlines()[0] if reason else type(e).__name__
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({reason[:200]})") from None
        raise CheckpointError(
            f"checkpoint {path} holds code (pickled objects other than tensors and plain values) and is refused; "
            "a pyro_vae checkpoint never does, so train the run again from a trusted config.json"
        ) from None
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
    check_fields(state, path)
    return state


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor_dict(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


def _python_rng(v) -> bool:
    """``random.getstate()``: (version, 625 ints, gauss or None)."""
    return (
        isinstance(v, tuple)
        and len(v) == 3
        and _is_int(v[0])
        and isinstance(v[1], tuple)
        and all(_is_int(i) for i in v[1])
        and (v[2] is None or isinstance(v[2], float))
    )


_FIELDS = {
    "epoch": ("a count of epochs (an integer ≥ 0)", lambda v: _is_int(v) and v >= 0),
    "config": ("a config dict", lambda v: isinstance(v, dict)),
    "model": ("a dict of parameter tensors", _tensor_dict),
    "optimizer": (
        "an optimizer state (a dict with 'state' and 'param_groups')",
        lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list),
    ),
    "rng": (
        "the RNG states (torch: a uint8 tensor, python: random.getstate())",
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("torch"), torch.Tensor)
            and v["torch"].dtype == torch.uint8
            and _python_rng(v.get("python"))
            and (
                "cuda" not in v
                or isinstance(v["cuda"], list)
                and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in v["cuda"])
            )
        ),
    ),
    "image_shape": (
        "an image shape, e.g. (C, H, W), of positive integers",
        lambda v: isinstance(v, list | tuple) and 1 <= len(v) <= 3 and all(_is_int(s) and s > 0 for s in v),
    ),
    "history": ("a list of epoch rows (dicts)", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v)),
    "num_classes": ("a positive integer or null", lambda v: v is None or _is_int(v) and v > 0),
    "run_id": ("the run's id (a string)", lambda v: isinstance(v, str)),
}


def check_fields(state: dict, path: str | Path) -> None:
    """Check the type and shape of every field of a loaded checkpoint (optional ones when present).

    :raises CheckpointError: naming the first field that does not fit.
    """
    for name, (expected, fits) in _FIELDS.items():
        if name in state and not fits(state[name]):
            got = type(state[name]).__name__
            raise CheckpointError(
                f"checkpoint {path} has a field {name!r} that is not {expected} (got {got}); "
                "it was not written by pyro_vae for this run, so restore the run's own checkpoint"
            )
