import gzip
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts with an empty param store, a fixed seed and validation on."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 ndim, big-endian dims, bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_folder(
    folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = False, seed: int = 0, size: int = 28
):
    """Four tiny MNIST-format IDX files of random digits, with labels 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, a in arrays.items():
        write_idx(folder / name, a, gz=gz)
    return arrays


@pytest.fixture
def idx_folder(tmp_path):
    folder = tmp_path / "idx"
    arrays = write_idx_folder(folder)
    return folder, arrays


@pytest.fixture(scope="session")
def device():
    return torch.device("cpu")


def write_svhn_folder(folder: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict:
    """``train_32x32.mat`` and ``test_32x32.mat`` as SVHN writes them: ``X`` (32, 32, 3, N) uint8,
    ``y`` (N, 1) with labels 1..10, where 10 stands for the digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10
        savemat(folder / name, {"X": x, "y": y})
        arrays[name] = (x, y)
    return arrays
