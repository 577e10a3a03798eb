"""Data by name, in one entry point: :func:`load_data` reads what a
:class:`~pyro_vae.config.DataConfig` names, a built-in dataset (:data:`pyro_vae.data.builtin.DATASETS`)
or one of the user's own sources in :data:`SOURCES` (an image folder, a NumPy file,
``torchvision:NAME``; read by :mod:`pyro_vae.data.sources`, streamed from disk by
:mod:`pyro_vae.data.streaming` when larger than ``max_data_memory``).

:func:`check_data_config` checks a config before anything is read, so that a bad option fails
before a run folder is made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pyro_vae.config import DataConfig
from pyro_vae.data.builtin import DATASETS, IDX_FILES, load_idx_folder
from pyro_vae.data.images import PIXELS, ImageData
from pyro_vae.data.sources import (
    CHANNELS,
    LAYOUTS,
    TORCHVISION_PREFIX,
    Source,
    open_torchvision,
    read_array,
    read_folder,
    read_torchvision,
)
from pyro_vae.errors import DataError, RegistryError

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
    raise RegistryError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_FORMS)}")


def check_data_config(data: DataConfig) -> str:
    """Check a :class:`~pyro_vae.config.DataConfig` before anything is read (e.g. in ``fit``, so a
    bad option fails before a run folder is made).

    :returns: the dataset's key (see :func:`check_dataset_name`).
    :raises ValueError: one line naming the field, the value received and what is expected.
    """
    kind = check_dataset_name(data.dataset)
    if data.pixels not in PIXELS:
        raise RegistryError(f"unknown pixels {data.pixels!r}; choose one of {', '.join(PIXELS)}")
    for option in ("image_size", "channels", "layout"):
        if getattr(data, option) is not None and option not in SOURCE_OPTIONS.get(kind, ()):
            readers = " and ".join(
                k.rstrip(":") if not k.endswith(":") else k + "NAME" for k, v in SOURCE_OPTIONS.items() if option in v
            )
            raise DataError(f"{option} applies to --dataset {readers}, not {data.dataset}")
    size = data.image_size
    if size is not None and (
        isinstance(size, (str, bytes))
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)
    ):
        raise DataError(f"image_size must be two positive integers H W, got {size!r}")
    if data.channels not in (None, *CHANNELS):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {data.channels!r}")
    if data.layout not in (None, *LAYOUTS):
        raise RegistryError(f"unknown layout {data.layout!r}; choose one of {', '.join(LAYOUTS)}")
    if isinstance(data.test_fraction, bool) or not isinstance(data.test_fraction, (int, float)):
        raise DataError(f"test_fraction must be a number strictly between 0 and 1, got {data.test_fraction!r}")
    if not 0 < data.test_fraction < 1:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {data.test_fraction!r}")
    return kind


def load_data(data: DataConfig, device: torch.device | str = "cpu") -> ImageData:
    """The images ``data`` names, as whole tensors on ``device``: the one loader ``fit`` calls.

    - a name in :data:`DATASETS` (``mnist-5k``, ``mnist``, ``fashion-mnist``, ``svhn``): see
      :func:`load_dataset`;
    - ``folder``: the image folder ``data.data_dir`` (:func:`pyro_vae.data.sources.read_folder`); when its
      training images take more than ``data.max_data_memory`` GiB, they stay on disk and stream
      (:func:`pyro_vae.data.streaming.stream_folder`);
    - ``array``: the ``.npz`` or ``.npy`` file ``data.data_dir`` (:func:`pyro_vae.data.sources.read_array`);
      a ``.npy`` above the budget is memory-mapped and streams (:func:`pyro_vae.data.streaming.stream_array`);
    - ``torchvision:NAME``: ``torchvision.datasets.NAME`` (:func:`pyro_vae.data.sources.read_torchvision`);
      above the budget its training items stream (:func:`pyro_vae.data.streaming.stream_torchvision`).

    :raises ValueError: for a bad option (see :func:`check_data_config`).
    :raises DataError: naming the file or folder at fault.
    """
    kind = check_data_config(data)
    if kind in DATASETS:
        return load_dataset(data.dataset, data.data_dir, data.pixels, device)
    if data.image_size is not None:
        data = dataclasses.replace(data, image_size=tuple(data.image_size))  # a list when read from JSON
    if kind == "folder":
        from pyro_vae.data.streaming import stream_folder

        streamed = stream_folder(data)  # None when the training images fit in data.max_data_memory
        if streamed is not None:
            return streamed.to(device)
    if kind == "array":
        from pyro_vae.data.streaming import stream_array

        streamed = stream_array(data)  # None when the training images fit (or come from an .npz that does)
        if streamed is not None:
            return streamed.to(device)
    if kind == TORCHVISION_PREFIX:
        from pyro_vae.data.streaming import stream_torchvision

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
        raise RegistryError(f"unknown pixels {pixels!r}; choose one of {', '.join(PIXELS)}")
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
