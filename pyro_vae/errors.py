"""Every error pyro_vae raises on purpose, under one base: :class:`PyroVAEError`.

An error of these types is the user's to fix (a flag, a file, a folder, a pair that does not fit),
and its message says what was received, what is expected and how to fix it. The ``pyro-vae``
command turns exactly these into one line on stderr and exit status 2; any other exception is a
bug and keeps its traceback.

Each type also derives from the built-in exception it refines (``ValueError``, ``OSError``,
``RuntimeError``), so ``except ValueError`` written against earlier versions still catches it.
This module imports only the standard library.
"""

from __future__ import annotations


class PyroVAEError(Exception):
    """The base of every error pyro_vae raises on purpose."""


class ConfigError(PyroVAEError, ValueError):
    """A config value that is missing, of the wrong type or out of range.

    ``str(e)`` names the field (``eval_num_samples must be ...``); :meth:`for_cli` names the flag
    (``--num-samples must be ...``).

    :param str name: the config field (or a file, for a ``config.json`` that cannot be read).
    :param str detail: what is wrong with it, e.g. ``"must be a positive integer, got 0"``.
    :param flag: the command-line flag (default ``--`` + the field name with dashes).
    """

    def __init__(self, name: str, detail: str, flag: str | None = None):
        self.name, self.detail, self.flag = name, detail, flag or "--" + name.replace("_", "-")
        super().__init__(f"{name} {detail}")

    def for_cli(self) -> str:
        """The message with the flag in place of the field name."""
        return f"{self.flag} {self.detail}"


class UsageError(PyroVAEError, ValueError):
    """A command-line argument outside the config dataclasses that is out of range or malformed."""


class DataError(PyroVAEError, ValueError):
    """Data that cannot be read or used: a missing or malformed file, folder or array, or labels
    that do not fit."""


class ImageError(PyroVAEError, ValueError):
    """Images that do not fit the model: wrong shape, dtype, non-finite or out-of-range pixels.

    One line: raised inside a Pyro trace (a model's ``check_x``), Pyro re-raises it with the
    trace's shapes appended; only the first line is kept.
    """

    def __init__(self, message: str):
        super().__init__(str(message).split("\n", 1)[0])


class LabelError(PyroVAEError, ValueError):
    """A label a model cannot take: out of range, misshapen, or given to a model without classes."""


class RegistryError(PyroVAEError, ValueError):
    """A name that no registry holds (guide, estimator, model, network, likelihood, prior), or a
    registration that does not fit; the message lists the valid names."""


class IncompatiblePair(PyroVAEError, ValueError):
    """An estimator that cannot train a guide (or cannot run with ``--jit``); the message says why."""


class IncompatibleEstimator(PyroVAEError, ValueError):
    """An estimator that a model does not accept; the message names both and the accepted ones."""


class CheckpointError(PyroVAEError, ValueError):
    """A run folder without a readable run: no ``config.json``, or a checkpoint that is missing,
    damaged, foreign or does not fit its config."""


class RunExists(PyroVAEError, ValueError):
    """The run folder already holds a run that a new one would overwrite."""


class RunLocked(PyroVAEError, RuntimeError):
    """Another process holds the run folder's lock; the message names it."""


class WriteError(PyroVAEError, OSError):
    """A file could not be written (a full disk, a read-only folder); what was there is kept."""


class UnsafePath(PyroVAEError, ValueError):
    """A path pyro_vae would write or delete that is a symbolic link, not a regular file, or leads
    outside the folder it must stay in; nothing is written or deleted through it."""


class OutOfMemory(PyroVAEError, MemoryError):
    """An allocation that failed (a size too large for the memory of the device); the message
    names the flags that set the sizes."""


class LaunchError(PyroVAEError, ValueError):
    """A ``torchrun`` launch that cannot train one model together (mismatched ranks, devices or
    batch sizes)."""


class TrainingDiverged(PyroVAEError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class GridMismatch(PyroVAEError, ValueError):
    """A ``compare`` cell folder made earlier with other settings than the grid's."""


class IncompleteGrid(PyroVAEError, ValueError):
    """``--collect`` on a grid folder with no finished cell."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what the run folder kept and how to continue.

    Not a :class:`PyroVAEError`: an interrupt is no error of the input, and it exits with status 130.
    """
