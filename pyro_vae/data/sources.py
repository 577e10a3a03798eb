"""Images from the user's own sources: a folder of image files, a NumPy array file, or any torchvision
dataset (or any ``torch.utils.data.Dataset``).

Each reader returns a :class:`Source`: train and test images as ``(N, C, H, W)`` arrays, uint8 in
0..255 when the source is 8-bit or float32 in [0, 1] otherwise, with int64 labels where the source
has class labels. :mod:`pyro_vae.data.load` turns a source into :class:`~pyro_vae.data.images.ImageData`.

Bad input raises :class:`~pyro_vae.errors.DataError`, one line naming the file
or the dataset item.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from pyro_vae.errors import DataError, RegistryError

SPLIT_SEED = 0  # the fixed seed of the train/test split of a source that has none (test_fraction)
LAYOUTS = ("nhwc", "nchw")
CHANNELS = (1, 3)
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})  # Pillow modes
TORCHVISION_PREFIX = "torchvision:"


class Source(NamedTuple):
    """Images and labels as read from a source, before the ``pixels`` treatment.

    :ivar np.ndarray train_x: ``(N_train, C, H, W)``, uint8 in 0..255 or float32 in [0, 1].
    :ivar train_y: ``(N_train,)`` int64 class indices, or None when the source has no labels.
    :ivar np.ndarray test_x: ``(N_test, C, H, W)``, the same dtype as ``train_x``.
    :ivar test_y: ``(N_test,)`` int64, or None.
    :ivar classes: the class names (index ``k`` names label ``k``), when the source names them.
    """

    train_x: np.ndarray
    train_y: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray | None
    classes: list[str] | None = None


def cache_dir() -> str:
    """Where datasets are downloaded without ``--data-dir``: ``$PYRO_VAE_DATA`` or ``~/.cache/pyro_vae``."""
    return os.environ.get("PYRO_VAE_DATA", str(Path.home() / ".cache" / "pyro_vae"))


def split_rows(n: int, test_fraction: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The train and test rows (each sorted) of ``n`` images: ``round(test_fraction * n)`` (at least
    one) held out, chosen by a permutation with :data:`SPLIT_SEED`.

    :raises DataError: when the split would leave the train or the test set empty.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    n_test = max(1, round(test_fraction * n))
    if not 1 <= n_test < n:
        raise DataError(
            f"{where}: {n} images with test_fraction {test_fraction:g} leave an empty train or test set; "
            "add images or change --test-fraction"
        )
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def split_train_test(
    x: np.ndarray, y: np.ndarray | None, test_fraction: float, where: str, classes: list[str] | None = None
) -> Source:
    """Hold out ``round(test_fraction * N)`` images (at least one), chosen by :func:`split_rows`.

    :raises DataError: when the split would leave the train or the test set empty.
    """
    train, test = split_rows(len(x), test_fraction, where)
    pick = (lambda a, i: None) if y is None else (lambda a, i: a[i])
    return Source(x[train], pick(y, train), x[test], pick(y, test), classes)


# ----------------------------------------------------------------------------- pixels and layouts
def check_pixels(x: np.ndarray, where: str) -> np.ndarray:
    """8-bit images as uint8, others as float32, after checking their values.

    :param np.ndarray x: integers (or booleans) in 0..255, or floats in [0, 1].
    :raises DataError: for NaN or infinite values, values out of range, or a non-numeric dtype.
    """
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(
                f"{where} has values in [{x.min()}, {x.max()}]; expected integers in 0..255 or floats in [0, 1]"
            )
        return x.astype(np.uint8, copy=False)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where} has dtype {x.dtype}; expected uint8 in 0..255 or floats in [0, 1]")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise DataError(f"{where} holds {bad} NaN or infinite values")
    if x.size and (x.min() < 0 or x.max() > 1):
        hint = "; divide 8-bit values by 255 or store them as uint8" if x.max() <= 255 and x.min() >= 0 else ""
        raise DataError(f"{where} has values in [{x.min():g}, {x.max():g}]; expected floats in [0, 1]{hint}")
    return x.astype(np.float32, copy=False)


def layout_of(shape: Sequence[int], layout: str | None, where: str) -> str:
    """The layout of images of array shape ``shape``: ``"nhw"``, ``"nhwc"`` or ``"nchw"``.

    A 4-D shape is read as NHWC when only its last axis could hold 1 or 3 channels, as NCHW when only
    its second could; ``layout`` decides the other cases.

    :raises DataError: for another number of axes, or a 4-D shape without ``layout`` where both or
        neither of the two readings fit.
    """
    if layout not in (None, "nhw", *LAYOUTS):  # "nhw": as this function reads 3-D shapes
        raise RegistryError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    shape = tuple(shape)
    if len(shape) == 3:
        return "nhw"
    if len(shape) != 4:
        raise DataError(f"{where} has shape {shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if layout is None:
        nhwc, nchw = shape[3] in CHANNELS, shape[1] in CHANNELS
        if nhwc == nchw:
            raise DataError(
                f"{where} has shape {shape}, which does not tell where the channels are; "
                "pass --layout nhwc or --layout nchw"
            )
        layout = "nhwc" if nhwc else "nchw"
    return layout


def to_nchw(x: np.ndarray, layout: str | None, where: str) -> np.ndarray:
    """``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` as ``(N, C, H, W)`` (see :func:`layout_of`).

    :raises DataError: for a shape whose layout cannot be decided.
    """
    layout = layout_of(x.shape, layout, where)
    if layout == "nhw":
        return x[:, None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "nhwc" else x


def labels_array(y: Any, n: int, where: str) -> np.ndarray:
    """Class labels as ``(n,)`` int64.

    :raises DataError: for a shape other than ``(n,)`` or values that are not whole numbers ≥ 0.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise DataError(f"{where} has shape {y.shape}; expected ({n},), one class index per image")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{where} has dtype {y.dtype}; expected integer class indices 0, 1, 2, ...")
    if n and (not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or y.min() < 0):
        bad = y[~np.isfinite(y) | (y != np.round(y)) | (y < 0)][0].item()
        raise DataError(f"{where} must hold class indices 0, 1, 2, ..., got {bad!r}")
    return y.astype(np.int64)


# ----------------------------------------------------------------------------- Pillow images
@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """The file extensions Pillow can open (``.png``, ``.jpg``, ``.bmp``, ``.tif``, ``.webp``, ...)."""
    from PIL import Image

    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def pil_to_array(img, channels: int | None, image_size: Sequence[int] | None) -> np.ndarray:
    """A Pillow image as a ``(C, H, W)`` uint8 array, in grey (C = 1) or RGB (C = 3), resized to
    ``image_size = (H, W)`` (bilinear) when given; ``channels=None`` keeps grey images grey."""
    from PIL import Image

    grey = channels == 1 or (channels is None and img.mode in GREY_MODES)
    if img.mode.startswith("I"):  # 16-bit grey: scale by 255/65535 (Pillow's convert would clip at 255)
        img = Image.fromarray(np.clip(np.round(np.asarray(img, dtype=np.float64) / 257), 0, 255).astype(np.uint8))
    img = img.convert("L" if grey else "RGB")
    if image_size is not None and img.size != (image_size[1], image_size[0]):
        img = img.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
    a = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on Pillow's read-only view
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _tensor_image(x: Any, where: str) -> np.ndarray:
    """A tensor or array image ``(H, W)`` or ``(C, H, W)`` as ``(C, H, W)`` (values checked later)."""
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if a.ndim == 2:
        return a[None]
    if a.ndim != 3 or a.shape[0] not in CHANNELS:
        raise DataError(f"{where} is an array of shape {a.shape}; expected (H, W) or (C, H, W) with C = 1 or 3")
    return a


def _adjust(a: np.ndarray, channels: int | None, image_size: Sequence[int] | None) -> np.ndarray:
    """Resize (bilinear, antialiased) and set the channels of a ``(C, H, W)`` array image."""
    if (channels in (None, a.shape[0])) and (image_size is None or tuple(a.shape[1:]) == tuple(image_size)):
        return a
    t = torch.as_tensor(a.astype(np.float32))
    if channels == 1 and t.shape[0] == 3:
        t = (t * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)  # ITU-R 601 luma
    elif channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if image_size is not None and tuple(t.shape[1:]) != tuple(image_size):
        t = torch.nn.functional.interpolate(t[None], size=tuple(image_size), mode="bilinear", antialias=True)[0]
    out = t.numpy()
    return np.clip(np.round(out), 0, 255).astype(np.uint8) if a.dtype == np.uint8 else out.clip(0, 1)


def to_image_array(img: Any, channels: int | None, image_size: Sequence[int] | None, where: str) -> np.ndarray:
    """A Pillow image, tensor or array image as ``(C, H, W)``: uint8, or float32 in [0, 1]."""
    from PIL import Image

    if isinstance(img, Image.Image):
        return pil_to_array(img, channels, image_size)
    return _adjust(check_pixels(_tensor_image(img, where), where), channels, image_size)


def stack_images(items: Iterable[tuple[np.ndarray, str]]) -> np.ndarray:
    """``(C, H, W)`` images, each with its name for errors (its file, or the dataset item), as one
    ``(N, C, H, W)`` array; grey images become RGB (repeated) when any image has colour.

    :raises DataError: for an empty sequence, or images of mixed sizes or of 8-bit and float mixed.
    """
    arrays, first = [], None
    for a, name in items:
        if first is None:
            first = (a, name)
        elif a.shape[1:] != first[0].shape[1:] or a.dtype != first[0].dtype:
            (h0, w0), (h, w) = first[0].shape[1:], a.shape[1:]
            if a.dtype != first[0].dtype:
                raise DataError(f"{name} is {a.dtype} but {first[1]} is {first[0].dtype}; use all 8-bit or all float")
            raise DataError(
                f"{name} is {h}×{w} but {first[1]} is {h0}×{w0}; images of different sizes need --image-size H W"
            )
        arrays.append(a)
    if not arrays:
        raise DataError("no images")
    c = max(a.shape[0] for a in arrays)
    return np.stack([np.repeat(a, c, axis=0) if a.shape[0] < c else a for a in arrays])


# ----------------------------------------------------------------------------- folders of image files
def _is_image(path: str | Path) -> bool:
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in image_extensions()


def _visible_dirs(folder: Path) -> list[Path]:  # not hidden, and not links (never followed)
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0] not in "._")


def _check_distinct(paths: Sequence[Path], folder: Path) -> None:
    """:raises DataError: when two paths (links to one file) are the same image file."""
    seen: dict[str, Path] = {}
    for p in paths:
        if seen.setdefault(real := os.path.realpath(p), p) != p:
            raise DataError(f"{folder} holds the image file {real} twice ({seen[real]} and {p}); remove the link")


def scan_folder(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    """The image files of a folder: one subfolder per class (in the order of torchvision's
    ``ImageFolder``, without following links to folders) or images directly in the folder (no labels).

    :returns: the paths (sorted), their labels (or None) and the class names (or None).
    :raises DataError: for a folder without images, a class folder without images, a folder
        with images both directly and in subfolders, or one image file found twice (through links).
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))
    dirs = _visible_dirs(folder)
    if files and dirs:
        raise DataError(
            f"{folder} holds images both directly ({files[0].name}) and in subfolders ({dirs[0].name}/); "
            "use one subfolder per class, or put every image in the folder itself"
        )
    if files:
        _check_distinct(files, folder)
        return files, None, None
    if not dirs:
        raise DataError(f"{folder} holds no images (files Pillow reads: .png, .jpg, .bmp, .tif, .webp, ...)")
    empty = [d.name for d in dirs if not any(_is_image(p) for _, _, fs in os.walk(d) for p in fs)]
    if empty:
        raise DataError(f"{folder / empty[0]} holds no images; every class folder needs at least one")

    # ImageFolder's order, without hidden folders (.ipynb_checkpoints) as classes nor links followed
    found = [(Path(r, f), k) for k, d in enumerate(dirs) for r, _, fs in sorted(os.walk(d)) for f in sorted(fs)]
    found = [(p, k) for p, k in found if _is_image(p)]
    _check_distinct([p for p, _ in found], folder)
    return [p for p, _ in found], np.array([k for _, k in found], dtype=np.int64), [d.name for d in dirs]


def read_image_files(paths: Sequence[Path], channels: int | None, image_size: Sequence[int] | None) -> np.ndarray:
    """Decode image files, one at a time, into one ``(N, C, H, W)`` uint8 array.

    :param channels: 1 or 3; None: grey (C = 1) if every image is grey, RGB otherwise.
    :param image_size: ``(H, W)`` to resize to; None requires every image to have the same size.
    :raises DataError: naming the first file Pillow cannot read, or one whose size differs.
    """
    from PIL import Image

    def decoded():
        for p in paths:
            try:
                with Image.open(p) as img:
                    a = pil_to_array(img, channels, image_size)
            except Exception as e:  # UnidentifiedImageError, truncated data (OSError), decompression bombs...
                raise DataError(f"cannot read image {p} ({type(e).__name__}: {str(e).strip()[:200]})") from None
            yield a, str(p)

    return stack_images(decoded())


class FolderFiles(NamedTuple):
    """The image files of a folder source, before any is decoded.

    :ivar paths: every file, in reading order; ``labels`` ``(N,)`` int64 or None.
    :ivar np.ndarray train: the rows of ``paths`` in the training set; ``test`` those in the test set.
    :ivar classes: the class names, or None.
    """

    paths: list[Path]
    labels: np.ndarray | None
    train: np.ndarray
    test: np.ndarray
    classes: list[str] | None


def folder_files(
    data_dir: str | None,
    *,
    image_size: Sequence[int] | None = None,
    channels: int | None = None,
    test_fraction: float = 0.1,
    split: bool = True,
) -> FolderFiles:
    """The files of an image folder (:func:`read_folder`) and their train/test split.

    :param bool split: False leaves ``train`` and ``test`` empty for a folder without a ``train/``
        and ``test/`` pair (to split after reading, with :func:`split_rows`).
    :raises DataError: naming the folder at fault.
    """
    if data_dir is None:
        raise DataError("--dataset folder needs --data-dir DIR, a folder of images")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"--data-dir {root} is not a folder")
    if channels not in (None, *CHANNELS):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if image_size is not None and (len(image_size) != 2 or any(not isinstance(s, int) or s < 1 for s in image_size)):
        raise DataError(f"image_size must be two positive integers H W, got {image_size!r}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        (ptr, ytr, ctr), (pte, yte, cte) = scan_folder(root / "train"), scan_folder(root / "test")
        if ctr != cte:
            raise DataError(
                f"{root / 'train'} has classes {ctr or 'none'} but {root / 'test'} has {cte or 'none'}; "
                "both need the same class folders"
            )
        labels = None if ytr is None else np.concatenate([ytr, yte])
        return FolderFiles([*ptr, *pte], labels, np.arange(len(ptr)), np.arange(len(ptr), len(ptr) + len(pte)), ctr)
    paths, y, classes = scan_folder(root)
    if not split:
        return FolderFiles(paths, y, np.arange(0), np.arange(0), classes)
    train, test = split_rows(len(paths), test_fraction, str(root))
    return FolderFiles(paths, y, train, test, classes)


def read_folder(
    data_dir: str | None,
    *,
    image_size: Sequence[int] | None = None,
    channels: int | None = None,
    test_fraction: float = 0.1,
) -> Source:
    """A folder of images: ``train/`` and ``test/`` subfolders, or one folder split by ``test_fraction``.

    Each of them holds one subfolder per class (labels from the folder names, in sorted order, as
    torchvision's ``ImageFolder`` gives them) or images directly (no labels).

    :param image_size: ``(H, W)`` to resize every image to (bilinear).
    :param channels: 1 (grey) or 3 (RGB); None: grey if every image is grey, RGB otherwise.
    :raises DataError: naming the folder or file at fault.
    """
    files = folder_files(data_dir, image_size=image_size, channels=channels, split=False)
    x = read_image_files(files.paths, channels, image_size)  # every file is read before the split is checked
    if len(files.train) + len(files.test) < len(x):
        train, test = split_rows(len(x), test_fraction, str(data_dir))
        files = files._replace(train=train, test=test)
    y = files.labels
    pick = (lambda rows: None) if y is None else (lambda rows: y[rows])
    return Source(x[files.train], pick(files.train), x[files.test], pick(files.test), files.classes)


# ----------------------------------------------------------------------------- NumPy arrays
def read_array(data_dir: str | None, *, layout: str | None = None, test_fraction: float = 0.1) -> Source:
    """A ``.npz`` with ``x_train``, ``x_test`` and optional ``y_train``, ``y_test``, or one ``.npy``
    of images split by ``test_fraction`` (no labels); an ``.npz`` without ``x_test`` is split too.

    Images are uint8 (or integers) in 0..255, or floats in [0, 1], of layout ``(N, H, W)``,
    ``(N, H, W, C)`` or ``(N, C, H, W)`` (see :func:`to_nchw`).

    :raises DataError: naming the file and the array at fault.
    """
    if data_dir is None:
        raise DataError("--dataset array needs --data-dir FILE, an .npz or .npy file")
    path = Path(data_dir)
    if not path.is_file():
        raise DataError(f"--data-dir {path} is not a file; --dataset array reads an .npz or .npy file")
    if path.suffix.lower() not in (".npz", ".npy"):
        raise DataError(f"{path} is neither .npz nor .npy; --dataset array reads NumPy files")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {k: loaded[k] for k in loaded.files} if path.suffix.lower() == ".npz" else {"x_train": loaded}
    except Exception as e:  # ValueError (pickled objects), OSError, zipfile.BadZipFile...
        raise DataError(f"cannot read {path} ({type(e).__name__}: {str(e).strip()[:200]})") from None
    if "x_train" not in arrays:
        held = ", ".join(sorted(arrays)) or "no arrays"
        raise DataError(
            f"{path} lacks the array 'x_train' (it holds {held}); expected x_train, x_test, y_train, y_test"
        )
    if "x_test" in arrays and ("y_train" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} has only one of y_train and y_test; give labels for both sets or for neither")

    def images(key: str) -> np.ndarray:
        where = f"{path}: {key}" if path.suffix.lower() == ".npz" else str(path)
        if np.ndim(arrays[key]) and len(arrays[key]) == 0:
            raise DataError(f"{where} holds no images (shape {arrays[key].shape}); give at least one in each set")
        return check_pixels(to_nchw(arrays[key], layout, where), where)

    xtr = images("x_train")
    ytr = labels_array(arrays["y_train"], len(xtr), f"{path}: y_train") if "y_train" in arrays else None
    if "x_test" not in arrays:
        return split_train_test(xtr, ytr, test_fraction, str(path))
    xte = images("x_test")
    yte = labels_array(arrays["y_test"], len(xte), f"{path}: y_test") if "y_test" in arrays else None
    if xte.shape[1:] != xtr.shape[1:]:
        raise DataError(f"{path}: x_test images are {xte.shape[1:]} but x_train images are {xtr.shape[1:]} (C, H, W)")
    return Source(xtr, ytr, xte, yte)


# ----------------------------------------------------------------------------- torch and torchvision datasets
def _label(target: Any) -> int | None:
    """An item's class index, or None when its target is not one (attributes, boxes, no target)."""
    if isinstance(target, (bool, np.bool_)):
        return None
    if isinstance(target, (int, np.integer)):
        return int(target)
    if isinstance(target, Tensor) and target.ndim == 0 and not target.is_floating_point():
        return int(target)
    return None


def image_and_target(item: Any) -> tuple[Any, Any]:
    """A dataset item as ``(image, target)``: an ``(image, target)`` pair, or an image alone (target None)."""
    return (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) == 2 else (item, None)


def read_dataset(
    dataset, where: str, *, channels: int | None = None, image_size: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Every item of a map-style dataset: ``(image, target)`` pairs or images alone.

    Images are Pillow images, or tensors/arrays ``(H, W)`` or ``(C, H, W)`` (uint8 in 0..255 or
    floats in [0, 1]). Targets are kept as labels when every one is a class index.

    :returns: ``(N, C, H, W)`` images and ``(N,)`` int64 labels (or None).
    :raises DataError: for an empty dataset, or items of mixed sizes without ``image_size``.
    """
    n = len(dataset)
    if n == 0:
        raise DataError(f"{where} is empty")
    labels = []

    def converted():
        for i in range(n):
            img, target = image_and_target(dataset[i])
            labels.append(_label(target))
            yield to_image_array(img, channels, image_size, f"{where} item {i}"), f"{where} item {i}"

    x = stack_images(converted())
    y = None if any(k is None for k in labels) else np.array(labels, dtype=np.int64)
    return x, y


def class_names(dataset) -> list[str] | None:
    """The class names of a dataset object (its ``classes``), or None when it names none."""
    classes = getattr(dataset, "classes", None)
    return list(classes) if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes) else None


def _torchvision_splits(cls, name: str, subset: str | None) -> tuple[list[dict], bool]:
    """The keyword arguments of the train and test sets of a torchvision dataset class, and whether
    their labels share one set of classes; one set of arguments when the class has no test split."""
    params = inspect.signature(cls).parameters
    split_param = params.get("split")
    if split_param is not None and split_param.default is inspect.Parameter.empty:  # EMNIST: subset by split=
        if subset is None:
            choices = ", ".join(getattr(cls, "splits", ())) or "see its documentation"
            raise DataError(f"{TORCHVISION_PREFIX}{name} needs a subset: {TORCHVISION_PREFIX}{name}:SUBSET ({choices})")
        return [{"split": subset, "train": True}, {"split": subset, "train": False}], True
    if subset is not None:
        raise DataError(f"{TORCHVISION_PREFIX}{name} takes no subset, got :{subset}")
    if "train" in params:
        return [{"train": True}, {"train": False}], True
    if split_param is not None:
        return [{"split": "train"}, {"split": "test"}], True
    if "background" in params:  # Omniglot: the evaluation alphabets are other characters
        return [{"background": True}, {"background": False}], False
    return [{}], True


class TorchvisionSets(NamedTuple):
    """A ``torchvision:NAME`` source opened but not read: its datasets, built without a transform.

    :ivar sets: ``[train, test]``, or ``[all]`` for a dataset without a test split (split by
        ``test_fraction``).
    :ivar where: the name of each set, for messages.
    :ivar bool shared_labels: whether the two sets' labels share one set of classes.
    """

    name: str
    sets: list
    where: list[str]
    shared_labels: bool


def open_torchvision(dataset: str, data_dir: str | None) -> TorchvisionSets:
    """The datasets of ``torchvision:NAME`` (see :func:`read_torchvision`), downloaded if need be;
    no image is decoded.

    :raises DataError: for an unknown class, or a dataset that cannot be read or downloaded.
    """
    import torchvision

    name, _, subset = dataset[len(TORCHVISION_PREFIX) :].partition(":")
    cls = getattr(torchvision.datasets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
        raise DataError(f"torchvision.datasets has no dataset {name!r} (e.g. CIFAR10, KMNIST, Omniglot, CelebA)")
    if any(getattr(cls, m) is getattr(torchvision.datasets.VisionDataset, m) for m in ("__getitem__", "__len__")):
        raise DataError(f"torchvision.datasets.{name} is a base class, not a dataset; choose a dataset class, "
                        "e.g. torchvision:CIFAR10, torchvision:FashionMNIST, torchvision:KMNIST")  # fmt: skip
    kwargs, shared_labels = _torchvision_splits(cls, name, subset or None)
    root = data_dir or cache_dir()
    params = inspect.signature(cls).parameters
    if "download" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = [{**kw, "download": True} for kw in kwargs]
    try:
        sets = [cls(root, **kw) if "root" in params else cls(**kw) for kw in kwargs]  # FakeData has no root
    except Exception as e:  # offline, proxy, checksum, missing files: all end the same way for the user
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise DataError(
            f"could not load or download {dataset} into {root} ({reason}); put its files where "
            f"torchvision.datasets.{name} finds them under a folder and pass --data-dir FOLDER"
        ) from None
    where = [f"{dataset} ({kw_name})" for kw_name in ("train", "test")[: len(sets)]]
    return TorchvisionSets(dataset, sets, where, shared_labels)


def read_torchvision(
    dataset: str | TorchvisionSets,
    data_dir: str | None,
    *,
    image_size: Sequence[int] | None = None,
    channels: int | None = None,
    test_fraction: float = 0.1,
) -> Source:
    """``torchvision:NAME`` (or ``torchvision:NAME:SUBSET``, e.g. ``torchvision:EMNIST:balanced``):
    the class ``torchvision.datasets.NAME``, read from ``data_dir`` as its root, or downloaded into
    :func:`cache_dir`.

    Its train and test splits are taken from ``train=``, ``split=`` or ``background=``, whichever
    it has; a dataset with none is split by ``test_fraction``. Labels are kept when every target
    is a class index and the two splits share their classes.

    :param dataset: the name, or the sets :func:`open_torchvision` opened.
    :raises DataError: for an unknown class, or a dataset that cannot be read or downloaded.
    """
    opened = dataset if isinstance(dataset, TorchvisionSets) else open_torchvision(dataset, data_dir)
    dataset, sets = opened.name, opened.sets
    read = [read_dataset(s, w, channels=channels, image_size=image_size) for s, w in zip(sets, opened.where)]
    classes = class_names(sets[0])
    if len(read) == 1:
        ((x, y),) = read
        return split_train_test(x, y, test_fraction, dataset, classes if y is not None else None)
    (xtr, ytr), (xte, yte) = read
    if xte.shape[1:] != xtr.shape[1:]:
        raise DataError(f"{dataset}: test images {xte.shape[1:]} differ from train images {xtr.shape[1:]}")
    if not opened.shared_labels or ytr is None or yte is None or class_names(sets[1]) != classes:
        return Source(xtr, None, xte, None)
    return Source(xtr, ytr, xte, yte, classes)
