"""Training images larger than memory: when a source's training set exceeds the memory budget
(``--max-data-memory``, GiB of 8-bit pixels), it stays on disk and is read per batch.

- ``folder``: the image files, decoded per batch (:class:`ImageFiles`, :func:`stream_folder`);
- ``torchvision:NAME``: the dataset's items, converted per batch as in memory
  (:class:`DatasetImages`, :func:`stream_torchvision`; labels read up front, :func:`dataset_labels`);
- ``array``: a single ``.npy`` of 8-bit images, memory-mapped and read by rows (:class:`ArrayRows`,
  :func:`stream_array`). An ``.npz`` cannot be memory-mapped, and float pixels do not stream:
  above the budget both are a one-line error that says what to do.

:class:`DiskImages` stands where a uint8 ``(N, D)`` tensor stands in :class:`~pyro_vae.data.images.ImageData`
(``train_store``). An epoch's batches come from a ``torch.utils.data.DataLoader`` with worker
processes (:data:`WORKERS`) and pinned memory on CUDA, fed the batches of indices that the
in-memory path draws (one ``randperm`` from the global generator, see :func:`pyro_vae.data.images.batches`);
the loader's own generator is seeded and apart, so it draws nothing from the training's random
streams. So, with ``continuous`` pixels, a streamed run trains on the same batches, in the same
order, with the same floats as an in-memory run, and resumes exactly as one. ``dynamic`` pixels are
drawn per batch (from the global generator) and ``static`` ones per image (with a seed per image),
not as the in-memory path draws them.

The test set is read into memory (uint8) and evaluated in chunks; it must fit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pyro_vae.config import DataConfig
from pyro_vae.data.sources import (
    GREY_MODES,
    TorchvisionSets,
    _label,
    check_pixels,
    class_names,
    folder_files,
    image_and_target,
    layout_of,
    pil_to_array,
    read_dataset,
    read_image_files,
    split_rows,
    to_image_array,
    to_nchw,
)
from pyro_vae.errors import DataError

WORKERS = min(4, max(1, (os.cpu_count() or 2) - 1))  # decoding processes of a streamed epoch
PREFETCH = 4  # batches each worker decodes ahead
GIB = 2**30
STATIC_SEED = 0  # static binarization of a streamed image i: torch.Generator seeded STATIC_SEED + i


class ImageFiles(torch.utils.data.Dataset):
    """Image files decoded one at a time: item ``i`` is ``(pixels, None)``, pixels ``(D,)`` uint8 in
    ``(C, H, W)`` order, or ``(None, message)`` for a file that cannot be read (so that a worker
    process hands the one-line message back rather than a traceback).

    :param paths: the files.
    :param int channels: 1 (grey) or 3 (RGB).
    :param image_size: ``(H, W)`` to resize to, or None (every file has ``shape``'s size).
    :param shape: ``(C, H, W)``.
    :param bool static: binarize each image once, with the seed ``STATIC_SEED + i``.
    """

    def __init__(self, paths: Sequence[Path], channels: int, image_size, shape: tuple, static: bool = False):
        self.paths, self.channels, self.image_size, self.shape = list(paths), channels, image_size, tuple(shape)
        self.static = static

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor | None, str | None]:
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as img:
                a = pil_to_array(img, self.channels, self.image_size)
        except Exception as e:  # truncated data (OSError), a file replaced since the scan...
            return None, f"cannot read image {path} ({type(e).__name__}: {str(e).strip()[:200]})"
        if a.shape != self.shape:
            (h, w), (h0, w0) = a.shape[1:], self.shape[1:]
            sizes = f"{path} is {h}×{w} but the other images are {h0}×{w0}"
            return None, f"{sizes}; images of different sizes need --image-size H W"
        return _flat(a, i, self.static), None


def _flat(a: np.ndarray, i: int, static: bool) -> Tensor:
    """A ``(C, H, W)`` uint8 image as ``(D,)``, binarized with the seed ``STATIC_SEED + i`` when ``static``."""
    x = torch.from_numpy(np.ascontiguousarray(a).reshape(-1))
    if static:
        g = torch.Generator().manual_seed(STATIC_SEED + i)
        x = torch.bernoulli(x.to(torch.float32) / 255.0, generator=g).to(torch.uint8).mul_(255)
    return x


class DatasetImages(torch.utils.data.Dataset):
    """The items ``rows`` of a map-style dataset (a torchvision dataset), converted one at a time as
    :func:`~pyro_vae.data.sources.read_dataset` converts them: item ``i`` is ``(pixels, None)``, pixels
    ``(D,)`` uint8 in ``(C, H, W)`` order, or ``(None, message)`` for an item that cannot be read.

    A grey item among colour ones is repeated into RGB, as in memory. ``shape`` is decided by the
    first item, so a colour item among grey ones (without ``channels``), an item of another size
    (without ``image_size``) or a float item is a one-line error here, where the in-memory read
    would have made every image RGB or stopped up front.

    :param dataset: yields ``(image, target)`` pairs or images: Pillow images, or ``(H, W)`` /
        ``(C, H, W)`` 8-bit tensors or arrays.
    :param rows: ``(N,)`` the items read, in order.
    :param channels: 1, 3, or None (as the images are).
    :param image_size: ``(H, W)`` to resize to, or None.
    :param shape: ``(C, H, W)``.
    :param str where: the dataset's name, for messages.
    :param bool static: binarize each image once, with the seed ``STATIC_SEED + i``.
    """

    def __init__(self, dataset, rows, channels, image_size, shape: tuple, where: str, static: bool = False):
        self.dataset, self.rows = dataset, np.asarray(rows, dtype=np.int64)
        self.channels, self.image_size, self.shape, self.where, self.static = channels, image_size, shape, where, static

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Tensor | None, str | None]:
        name = f"{self.where} item {int(self.rows[i])}"
        try:
            a = to_image_array(
                image_and_target(self.dataset[int(self.rows[i])])[0], self.channels, self.image_size, name
            )
        except DataError as e:
            return None, str(e)
        except Exception as e:  # a file of the dataset gone or truncated...
            return None, f"cannot read {name} ({type(e).__name__}: {str(e).strip()[:200]})"
        if a.dtype != np.uint8:
            return None, f"{name} has float pixels, which stream only as 8-bit; raise --max-data-memory"
        if a.shape[0] < self.shape[0]:
            a = np.repeat(a, self.shape[0], axis=0)  # grey among colour: RGB, as stack_images makes it
        if a.shape[0] > self.shape[0]:
            return None, f"{name} has colour but the dataset's first image is grey; pass --channels 3 (or 1)"
        if a.shape[1:] != self.shape[1:]:
            (h, w), (h0, w0) = a.shape[1:], self.shape[1:]
            return (
                None,
                f"{name} is {h}×{w} but the first image is {h0}×{w0}; images of different sizes need --image-size H W",
            )
        return _flat(a, i, self.static), None


class ArrayRows(torch.utils.data.Dataset):
    """The rows ``rows`` of a ``.npy`` of 8-bit images, memory-mapped and read one at a time: item
    ``i`` is ``(pixels, None)``, pixels ``(D,)`` uint8 in ``(C, H, W)`` order.

    Each process maps the file itself (a pickled copy holds the path, not the array), so worker
    processes started by ``spawn`` share the page cache rather than a copy of the data.

    :param path: an ``.npy`` of shape ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``, integers
        in 0..255 (checked beforehand) or booleans.
    :param str layout: ``"nhw"``, ``"nhwc"`` or ``"nchw"`` (:func:`~pyro_vae.data.sources.layout_of`).
    :param shape: ``(C, H, W)``.
    :param bool static: binarize each image once, with the seed ``STATIC_SEED + i``.
    """

    def __init__(self, path: Path, rows, layout: str, shape: tuple, static: bool = False):
        self.path, self.rows, self.layout, self.shape = (
            Path(path),
            np.asarray(rows, dtype=np.int64),
            layout,
            tuple(shape),
        )
        self.static, self._array = static, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._array

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Tensor | None, str | None]:
        row, where = int(self.rows[i]), str(self.path)
        try:
            a = check_pixels(to_nchw(np.array(self.array[row : row + 1]), self.layout, where)[0], where)
        except Exception as e:  # the file shortened or replaced since it was opened...
            return None, f"cannot read {where} row {row} ({type(e).__name__}: {str(e).strip()[:200]})"
        return _flat(a, i, self.static), None


def _collate(items: list[tuple[Tensor | None, str | None]]) -> Tensor | str:
    """A batch ``(B, D)`` uint8, or the first error message."""
    bad = next((m for _, m in items if m is not None), None)
    return bad if bad is not None else torch.stack([x for x, _ in items])


class DiskImages:
    """``(N, D)`` 8-bit images on disk that index like a uint8 tensor on ``device``: ``images[idx]``
    decodes the rows ``idx`` (an index tensor, a slice or an int) in this process.

    :meth:`batches` decodes a whole epoch ahead in worker processes.
    """

    dtype = torch.uint8

    def __init__(self, files: ImageFiles, device: torch.device | str = "cpu", workers: int = WORKERS):
        self.files, self.device, self.workers = files, torch.device(device), workers

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), math.prod(self.files.shape)))

    def nbytes(self) -> int:
        return len(self.files) * math.prod(self.files.shape)

    def to(self, device: torch.device | str) -> DiskImages:
        return DiskImages(self.files, device, self.workers)

    def _rows(self, idx) -> list[int]:
        if isinstance(idx, slice):
            return list(range(len(self)))[idx]
        if isinstance(idx, int):
            return [idx]
        return torch.as_tensor(idx).reshape(-1).tolist()

    def _batch(self, batch: Tensor | str) -> Tensor:
        if isinstance(batch, str):
            raise DataError(batch)
        return batch.to(self.device, non_blocking=True)

    def __getitem__(self, idx) -> Tensor:
        rows = self._rows(idx)
        if not rows:
            return torch.empty((0, self.shape[1]), dtype=torch.uint8, device=self.device)
        out = self._batch(_collate([self.files[i] for i in rows]))
        return out[0] if isinstance(idx, int) else out

    def batches(self, order: Sequence[Tensor]) -> Iterator[Tensor]:
        """The rows of each index tensor of ``order``, ``(len(idx), D)`` uint8 on ``device``, decoded
        by :data:`WORKERS` processes (pinned memory on CUDA)."""
        loader = torch.utils.data.DataLoader(
            self.files,
            batch_sampler=[idx.tolist() for idx in order],
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=PREFETCH if self.workers else None,
            generator=torch.Generator().manual_seed(0),  # the workers' seeds: nothing from the global generator
        )
        for batch in loader:
            yield self._batch(batch)


def scan_shape(paths: Sequence[Path], channels: int | None, image_size: Sequence[int] | None) -> tuple[int, int, int]:
    """``(C, H, W)`` of a folder's images from their headers (no pixel is decoded), as
    :func:`~pyro_vae.data.sources.read_image_files` would stack them.

    :raises DataError: naming a file Pillow cannot open, or one whose size differs without ``image_size``.
    """
    from PIL import Image

    grey, first = True, None
    for p in paths:
        try:
            with Image.open(p) as img:
                mode, (w, h) = img.mode, img.size
        except Exception as e:
            raise DataError(f"cannot read image {p} ({type(e).__name__}: {str(e).strip()[:200]})") from None
        grey = grey and mode in GREY_MODES
        if first is None:
            first = (p, h, w)
        elif image_size is None and (h, w) != first[1:]:
            sizes = f"{p} is {h}×{w} but {first[0]} is {first[1]}×{first[2]}"
            raise DataError(f"{sizes}; images of different sizes need --image-size H W")
    if first is None:
        raise DataError("no images")
    c = channels if channels is not None else 1 if grey else 3
    h, w = tuple(image_size) if image_size is not None else first[1:]
    return c, h, w


def _first_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except Exception:  # read_folder names it
        return None


def stream_folder(data: DataConfig):
    """An image folder as :class:`~pyro_vae.data.images.ImageData` with its training set on disk, when its
    training images take more than ``data.max_data_memory`` GiB as uint8; None when they fit (read
    them with :func:`~pyro_vae.data.sources.read_folder`).

    :raises DataError: naming the folder or file at fault.
    """

    files = folder_files(data.data_dir, image_size=data.image_size, channels=data.channels, split=False)
    n = len(files.paths)
    n_train = len(files.train) or n - max(1, round(data.test_fraction * n))
    size = tuple(data.image_size) if data.image_size is not None else _first_size(files.paths[0])
    budget = data.max_data_memory * GIB
    if size is None or n_train * (data.channels or 3) * size[0] * size[1] <= budget:
        return None  # fits (at most 3 channels of the first image's size), or a file read_folder names
    shape = scan_shape(files.paths, data.channels, data.image_size)
    if n_train * math.prod(shape) <= budget:
        return None
    if not len(files.train):
        train, test = split_rows(n, data.test_fraction, str(data.data_dir))
        files = files._replace(train=train, test=test)
    static = data.pixels == "static"
    train_files = ImageFiles([files.paths[i] for i in files.train], shape[0], data.image_size, shape, static)
    x_test = read_image_files([files.paths[i] for i in files.test], shape[0], data.image_size)
    ytr = yte = None
    if files.labels is not None:
        ytr, yte = files.labels[files.train], files.labels[files.test]
    return _streamed(data, train_files, x_test, ytr, yte, files.classes if ytr is not None else None)


def _streamed(data: DataConfig, train: torch.utils.data.Dataset, x_test: np.ndarray, ytr, yte, classes):
    """:class:`~pyro_vae.data.images.ImageData` with ``train`` (whose items are ``(D,)`` uint8, see
    :class:`ImageFiles`) on disk and ``x_test`` ``(N_test, C, H, W)`` uint8 in memory, treated as
    :meth:`~pyro_vae.data.images.ImageData.from_tensors` treats them."""
    from pyro_vae.data.images import BINARIZE_SEED, ImageData, _binarize, check_labels

    test = torch.from_numpy(np.ascontiguousarray(x_test).reshape(len(x_test), -1))
    if data.pixels in ("static", "dynamic"):
        test = _binarize(test, BINARIZE_SEED + 1)
    num_classes = None
    if ytr is not None:
        ytr, yte = (torch.as_tensor(np.asarray(y), dtype=torch.int64) for y in (ytr, yte))
        num_classes = len(classes) if classes is not None else int(max(ytr.max(), yte.max(), 0)) + 1
        check_labels(ytr, num_classes, n=len(ytr), name="train_y")
        check_labels(yte, num_classes, n=len(yte), name="test_y")
        classes = list(classes) if classes is not None else None
    else:
        yte, classes = None, None
    shape = tuple(train.shape)
    return ImageData(
        data.dataset, DiskImages(train), ytr, test, yte, shape, data.pixels, num_classes, classes, data.data_dir
    )


LABEL_ATTRIBUTES = ("targets", "labels", "_labels")  # where torchvision datasets keep their class indices


def dataset_labels(dataset, first_target) -> np.ndarray | None:
    """``(N,)`` int64 class indices of a dataset's items, or None when its targets are not all class
    indices, as :func:`~pyro_vae.data.sources.read_dataset` would read them.

    Read without decoding an image from the first of :data:`LABEL_ATTRIBUTES` that holds N integers
    agreeing with the first item's target (``targets`` of CIFAR10, MNIST; ``labels`` of SVHN;
    ``_labels`` of Flowers102...); a first target that is no class index (CelebA's attributes)
    means no labels. Otherwise every item is read once (and its image decoded) for its target.
    """
    first = _label(first_target)
    if first is None:
        return None
    n = len(dataset)
    for attr in LABEL_ATTRIBUTES:
        held = getattr(dataset, attr, None)
        try:
            y = np.asarray(held.cpu() if isinstance(held, Tensor) else held)
        except Exception:
            continue
        if y.shape == (n,) and np.issubdtype(y.dtype, np.integer) and int(y[0]) == first and (y >= 0).all():
            return y.astype(np.int64)
    labels = [_label(image_and_target(dataset[i])[1]) for i in range(n)]
    return None if any(k is None for k in labels) else np.array(labels, dtype=np.int64)


def stream_torchvision(data: DataConfig, opened: TorchvisionSets):
    """A ``torchvision:NAME`` dataset (opened by :func:`~pyro_vae.data.sources.open_torchvision`) as
    :class:`~pyro_vae.data.images.ImageData` with its training set read per batch (:class:`DatasetImages`),
    when its training images take more than ``data.max_data_memory`` GiB as uint8 (judged by the
    first image); None when they fit (read them with :func:`~pyro_vae.data.sources.read_torchvision`).

    The test set is read into memory. Labels as :func:`dataset_labels` reads them.

    :raises DataError: for float images above the budget, or a test set unlike the training set.
    """
    name, sets, where = opened.name, opened.sets, opened.where
    n = len(sets[0])
    if n == 0:
        return None  # read_dataset names it
    n_train = n if len(sets) == 2 else n - max(1, round(data.test_fraction * n))
    image, target = image_and_target(sets[0][0])
    first = to_image_array(image, data.channels, data.image_size, f"{where[0]} item 0")
    if n_train * first.size <= data.max_data_memory * GIB:
        return None
    if first.dtype != np.uint8:
        need = n_train * first.size / GIB
        raise DataError(
            f"{where[0]} has float pixels, which stream only as 8-bit; raise --max-data-memory to {need:.3g} or more"
        )
    shape = tuple(first.shape)
    y = dataset_labels(sets[0], target)
    classes = class_names(sets[0])
    if len(sets) == 1:
        train, test = split_rows(n, data.test_fraction, name)
        x_test, _ = read_dataset(
            torch.utils.data.Subset(sets[0], test),
            f"{where[0]} (held out)",
            channels=shape[0],
            image_size=data.image_size,
        )
        ytr, yte = (None, None) if y is None else (y[train], y[test])
    else:
        train = np.arange(n)
        x_test, yte = read_dataset(sets[1], where[1], channels=shape[0], image_size=data.image_size)
        ytr = y
        if not opened.shared_labels or ytr is None or yte is None or class_names(sets[1]) != classes:
            ytr = yte = None
    if x_test.shape[1:] != shape or x_test.dtype != np.uint8:
        raise DataError(f"{name}: test images {x_test.shape[1:]} {x_test.dtype} differ from train images {shape} uint8")
    images = DatasetImages(sets[0], train, data.channels, data.image_size, shape, where[0], data.pixels == "static")
    return _streamed(data, images, x_test, ytr, yte, classes if ytr is not None else None)


CHECK_ROWS = 1 << 24  # pixels whose range is checked at once when a streamed array is not uint8


def _npz_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """The shape of the array ``key`` of an ``.npz``, read from its header; None when it has none."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return tuple(header(f)[0])
    except Exception:  # no such array, not a zip: read_array names it
        return None


def stream_array(data: DataConfig):
    """A single ``.npy`` of 8-bit images as :class:`~pyro_vae.data.images.ImageData` with its training rows
    read per batch from the memory-mapped file (``np.load(mmap_mode="r")``, :class:`ArrayRows`),
    when they take more than ``data.max_data_memory`` GiB as uint8; None when they fit (read the
    file with :func:`~pyro_vae.data.sources.read_array`).

    The test rows (``data.test_fraction``, split as in memory) are read into memory. Integers other
    than uint8 are checked for 0..255 in chunks first.

    :raises DataError: for an ``.npz`` above the budget (it cannot be memory-mapped: save
        ``x_train`` as an ``.npy``), or float pixels above the budget (they stream only as 8-bit).
    """
    if data.data_dir is None or not Path(data.data_dir).is_file():
        return None  # read_array names it
    path, budget = Path(data.data_dir), data.max_data_memory * GIB
    where = str(path)

    def n_train(n: int) -> int:
        return n - max(1, round(data.test_fraction * n))

    if path.suffix.lower() == ".npz":
        shape = _npz_shape(path, "x_train")
        if shape is None or len(shape) < 2:
            return None
        n = shape[0] if _npz_shape(path, "x_test") is not None else n_train(shape[0])
        if n * math.prod(shape[1:]) > budget:
            raise DataError(
                f"{path}: x_train holds {n * math.prod(shape[1:]) / GIB:.3g} GiB of pixels, above --max-data-memory "
                f"{data.max_data_memory:g}, and an .npz is read whole; save x_train as an .npy (np.save) to stream "
                "it from disk, or raise --max-data-memory"
            )
        return None
    if path.suffix.lower() != ".npy":
        return None
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:  # read_array names it
        return None
    if x.ndim not in (3, 4) or n_train(len(x)) * math.prod(x.shape[1:]) <= budget:
        return None
    layout = layout_of(x.shape, data.layout, where)
    if np.issubdtype(x.dtype, np.floating):
        need = n_train(len(x)) * math.prod(x.shape[1:]) / GIB
        raise DataError(
            f"{path} has float pixels, which stream only as 8-bit: save them as uint8 "
            f"(np.round(x * 255).astype(np.uint8)), or raise --max-data-memory to {need:.3g} or more"
        )
    check_pixels(np.asarray(x[:1]), where)  # the dtype
    if x.dtype not in (np.uint8, np.bool_):
        rows = max(1, CHECK_ROWS // math.prod(x.shape[1:]))
        for i in range(0, len(x), rows):
            check_pixels(np.asarray(x[i : i + rows]), where)
    train, test = split_rows(len(x), data.test_fraction, where)
    x_test = check_pixels(to_nchw(np.asarray(x[test]), layout, where), where)
    shape = tuple(x_test.shape[1:])
    return _streamed(data, ArrayRows(path, train, layout, shape, data.pixels == "static"), x_test, None, None, None)
