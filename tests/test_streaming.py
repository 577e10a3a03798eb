"""Image folders above ``--max-data-memory``: the training set streams from disk through a DataLoader
with worker processes, with the batches, floats and resume of the in-memory path."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_sources import FakeShapes, fake_torchvision, write_images  # noqa: F401  (a fixture)

from pyro_vae.cli import main
from pyro_vae.config import DataConfig, RunConfig
from pyro_vae.data.images import ByteImages
from pyro_vae.data.load import load_data
from pyro_vae.data.streaming import ArrayRows, DiskImages
from pyro_vae.errors import DataError

STREAM = 1e-9  # GiB: every folder streams
TINY = ["--z-dim", "2", "--hidden-dims", "8", "--batch-size", "8", "--num-samples", "4", "--quiet", "--device", "cpu"]


@pytest.fixture
def folder(tmp_path):
    """Three classes of 4×5 images, one grey class among colour ones (so grey images become RGB)."""
    root = tmp_path / "images"
    for k, (c, mode) in enumerate((("a", "RGB"), ("b", "L"), ("c", "RGB"))):
        write_images(root / c, 10, size=(4, 5), mode=mode, seed=k)
    return root


def config(folder, budget, model="vae", epochs=2, pixels="continuous") -> RunConfig:
    cfg = RunConfig()
    cfg.data = DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=budget, pixels=pixels)
    cfg.model.model, cfg.model.z_dim, cfg.model.hidden_dims = model, 2, (8,)
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_num_samples, cfg.train.device = epochs, 8, 4, "cpu"
    return cfg


def test_streamed_images_equal_the_in_memory_ones(folder):
    memory = load_data(DataConfig(dataset="folder", data_dir=str(folder)))
    streamed = load_data(DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=STREAM))
    assert not memory.streamed and streamed.streamed and isinstance(streamed.train_store, DiskImages)
    assert streamed.describe() == {**memory.describe(), "streamed": True}
    assert streamed.image_shape == (3, 4, 5) and streamed.classes == ["a", "b", "c"]
    assert torch.equal(streamed.train_x, memory.train_x) and torch.equal(streamed.test_x, memory.test_x)
    assert torch.equal(streamed.train_y, memory.train_y) and torch.equal(streamed.test_y, memory.test_y)
    assert torch.equal(streamed.train_images[torch.tensor([5, 0, 5])], memory.train_images[torch.tensor([5, 0, 5])])
    # an epoch decoded ahead by the workers: the same rows, in the order asked
    order = torch.randperm(len(memory.train_x), generator=torch.Generator().manual_seed(1)).split(8)
    images = ByteImages(streamed.train_store)
    assert all(torch.equal(a, memory.train_x[idx]) for a, idx in zip(images.batches(order), order, strict=True))


def test_the_budget_decides(folder):
    """27 training images of 3·4·5 bytes = 1620 bytes: in memory at 1620 bytes, streamed below."""
    at = 1620 / 2**30
    assert not load_data(DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=at)).streamed
    assert load_data(DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=at * 0.999)).streamed


@pytest.mark.parametrize("model", ["vae", "ssvae"])  # cvae's batches are vae's with labels
def test_streamed_training_equals_in_memory_training(tmp_path, folder, model):
    """Same randperm, same floats: the same parameters to the bit, and the same metrics."""
    from pyro_vae.training.train import fit

    runs = [fit(config(folder, b, model), tmp_path / f"run{b}", progress=False) for b in (2.0, STREAM)]
    assert runs[1].metrics["data"]["streamed"] is True and "streamed" not in runs[0].metrics["data"]
    for p, q in zip(*(r.vae.parameters() for r in runs), strict=True):
        assert torch.equal(p, q)
    for a, b in zip(*(r.metrics["epochs"] for r in runs), strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert runs[0].metrics["final"]["elbo"] == runs[1].metrics["final"]["elbo"]


@pytest.mark.parametrize(
    "budget, pixels",
    [(2.0, "continuous"), (STREAM, "continuous"), (STREAM, "dynamic"), (STREAM, "static")],
    ids=["in-memory", "streamed", "streamed-dynamic", "streamed-static"],
)
def test_resume_equals_an_uninterrupted_run(tmp_path, folder, budget, pixels):
    from pyro_vae.training.train import fit, resume

    whole = fit(config(folder, budget, pixels=pixels), tmp_path / "whole", progress=False)
    fit(config(folder, budget, epochs=1, pixels=pixels), tmp_path / "part", progress=False)
    resumed = resume(tmp_path / "part", 2, progress=False)
    assert resumed.data.streamed == (budget == STREAM)
    for p, q in zip(whole.vae.parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [r["test_elbo"] for r in whole.metrics["epochs"]] == [r["test_elbo"] for r in resumed.metrics["epochs"]]


def test_streamed_binarization_draws_zeros_and_ones(folder):
    dynamic = load_data(DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=STREAM, pixels="dynamic"))
    a, b = dynamic.epoch_train_x()[:], dynamic.epoch_train_x()[:]
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)  # drawn anew
    static = load_data(DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=STREAM, pixels="static"))
    assert torch.equal(static.epoch_train_x()[:], static.epoch_train_x()[:])  # drawn once per image
    assert set(static.train_x.unique().tolist()) == {0.0, 1.0}
    memory = load_data(DataConfig(dataset="folder", data_dir=str(folder), pixels="static"))
    assert torch.equal(static.test_x, memory.test_x)  # the test set is binarized as in memory


def test_cli_streams_and_records_it(tmp_path, folder, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--dataset", "folder", "--data-dir", str(folder)]
    assert main([*args, "--max-data-memory", "1e-9", "--out", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert data["streamed"] is True and data["train_size"] == 27
    assert json.loads((out / "config.json").read_text())["data"]["max_data_memory"] == 1e-9


def test_a_file_truncated_after_the_scan_is_one_line(tmp_path, folder, capsys):
    """Headers are read up front; a file whose pixels cannot be decoded stops training in one line."""
    bad = folder / "a" / "03.png"
    bad.write_bytes(bad.read_bytes()[:60])  # the header survives, the pixel data does not
    with pytest.raises(DataError, match=f"^cannot read image {bad} "):
        load_data(DataConfig(dataset="folder", data_dir=str(folder))).train_x
    data = load_data(DataConfig(dataset="folder", data_dir=str(folder), max_data_memory=STREAM))
    with pytest.raises(DataError, match=f"^cannot read image {bad} "):
        list(ByteImages(data.train_store).batches([torch.arange(len(data.train_store))]))
    capsys.readouterr()
    out = tmp_path / "run"
    args = ["--dataset", "folder", "--data-dir", str(folder), "--max-data-memory", "1e-9", "--out", str(out)]
    code = main(["train", *TINY, *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"cannot read image {bad} " in err, err
    assert (out / "checkpoint.pt").is_file()  # the epoch-0 checkpoint stays: fix the file, then --resume


def test_bad_folders_fail_before_streaming(tmp_path):
    write_images(tmp_path / "a", 2, size=(4, 4))
    write_images(tmp_path / "b", 2, size=(5, 4))
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="folder", data_dir=str(tmp_path), max_data_memory=STREAM))
    assert str(err.value) == (
        f"{tmp_path / 'b' / '00.png'} is 5×4 but {tmp_path / 'a' / '00.png'} is 4×4; "
        "images of different sizes need --image-size H W"
    )
    (tmp_path / "a" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot read image {tmp_path / 'a' / 'zz.png'} .UnidentifiedImageError"):
        load_data(DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=(4, 4), max_data_memory=STREAM))
    resized = load_data(
        DataConfig(
            dataset="folder", data_dir=str(tmp_path / "b"), image_size=(3, 3), test_fraction=0.5, max_data_memory=STREAM
        )
    )
    assert resized.streamed and resized.train_x.shape == (1, 27)


# ----------------------------------------------------------------------------- torchvision:NAME
def tv_config(budget, epochs=2, model="vae", dataset="torchvision:FakeShapes") -> RunConfig:
    cfg = config(None, budget, model, epochs)
    cfg.data = DataConfig(dataset=dataset, max_data_memory=budget)
    return cfg


@pytest.mark.parametrize("name", ["FakeShapes", "FakeUnsplit", "FakeFaces"])  # two splits; one, split; no labels
def test_a_streamed_torchvision_dataset_equals_the_in_memory_one(tmp_path, fake_torchvision, name):  # noqa: F811
    cfg = DataConfig(dataset=f"torchvision:{name}", data_dir=str(tmp_path), test_fraction=1 / 3)
    memory = load_data(cfg)
    streamed = load_data(dataclasses.replace(cfg, max_data_memory=STREAM))
    assert not memory.streamed and streamed.streamed and isinstance(streamed.train_store, DiskImages)
    assert streamed.describe() == {**memory.describe(), "streamed": True}
    assert torch.equal(streamed.train_x, memory.train_x) and torch.equal(streamed.test_x, memory.test_x)
    for a, b in ((streamed.train_y, memory.train_y), (streamed.test_y, memory.test_y)):
        assert (a is None and b is None and name == "FakeFaces") or torch.equal(a, b)
    order = torch.randperm(len(memory.train_x), generator=torch.Generator().manual_seed(1)).split(4)
    images = ByteImages(streamed.train_store)
    assert all(torch.equal(a, memory.train_x[idx]) for a, idx in zip(images.batches(order), order, strict=True))


def test_torchvision_labels_without_decoding(fake_torchvision, monkeypatch):  # noqa: F811
    """Labels come from ``targets`` (no item read); without it, from every item's target."""
    from pyro_vae.data.streaming import dataset_labels

    data, y, reads = FakeShapes(None), [0, 1, 2, 0, 1, 2, 0, 1, 2], []
    monkeypatch.setattr(FakeShapes, "__getitem__", lambda self, i: reads.append(i) or (None, y[i]))
    assert dataset_labels(data, 0).tolist() == y and reads == []  # targets: a list
    del data.targets
    data._labels = torch.tensor(y)
    assert dataset_labels(data, 0).tolist() == y and reads == []  # _labels: a tensor
    data._labels = torch.tensor(y[::-1])  # disagrees with the first item: not trusted
    assert dataset_labels(data, 0).tolist() == y and reads == list(range(9))
    assert dataset_labels(data, torch.zeros(40, dtype=torch.int64)) is None  # attribute vectors: no labels


def test_the_budget_decides_for_torchvision(fake_torchvision):  # noqa: F811
    """9 training images of 3·7·6 bytes = 1134 bytes: in memory at 1134 bytes, streamed below."""
    at = 1134 / 2**30
    assert not load_data(DataConfig(dataset="torchvision:FakeShapes", max_data_memory=at)).streamed
    assert load_data(DataConfig(dataset="torchvision:FakeShapes", max_data_memory=at * 0.999)).streamed


@pytest.mark.parametrize("budget", [2.0, STREAM], ids=["in-memory", "streamed"])
def test_torchvision_resume_equals_an_uninterrupted_run(tmp_path, fake_torchvision, budget):  # noqa: F811
    from pyro_vae.training.train import fit, resume

    whole = fit(tv_config(budget), tmp_path / "whole", progress=False)
    fit(tv_config(budget, epochs=1), tmp_path / "part", progress=False)
    resumed = resume(tmp_path / "part", 2, progress=False)
    assert resumed.data.streamed == whole.data.streamed == (budget == STREAM)
    for p, q in zip(whole.vae.parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [r["test_elbo"] for r in whole.metrics["epochs"]] == [r["test_elbo"] for r in resumed.metrics["epochs"]]
    if budget == STREAM:  # and the streamed run trained as the in-memory one, to the bit
        memory = fit(tv_config(2.0), tmp_path / "memory", progress=False)
        for p, q in zip(whole.vae.parameters(), memory.vae.parameters(), strict=True):
            assert torch.equal(p, q)


# ----------------------------------------------------------------------------- array: one .npy, memory-mapped
@pytest.mark.parametrize(
    "shape, dtype", [((12, 5, 4, 3), "uint8"), ((12, 5, 4), "int16"), ((12, 3, 5, 4), "bool")], ids=str
)
def test_a_streamed_npy_equals_the_in_memory_one(tmp_path, shape, dtype):
    x = np.random.default_rng(0).integers(0, 2 if dtype == "bool" else 256, shape).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    cfg = DataConfig(dataset="array", data_dir=str(tmp_path / "x.npy"), test_fraction=0.25)
    memory, streamed = load_data(cfg), load_data(dataclasses.replace(cfg, max_data_memory=STREAM))
    assert not memory.streamed and streamed.streamed and isinstance(streamed.train_store.files, ArrayRows)
    assert streamed.describe() == {**memory.describe(), "streamed": True} and streamed.train_y is None
    assert torch.equal(streamed.train_x, memory.train_x) and torch.equal(streamed.test_x, memory.test_x)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1)).split(4)
    images = ByteImages(streamed.train_store)
    assert all(torch.equal(a, memory.train_x[idx]) for a, idx in zip(images.batches(order), order, strict=True))


def test_a_streamed_npy_trains_as_in_memory(tmp_path):
    from pyro_vae.training.train import fit

    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (20, 4, 5), dtype=np.uint8))
    runs = []
    for budget in (2.0, STREAM):
        cfg = config(None, budget)
        cfg.data = DataConfig(dataset="array", data_dir=str(tmp_path / "x.npy"), max_data_memory=budget)
        runs.append(fit(cfg, tmp_path / f"run{budget}", progress=False))
    assert runs[1].data.streamed and not runs[0].data.streamed
    for p, q in zip(*(r.vae.parameters() for r in runs), strict=True):
        assert torch.equal(p, q)


def test_arrays_that_cannot_stream_say_so(tmp_path, capsys):
    np.save(tmp_path / "big.npy", np.full((10, 4, 4), 300, dtype=np.int16))
    with pytest.raises(DataError, match=f"^{tmp_path / 'big.npy'} has values in \\[300, 300\\]; expected integers"):
        load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "big.npy"), max_data_memory=STREAM))
    np.save(tmp_path / "float.npy", np.zeros((10, 4, 4), dtype=np.float32))
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "float.npy"), max_data_memory=STREAM))
    assert str(err.value) == (
        f"{tmp_path / 'float.npy'} has float pixels, which stream only as 8-bit: save them as uint8 "
        f"(np.round(x * 255).astype(np.uint8)), or raise --max-data-memory to {144 / 2**30:.3g} or more"
    )
    x = np.zeros((10, 4, 4), dtype=np.uint8)
    np.savez_compressed(tmp_path / "x.npz", x_train=x[:8], x_test=x[8:])
    assert not load_data(DataConfig(dataset="array", data_dir=str(tmp_path / "x.npz"))).streamed
    args = ["--dataset", "array", "--data-dir", str(tmp_path / "x.npz"), "--max-data-memory", "1e-9"]
    assert main(["train", *TINY, *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(
        f"{tmp_path / 'x.npz'}: x_train holds {128 / 2**30:.3g} GiB of pixels, above --max-data-memory 1e-09, and "
        "an .npz is read whole; save x_train as an .npy (np.save) to stream it from disk, or raise --max-data-memory"
    ), err


def test_cli_streams_a_torchvision_dataset(tmp_path, fake_torchvision, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--dataset", "torchvision:FakeShapes", "--data-dir", str(tmp_path)]
    assert main([*args, "--max-data-memory", "1e-9", "--out", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert data["streamed"] is True and data["train_size"] == 9 and data["classes"] == FakeShapes.classes


def test_a_streamed_item_unlike_the_first_is_one_line():
    """The first item decides the shape: a grey item among colour ones becomes RGB (as in memory),
    a colour one among grey ones, or one of another size, is a one-line error naming the item."""
    from PIL import Image

    from pyro_vae.data.streaming import DatasetImages

    rng = np.random.default_rng(0)
    grey, colour = rng.integers(0, 256, (5, 4), dtype=np.uint8), rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    items = [(Image.fromarray(grey), 0), (Image.fromarray(colour), 1), (Image.fromarray(grey[:4]), 0)]
    as_rgb = DatasetImages(items, [0], None, None, (3, 5, 4), "fake")
    assert torch.equal(as_rgb[0][0], torch.from_numpy(np.repeat(grey[None], 3, axis=0).reshape(-1)))
    images = DatasetImages(items, [0, 1, 2], None, None, (1, 5, 4), "fake")
    assert images[1] == (None, "fake item 1 has colour but the dataset's first image is grey; pass --channels 3 (or 1)")
    assert images[2] == (
        None,
        "fake item 2 is 4×4 but the first image is 5×4; images of different sizes need --image-size H W",
    )
    with pytest.raises(DataError, match="^fake item 1 has colour"):
        list(DiskImages(images).batches([torch.arange(3)]))
