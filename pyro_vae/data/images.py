"""Images as the models take them: :class:`ImageData`, train and test images held as one tensor each
on the training device, their checks, batches and binarization.

:func:`pyro_vae.data.load.load_data` builds one from a config; :meth:`ImageData.from_tensors` and
:meth:`ImageData.from_dataset` take images already in Python.

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
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pyro_vae.data.sources import Source, class_names, labels_array, read_dataset, split_train_test
from pyro_vae.errors import DataError, ImageError, RegistryError

#: The ``--pixels`` treatments: grey values in [0, 1], binarized anew every epoch, or binarized once.
PIXELS = ("continuous", "dynamic", "static")
BINARIZE_SEED = 0  # the fixed seed of static binarization (and of the dynamic test set)


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
        raise DataError(f"{name} must be a tensor or a NumPy array, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    shape = tuple(int(s) for s in image_shape) if image_shape is not None else tuple(x.shape[1:])
    if len(shape) == 2:
        shape = (1, *shape)
    if x.ndim not in (2, 4) or len(shape) != 3 or (x.ndim == 2 and image_shape is None):
        raise DataError(
            f"{name} must be (N, C, H, W), (N, H, W), or (N, D) with image_shape=(C, H, W), got shape {tuple(x.shape)}"
        )
    if math.prod(shape) != math.prod(x.shape[1:]):
        raise DataError(
            f"{name} has {math.prod(x.shape[1:])} pixels per image but image_shape {shape} needs {math.prod(shape)}"
        )
    if len(x) == 0 or math.prod(shape) == 0:
        raise DataError(
            f"{name} holds no images (shape {tuple(x.shape)}); give at least one image of one pixel or more"
        )
    x = x.reshape(len(x), -1)
    if x.dtype == torch.uint8:
        return x, shape
    if not x.is_floating_point():
        raise DataError(f"{name} must be uint8 (0..255) or floating point ([0, 1]), got {x.dtype}")
    return x.to(torch.float32), shape


MAX_CLASSES = 2**16  # the most classes that labels may imply (a label of 2e14 is no class index)
BINARIZE_CHUNK = 1 << 22  # pixels binarized at once from 8-bit storage (16 MiB of float32 probabilities)


class ByteImages:
    """``(N, D)`` 8-bit images that index like a float tensor: ``images[idx]`` is ``bytes[idx] / 255``,
    float32 in [0, 1], for any index a tensor takes (slices, index tensors).

    So :func:`batches` and :func:`~pyro_vae.models.ssvae.semi_supervised_batches` hand out float batches
    while the whole set stays uint8 on the device: 4× less memory than float32. ``data`` may also be
    a :class:`~pyro_vae.data.streaming.DiskImages` (images on disk), and ``binarize=True`` draws each
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
        """Whether the training images stay on disk (:mod:`pyro_vae.data.streaming`), read per batch."""
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
            raise RegistryError(f"unknown pixels {pixels!r}; choose one of {', '.join(PIXELS)}")
        tr, shape = _flat_pixels(train_x, image_shape, "train_x")
        te, _ = _flat_pixels(test_x, shape, "test_x")
        if (train_y is None) != (test_y is None):
            raise DataError("train_y and test_y go together: give labels for both sets or for neither")
        ytr, yte = _labels_tensor(train_y, "train_y"), _labels_tensor(test_y, "test_y")
        if ytr is not None:
            if num_classes is None:
                num_classes = len(classes) if classes is not None else int(max(ytr.max(), yte.max(), 0)) + 1
            if not 0 < num_classes <= MAX_CLASSES:
                raise DataError(f"num_classes is {num_classes:,}, beyond 1..{MAX_CLASSES:,}; number classes 0, 1, 2...")
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
        """A :class:`~pyro_vae.data.sources.Source` as read by :mod:`pyro_vae.data.sources`; ``kwargs`` go to
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
    if len(x) == 0:
        raise ImageError(f"{name} holds no images (shape {tuple(x.shape)}); pass at least one")
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
        raise DataError(f"{name} must be an integer tensor of class indices, got {got}; convert with y.long()")
    if y.ndim != 1 or (n is not None and len(y) != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise DataError(f"{name} must have shape {want}, one class index per image, got shape {tuple(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{name} must lie in 0..{num_classes - 1} ({num_classes} classes), got values in "
            f"[{y.min().item()}, {y.max().item()}]"
        )


def _binarize(x: Tensor, seed: int) -> Tensor:
    """Bernoulli draws with a fixed seed (on the CPU, whatever ``x``'s device), uint8 0/255 for
    8-bit ``x`` and float 0/1 otherwise; the same draws either way."""
    g = torch.Generator().manual_seed(seed)
    cpu = x.cpu()
    out = _binarize_bytes(cpu, g) if cpu.dtype == torch.uint8 else torch.bernoulli(cpu, generator=g)
    return out.to(x.device)
