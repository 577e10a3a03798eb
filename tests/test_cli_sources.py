"""``pyro-vae train`` on the user's own images: class folders of PNGs, flat folders of JPEGs, ``.npz``
files and a ``torchvision:`` dataset (a fake class: nothing is downloaded), and every bad input as
one line with exit status 2."""

import json

import numpy as np
import pytest
from test_sources import FakeShapes, fake_torchvision, write_images  # noqa: F401  (a fixture)

from pyro_vae.cli import main

TINY = ["--z-dim", "2", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "8", "--num-samples", "4"]
TINY += ["--quiet", "--device", "cpu"]


def train(capsys, *args) -> tuple[int, str, str]:
    """``pyro-vae train TINY args`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(["train", *TINY, *args])
    out, err = capsys.readouterr()
    return code, out, err


def metrics_of(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def class_folder(root, classes=("left", "right"), n=8, **kwargs):
    for k, c in enumerate(classes):
        write_images(root / c, n, size=(4, 4), seed=k, **kwargs)
    return root


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_train_on_a_class_folder_of_pngs(tmp_path, capsys, model):
    images = class_folder(tmp_path / "images", ("cat", "dog", "emu"), mode="L")
    run = tmp_path / "run"
    code, out, err = train(
        capsys, "--dataset", "folder", "--data-dir", str(images), "--model", model, "--out", str(run)
    )
    assert code == 0, err
    assert out.startswith(f"{run}: test ELBO")
    data = metrics_of(run)["data"]
    assert data["classes"] == ["cat", "dog", "emu"] and data["num_classes"] == 3  # from the folder names
    assert data["image_shape"] == [1, 4, 4] and data["storage"] == "uint8" and data["source"] == str(images)
    assert (data["train_size"], data["test_size"]) == (22, 2)  # round(0.1 · 24) held out
    assert len(metrics_of(run)["epochs"]) == 1
    if model == "cvae":
        assert "generative classification accuracy" in out


def test_train_on_a_flat_folder_of_jpegs_resized(tmp_path, capsys):
    write_images(tmp_path / "flat", 10, size=(6, 5), ext="jpg")
    run = tmp_path / "run"
    args = ["--dataset", "folder", "--data-dir", str(tmp_path / "flat"), "--image-size", "4", "4", "--channels", "1"]
    code, _, err = train(capsys, *args, "--test-fraction", "0.2", "--out", str(run))
    assert code == 0, err
    data = metrics_of(run)["data"]
    assert data["image_shape"] == [1, 4, 4] and data["num_classes"] is None and "classes" not in data
    assert (data["train_size"], data["test_size"]) == (8, 2)
    config = json.loads((run / "config.json").read_text())["data"]
    assert config["image_size"] == [4, 4] and config["channels"] == 1 and config["test_fraction"] == 0.2


@pytest.mark.parametrize("model", ["vae", "ssvae"])
def test_train_on_an_npz_with_labels(tmp_path, capsys, model):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "digits.npz",
        x_train=rng.integers(0, 256, (20, 4, 4, 1), dtype=np.uint8),  # NHWC
        y_train=np.arange(20) % 2,
        x_test=rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8),
        y_test=np.arange(6) % 2,
    )
    run = tmp_path / "run"
    args = ["--dataset", "array", "--data-dir", str(tmp_path / "digits.npz"), "--model", model]
    code, out, err = train(capsys, *args, "--out", str(run))
    assert code == 0, err
    metrics = metrics_of(run)
    assert metrics["data"]["image_shape"] == [1, 4, 4] and metrics["data"]["num_classes"] == 2
    assert (metrics["data"]["train_size"], metrics["data"]["test_size"]) == (20, 6)
    if model == "ssvae":
        assert "q(y|x) test accuracy" in out and metrics["final"]["labels"] == 20
        assert 0 <= metrics["epochs"][0]["test_accuracy"] <= 1


def test_train_on_a_float_npy_split_by_test_fraction(tmp_path, capsys):
    x = np.random.default_rng(0).random((10, 3, 4, 4)).astype(np.float32)  # NCHW floats in [0, 1]
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    code, _, err = train(capsys, "--dataset", "array", "--data-dir", str(tmp_path / "x.npy"), "--out", str(run))
    assert code == 0, err
    data = metrics_of(run)["data"]
    assert data["storage"] == "float32" and data["image_shape"] == [3, 4, 4]
    assert (data["train_size"], data["test_size"]) == (9, 1)


def test_train_on_a_torchvision_dataset_by_name(tmp_path, capsys, fake_torchvision):  # noqa: F811
    run = tmp_path / "run"
    args = ["--dataset", "torchvision:FakeShapes", "--data-dir", str(tmp_path), "--model", "cvae"]
    code, _, err = train(capsys, *args, "--out", str(run))
    assert code == 0, err
    data = metrics_of(run)["data"]
    assert data["classes"] == FakeShapes.classes and data["image_shape"] == [3, 7, 6]
    assert (data["train_size"], data["test_size"]) == (9, 4)


def write_npz(path, **arrays):
    np.savez(path, **arrays)


def u8(*shape):
    return np.zeros(shape, dtype=np.uint8)


BAD = {
    "mixed-sizes": (
        lambda d: (write_images(d / "a", 2, size=(4, 4)), write_images(d / "b", 2, size=(5, 4))),
        ["--dataset", "folder", "--data-dir", "{d}"],
        "{d}/b/00.png is 5×4 but {d}/a/00.png is 4×4; images of different sizes need --image-size H W",
    ),
    "empty-folder": (lambda d: None, ["--dataset", "folder", "--data-dir", "{d}"], "{d} holds no images"),
    "unreadable-image": (
        lambda d: (write_images(d, 2), (d / "bad.png").write_bytes(b"not a png")),
        ["--dataset", "folder", "--data-dir", "{d}"],
        "cannot read image {d}/bad.png (UnidentifiedImageError",
    ),
    "npz-without-x_train": (
        lambda d: write_npz(d / "a.npz", x_test=u8(2, 4, 4)),
        ["--dataset", "array", "--data-dir", "{d}/a.npz"],
        "{d}/a.npz lacks the array 'x_train' (it holds x_test)",
    ),
    "out-of-range": (
        lambda d: write_npz(d / "a.npz", x_train=np.full((4, 4, 4), 300), x_test=np.zeros((2, 4, 4), np.int64)),
        ["--dataset", "array", "--data-dir", "{d}/a.npz"],
        "{d}/a.npz: x_train has values in [300, 300]; expected integers in 0..255 or floats in [0, 1]",
    ),
    "float-out-of-range": (
        lambda d: np.save(d / "a.npy", np.full((4, 4, 4), 2.0)),
        ["--dataset", "array", "--data-dir", "{d}/a.npy"],
        "{d}/a.npy has values in [2, 2]; expected floats in [0, 1]",
    ),
    "nan": (
        lambda d: np.save(d / "a.npy", np.where(np.eye(4)[None] > 0, np.nan, 0.5).repeat(4, 0)),
        ["--dataset", "array", "--data-dir", "{d}/a.npy"],
        "{d}/a.npy holds 16 NaN or infinite values",
    ),
    "undecidable-layout": (
        lambda d: np.save(d / "a.npy", u8(4, 3, 5, 3)),
        ["--dataset", "array", "--data-dir", "{d}/a.npy"],
        "{d}/a.npy has shape (4, 3, 5, 3), which does not tell where the channels are; pass --layout nhwc or "
        "--layout nchw",
    ),
    "cvae-without-labels": (
        lambda d: write_images(d, 6, size=(4, 4)),
        ["--dataset", "folder", "--data-dir", "{d}", "--model", "cvae"],
        "--model cvae needs class labels; {d} has none",
    ),
    "ssvae-without-labels": (
        lambda d: write_npz(d / "a.npz", x_train=u8(6, 4, 4), x_test=u8(2, 4, 4)),
        ["--dataset", "array", "--data-dir", "{d}/a.npz", "--model", "ssvae"],
        "--model ssvae needs class labels; {d}/a.npz has none",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, case):
    make, args, message = BAD[case]
    folder = tmp_path / "data"
    folder.mkdir()
    make(folder)
    run = tmp_path / "run"
    code, _, err = train(capsys, *(a.format(d=folder) for a in args), "--out", str(run))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("pyro-vae train: error: ") and message.format(d=folder) in err, err
    assert not run.exists()  # nothing written
