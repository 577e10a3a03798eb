"""M2's class weight α' chosen on a validation split, before the run trains.

``--class-weight-grid A A ...`` (``config.train.class_weight_grid``): a tenth of the training
images (:func:`validation_split`, a fixed seed) becomes the test set of one run per value, trained
on the rest with the run's settings, and the value whose q(y|x) is most accurate on the validation
images wins (the first on a tie). The test set is never read. The runs are kept in
``RUN/class-weight-selection/``, each with the ``fingerprint.json`` of its settings (as
``compare`` keeps its cells); a finished one is read again instead of retrained only when its
fingerprint matches the settings of the run now being trained.

:func:`fit_with_selection` and :func:`resume_with_selection` are :func:`pyro_vae.training.train.fit` and
:func:`~pyro_vae.training.train.resume` with the selection as their ``tune`` step; ``pyro-vae train``
calls them.

References: Kingma, Rezende, Mohamed & Welling, *Semi-Supervised Learning with Deep Generative
Models*, NeurIPS 2014 (α, the weight of the classification term).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from pyro_vae.atomic import atomic_write_text
from pyro_vae.config import RunConfig
from pyro_vae.errors import ConfigError, UsageError
from pyro_vae.training import distributed
from pyro_vae.training import train as training
from pyro_vae.training.runfolder import check_inside, remove_contents, run_state

FINGERPRINT_NAME = "fingerprint.json"

VALIDATION_SEED = 1234  # the fixed seed of the validation split carved from the training images


def validation_split(n: int, size: int, seed: int = VALIDATION_SEED) -> tuple[Tensor, Tensor]:
    """Carve a validation split from ``n`` training images, to choose α (never on the test set).

    :returns: ``(train_rows, validation_rows)``, int64 indices of sizes n − size and size.
    :raises ValueError: when ``size`` is not in 1..n−1.
    """
    if not isinstance(size, int) or not 0 < size < n:
        raise UsageError(f"validation size must be between 1 and {n - 1} (the training images), got {size!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[size:], perm[:size]


def select_class_weight(config: RunConfig, data, out_dir: str | Path, progress: bool = False) -> dict:
    """Choose ``config.train.class_weight`` (α') among ``config.train.class_weight_grid`` on a
    validation split (``config`` changes in place); nothing to do without a grid.

    :param data: the run's :class:`~pyro_vae.data.images.ImageData`, labels checked.
    :returns: what the run records in ``metrics.json``:
        ``{"class_weight_selection": {"validation_size", "accuracy": {α': accuracy}, "chosen"}}``.
    :raises ConfigError: under ``torchrun`` (the selection runs in one process).
    """
    grid = config.train.class_weight_grid
    if not grid:
        return {}
    if distributed.current() is not None:
        raise ConfigError(
            "class_weight_grid",
            "chooses α' in one process; run the selection without torchrun, then launch with its --class-weight",
        )
    n = len(data.train_images)
    _, rows = validation_split(n, max(1, n // 10))
    validation = data.split_validation(rows.to(data.train_store.device))
    scores = {}
    for weight in grid:
        folder = check_inside(Path(out_dir) / "class-weight-selection", out_dir)
        sub = Path(out_dir) / "class-weight-selection" / f"class-weight-{weight:g}"
        cfg = RunConfig.from_dict(config.to_dict())
        cfg.train.class_weight, cfg.train.class_weight_grid = weight, None
        cfg.train.fidelity_samples, cfg.train.tensorboard, cfg.train.eval_num_samples = 0, False, 1
        fingerprint = _fingerprint(cfg)
        if sub.exists() or sub.is_symlink():
            check_inside(sub, folder)
        if run_state(sub) == "finished" and _recorded(sub) == fingerprint:
            final = json.loads((sub / "metrics.json").read_text())["final"]
        else:
            if sub.is_dir():  # interrupted, or made with other settings: it starts again
                remove_contents(sub)
            atomic_write_text(sub / FINGERPRINT_NAME, json.dumps(fingerprint, indent=2) + "\n")
            final = training.fit(cfg, sub, progress=progress, data=validation).metrics["final"]
        scores[f"{weight:g}"] = final["accuracy"]
    best = max(grid, key=lambda w: scores[f"{w:g}"])  # the first of the best
    config.train.class_weight = best
    return {"class_weight_selection": {"validation_size": len(rows), "accuracy": scores, "chosen": best}}


def _fingerprint(cfg: RunConfig) -> dict:
    """What defines a selection run's result: its config, less the run id, the device, compiling and
    the data's memory budget."""
    run = cfg.to_dict()
    run.pop("run_id", None)
    for key in ("device", "compile"):
        run["train"].pop(key)
    run["data"].pop("max_data_memory")
    return json.loads(json.dumps(run))  # as fingerprint.json reads back (tuples as lists)


def _recorded(sub: Path) -> dict | None:
    try:
        return json.loads((sub / FINGERPRINT_NAME).read_text())
    except (OSError, ValueError):
        return None  # made before fingerprints: trained again


def fit_with_selection(config: RunConfig | None = None, out_dir: str | Path | None = None, **kwargs) -> training.Run:
    """:func:`pyro_vae.training.train.fit`, choosing α' first when ``config.train.class_weight_grid``
    is set (:func:`select_class_weight`); ``kwargs`` go to it."""
    return training.fit(config, out_dir, tune=select_class_weight, **kwargs)


def resume_with_selection(run_dir: str | Path, epochs: int | None = None, **kwargs) -> training.Run:
    """:func:`pyro_vae.training.train.resume`, choosing α' again when the run was killed before its
    first checkpoint (finished selection runs are read back, not retrained)."""
    return training.resume(run_dir, epochs, tune=select_class_weight, **kwargs)
