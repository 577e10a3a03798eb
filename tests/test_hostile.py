"""Hostile input against the command and the Python API: one test per defect a probe found.

Each test reproduces its case in a fresh folder, expects one line on stderr and exit status 2
(or the documented status), no traceback, and compares checksums of every file under the test's
folder before and after (the files outside the run folder included): nothing changes outside what
the command may write.
"""

import errno
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from checksums import assert_only_changed, tree_checksums
from conftest import write_idx_folder

from pyro_vae.cli import main
from pyro_vae.config import RunConfig
from pyro_vae.data.images import ImageData
from pyro_vae.errors import ConfigError, DataError, ImageError, UsageError, WriteError
from pyro_vae.models.vae import VAE
from pyro_vae.training.checkpoint import MAGIC
from pyro_vae.training.runfolder import CHECKPOINT_NAME, LOCK_NAME, run_state
from pyro_vae.training.train import fit

SMALL = ["--epochs", "1", "--num-samples", "5", "--hidden-dims", "16", "--z-dim", "2", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "idx"
    write_idx_folder(folder, n_train=60, n_test=20)
    return folder


def data_args(idx) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(idx)]


@pytest.fixture(scope="module")
def finished(idx, tmp_path_factory):
    """R: a finished tiny run, copied into each test that needs one."""
    out = tmp_path_factory.mktemp("finished") / "R"
    assert main(["train", *data_args(idx), *SMALL, "--out", str(out)]) == 0
    return out


@pytest.fixture
def R(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "R", symlinks=True)
    return tmp_path / "R"


def one_line(capsys, code: int, *needles: str, status: int = 2) -> str:
    """The command's stderr is one line holding every needle, its exit status ``status``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def rewrite_checkpoint(path: Path, **fields) -> None:
    """Change fields of a checkpoint and write it back behind a valid SHA line; a value of None
    removes the field."""
    raw = path.read_bytes()
    payload = raw.partition(b"\n")[2]
    state = torch.load(io.BytesIO(payload), weights_only=True)
    for k, v in fields.items():
        state.pop(k) if v is None else state.__setitem__(k, v)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


# ----------------------------------------------------------------------------- data lost or destroyed
def test_01_the_lock_never_follows_a_link_nor_truncates(R, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (R / LOCK_NAME).unlink()
    (R / LOCK_NAME).symlink_to(notes)
    before = tree_checksums(tmp_path)
    one_line(capsys, main(["evaluate", str(R), "--num-samples", "2"]), f"{R / LOCK_NAME} is a symbolic link")
    assert_only_changed(before, tree_checksums(tmp_path))
    (R / LOCK_NAME).unlink()
    (R / LOCK_NAME).symlink_to(R / CHECKPOINT_NAME)
    before = tree_checksums(tmp_path)
    one_line(capsys, main(["train", "--resume", str(R), "--epochs", "2"]), "is a symbolic link")
    assert_only_changed(before, tree_checksums(tmp_path))
    (R / LOCK_NAME).unlink()
    os.link(notes, R / LOCK_NAME)  # a hard link is a regular file too
    before = tree_checksums(tmp_path)
    one_line(capsys, main(["evaluate", str(R), "--num-samples", "2"]), "has other hard links")
    assert_only_changed(before, tree_checksums(tmp_path))
    assert notes.read_text() == "my notes\n"


def test_02_the_users_temp_files_are_kept(idx, tmp_path, capsys):
    out = tmp_path / "U"
    out.mkdir()
    (out / ".notes.tmp").write_text("mine")
    (out / ".checkpoint.pt.abcdefgh.tmp").write_text("mine too: not a name pyro_vae makes")
    (out / ".checkpoint.pt.pyrovae-abc12345.tmp").write_bytes(b"half a checkpoint")  # left by a killed writer
    before = tree_checksums(tmp_path)
    assert main(["train", *data_args(idx), *SMALL, "--out", str(out)]) == 0
    after = tree_checksums(tmp_path)
    assert after["U/.notes.tmp"] == before["U/.notes.tmp"]
    assert after["U/.checkpoint.pt.abcdefgh.tmp"] == before["U/.checkpoint.pt.abcdefgh.tmp"]
    assert "U/.checkpoint.pt.pyrovae-abc12345.tmp" not in after
    assert_only_changed(before, after, "U/.checkpoint.pt.pyrovae-abc12345.tmp", *(f"U/{n}" for n in os.listdir(out)))


@pytest.mark.parametrize("out", ["", "  "])
def test_03_an_empty_out_is_refused(idx, tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.json").write_text('{"mine": 1}\n')
    (tmp_path / ".keep.tmp").write_text("keep")
    before = tree_checksums(tmp_path)
    for argv in (
        ["train", *data_args(idx), *SMALL, "--out", out],
        ["train", "--resume", out],
        ["compare", *data_args(idx), *SMALL, "--out", out],
        ["draws", *data_args(idx), *SMALL, "--model", "ssvae", "--labels", "20", "--out", out],
    ):
        one_line(capsys, main(argv), "must name a folder")
    assert_only_changed(before, tree_checksums(tmp_path))


def test_04_a_finished_run_without_its_checkpoint_is_never_overwritten(R, tmp_path, capsys):
    (R / CHECKPOINT_NAME).unlink()
    before = tree_checksums(tmp_path)
    assert run_state(R) == "finished"
    line = one_line(capsys, main(["train", "--resume", str(R), "--epochs", "2"]), "finished run", "is missing")
    assert CHECKPOINT_NAME in line
    config = json.loads((R / "config.json").read_text())
    argv = ["train", "--dataset", "mnist", "--data-dir", config["data"]["data_dir"], *SMALL, "--seed", "7"]
    one_line(capsys, main([*argv, "--out", str(R)]), "already holds a finished run", f"{CHECKPOINT_NAME} is missing")
    assert_only_changed(before, tree_checksums(tmp_path), f"R/{LOCK_NAME}")


def test_05_restart_changed_never_deletes_through_a_link(idx, tmp_path, capsys):
    grid = tmp_path / "G"
    common = ["compare", *data_args(idx), *SMALL, "--snr-estimates", "2", "--out", str(grid)]
    assert main(common) == 0
    capsys.readouterr()
    cell = grid / "cells" / "diag-trace-K1-seed0"
    elsewhere = tmp_path / "thesis"
    shutil.move(cell, elsewhere)  # the user's own folder, which the cell's link now leads to
    (elsewhere / "thesis.tex").write_text("\\chapter{One}")
    (elsewhere / "photos").mkdir()
    (elsewhere / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    cell.symlink_to(elsewhere, target_is_directory=True)
    before = tree_checksums(tmp_path)
    changed = [a if a != "1" else "2" for a in common]  # --epochs 2: the cell is made with other settings
    one_line(capsys, main([*changed, "--restart-changed"]), f"{cell} leads to", "outside")
    one_line(capsys, main(changed), "outside")
    one_line(capsys, main([*changed, "--cell", "0", "--restart-changed"]), "outside")
    assert_only_changed(before, tree_checksums(tmp_path), f"G/{LOCK_NAME}")


def test_06_resume_checks_everything_before_its_first_write(R, tmp_path, capsys):
    rewrite_checkpoint(R / CHECKPOINT_NAME, history="garbage")
    before = tree_checksums(tmp_path)
    one_line(capsys, main(["train", "--resume", str(R), "--epochs", "2"]), "'history'", "list of epoch rows")
    assert_only_changed(before, tree_checksums(tmp_path), f"R/{LOCK_NAME}")


# ----------------------------------------------------------------------------- accepted when it should not be
def test_07_another_runs_checkpoint_is_refused_and_runs_without_ids_still_load(idx, finished, tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    shutil.copytree(finished, a)
    assert main(["train", *data_args(idx), *SMALL, "--out", str(b)]) == 0  # the same flags and seed
    capsys.readouterr()
    shutil.copy(b / CHECKPOINT_NAME, a / CHECKPOINT_NAME)
    before = tree_checksums(tmp_path)
    for argv in (
        ["evaluate", str(a), "--num-samples", "2"],
        ["sample", str(a), "--out", str(tmp_path / "s.png")],
        ["train", "--resume", str(a), "--epochs", "2"],
    ):
        one_line(capsys, main(argv), "belongs to another run")
    assert_only_changed(before, tree_checksums(tmp_path), f"A/{LOCK_NAME}")
    # a run made before ids existed: neither its config.json nor its checkpoint has one
    config = json.loads((b / "config.json").read_text())
    assert len(config.pop("run_id")) == 32
    (b / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    rewrite_checkpoint(b / CHECKPOINT_NAME, run_id=None)
    assert main(["evaluate", str(b), "--num-samples", "2"]) == 0
    assert main(["train", "--resume", str(b), "--epochs", "2"]) == 0
    assert "run_id" not in json.loads((b / "config.json").read_text())


@pytest.fixture(scope="module")
def ssvae_run(idx, tmp_path_factory):
    out = tmp_path_factory.mktemp("ssvae") / "S"
    argv = ["train", *data_args(idx), *SMALL, "--model", "ssvae", "--labels", "20", "--fidelity-samples", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_08_resume_and_evaluate_run_every_check_of_train(ssvae_run, tmp_path, capsys):
    run = tmp_path / "S"
    shutil.copytree(ssvae_run, run)
    config = json.loads((run / "config.json").read_text())
    config["train"]["elbo"] = "iwae"
    (run / "config.json").write_text(json.dumps(config))
    before = tree_checksums(tmp_path)
    for argv in (["train", "--resume", str(run), "--epochs", "2"], ["evaluate", str(run), "--num-samples", "2"]):
        one_line(capsys, main(argv), "does not accept estimator 'iwae'")
    assert_only_changed(before, tree_checksums(tmp_path), f"S/{LOCK_NAME}")


@pytest.mark.parametrize(
    "field, value", [("model", 5), ("image_shape", "abc"), ("rng", {}), ("epoch", "x"), ("optimizer", [])]
)
def test_09_every_checkpoint_field_is_checked(R, tmp_path, capsys, field, value):
    rewrite_checkpoint(R / CHECKPOINT_NAME, **{field: value})
    before = tree_checksums(tmp_path)
    for argv in (["train", "--resume", str(R), "--epochs", "2"], ["evaluate", str(R), "--num-samples", "2"]):
        one_line(capsys, main(argv), f"has a field {field!r} that is not")
    assert_only_changed(before, tree_checksums(tmp_path), f"R/{LOCK_NAME}")


def test_10_class_weight_selection_runs_are_fingerprinted(idx, tmp_path, capsys):
    out = tmp_path / "R"
    argv = ["train", *data_args(idx), *SMALL, "--model", "ssvae", "--labels", "20", "--fidelity-samples", "0"]
    argv += ["--class-weight-grid", "2", "--out", str(out)]
    assert main(argv) == 0
    selection = out / "class-weight-selection" / "class-weight-2"
    assert len(json.loads((selection / "metrics.json").read_text())["epochs"]) == 1
    for p in out.iterdir():  # killed after the selection, before the run's first checkpoint
        if p.name not in ("class-weight-selection", LOCK_NAME):
            p.unlink()
    (tmp_path / "elsewhere.txt").write_text("untouched")
    before = tree_checksums(tmp_path)
    assert main([a if a != "1" else "2" for a in argv]) == 0  # --epochs 2: the selection run is trained again
    assert len(json.loads((selection / "metrics.json").read_text())["epochs"]) == 2
    assert json.loads((selection / "fingerprint.json").read_text())["train"]["epochs"] == 2
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 2
    assert_only_changed(before, tree_checksums(tmp_path), "R/")
    capsys.readouterr()


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--seeds", "0,0"], "--seeds must not repeat a value"),
        (["--guides", "diag,diag"], "--guides must not repeat a value"),
        (["--elbos", "trace,trace:1"], "--elbos must not repeat a value"),
    ],
)
def test_11_compare_refuses_repeated_seeds_guides_and_estimators(idx, tmp_path, capsys, flags, needle):
    before = tree_checksums(tmp_path)
    one_line(capsys, main(["compare", *data_args(idx), *SMALL, *flags, "--out", str(tmp_path / "G")]), needle)
    assert_only_changed(before, tree_checksums(tmp_path))


def _png_folder(folder: Path, n: int = 5) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_12_links_never_duplicate_images(tmp_path, capsys):
    data = tmp_path / "D"
    _png_folder(data / "digits")
    (data / "digits" / "a").mkdir()
    (data / "digits" / "a" / "loop").symlink_to("..", target_is_directory=True)
    (data / "outside").symlink_to(data / "digits", target_is_directory=True)  # a link as a class: not followed
    out = tmp_path / "R"
    argv = ["train", "--dataset", "folder", "--data-dir", str(data), *SMALL, "--test-fraction", "0.2"]
    before = tree_checksums(tmp_path)
    assert main([*argv, "--out", str(out)]) == 0
    described = json.loads((out / "metrics.json").read_text())["data"]
    assert described["train_size"] + described["test_size"] == 5
    assert_only_changed(before, tree_checksums(tmp_path), "R/", "R")
    (data / "digits" / "dup.png").symlink_to(data / "digits" / "img0.png")
    before = tree_checksums(tmp_path)
    one_line(capsys, main([*argv, "--out", str(tmp_path / "R2")]), "twice", "img0.png")
    assert_only_changed(before, tree_checksums(tmp_path))


# ----------------------------------------------------------------------------- tracebacks where one line belongs
def test_13_allocation_failures_are_one_line_naming_the_flag(idx, R, tmp_path, monkeypatch, capsys):
    before = tree_checksums(tmp_path)
    out = str(tmp_path / "X")
    one_line(capsys, main(["train", *data_args(idx), *SMALL, "--particles", "100000000", "--out", out]), "--particles")
    one_line(capsys, main(["sample", str(R), "--num", "100000000", "--out", str(tmp_path / "s.png")]), "--num")
    argv = ["train", *data_args(idx), *SMALL, "--guide", "iaf", "--flow-steps", "1000000", "--out", out]
    one_line(capsys, main(argv), "--flow-steps must be an integer ≤ 1,000")
    assert_only_changed(before, tree_checksums(tmp_path), f"R/{LOCK_NAME}")
    # whatever allocation fails where no check foresaw it: one line, naming the flags given
    import pyro_vae.plots as plots

    for error in (
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
    ):

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(plots, "samples", fail)
        line = one_line(capsys, main(["sample", str(R), "--num", "4", "--out", str(tmp_path / "s.png")]), "--num")
        assert "ran out of memory" in line
    assert_only_changed(before, tree_checksums(tmp_path), f"R/{LOCK_NAME}")


def test_14_sizes_are_bounded_in_the_config(idx, R, tmp_path, capsys):
    huge = str(10**30)
    before = tree_checksums(tmp_path)
    out = str(tmp_path / "X")
    one_line(capsys, main(["train", *data_args(idx), *SMALL, "--z-dim", huge, "--out", out]), "--z-dim must be")
    argv = ["train", *data_args(idx), *SMALL, "--hidden-dims", huge, "--out", out]
    one_line(capsys, main(argv), "--hidden-dims must be an integer ≤ 2,147,483,647")
    assert_only_changed(before, tree_checksums(tmp_path))
    config = json.loads((R / "config.json").read_text())
    config["model"]["z_dim"] = 10**30
    (R / "config.json").write_text(json.dumps(config))
    before = tree_checksums(tmp_path)
    one_line(capsys, main(["train", "--resume", str(R), "--epochs", "2"]), "config.json", "z_dim must be an integer ≤")
    assert_only_changed(before, tree_checksums(tmp_path), f"R/{LOCK_NAME}")
    cfg = RunConfig()
    cfg.model.z_dim = 10**30
    with pytest.raises(ConfigError, match="z_dim must be an integer ≤"):
        fit(cfg, tmp_path / "Y", progress=False)


def test_15_a_read_only_folder_is_one_line(idx, R, tmp_path, monkeypatch, capsys):
    """A read-only mount, as the lock meets it: opening ``.lock`` for writing fails with EROFS."""
    import pyro_vae.training.runfolder as runfolder

    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(LOCK_NAME) and flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    empty = tmp_path / "ro"
    empty.mkdir()
    before = tree_checksums(tmp_path)
    monkeypatch.setattr(runfolder.os, "open", read_only)
    for argv in (
        ["train", *data_args(idx), *SMALL, "--out", str(empty)],
        ["compare", *data_args(idx), *SMALL, "--out", str(empty)],
        ["draws", *data_args(idx), *SMALL, "--model", "ssvae", "--labels", "20", "--out", str(empty)],
        ["train", "--resume", str(R)],
    ):
        one_line(capsys, main(argv), "(Read-only file system)", "choose a writable folder")
    monkeypatch.undo()
    assert_only_changed(before, tree_checksums(tmp_path))


@pytest.mark.parametrize("empty", ["x_train", "x_test"])
def test_16_zero_images_are_one_line(tmp_path, capsys, empty):
    arrays = {"x_train": np.zeros((10, 8, 8), np.uint8), "x_test": np.zeros((4, 8, 8), np.uint8)}
    arrays[empty] = np.zeros((0, 8, 8), np.uint8)
    np.savez(tmp_path / "a.npz", **arrays)
    before = tree_checksums(tmp_path)
    argv = ["train", "--dataset", "array", "--data-dir", str(tmp_path / "a.npz"), *SMALL, "--out", str(tmp_path / "R")]
    one_line(capsys, main(argv), f"a.npz: {empty} holds no images")
    assert_only_changed(before, tree_checksums(tmp_path))
    with pytest.raises(DataError, match=f"{empty[2:]}_x holds no images"):
        ImageData.from_tensors(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["x_test"]))


def test_17_torchvision_accepts_only_dataset_classes(tmp_path, capsys):
    before = tree_checksums(tmp_path)
    argv = ["train", "--dataset", "torchvision:VisionDataset", *SMALL, "--out", str(tmp_path / "R")]
    one_line(capsys, main(argv), "VisionDataset is a base class", "torchvision:CIFAR10")
    assert_only_changed(before, tree_checksums(tmp_path))


def test_18_plots_are_drawn_before_a_run_is_finished_and_can_be_redrawn(idx, tmp_path, monkeypatch, capsys):
    import pyro_vae.plots as plots

    out = tmp_path / "R"

    def full_disk(run):
        raise WriteError(f"cannot write {run.out_dir / 'elbo.png'} (No space left on device); nothing was written")

    monkeypatch.setattr(plots, "save_run_plots", full_disk)
    one_line(capsys, main(["train", *data_args(idx), *SMALL, "--out", str(out)]), "No space left on device")
    monkeypatch.undo()
    assert run_state(out) == "resumable" and not list(out.glob("*.png"))
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # finishes: metrics and plots
    assert run_state(out) == "finished" and (out / "samples.png").is_file()
    (out / "samples.png").unlink()
    (out / "elbo.png").write_bytes(b"")
    (tmp_path / "elsewhere.txt").write_text("untouched")
    before = tree_checksums(tmp_path)
    assert main(["plot", str(out)]) == 0
    after = tree_checksums(tmp_path)
    assert "R/samples.png" in after and after["R/elbo.png"] != before["R/elbo.png"]
    assert_only_changed(before, after, *(f"R/{p.name}" for p in out.glob("*.png")), f"R/{LOCK_NAME}")
    capsys.readouterr()
    unfinished = tmp_path / "U"
    unfinished.mkdir()
    one_line(capsys, main(["plot", str(unfinished)]), "holds no finished run")


def test_19_the_python_api_raises_typed_errors(tmp_path):
    before = tree_checksums(tmp_path)
    with pytest.raises(ConfigError, match=r"config must be a RunConfig \(.*\), got str 'notaconfig'"):
        fit("notaconfig", tmp_path / "R")
    vae = VAE(784, 2, (16,))
    with pytest.raises(ImageError, match=r"x holds no images \(shape \(0, 784\)\)"):
        vae.model(torch.zeros(0, 784))
    for n in (-1, 0, 2.5):
        with pytest.raises(UsageError, match="the number of samples must be a positive integer"):
            vae.sample(n)
    assert_only_changed(before, tree_checksums(tmp_path))


# ----------------------------------------------------------------------------- also noticed
def test_seeds_out_of_range_name_the_flag(idx, R, tmp_path, capsys):
    before = tree_checksums(tmp_path)
    out = str(tmp_path / "X")
    one_line(capsys, main(["train", *data_args(idx), *SMALL, "--seed", str(2**32), "--out", out]), "--seed must be")
    one_line(capsys, main(["sample", str(R), "--seed", "-1", "--out", str(tmp_path / "s.png")]), "--seed must be")
    one_line(capsys, main(["evaluate", str(R), "--seed", str(2**40)]), "--seed must be")
    assert_only_changed(before, tree_checksums(tmp_path))


def test_a_pickled_checkpoint_is_refused_as_code(R, tmp_path, capsys):
    payload = io.BytesIO()
    torch.save({"epoch": 1, "payload": Path("x")}, payload)  # an object torch's safe loader refuses
    payload = payload.getvalue()
    (R / CHECKPOINT_NAME).write_bytes(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    before = tree_checksums(tmp_path)
    line = one_line(capsys, main(["evaluate", str(R), "--num-samples", "2"]), "holds code", "is refused")
    assert "weights_only" not in line
    assert_only_changed(before, tree_checksums(tmp_path), f"R/{LOCK_NAME}")


def test_draws_checks_every_label_seed_before_training(idx, tmp_path, capsys):
    before = tree_checksums(tmp_path)
    argv = ["draws", *data_args(idx), *SMALL, "--model", "ssvae", "--labels", "20", "--label-seeds", "0,-1"]
    one_line(capsys, main([*argv, "--out", str(tmp_path / "D")]), "--label-seeds must be integers between 0 and")
    assert_only_changed(before, tree_checksums(tmp_path))


@pytest.mark.parametrize("case", ["short-header", "label-10", "svhn-label-11", "label-2e14"])
def test_bad_labels_and_short_files_name_the_file(tmp_path, capsys, case):
    from conftest import write_idx, write_svhn_folder

    folder = tmp_path / "d"
    dataset = "mnist"
    if case == "short-header":
        write_idx_folder(folder, n_train=10, n_test=10)
        target = folder / "train-images-idx3-ubyte"
        target.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    elif case == "label-10":
        write_idx_folder(folder, n_train=10, n_test=10)
        target = folder / "t10k-labels-idx1-ubyte"
        write_idx(target, np.full(10, 10))
    elif case == "svhn-label-11":
        from scipy.io import savemat

        write_svhn_folder(folder, n_train=10, n_test=10)
        dataset, target = "svhn", folder / "train_32x32.mat"
        savemat(target, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]], np.uint8)})
    else:
        dataset, target = "array", tmp_path / "a.npz"
        x = np.zeros((4, 8, 8), np.uint8)
        np.savez(target, x_train=x, x_test=x, y_train=np.array([0, 1, 2, 2e14]), y_test=np.zeros(4))
        folder = target
    before = tree_checksums(tmp_path)
    argv = ["train", "--dataset", dataset, "--data-dir", str(folder), *SMALL, "--out", str(tmp_path / "R")]
    line = one_line(capsys, main(argv))
    assert str(target) in line or case == "label-2e14" and "beyond 1..65,536" in line, line
    assert_only_changed(before, tree_checksums(tmp_path))


def test_divergence_is_one_line_without_pyros_nan_warnings(idx, tmp_path, capsys):
    import warnings

    before = tree_checksums(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv = ["train", *data_args(idx), *SMALL, "--lr", "1e30", "--batch-size", "4", "--out", str(tmp_path / "R")]
        one_line(capsys, main(argv), "loss became")
    assert not [w for w in caught if "Encountered NaN" in str(w.message)], [str(w.message) for w in caught]
    assert_only_changed(before, tree_checksums(tmp_path), "R", "R/")
