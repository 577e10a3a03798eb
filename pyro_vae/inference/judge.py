"""The judge: a small CNN classifier that reads a conditional model's samples.

Label fidelity (:func:`pyro_vae.inference.labels.label_fidelity`) asks an independent classifier which
class each class-conditional sample shows. The judge is trained on a run's training images with
all their labels (also for ``ssvae``, whose own q(y|x) saw only a few), and is cached per dataset,
data folder, pixel treatment and image shape, so every run on the same data is read by the same
judge. Its own test accuracy is reported next to the fidelity: a fidelity can be no better read
than the judge reads real images.

What the judge reads are means of p(x|z, y): averages over the images a model finds plausible, blurred
where those images differ (a sandal's straps). A CNN trained on real images alone reads such averages
badly: the mean of 32 real test sandals of Fashion-MNIST is no sandal to it. So half of every training
batch is class means, each the average of 2 to 32 training images of one class
(:func:`class_means`), and :func:`class_mean_accuracy` measures how the judge reads them on the test set.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_vae.atomic import atomic_write
from pyro_vae.errors import UsageError

JUDGE_VERSION = 3  # bump when the network or its training changes: old cache entries are ignored
JUDGE_STEPS = 8000  # at most, Adam steps of 128 images: 17 epochs of 60,000 (Fashion-MNIST's 1,500 were 85%)
JUDGE_EPOCHS = 48  # for fewer images: as many steps as 48 epochs take, at least MIN_JUDGE_STEPS
MIN_JUDGE_STEPS = 200
JUDGE_SEED = 0
MEAN_SIZES = (2, 4, 8, 16, 32)  # images per class mean in the judge's training batches


def cache_root() -> Path:
    """``$PYRO_VAE_CACHE/judges`` (default ``~/.cache/pyro_vae/judges``)."""
    return Path(os.environ.get("PYRO_VAE_CACHE", Path.home() / ".cache" / "pyro_vae")) / "judges"


class JudgeNet(nn.Module):
    """Two 5×5 stride-2 convolutions, then two linear layers: flat images ``(..., C·H·W)`` ↦ logits
    ``(..., num_classes)``. Any H, W (adaptive pooling to 7×7); about 0.7 M multiply-adds per
    28×28 image, so 1,500 steps (MNIST-5k) take about a minute on one CPU core and 8,000 (a 60,000-image
    set) about five."""

    def __init__(self, image_shape: Sequence[int], num_classes: int = 10):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c = self.image_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 5, stride=2, padding=2),  # (n, 16, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(16, 32, 5, stride=2, padding=2),  # (n, 32, H/4, W/4)
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(7),  # (n, 32, 7, 7)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 49, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        h = self.features(x.reshape(-1, *self.image_shape))  # (n, 32, 7, 7)
        return self.head(h).reshape(*lead, -1)  # (..., num_classes)


class Judge(nn.Module):
    """A trained classifier and its test accuracy.

    :param nn.Module net: flat images ``(N, D)`` ↦ logits ``(N, num_classes)``.
    :param float accuracy: its accuracy on the test images (``nan`` if unknown).
    """

    def __init__(self, net: nn.Module, accuracy: float = math.nan):
        super().__init__()
        self.net = net.eval()
        self.accuracy = accuracy

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """argmax of the logits: ``(N, D)`` ↦ ``(N,)`` int64."""
        dev = next(self.net.parameters(), torch.empty(0)).device
        return torch.cat([self.net(b.to(dev)).argmax(-1).to(x.device) for b in x.split(batch_size)])


def _shift(x: Tensor, image_shape: Sequence[int], g: torch.Generator, max_shift: int = 2) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding): light augmentation."""
    c, h, w = image_shape
    imgs = F.pad(x.reshape(-1, c, h, w), (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=g).tolist()
    return imgs[:, :, dy : dy + h, dx : dx + w].reshape(len(x), -1)


def class_rows(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The rows of each class, for :func:`class_means`: ``(order, starts, counts)`` on the CPU, where
    ``order[starts[k] : starts[k] + counts[k]]`` are the rows of ``y`` (``(N,)`` int64) labelled k."""
    y = y.cpu()
    counts = torch.bincount(y)
    return y.argsort(), counts.cumsum(0) - counts, counts


def class_means(x: Tensor, rows: tuple[Tensor, Tensor, Tensor], labels: Tensor, sizes: Tensor, g) -> Tensor:
    """One average of same-class images per entry of ``labels``.

    :param Tensor x: ``(N, D)`` flat images.
    :param rows: :func:`class_rows` of their labels.
    :param Tensor labels: ``(B,)`` the class of each mean (each must occur among the labels).
    :param Tensor sizes: ``(B,)`` how many images (drawn with replacement) each mean averages.
    :param torch.Generator g: the CPU generator of the draws.
    :returns: ``(B, D)`` the means.
    """
    order, starts, counts = rows
    labels, sizes = labels.cpu(), sizes.cpu()
    m = int(sizes.max())
    u = torch.rand(len(labels), m, generator=g)  # (B, m)
    picked = order[starts[labels, None] + (u * counts[labels, None]).long()]  # (B, m) rows of each class
    weights = (torch.arange(m) < sizes[:, None]).to(x.dtype) / sizes[:, None]  # (B, m): 1/size on the first size
    return torch.einsum("bm,bmd->bd", weights.to(x.device), x[picked.to(x.device)])


def class_mean_accuracy(judge: Judge, x: Tensor, y: Tensor, size: int, per_class: int = 400, seed: int = 0) -> Tensor:
    """How often the judge reads the mean of ``size`` random images of class k as k.

    :param Tensor x: ``(N, D)`` flat images (the test set); ``y`` ``(N,)`` labels.
    :returns: ``(num_classes,)`` the accuracy per class, ``per_class`` means each.
    """
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y.cpu())
    labels = classes.repeat_interleave(per_class)  # (classes·per_class,)
    means = class_means(x, class_rows(y), labels, torch.full_like(labels, size), g)
    right = (judge.predict(means) == labels.to(x.device)).float().cpu()
    return torch.zeros(int(classes.max()) + 1).index_add_(0, classes, right.view(-1, per_class).mean(1))


def train_judge(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    image_shape: Sequence[int],
    num_classes: int = 10,
    *,
    steps: int = JUDGE_STEPS,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = JUDGE_SEED,
    max_shift: int = 2,
    mean_share: float = 0.5,
) -> Judge:
    """Train a :class:`JudgeNet` with Adam on all of the training labels, with random shifts of up to
    ``max_shift`` pixels, and measure it on the test images. The global RNGs are left untouched.

    A share ``mean_share`` of every batch is class means (:func:`class_means`) of a size drawn from
    :data:`MEAN_SIZES`, labelled with their class: the judge learns that a blurred average of
    sandals is a sandal, as a model's sample means are.

    :param Tensor train_x: ``(N, D)`` flat images; ``train_y`` ``(N,)`` int64 labels.
    :returns: the :class:`Judge`, in eval mode, on ``train_x``'s device.
    """
    if len(image_shape) != 3:
        raise UsageError(f"the judge needs images (C, H, W), got image_shape {tuple(image_shape)}")
    if not 0 <= mean_share <= 1:
        raise UsageError(f"mean_share must be between 0 and 1, got {mean_share!r}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = JudgeNet(image_shape, num_classes).to(train_x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    labels = train_y.cpu()  # the means' classes are read here, so that no step waits for the device
    by_class, mean_sizes = class_rows(labels), torch.tensor(MEAN_SIZES)
    net.train()
    for _ in range(steps):
        picks = torch.randint(len(train_x), (min(batch_size, len(train_x)),), generator=g)  # CPU
        rows = picks.to(train_x.device)
        x, y = train_x[rows], train_y[rows]  # (b, D), (b,)
        n_means = int(mean_share * len(rows))
        if n_means:
            sizes = mean_sizes[torch.randint(len(mean_sizes), (n_means,), generator=g)]
            x = torch.cat([x[n_means:], class_means(train_x, by_class, labels[picks[:n_means]], sizes, g)])
            y = torch.cat([y[n_means:], y[:n_means]])
        loss = F.cross_entropy(net(_shift(x, image_shape, g, max_shift)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    judge = Judge(net)
    judge.accuracy = (judge.predict(test_x) == test_y).float().mean().item()
    return judge


def judge_steps(n_train: int, batch_size: int = 128) -> int:
    """Adam steps of the judge for ``n_train`` training images: 48 epochs, between 200 and 8,000 steps
    (MNIST-5k: 1,500)."""
    return max(MIN_JUDGE_STEPS, min(JUDGE_STEPS, math.ceil(JUDGE_EPOCHS * n_train / batch_size)))


def judge_key(
    dataset: str, data_dir: str | None, pixels: str, image_shape: Sequence[int], sizes: Sequence[int] = ()
) -> str:
    """The cache file's name: the dataset, the absolute data folder, the pixels, the image shape and
    the numbers of training and test images (``sizes``), so a subset never reuses the full set's judge."""
    folder = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else ""
    text = f"v{JUDGE_VERSION}|{dataset}|{folder}|{pixels}|{'x'.join(map(str, image_shape))}"
    text += "".join(f"|{n}" for n in sizes)
    return f"{dataset}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def load_or_train_judge(data, data_dir: str | None = None, cache_dir: str | Path | None = None, **kwargs) -> Judge:
    """The judge of a dataset, from the cache if there, else trained and saved atomically.

    :param data: a :class:`pyro_vae.data.images.ImageData` (its training images and labels, test set,
        name, pixels and image shape).
    :param str data_dir: the data folder the data came from (part of the cache key).
    :param cache_dir: default :func:`cache_root`.
    :param kwargs: passed to :func:`train_judge` (``steps``, ...); ``steps`` defaults to
        :func:`judge_steps` of the number of training images.
    """
    sizes = (len(data.train_y), len(data.test_y))
    key = judge_key(data.name, data_dir, data.pixels, data.image_shape, sizes)
    path = Path(cache_dir or cache_root()) / f"{key}.pt"
    net = JudgeNet(data.image_shape, data.num_classes)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["net"])
            return Judge(net.to(data.train_x.device), float(state["accuracy"]))
        except Exception:  # noqa: BLE001  (any unreadable entry: torch.load raises many types)
            pass  # an unreadable entry is retrained and overwritten
    kwargs.setdefault("steps", judge_steps(len(data.train_y)))
    judge = train_judge(
        data.train_x, data.train_y, data.test_x, data.test_y, data.image_shape, data.num_classes, **kwargs
    )
    state = {
        "net": {k: v.cpu() for k, v in judge.net.state_dict().items()},
        "accuracy": judge.accuracy,
        "version": JUDGE_VERSION,
    }
    atomic_write(path, lambda f: torch.save(state, f))
    return judge


__all__ = [
    "Judge",
    "JudgeNet",
    "train_judge",
    "class_rows",
    "class_means",
    "class_mean_accuracy",
    "load_or_train_judge",
    "judge_key",
    "judge_steps",
    "cache_root",
]
