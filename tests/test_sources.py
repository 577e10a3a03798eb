"""The user's own images: folders of PNG/JPEG files, .npz/.npy arrays, torchvision datasets (a fake
class here: downloads fail offline), ImageData.from_tensors / from_dataset, and every bad input."""

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae.config import DataConfig, RunConfig
from pyro_vae.data.builtin import DATASETS
from pyro_vae.data.images import ImageData
from pyro_vae.data.load import check_dataset_name, load_data, load_dataset
from pyro_vae.data.sources import SPLIT_SEED, read_array, to_nchw
from pyro_vae.errors import DataError


def write_images(folder: Path, n: int, size=(6, 5), mode="RGB", ext="png", seed=0) -> list[np.ndarray]:
    """``n`` random images ``(H, W)`` = ``size`` saved as ``0.ext``, ``1.ext``...; returns their pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = []
    for i in range(n):
        shape = size if mode == "L" else (*size, 3)
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(a, mode=mode).save(folder / f"{i:02d}.{ext}")
        arrays.append(a)
    return arrays


def folder_config(folder, **options) -> DataConfig:
    return DataConfig(dataset="folder", data_dir=str(folder), **options)


# ----------------------------------------------------------------------------- folders
def test_class_folder_labels_from_folder_names(tmp_path):
    """PNG is lossless, so the pixels come back exactly, in (C, H, W) order, divided by 255."""
    pixels = {c: write_images(tmp_path / c, 5, seed=k) for k, c in enumerate(["cat", "dog", "emu"])}
    data = load_data(folder_config(tmp_path, test_fraction=0.2))
    assert data.classes == ["cat", "dog", "emu"] and data.num_classes == 3 and data.has_labels
    assert data.image_shape == (3, 6, 5) and data.x_dim == 90
    assert len(data.train_x) == 12 and len(data.test_x) == 3  # round(0.2 · 15)
    assert data.describe()["classes"] == ["cat", "dog", "emu"] and data.describe()["source"] == str(tmp_path)
    # every image is in exactly one set, with its folder's label
    written = {tuple(a.transpose(2, 0, 1).reshape(-1).tolist()): k for k, c in enumerate(pixels) for a in pixels[c]}
    seen = torch.cat([data.train_x, data.test_x]) * 255
    labels = torch.cat([data.train_y, data.test_y]).tolist()
    assert [written[tuple(r)] for r in seen.round().long().tolist()] == labels
    assert sorted(written.values()) == sorted(labels)
    again = load_data(folder_config(tmp_path, test_fraction=0.2))
    assert torch.equal(again.test_x, data.test_x)  # a seeded split


def test_flat_jpeg_folder_has_no_labels(tmp_path):
    write_images(tmp_path, 10, size=(8, 8), ext="jpg")
    data = load_data(folder_config(tmp_path))
    assert not data.has_labels and data.train_y is None and data.num_classes is None and data.classes is None
    assert data.image_shape == (3, 8, 8) and (len(data.train_x), len(data.test_x)) == (9, 1)
    assert 0 <= data.train_x.min() and data.train_x.max() <= 1
    with pytest.raises(DataError) as err:
        data.require_labels("cvae")
    assert str(err.value).startswith(f"--model cvae needs class labels; {tmp_path} has none")
    assert "\n" not in str(err.value)


def test_train_test_layout(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("a", "b"):
            write_images(tmp_path / split / c, n, mode="L")
    data = load_data(folder_config(tmp_path))
    assert (len(data.train_x), len(data.test_x)) == (8, 4) and data.image_shape == (1, 6, 5)
    assert data.train_y.tolist() == [0] * 4 + [1] * 4 and data.test_y.tolist() == [0, 0, 1, 1]
    (tmp_path / "test" / "b").rename(tmp_path / "test" / "c")
    with pytest.raises(DataError, match=r"train has classes \['a', 'b'\] but .*test has \['a', 'c'\]"):
        load_data(folder_config(tmp_path))


def test_image_size_and_channels(tmp_path):
    write_images(tmp_path / "x", 3, size=(6, 5), mode="L")
    write_images(tmp_path / "y", 3, size=(9, 4), mode="RGB")
    with pytest.raises(DataError) as err:
        load_data(folder_config(tmp_path))
    assert str(err.value) == (
        f"{tmp_path / 'y' / '00.png'} is 9×4 but {tmp_path / 'x' / '00.png'} is 6×5; "
        "images of different sizes need --image-size H W"
    )
    data = load_data(folder_config(tmp_path, image_size=[7, 7]))  # a list, as config.json gives it
    assert data.image_shape == (3, 7, 7)  # one colour image makes every image RGB
    assert load_data(folder_config(tmp_path, image_size=(7, 7), channels=1)).image_shape == (1, 7, 7)
    grey = load_data(folder_config(tmp_path / "x", channels=3)).train_x.reshape(-1, 3, 6, 5)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])  # grey repeated
    with pytest.raises(ValueError, match="channels must be 1 .grey. or 3 .RGB., got 2"):
        load_data(folder_config(tmp_path, channels=2))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, r"{d} holds no images \(files Pillow reads"),
        (lambda d: (d / "a").mkdir() or write_images(d / "b", 2), r"{d}/a holds no images; every class folder"),
        (lambda d: (d / "bad.png").write_bytes(b"not an image"), r"cannot read image {d}/bad.png \(Unidentified"),
        (
            lambda d: write_images(d, 2) and write_images(d / "sub", 2),
            r"{d} holds images both directly \(00.png\) and in subfolders \(sub/\)",
        ),
    ],
    ids=["empty", "empty-class", "unreadable", "mixed"],
)
def test_bad_folders_one_line_naming_the_file(tmp_path, make, message):
    folder = tmp_path / "images"
    folder.mkdir()
    make(folder)
    with pytest.raises(DataError, match=message.format(d=folder)) as err:
        load_data(folder_config(folder))
    assert "\n" not in str(err.value)


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    """Pillow's own conversion of 16-bit grey to 8-bit clips at 255; the loader scales by 255/65535."""
    for i in range(4):
        Image.fromarray(np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)).save(tmp_path / f"{i}.png")
    data = load_data(folder_config(tmp_path, test_fraction=0.25))
    assert data.image_shape == (1, 2, 2) and (data.train_x * 255).round().tolist()[0] == [0, 100, 200, 255]


def test_truncated_jpeg_names_the_file(tmp_path):
    write_images(tmp_path, 3, size=(16, 16), ext="jpg")
    path = tmp_path / "01.jpg"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=f"cannot read image {path} "):
        load_data(folder_config(tmp_path))


def test_folder_needs_data_dir_and_a_folder(tmp_path):
    with pytest.raises(DataError, match="--dataset folder needs --data-dir DIR"):
        load_data(DataConfig(dataset="folder"))
    with pytest.raises(DataError, match="is not a folder"):
        load_data(folder_config(tmp_path / "nowhere"))


def test_old_loader_reads_new_sources(tmp_path):
    """load_dataset(name, data_dir, pixels) still serves callers that predate load_data."""
    write_images(tmp_path / "a", 4, mode="L")
    write_images(tmp_path / "b", 4, mode="L")
    data = load_dataset("folder", str(tmp_path), pixels="static")
    assert data.classes == ["a", "b"] and set(data.train_x.unique().tolist()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------- arrays
def test_npz_with_labels_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    xtr, xte = rng.integers(0, 256, (10, 4, 5, 3), dtype=np.uint8), rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=xtr, x_test=xte, y_train=np.arange(10) % 4, y_test=np.array([0, 1, 3]))
    data = load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "d.npz")))
    assert data.image_shape == (3, 4, 5) and data.num_classes == 4 and data.test_y.tolist() == [0, 1, 3]
    expected = torch.from_numpy(xtr.transpose(0, 3, 1, 2).reshape(10, -1)).float() / 255
    torch.testing.assert_close(data.train_x, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape, layout, image_shape",
    [
        ((6, 4, 5), None, (1, 4, 5)),
        ((6, 4, 5, 1), None, (1, 4, 5)),
        ((6, 3, 4, 5), None, (3, 4, 5)),
        ((6, 3, 5, 3), "nchw", (3, 5, 3)),
        ((6, 3, 5, 3), "nhwc", (3, 3, 5)),
    ],
)
def test_npy_layouts_and_split(tmp_path, shape, layout, image_shape):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "x.npy"), layout=layout, test_fraction=0.5))
    assert data.image_shape == image_shape and not data.has_labels
    assert (len(data.train_x), len(data.test_x)) == (3, 3)
    test_rows = np.sort(np.random.default_rng(SPLIT_SEED).permutation(6)[:3])
    nchw = to_nchw(x, layout, "x")
    torch.testing.assert_close(data.test_x, torch.from_numpy(nchw[test_rows].reshape(3, -1)))


def test_npz_without_x_test_is_split_with_its_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((10, 4, 4), np.uint8), y_train=np.arange(10))
    src = read_array(str(tmp_path / "d.npz"), test_fraction=0.3)
    assert len(src.test_x) == 3 and src.test_y is not None and len(src.train_y) == 7


@pytest.mark.parametrize(
    "arrays, layout, message",
    [
        ({"images": np.zeros((4, 5, 5))}, None, r"{f} lacks the array 'x_train' \(it holds images\)"),
        ({"x_train": np.full((4, 5, 5), 300)}, None, r"{f}: x_train has values in \[300, 300\]; expected integers"),
        (
            {"x_train": np.full((4, 5, 5), 2.0)},
            None,
            r"{f}: x_train has values in \[2, 2\]; expected floats in \[0, 1\]; divide 8-bit values by 255",
        ),
        ({"x_train": np.array([[[np.nan, 0.5]]] * 3)}, None, r"{f}: x_train holds 3 NaN or infinite values"),
        (
            {"x_train": np.zeros((4, 3, 5, 3))},
            None,
            r"{f}: x_train has shape \(4, 3, 5, 3\), which does not tell where the channels are; pass --layout",
        ),
        ({"x_train": np.zeros((4, 5, 5, 5))}, None, r"which does not tell where the channels are"),
        ({"x_train": np.zeros((4, 25))}, None, r"{f}: x_train has shape \(4, 25\); expected \(N, H, W\)"),
        (
            {"x_train": np.zeros((4, 5, 5)), "x_test": np.zeros((2, 5, 5)), "y_train": np.zeros(4, int)},
            None,
            "has only one of y_train and y_test",
        ),
        (
            {"x_train": np.zeros((4, 5, 5)), "x_test": np.zeros((2, 5, 5)), "y_train": np.zeros(3), "y_test": [0, 1]},
            None,
            r"{f}: y_train has shape \(3,\); expected \(4,\), one class index per image",
        ),
        (
            {"x_train": np.zeros((2, 5, 5)), "x_test": np.zeros((1, 5, 5)), "y_train": [0, -1], "y_test": [0]},
            None,
            r"{f}: y_train must hold class indices 0, 1, 2, ..., got -1",
        ),
        ({"x_train": np.zeros((4, 5, 5)), "x_test": np.zeros((2, 6, 6))}, None, "x_test images are"),
        ({"x_train": np.zeros((4, 3, 5, 5))}, "nwhc", "unknown layout 'nwhc'; choose one of nhwc, nchw"),
    ],
    ids=[
        "no-x_train",
        "above-255",
        "float-above-1",
        "nan",
        "ambiguous",
        "no-channels",
        "flat",
        "one-label-set",
        "label-count",
        "negative-label",
        "test-shape",
        "bad-layout",
    ],
)
def test_bad_arrays_one_line_naming_the_file(tmp_path, arrays, layout, message):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message.format(f=path)) as err:
        load_data(DataConfig(dataset="array", data_dir=str(path), layout=layout))
    assert "\n" not in str(err.value)


def test_bad_array_files(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"cannot read {tmp_path / 'x.npy'}"):
        load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "x.npy")))
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="x.csv is neither .npz nor .npy"):
        load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "x.csv")))
    with pytest.raises(DataError, match="is not a file"):
        load_data(DataConfig(dataset="array", data_dir=str(tmp_path)))
    np.save(tmp_path / "one.npy", np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="1 images with test_fraction 0.1 leave an empty train or test set"):
        load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "one.npy")))


# ----------------------------------------------------------------------------- torchvision
class FakeShapes(torch.utils.data.Dataset):
    """A torchvision-style dataset: ``(root, train, transform, download)``, Pillow images, int targets."""

    classes = ["circle", "square", "star"]

    def __init__(self, root, train=True, transform=None, download=False):
        self.root, self.train = root, train
        n = 9 if train else 4
        rng = np.random.default_rng(int(train))
        self.data = rng.integers(0, 256, (n, 7, 6, 3), dtype=np.uint8)
        self.targets = [i % 3 for i in range(n)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return Image.fromarray(self.data[i]), self.targets[i]


class FakeAlphabets(FakeShapes):
    """Omniglot-style: ``background=`` picks the split, whose characters differ."""

    def __init__(self, root, background=True, download=False):
        super().__init__(root, train=background)


class FakeFaces(FakeShapes):
    """CelebA-style: ``split=``, attribute vectors as targets (no class labels)."""

    def __init__(self, root, split="train", download=False):
        super().__init__(root, train=split == "train")

    def __getitem__(self, i):
        return Image.fromarray(self.data[i]), torch.zeros(40, dtype=torch.int64)


class FakeLetters(FakeShapes):
    """EMNIST-style: a required ``split`` naming a subset, ``train=`` through keyword arguments."""

    splits = ("letters", "digits")

    def __init__(self, root, split, **kwargs):
        self.split = split
        super().__init__(root, **kwargs)


class FakeUnsplit(FakeShapes):
    """One set only: split by test_fraction."""

    def __init__(self, root, download=False):
        super().__init__(root, train=True)


class FakeNoRoot(FakeShapes):
    """FakeData-style: no root, no split (it makes its images)."""

    def __init__(self, transform=None):
        super().__init__(None, train=True)


@pytest.fixture
def fake_torchvision(monkeypatch):
    import torchvision

    for cls in (FakeShapes, FakeAlphabets, FakeFaces, FakeLetters, FakeUnsplit, FakeNoRoot):
        monkeypatch.setattr(torchvision.datasets, cls.__name__, cls, raising=False)


def test_torchvision_dataset_by_name(tmp_path, fake_torchvision):
    data = load_data(DataConfig(dataset="torchvision:FakeShapes", data_dir=str(tmp_path)))
    fake = FakeShapes(tmp_path, train=False)
    assert data.name == "torchvision:FakeShapes" and data.classes == FakeShapes.classes and data.num_classes == 3
    assert (len(data.train_x), len(data.test_x)) == (9, 4) and data.image_shape == (3, 7, 6)
    torch.testing.assert_close(data.test_x, torch.from_numpy(fake.data.transpose(0, 3, 1, 2).reshape(4, -1)) / 255)
    assert data.test_y.tolist() == fake.targets
    small = load_data(DataConfig(dataset="torchvision:FakeShapes", image_size=(4, 4), channels=1))
    assert small.image_shape == (1, 4, 4)


def test_torchvision_splits_and_labels(tmp_path, fake_torchvision, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path))
    omniglot = load_data(DataConfig(dataset="torchvision:FakeAlphabets"))
    assert not omniglot.has_labels and len(omniglot.test_x) == 4  # other characters in the test set
    celeba = load_data(DataConfig(dataset="torchvision:FakeFaces"))
    assert not celeba.has_labels and len(celeba.train_x) == 9  # attributes are no class labels
    emnist = load_data(DataConfig(dataset="torchvision:FakeLetters:letters"))
    assert emnist.has_labels and (len(emnist.train_x), len(emnist.test_x)) == (9, 4)
    with pytest.raises(DataError, match="torchvision:FakeLetters needs a subset: torchvision:FakeLetters:SUBSET"):
        load_data(DataConfig(dataset="torchvision:FakeLetters"))
    unsplit = load_data(DataConfig(dataset="torchvision:FakeUnsplit", test_fraction=1 / 3))
    assert (len(unsplit.train_x), len(unsplit.test_x)) == (6, 3) and unsplit.classes == FakeShapes.classes
    assert len(load_data(DataConfig(dataset="torchvision:FakeNoRoot")).train_x) == 8


def test_torchvision_dataset_read_from_data_dir(tmp_path):
    """torchvision's own KMNIST class reads the IDX files already in <data_dir>/KMNIST/raw: no download."""
    from conftest import write_idx_folder

    arrays = write_idx_folder(tmp_path / "KMNIST" / "raw", n_train=12, n_test=5)
    data = load_data(DataConfig(dataset="torchvision:KMNIST", data_dir=str(tmp_path)))
    assert data.image_shape == (1, 28, 28) and (len(data.train_x), len(data.test_x)) == (12, 5)
    assert data.test_y.tolist() == list(arrays["t10k-labels-idx1-ubyte"]) and data.num_classes == 10
    assert data.classes[:2] == ["o", "ki"] and data.storage == "uint8"
    expected = torch.as_tensor(arrays["train-images-idx3-ubyte"].reshape(12, -1), dtype=torch.float32) / 255
    torch.testing.assert_close(data.train_x, expected, rtol=0, atol=0)


def test_torchvision_unknown_name():
    with pytest.raises(DataError, match="torchvision.datasets has no dataset 'NoSuchSet'"):
        load_data(DataConfig(dataset="torchvision:NoSuchSet"))


def test_torchvision_failed_download_is_one_line(tmp_path, monkeypatch):
    """torchvision's own KMNIST download code runs; its network call fails as it does offline."""
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="torchvision:KMNIST", data_dir=str(tmp_path / "empty")))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"could not load or download torchvision:KMNIST into {tmp_path}")
    assert "Temporary failure in name resolution" in msg and "--data-dir" in msg


# ----------------------------------------------------------------------------- names and options
@pytest.mark.parametrize(
    "name, key",
    [*((n, n) for n in DATASETS), ("folder", "folder"), ("array", "array"), ("torchvision:CIFAR10", "torchvision:")],
)
def test_check_dataset_name(name, key):
    assert check_dataset_name(name) == key


@pytest.mark.parametrize("name", ["cifar", "torchvision:", "Folder", None])
def test_check_dataset_name_lists_the_forms(name):
    with pytest.raises(ValueError) as err:
        check_dataset_name(name)
    assert str(err.value) == (
        f"unknown dataset {name!r}; choose one of mnist-5k, mnist, fashion-mnist, svhn, folder (--data-dir DIR), "
        "array (--data-dir FILE.npz|.npy), torchvision:NAME (e.g. torchvision:CIFAR10)"
    )


@pytest.mark.parametrize(
    "config, message",
    [
        (DataConfig(dataset="folder", layout="nhwc"), "layout applies to --dataset array, not folder"),
        (
            DataConfig(dataset="array", channels=1),
            "channels applies to --dataset folder and torchvision:NAME, not array",
        ),
        (DataConfig(dataset="mnist", image_size=(8, 8)), "image_size applies to --dataset folder and torchvision"),
        (DataConfig(dataset="folder", pixels="grey"), "unknown pixels 'grey'"),
        (DataConfig(dataset="folder", image_size=(8,)), r"image_size must be two positive integers H W, got \(8,\)"),
        (DataConfig(dataset="folder", image_size=(8, 0)), "image_size must be two positive integers H W"),
        (DataConfig(dataset="folder", channels=4), "channels must be 1 .grey. or 3 .RGB., got 4"),
        (DataConfig(dataset="array", layout="hwc"), "unknown layout 'hwc'; choose one of nhwc, nchw"),
        (DataConfig(dataset="array", test_fraction=1.0), "test_fraction must lie strictly between 0 and 1, got 1.0"),
        (DataConfig(dataset="array", test_fraction="0.1"), "test_fraction must be a number"),
    ],
)
def test_options_a_source_does_not_read(config, message):
    with pytest.raises(ValueError, match=message):
        load_data(config)


# ----------------------------------------------------------------------------- Python API
def test_from_tensors_shapes_and_8_bit():
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    data = ImageData.from_tensors(x, x[:2], torch.arange(6) % 2, torch.tensor([0, 1]))
    assert data.image_shape == (1, 4, 4) and data.num_classes == 2 and data.train_x.dtype == torch.float32
    torch.testing.assert_close(data.train_x, x.reshape(6, -1).float() / 255)
    flat = ImageData.from_tensors(torch.rand(5, 12), torch.rand(2, 12), image_shape=(3, 2, 2))
    assert flat.image_shape == (3, 2, 2) and not flat.has_labels and flat.describe()["num_classes"] is None
    named = ImageData.from_tensors(torch.rand(3, 2, 2), torch.rand(1, 2, 2), [0, 0, 1], [1], classes=["a", "b", "c"])
    assert named.num_classes == 3 and named.image_shape == (1, 2, 2) and named.train_y.dtype == torch.int64


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((torch.rand(4, 12), torch.rand(2, 12)), {}, r"train_x must be \(N, C, H, W\), \(N, H, W\), or \(N, D\) with"),
        ((torch.rand(4, 12), torch.rand(2, 12)), {"image_shape": (1, 3, 3)}, "train_x has 12 pixels per image but"),
        ((torch.rand(4, 9), torch.rand(2, 8)), {"image_shape": (1, 3, 3)}, "test_x has 8 pixels per image"),
        ((torch.rand(4, 2, 2), torch.rand(2, 2, 2), torch.zeros(4, dtype=torch.int64)), {}, "go together"),
        (
            (torch.rand(4, 2, 2), torch.rand(2, 2, 2), torch.zeros(3, dtype=torch.int64), torch.zeros(2)),
            {},
            "train_y must",
        ),
        ((torch.zeros(4, 2, 2, dtype=torch.int32), torch.rand(2, 2, 2)), {}, "must be uint8 .0..255. or floating"),
        ((torch.full((4, 2, 2), 2.0), torch.rand(2, 2, 2)), {"pixels": "static"}, r"train_x has values in \[2, 2\]"),
    ],
)
def test_from_tensors_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageData.from_tensors(*args, **kwargs)


def test_from_dataset_tensor_images_with_and_without_test_set():
    x = torch.rand(10, 1, 3, 3)
    y = torch.arange(10) % 2
    data = ImageData.from_dataset(torch.utils.data.TensorDataset(x, y), test_fraction=0.2)
    assert (len(data.train_x), len(data.test_x)) == (8, 2) and data.num_classes == 2 and data.image_shape == (1, 3, 3)
    rows = {tuple(r) for r in x.reshape(10, -1).tolist()}
    assert all(tuple(r) in rows for r in data.test_x.tolist())
    test = torch.utils.data.TensorDataset(torch.rand(3, 1, 3, 3), torch.tensor([1, 0, 1]))
    both = ImageData.from_dataset(torch.utils.data.TensorDataset(x, y), test, name="mine")
    assert both.name == "mine" and both.test_y.tolist() == [1, 0, 1] and len(both.train_x) == 10
    unlabelled = ImageData.from_dataset([img for img in x], image_size=(2, 2), channels=3)
    assert unlabelled.image_shape == (3, 2, 2) and not unlabelled.has_labels


def test_from_dataset_of_an_image_folder(tmp_path):
    """``ImageFolder`` yields Pillow images and class indices, and names its classes."""
    from torchvision.datasets import ImageFolder

    write_images(tmp_path / "a", 4, mode="L")
    write_images(tmp_path / "b", 6, mode="L")
    data = ImageData.from_dataset(ImageFolder(str(tmp_path)), test_fraction=0.5)
    assert data.classes == ["a", "b"] and data.image_shape == (3, 6, 5)  # ImageFolder's loader gives RGB
    assert data.name == "ImageFolder" and (len(data.train_x), len(data.test_x)) == (5, 5)


def test_from_dataset_mixed_sizes_names_the_item():
    items = [torch.rand(1, 3, 3), torch.rand(1, 4, 3)]
    with pytest.raises(DataError, match="list item 1 is 4×3 but list item 0 is 3×3; images of different sizes"):
        ImageData.from_dataset(items)
    with pytest.raises(DataError, match=r"mine: test images \(1, 4, 3\) differ from train images \(1, 3, 3\)"):
        ImageData.from_dataset(items[:1] * 2, items[1:], name="mine")
    assert ImageData.from_dataset(items[:1] * 2, items[1:], image_size=(3, 3)).image_shape == (1, 3, 3)


# ----------------------------------------------------------------------------- end to end
def tiny_config(model: str = "vae") -> RunConfig:
    cfg = RunConfig()
    cfg.model.model, cfg.model.z_dim, cfg.model.hidden_dims = model, 2, (8,)
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_num_samples, cfg.train.device = 1, 8, 4, "cpu"
    return cfg


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_fit_on_tensors_with_labels(tmp_path, model):
    from pyro_vae.training.train import fit

    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 4, 4, generator=g)
    data = ImageData.from_tensors(x[:16], x[16:], torch.arange(16) % 3, torch.arange(4) % 3, classes=["a", "b", "c"])
    run = fit(tiny_config(model), tmp_path / "run", progress=False, data=data)
    assert len(run.metrics["epochs"]) == 1 and np.isfinite(run.metrics["final"]["elbo"])
    assert run.metrics["data"]["classes"] == ["a", "b", "c"]


def test_fit_on_tensors_without_labels(tmp_path):
    from pyro_vae.training.train import fit

    x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    run = fit(tiny_config(), tmp_path / "run", progress=False, data=ImageData.from_tensors(x[:16], x[16:]))
    assert len(run.metrics["epochs"]) == 1 and run.metrics["data"]["num_classes"] is None


def test_fit_on_a_class_folder_named_in_the_config(tmp_path):
    """fit loads config.data itself: a folder of PNGs, one subfolder per class, trains a cvae."""
    from pyro_vae.training.train import fit

    for k, c in enumerate(["left", "right"]):
        write_images(tmp_path / "images" / c, 8, size=(4, 4), mode="L", seed=k)
    cfg = tiny_config("cvae")
    cfg.data = DataConfig(dataset="folder", data_dir=str(tmp_path / "images"))
    run = fit(cfg, tmp_path / "run", progress=False)
    assert run.metrics["data"]["classes"] == ["left", "right"] and run.metrics["data"]["storage"] == "uint8"
    assert (run.metrics["data"]["train_size"], run.metrics["data"]["test_size"]) == (14, 2)  # round(0.1 · 16)


def test_cvae_without_labels_fails_up_front(tmp_path):
    from pyro_vae.training.train import fit

    write_images(tmp_path / "flat", 6, size=(4, 4), mode="L")
    cfg = tiny_config("cvae")
    cfg.data = DataConfig(dataset="folder", data_dir=str(tmp_path / "flat"), test_fraction=0.5)
    with pytest.raises(DataError, match=f"--model cvae needs class labels; {tmp_path / 'flat'} has none"):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
