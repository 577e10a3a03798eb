"""Dataset loading: IDX folders written here, the embedded MNIST-5k, pixel modes, bad input."""

from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import write_idx, write_idx_folder

import pyro_vae.data.images
from pyro_vae.data.builtin import IDX_FILES, MNIST5K_TEST_SIZE, read_idx
from pyro_vae.data.images import BINARIZE_CHUNK, BINARIZE_SEED, ByteImages, ImageData, batches, check_images
from pyro_vae.data.load import load_dataset
from pyro_vae.errors import DataError


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, gz):
    arrays = write_idx_folder(tmp_path, n_train=12, n_test=5, gz=gz)
    data = load_dataset("fashion-mnist", str(tmp_path))
    assert data.image_shape == (1, 28, 28) and data.x_dim == 784
    assert data.train_x.shape == (12, 784) and data.test_x.shape == (5, 784)
    expected = torch.as_tensor(arrays["train-images-idx3-ubyte"].reshape(12, -1), dtype=torch.float32) / 255
    torch.testing.assert_close(data.train_x, expected)
    assert data.test_y.tolist() == list(arrays["t10k-labels-idx1-ubyte"])
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64


def test_torchvision_root_layout(tmp_path):
    """A torchvision root keeps the files in <root>/<Class>/raw/."""
    write_idx_folder(tmp_path / "FashionMNIST" / "raw", n_train=8, n_test=4)
    data = load_dataset("fashion-mnist", str(tmp_path))
    assert len(data.train_x) == 8 and len(data.test_x) == 4


def test_idx_folder_is_read_for_any_name(idx_folder):
    """E.g. a model trained on mnist-5k evaluated on a folder of official MNIST test files."""
    folder, _ = idx_folder
    data = load_dataset("mnist-5k", str(folder))
    assert len(data.train_x) == 60 and len(data.test_x) == 20


def test_idx_folder_missing_files_named(tmp_path):
    write_idx_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
        load_dataset("mnist", str(tmp_path))


def test_idx_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    good = write_idx(tmp_path / "good", np.zeros((3, 4, 4)))
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated: header says \\(3, 4, 4\\), found 43 values"):
        read_idx(good)


def test_mismatched_labels(tmp_path):
    write_idx_folder(tmp_path, n_train=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(9))
    with pytest.raises(DataError, match="train images \\(10, 28, 28\\) and labels \\(9,\\) do not match"):
        load_dataset("mnist", str(tmp_path))


def test_empty_folder_for_embedded_dataset(tmp_path):
    with pytest.raises(DataError, match="holds none of train-images-idx3-ubyte"):
        load_dataset("mnist-5k", str(tmp_path))


def test_failed_download_is_one_line_naming_files_and_flag(tmp_path, monkeypatch):
    """The real torchvision download code runs; its network call fails as it does offline."""
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", str(tmp_path / "empty"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "--data-dir" in msg and all(f in msg for f in IDX_FILES)


def test_mnist_5k_split():
    a, b = load_dataset("mnist-5k"), load_dataset("mnist-5k")
    assert len(a.test_x) == MNIST5K_TEST_SIZE == 1000 and len(a.train_x) == 4000
    assert torch.equal(a.train_x, b.train_x)  # fixed seed
    assert set(a.train_y.tolist()) == set(a.test_y.tolist()) == set(range(10))
    # disjoint: no test digit appears in the training set
    train_rows = {tuple(r) for r in (a.train_x * 255).round().to(torch.uint8).tolist()}
    assert not any(tuple(r) in train_rows for r in (a.test_x * 255).round().to(torch.uint8).tolist())
    assert 0 <= a.train_x.min() and a.train_x.max() <= 1 and a.train_x.unique().numel() > 2


def test_pixel_modes():
    cont = load_dataset("mnist-5k", pixels="continuous")
    static, static2 = load_dataset("mnist-5k", pixels="static"), load_dataset("mnist-5k", pixels="static")
    dyn = load_dataset("mnist-5k", pixels="dynamic")
    assert set(static.train_x.unique().tolist()) == {0.0, 1.0} and torch.equal(static.train_x, static2.train_x)
    assert torch.equal(static.epoch_train_x()[:], static.train_x)
    # binarization keeps each pixel's grey level as its probability of being on
    assert abs(static.train_x.mean() - cont.train_x.mean()) < 0.01
    e1, e2 = dyn.epoch_train_x()[:], dyn.epoch_train_x()[:]
    assert set(e1.unique().tolist()) == {0.0, 1.0} and not torch.equal(e1, e2)
    assert torch.equal(dyn.train_x, cont.train_x)
    assert set(dyn.test_x.unique().tolist()) == {0.0, 1.0} and torch.equal(dyn.test_x, static.test_x)
    assert dyn.describe()["pixels"] == "dynamic"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "cifar"}, "unknown dataset 'cifar'; choose one of mnist-5k, mnist, fashion-mnist"),
        ({"pixels": "grey"}, "unknown pixels 'grey'; choose one of continuous, dynamic, static"),
    ],
)
def test_unknown_names_list_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        (torch.zeros(4, 1, 28, 28), {}, r"must have shape \(N, D\) with flattened images, got shape \(4, 1, 28, 28\)"),
        (torch.zeros(4, 10, dtype=torch.int64), {}, "must be a floating-point tensor"),
        (torch.zeros(4, 10), {"x_dim": 784}, "has 10 pixels per image but the model expects 784"),
        (torch.tensor([[0.5, float("nan")]]), {}, "contains 1 NaN or infinite pixels"),
        (
            torch.tensor([[0.5, 255.0]]),
            {},
            r"values in \[0.5, 255\] but a Bernoulli-type likelihood needs pixels in \[0, 1\]",
        ),
    ],
)
def test_check_images_names_the_problem(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_images(x, **kwargs)
    check_images(torch.rand(3, 10), x_dim=10)  # and good data passes
    check_images(torch.tensor([[2.0]]), unit_interval=False)


def test_batches_cover_each_index_once():
    x = torch.arange(10.0).unsqueeze(1)
    y = torch.arange(10)
    seen = []
    for xb, yb in batches(x, 4, y):
        assert torch.equal(xb[:, 0].long(), yb) and len(xb) <= 4
        seen += yb.tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


# ----------------------------------------------------------------------------- SVHN and labels
def test_svhn_mat_files_are_read_like_torchvision(tmp_path):
    """X (32, 32, 3, N) becomes (N, 3·32·32) in (C, H, W) order; label 10 becomes 0."""
    from conftest import write_svhn_folder

    arrays = write_svhn_folder(tmp_path, n_train=12, n_test=5)
    data = load_dataset("svhn", str(tmp_path))
    assert data.image_shape == (3, 32, 32) and data.x_dim == 3072 and data.num_classes == 10
    assert data.train_x.shape == (12, 3072) and data.test_x.shape == (5, 3072)
    x, y = arrays["train_32x32.mat"]
    expected = torch.as_tensor(x.transpose(3, 2, 0, 1).reshape(12, -1), dtype=torch.float32) / 255
    torch.testing.assert_close(data.train_x, expected)
    assert data.train_y.tolist() == [int(v) % 10 for v in y[:, 0]] and data.train_y.dtype == torch.int64
    assert 0 in data.train_y.tolist()  # the 10s
    # pixel (channel 1, row 3, column 7) of image 2 is X[3, 7, 1, 2]
    assert data.train_x[2].reshape(3, 32, 32)[1, 3, 7] == pytest.approx(x[3, 7, 1, 2] / 255)


def test_svhn_missing_or_corrupt_files(tmp_path):
    from conftest import write_svhn_folder

    write_svhn_folder(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DataError, match=r"lacks test_32x32.mat; both SVHN files are needed"):
        load_dataset("svhn", str(tmp_path))
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="cannot read SVHN file .*test_32x32.mat"):
        load_dataset("svhn", str(tmp_path))
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("svhn", str(tmp_path / "nowhere"))


def test_svhn_failed_download_is_one_line_naming_files_and_flag(tmp_path, monkeypatch):
    """torchvision's SVHN download code runs; its network call fails as it does offline."""
    import torchvision.datasets.svhn as tv_svhn

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_svhn, "download_url", offline)
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        load_dataset("svhn")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("could not download SVHN into")
    assert "train_32x32.mat and test_32x32.mat" in msg and "--data-dir" in msg


@pytest.mark.parametrize(
    "y, message",
    [
        (torch.zeros(3), r"training labels must be an integer tensor of class indices, got Tensor torch.float32"),
        (torch.zeros(3, dtype=torch.bool), "must be an integer tensor of class indices, got Tensor torch.bool"),
        (torch.zeros(3, 1, dtype=torch.int64), r"must have shape \(3,\), one class index per image, got shape \(3, 1"),
        (torch.tensor([0, 4, 10]), r"must lie in 0..9 \(10 classes\), got values in \[0, 10\]"),
    ],
)
def test_check_labels_names_the_problem(y, message):
    from pyro_vae.data.images import check_labels

    with pytest.raises(ValueError, match=message):
        check_labels(y, 10, n=3, name="training labels")
    check_labels(torch.tensor([0, 9, 3], dtype=torch.int32), 10, n=3)  # and good labels pass


# ----------------------------------------------------------------------------- 8-bit storage
def test_8_bit_images_are_stored_as_uint8_and_read_as_float():
    data = load_dataset("mnist-5k")
    assert data.storage == "uint8" and data.train_store.dtype == torch.uint8 and data.describe()["storage"] == "uint8"
    assert data.train_store.element_size() * data.train_store.numel() == 4000 * 784  # a quarter of float32
    x = data.train_x
    assert x.dtype == torch.float32 and torch.equal(x, data.train_store.float() / 255)  # as before: value / 255
    assert len(data.train_images) == 4000 and torch.equal(data.train_images[torch.tensor([3, 1])], x[[3, 1]])
    floats = ImageData.from_tensors(torch.rand(4, 1, 2, 2), torch.rand(2, 1, 2, 2))
    assert floats.storage == "float32" and floats.epoch_train_x() is floats.train_store


@pytest.mark.parametrize("chunk", [BINARIZE_CHUNK, 784 * 300 + 5])
def test_8_bit_binarization_draws_as_float_bernoulli(monkeypatch, chunk):
    """On the CPU, chunked draws from the uint8 storage equal one torch.bernoulli of the float images
    with the same generator: static and dynamic pixels are what they were with float storage."""
    monkeypatch.setattr(pyro_vae.data.images, "BINARIZE_CHUNK", chunk)
    grey = load_dataset("mnist-5k").train_x
    static = load_dataset("mnist-5k", pixels="static")
    assert torch.equal(static.train_x, torch.bernoulli(grey, generator=torch.Generator().manual_seed(BINARIZE_SEED)))
    dyn = load_dataset("mnist-5k", pixels="dynamic")
    torch.manual_seed(1)
    epoch = dyn.epoch_train_x()
    torch.manual_seed(1)
    assert isinstance(epoch, ByteImages) and torch.equal(epoch[:], torch.bernoulli(grey))


def test_batches_of_8_bit_images_are_float():
    x = torch.arange(10, dtype=torch.uint8).unsqueeze(1) * 25
    seen = []
    for xb, yb in batches(ByteImages(x), 4, torch.arange(10)):
        assert xb.dtype == torch.float32 and torch.equal(xb[:, 0], yb * 25 / 255)
        seen += yb.tolist()
    assert sorted(seen) == list(range(10))
    from pyro_vae.models.ssvae import semi_supervised_batches

    x_u, x_l, *_ = next(semi_supervised_batches(ByteImages(x), torch.arange(10) % 2, torch.tensor([0, 1]), 4, 1.0))
    assert x_u.dtype == x_l.dtype == torch.float32 and x_u.max() <= 1


def test_fit_on_8_bit_tensors_with_dynamic_pixels(tmp_path):
    from pyro_vae.config import RunConfig
    from pyro_vae.training.train import fit

    cfg = RunConfig()
    cfg.data.pixels = "dynamic"
    cfg.model.model, cfg.model.z_dim, cfg.model.hidden_dims = "cvae", 2, (8,)
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_num_samples, cfg.train.device = 2, 8, 4, "cpu"
    x = torch.randint(0, 256, (20, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 2
    data = ImageData.from_tensors(x[:16], x[16:], y[:16], y[16:], pixels="dynamic")
    assert data.storage == "uint8"
    run = fit(cfg, tmp_path / "run", progress=False, data=data)
    assert len(run.metrics["epochs"]) == 2 and run.metrics["data"]["storage"] == "uint8"
