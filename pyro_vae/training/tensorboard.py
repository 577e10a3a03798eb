"""TensorBoard logs of a run (``--tensorboard``): ``RUN_DIR/tensorboard/``, written through
``torch.utils.tensorboard.SummaryWriter``.

Every epoch logs the numbers of its row in ``metrics.json`` as scalars at step = epoch
(:func:`scalar_tags`: ``train/elbo``, ``test/elbo``, ``test/reconstruction``, ``test/kl``,
``train/beta``, ``train/seconds``, and a model's own, e.g. ``test/accuracy``), and two images:
``reconstructions`` (test images over their reconstructions) and ``samples`` (the means of p(x|z),
one row per class for conditional models). The images are drawn with their own seed inside
:func:`torch.random.fork_rng`, so logging changes no random draw of the training: a run with the
log equals one without it, and a resumed run equals an uninterrupted one.

Open the logs with ``tensorboard --logdir RUN_DIR`` (or ``--logdir OUT/cells`` for a
``compare`` grid: one log per cell, their curves overlaid).

The ``tensorboard`` package is an extra: ``pip install -e ".[tensorboard]"``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

LOG_DIR = "tensorboard"  # inside the run folder
IMAGE_SEED = 0  # the draws of the logged samples: the same z every epoch
NUM_IMAGES = 8  # test images reconstructed; samples drawn (per class: at least one)


def scalar_tags(row: dict) -> dict[str, float]:
    """The scalars of one epoch's row of ``metrics.json``, by tag: ``train_elbo`` ↦ ``train/elbo``,
    ``test_kl`` ↦ ``test/kl``, other keys (``beta``, ``seconds``, ``steps``) ↦ ``train/KEY``."""
    out = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        split, _, name = key.partition("_")
        out[f"{split}/{name}" if split in ("train", "test") and name else f"train/{key}"] = float(value)
    return out


class RunLog:
    """The TensorBoard log of one run folder.

    :param run_dir: the run folder; the log goes to ``run_dir/tensorboard``.
    :param int start_epoch: the epoch training starts after (a resumed run): events of later
        epochs left by an interrupted process are dropped (``purge_step``), so every epoch is
        logged once.
    """

    def __init__(self, run_dir: str | Path, start_epoch: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / LOG_DIR
        self.writer = SummaryWriter(str(self.log_dir), purge_step=start_epoch + 1 if start_epoch else None)

    def epoch(self, row: dict, model, data) -> None:
        """Log one epoch: the scalars of ``row`` and the images of ``model`` on ``data``'s test set."""
        step = row["epoch"]
        for tag, value in scalar_tags(row).items():
            self.writer.add_scalar(tag, value, step)
        shape = tuple(data.image_shape)
        recon, samples = images(model, data)
        self.writer.add_images("reconstructions", recon.reshape(-1, *shape), step)
        self.writer.add_images("samples", samples.reshape(-1, *shape), step)
        self.writer.flush()  # every epoch is on disk with its checkpoint

    def close(self) -> None:
        self.writer.close()


@torch.no_grad()
def images(model, data) -> tuple[Tensor, Tensor]:
    """Reconstructions and samples for the log, without touching the training's random state.

    :returns: ``(2·n, D)``: ``n`` test images then their reconstructions; and ``(m, D)`` samples,
        ``NUM_IMAGES`` draws z ~ p(z), or for a model with k classes ``max(1, NUM_IMAGES // k)`` per
        class, class after class. Values clipped to [0, 1].
    """
    x = data.test_images[:NUM_IMAGES]
    device = x.device
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(IMAGE_SEED)
        recon = model.reconstruct(x, None if data.test_y is None else data.test_y[:NUM_IMAGES])
        per_class = max(1, NUM_IMAGES // max(1, model.num_classes))
        labels = range(model.num_classes) or [None]  # one block per class; one block of p(z) draws
        samples = torch.cat([model.sample(per_class, k) for k in labels])
    model.train(was_training)
    return torch.cat([x, recon]).clamp(0, 1).cpu(), samples.clamp(0, 1).cpu()


def open_log(run, start_epoch: int = 0) -> RunLog | None:
    """The :class:`RunLog` of a run whose config asks for one (``train.tensorboard``), else None."""
    return RunLog(run.out_dir, start_epoch) if run.config.train.tensorboard else None
