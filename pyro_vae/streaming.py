"""Training images larger than memory: an image folder whose training set exceeds the memory budget
(``--max-data-memory``, GiB of 8-bit pixels) stays on disk and is decoded per batch.

:class:`DiskImages` stands where a uint8 ``(N, D)`` tensor stands in :class:`~pyro_vae.data.ImageData`
(``train_store``). An epoch's batches come from a ``torch.utils.data.DataLoader`` with worker
processes (:data:`WORKERS`) and pinned memory on CUDA, fed the batches of indices that the
in-memory path draws (one ``randperm`` from the global generator, see :func:`pyro_vae.data.batches`);
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

from .config import DataConfig
from .sources import GREY_MODES, DataError, folder_files, pil_to_array, read_image_files, split_rows

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
        x = torch.from_numpy(np.ascontiguousarray(a).reshape(-1))
        if self.static:
            g = torch.Generator().manual_seed(STATIC_SEED + i)
            x = torch.bernoulli(x.to(torch.float32) / 255.0, generator=g).to(torch.uint8).mul_(255)
        return x, None


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
    :func:`~pyro_vae.sources.read_image_files` would stack them.

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
    """An image folder as :class:`~pyro_vae.data.ImageData` with its training set on disk, when its
    training images take more than ``data.max_data_memory`` GiB as uint8; None when they fit (read
    them with :func:`~pyro_vae.sources.read_folder`).

    :raises DataError: naming the folder or file at fault.
    """
    from .data import BINARIZE_SEED, ImageData, _binarize, check_labels

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
    test = torch.from_numpy(x_test.reshape(len(x_test), -1))
    if data.pixels in ("static", "dynamic"):
        test = _binarize(test, BINARIZE_SEED + 1)
    ytr = yte = None
    num_classes = None
    if files.labels is not None:
        ytr, yte = (torch.as_tensor(files.labels[rows], dtype=torch.int64) for rows in (files.train, files.test))
        num_classes = len(files.classes)
        check_labels(ytr, num_classes, n=len(ytr), name="train_y")
        check_labels(yte, num_classes, n=len(yte), name="test_y")
    classes = files.classes if files.labels is not None else None
    return ImageData(
        data.dataset, DiskImages(train_files), ytr, test, yte, shape, data.pixels, num_classes, classes, data.data_dir
    )
