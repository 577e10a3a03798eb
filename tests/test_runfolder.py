"""Run folders that survive anything: the three states, the folder lock, verified checkpoints,
atomic writes that respect the umask, and one-line errors that name the flag.

Each test reproduces one way a run folder used to get stuck, overwritten or damaged, and checks
what happens now: one line, exit status 2, nothing lost.
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_idx, write_idx_folder

from pyro_vae import atomic as pv_io
from pyro_vae.cli import main
from pyro_vae.config import RunConfig
from pyro_vae.data.images import ImageData
from pyro_vae.data.load import load_dataset
from pyro_vae.errors import CheckpointError, ConfigError, DataError, GridMismatch, RunLocked, TrainingDiverged
from pyro_vae.experiments.grid import CompareConfig, compare
from pyro_vae.inference.evaluate import elbo_terms, importance_log_px
from pyro_vae.models.vae import VAE
from pyro_vae.training.checkpoint import load_checkpoint
from pyro_vae.training.runfolder import LOCK_NAME, RunLock, run_state
from pyro_vae.training.train import fit, resume

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--z-dim", "2", "--hidden-dims", "16", "--num-samples", "5", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "idx"
    write_idx_folder(folder, n_train=60, n_test=20)
    return folder


def tiny_args(idx, *extra):
    return ["--dataset", "mnist", "--data-dir", str(idx), *SMALL, *extra]


def tiny_config(idx, epochs=2, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.data.dataset, cfg.data.data_dir = "mnist", str(idx)
    cfg.model.z_dim, cfg.model.hidden_dims = 2, (16,)
    cfg.train.epochs, cfg.train.eval_num_samples, cfg.train.device = epochs, 5, "cpu"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def snapshot(folder: Path) -> dict:
    """Every file's bytes, but the lock's (which names the last process that held it)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != LOCK_NAME}


def final(folder: Path) -> dict:
    """The final metrics without the timing keys."""
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["epochs"]]
    return {"final": metrics["final"], "epochs": rows}


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def reference(idx, tmp_path_factory):
    """An uninterrupted two-epoch run: what every interrupted run must end identical to."""
    out = tmp_path_factory.mktemp("ref") / "run"
    fit(tiny_config(idx), out, progress=False)
    return out


# ----------------------------------------------------------------------------- 1. the first epoch
def test_a_run_diverging_at_step_1_keeps_an_epoch_0_checkpoint(idx, tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(["train", *tiny_args(idx, "--lr", "1e30", "--batch-size", "4", "--epochs", "1", "--out", str(out))]) == 2
    )
    line = one_line_error(capsys, "loss became", "at epoch 1, step")
    assert f"last good checkpoint: {out / 'checkpoint.pt'} (epoch 0)" in line
    assert run_state(out) == "resumable" and load_checkpoint(out / "checkpoint.pt")["epoch"] == 0
    assert main(["train", *tiny_args(idx, "--epochs", "1", "--out", str(out))]) == 2
    one_line_error(capsys, f"{out} already holds a resumable run; continue it with --resume {out}")


def test_config_without_checkpoint_is_new_and_resumes_from_the_start(idx, reference, tmp_path):
    """Killed between config.json and the epoch-0 checkpoint: --resume starts it again (same seed),
    and a new train may take the folder; both end identical to an uninterrupted run."""
    out = tmp_path / "r"
    out.mkdir()
    tiny_config(idx).save(out / "config.json")
    (out / ".checkpoint.pt.pyrovae-abc12345.tmp").write_bytes(b"half a checkpoint")  # left by the kill
    assert run_state(out) == "new"
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert final(out) == final(reference) and not list(out.glob("*.tmp"))
    again = tmp_path / "again"
    again.mkdir()
    tiny_config(idx, epochs=1).save(again / "config.json")
    fit(tiny_config(idx), again, progress=False)
    assert final(again) == final(reference)


def test_resume_from_the_epoch_0_checkpoint_equals_an_uninterrupted_run(idx, reference, tmp_path, monkeypatch):
    import pyro_vae.training.train as train

    out = tmp_path / "r"

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_step", interrupt)
    with pytest.raises(train.RunInterrupted, match=r"checkpoint.pt keeps epoch 0 of 2; continue with pyro-vae"):
        fit(tiny_config(idx), out, progress=False)
    monkeypatch.undo()
    resume(out, progress=False)
    assert final(out) == final(reference)


def test_ctrl_c_says_what_was_kept(idx, tmp_path, monkeypatch, capsys):
    import pyro_vae.training.train as train

    real, calls = train.train_step, []

    def step(*args):
        calls.append(1)
        if len(calls) == 2:  # the one batch of epoch 2 (60 images, batch 128)
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train, "train_step", step)
    out = tmp_path / "r"
    assert main(["train", *tiny_args(idx, "--epochs", "2", "--out", str(out))]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        f"pyro-vae train: interrupted; {out / 'checkpoint.pt'} keeps epoch 1 of 2; "
        f"continue with pyro-vae train --resume {out}"
    )
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_kill_9_during_epoch_1_then_resume_equals_an_uninterrupted_run(idx, tmp_path):
    """A real ``kill -9`` while epoch 1 runs (right after the epoch-0 checkpoint appears), then
    ``pyro-vae train --resume``: the final metrics equal those of an uninterrupted run."""
    args = [*SMALL, "--epochs", "2", "--batch-size", "16"]  # MNIST-5k: 250 steps in epoch 1
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert main(["train", *args, "--out", str(ref)]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", "train", *args, "--out", str(out)], env=env)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert epoch == 0, "killed after epoch 1 ended: the machine was too fast for this test's 250 steps"
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert final(out) == final(ref)


# ----------------------------------------------------------------------------- 2. the folder lock
HOLD = "from pyro_vae.training.runfolder import RunLock; import sys, time; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"  # noqa: E501


def test_a_second_writer_is_turned_away_naming_the_holder(idx, tmp_path, capsys):
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        assert main(["train", *tiny_args(idx, "--out", str(out))]) == 2
        assert time.perf_counter() - start < 2
        one_line_error(capsys, f"{out} is in use by process {holder.pid}", "choose another folder")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
        assert main(["train", "--resume", str(out)]) == 2
        one_line_error(capsys, f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", *tiny_args(idx, "--epochs", "1", "--out", str(out))]) == 0  # a stale lock never blocks


def test_lock_is_reentrant_in_one_process_and_a_new_empty_folder_is_removed(tmp_path):
    with RunLock(tmp_path / "r"):
        with RunLock(tmp_path / "r"):
            assert (tmp_path / "r" / LOCK_NAME).is_file()
        assert (tmp_path / "r").is_dir()
    assert not (tmp_path / "r").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunLocked, match="is a file, not a run folder"):
        RunLock(tmp_path / "f").acquire()


# ----------------------------------------------------------------------------- 3. compare's cells
def test_compare_refuses_cells_made_with_other_settings(tmp_path, capsys):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    write_idx_folder(d1, n_train=40, n_test=10, seed=1)
    write_idx_folder(d2, n_train=40, n_test=10, seed=2)
    grid = tmp_path / "grid"
    common = ["compare", "--dataset", "mnist", *SMALL, "--snr-estimates", "2", "--out", str(grid)]
    assert main([*common, "--data-dir", str(d1), "--epochs", "1"]) == 0
    before = snapshot(grid) | snapshot(grid / "cells" / "diag-trace-K1-seed0")
    capsys.readouterr()
    assert main([*common, "--data-dir", str(d2), "--epochs", "3"]) == 2
    line = one_line_error(capsys, "diag-trace-K1-seed0 was made with other settings", "--restart-changed")
    assert f"data.data_dir '{d1}' → '{d2}'" in line and "train.epochs 1 → 3" in line
    assert before == snapshot(grid) | snapshot(grid / "cells" / "diag-trace-K1-seed0")
    assert main([*common, "--data-dir", str(d2), "--epochs", "3", "--restart-changed"]) == 0
    assert json.loads((grid / "base_config.json").read_text())["train"]["epochs"] == 3
    assert json.loads((grid / "cells" / "diag-trace-K1-seed0" / "cell.json").read_text())["epochs"] == 3


def test_compare_marks_incompatible_pairs_by_type_not_by_message(tmp_path, monkeypatch):
    import pyro_vae.training.train as train
    from pyro_vae.errors import IncompatiblePair

    def refuse(*args, **kwargs):
        raise IncompatiblePair("reworded: no such pairing")

    monkeypatch.setattr(train, "check_pair", refuse)
    write_idx_folder(tmp_path / "d", n_train=20, n_test=10)
    cfg = CompareConfig(base=tiny_config(tmp_path / "d", epochs=1), snr_estimates=2)
    (row,) = compare(cfg, tmp_path / "grid", log=lambda line: None)
    assert row["error"] == "reworded: no such pairing"
    with pytest.raises(GridMismatch):  # the n/a cell keeps its fingerprint too
        cfg.snr_estimates = 3
        compare(cfg, tmp_path / "grid", log=lambda line: None)


def test_an_interrupted_compare_cell_does_not_block_the_grid(tmp_path):
    write_idx_folder(tmp_path / "d", n_train=20, n_test=10)
    cfg = CompareConfig(base=tiny_config(tmp_path / "d", epochs=1), snr_estimates=2)
    cell = tmp_path / "grid" / "cells" / "diag-trace-K1-seed0"
    cell.mkdir(parents=True)
    cfg.cell_config("diag", "trace", 1, 0).save(cell / "config.json")  # killed before its checkpoint
    (row,) = compare(cfg, tmp_path / "grid", log=lambda line: None)
    assert row["epochs"] == 1


# ----------------------------------------------------------------------------- 4. checksums
def test_damaged_checkpoint_bytes_are_refused_in_one_line(reference, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    path = copy / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 1000] = bytes((b + 1) % 256 for b in raw[middle : middle + 1000])
    path.write_bytes(bytes(raw))
    before = snapshot(copy)
    with pytest.raises(CheckpointError, match="is damaged: its content does not match its SHA-256"):
        load_checkpoint(path)
    assert main(["train", "--resume", str(copy), "--epochs", "3"]) == 2
    one_line_error(capsys, f"checkpoint {path} is damaged")
    assert before == snapshot(copy)


# ----------------------------------------------------------------------------- 5. a full disk
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(idx, tmp_path, monkeypatch, capsys):
    import errno

    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if os.fstat(fd).st_size > 10_000 and len(calls) > 3:  # the epoch-2 checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    out = tmp_path / "r"
    monkeypatch.setattr(pv_io.os, "fsync", fsync)
    assert main(["train", *tiny_args(idx, "--epochs", "2", "--out", str(out))]) == 2
    one_line_error(capsys, f"cannot write {out / 'checkpoint.pt'} (No space left on device)", "previous version")
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1 and not list(out.glob(".*.tmp"))


# ----------------------------------------------------------------------------- 6. permissions
def test_written_files_respect_the_umask(reference):
    old = os.umask(0o022)
    os.umask(old)
    assert old == 0o022, "this test expects the usual umask 022"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in reference.iterdir()}
    assert modes and all(m == 0o644 for m in modes.values()), modes


# ----------------------------------------------------------------------------- 7. one line, not a traceback
@pytest.mark.parametrize("case", ["corrupt-gz", "zero-images"])
def test_damaged_idx_files_are_one_line(tmp_path, case, capsys):
    folder = tmp_path / "idx"
    write_idx_folder(folder, n_train=10, n_test=10, gz=True)
    target = folder / "train-images-idx3-ubyte.gz"
    if case == "corrupt-gz":
        raw = bytearray(target.read_bytes())
        raw[20:60] = b"\xff" * 40  # inside the deflate body
        target.write_bytes(bytes(raw))
        needle = f"cannot read IDX file {target}"
    else:
        import numpy as np

        target.unlink()
        write_idx(folder / "train-images-idx3-ubyte", np.zeros((0, 28, 28)), gz=True)
        needle = "holds no images or labels"
    with pytest.raises(DataError, match=needle):
        load_dataset("mnist", str(folder))
    assert main(["train", "--dataset", "mnist", "--data-dir", str(folder), "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "content, needle",
    [
        ("[1]", "config must be a JSON object with sections data, model, train"),
        ('{"train": {"lr": "abc"}}', "lr must be a number, got 'abc'"),
        ('{"train": {"epochs": true}}', "epochs must be an integer, got True"),
        ('{"model": {"zdim": 3}}', "model has unknown field 'zdim'"),
        ("{not json", "cannot be read"),
    ],
)
def test_a_bad_config_json_is_one_line(reference, tmp_path, content, needle, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    (copy / "config.json").write_text(content)
    before = snapshot(copy)
    assert main(["train", "--resume", str(copy), "--epochs", "3"]) == 2
    one_line_error(capsys, str(copy / "config.json"), needle)
    assert before == snapshot(copy)
    with pytest.raises(ConfigError, match=needle):
        RunConfig.load(copy / "config.json")


@pytest.mark.parametrize("flags", [["--z-dim", "1000000000"], ["--hidden-dims", "4000000", "4000000"]])
def test_a_model_too_large_for_memory_is_refused_before_allocating(idx, tmp_path, flags, capsys):
    out = tmp_path / "r"
    assert main(["train", *tiny_args(idx, *flags, "--out", str(out))]) == 2
    one_line_error(capsys, "--z-dim", "is too large", "GiB to train, more than the")
    assert not out.exists()


# ----------------------------------------------------------------------------- 8. values checked up front
@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--elbo", "renyi", "--alpha", "nan"], "--alpha must be a finite number, got nan"),
        (["--model", "ssvae", "--class-weight", "inf"], "--class-weight must be a finite number, got inf"),
        (["--num-samples", "0"], "--num-samples must be a positive integer, got 0"),
        (["--max-seconds", "-1"], "--max-seconds must be a positive number, got -1.0"),
        (["--seed", "-3"], "--seed must be an integer ≥ 0, got -3"),
        (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    ],
)
def test_bad_values_are_refused_up_front_naming_the_flag(idx, tmp_path, flags, needle, capsys):
    out = tmp_path / "r"
    assert main(["train", *tiny_args(idx, *flags, "--out", str(out))]) == 2
    one_line_error(capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    "section, field, value, needle",
    [
        ("train", "lr", "0.1", "lr must be a number, got '0.1'"),
        ("train", "epochs", True, "epochs must be an integer, got True"),
        ("train", "eval_num_samples", 0, "eval_num_samples must be a positive integer, got 0"),
        ("model", "hidden_dims", (16, -1), "hidden_dims must be a positive integer, got -1"),
        (
            "model",
            "guide",
            "gauss",
            "guide must be one of diag, diag-score, fullcov, iaf, planar, radial, householder, naf, spline, "
            "coupling, got 'gauss'",
        ),
        ("train", "alpha", float("nan"), "alpha must be a finite number, got nan"),
    ],
)
def test_the_python_api_names_the_field(idx, tmp_path, section, field, value, needle):
    cfg = tiny_config(idx)
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ConfigError, match=needle):
        fit(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_zero_training_images_is_a_data_error(tmp_path):
    empty = torch.zeros(0, 16)
    data = ImageData(
        "empty",
        empty,
        torch.zeros(0, dtype=torch.long),
        torch.rand(4, 16),
        torch.zeros(4).long(),
        (1, 4, 4),
        "continuous",
    )
    with pytest.raises(DataError, match="the training set of empty holds no images"):
        fit(tiny_config(None), tmp_path / "r", progress=False, data=data)


def test_diverging_message_names_the_last_checkpoint(idx, tmp_path):
    """One batch per epoch: the step's loss stays finite, the test ELBO after it does not."""
    with pytest.raises(
        TrainingDiverged, match=r"test ELBO became nan after epoch 1; last good checkpoint: .*\(epoch 0\)"
    ):
        fit(tiny_config(idx, lr=1e30), tmp_path / "r", progress=False)


# ----------------------------------------------------------------------------- 9. the pair checks x
@pytest.mark.parametrize(
    "make_x, needle",
    [
        (lambda: torch.rand(784), r"x must have shape \(N, 784\) .* got shape \(784,\); add the batch dimension"),
        (lambda: torch.full((2, 784), float("nan")), "x contains 1568 NaN or infinite pixels"),
        (lambda: torch.rand(2, 784) * 255, "Bernoulli-type likelihood needs pixels in \\[0, 1\\]; divide by 255"),
        (lambda: (torch.rand(2, 784) * 255).to(torch.uint8), "x must be a floating-point tensor, got torch.uint8"),
        (lambda: torch.rand(2, 100), "x has 100 pixels per image but the model expects 784"),
    ],
)
def test_model_guide_and_metrics_check_x_under_validation(make_x, needle):
    vae, x = VAE(784, 2, (16,)), make_x()
    for call in (
        lambda: vae.model(x),
        lambda: vae.guide(x),
        lambda: importance_log_px(vae.model, vae.guide, x, num_samples=2),
        lambda: elbo_terms(vae.model, vae.guide, x),
    ):
        with pytest.raises(ValueError, match=needle) as info:
            call()
        assert "\n" not in str(info.value)  # Pyro's appended trace shapes are dropped


# ----------------------------------------------------------------------------- 10. --resume --epochs
def test_resume_with_fewer_epochs_than_done_is_refused(reference, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    before = snapshot(copy)
    assert main(["train", "--resume", str(copy), "--epochs", "1"]) == 2
    one_line_error(capsys, "--epochs is the new total and must be at least the 2 epochs", "got 1")
    assert main(["train", "--resume", str(copy), "--epochs", "2"]) == 2
    one_line_error(capsys, "--epochs must exceed the 2 epochs of the finished run")
    assert before == snapshot(copy)


def test_resume_of_a_finished_run_trains_on_and_finishes_again(reference, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    assert run_state(copy) == "finished"
    resume(copy, 3, progress=False)
    assert run_state(copy) == "finished" and len(final(copy)["epochs"]) == 3


# ----------------------------------------------------------------------------- 11. orphaned temp files
def test_orphaned_temp_files_are_removed_by_the_next_writer(reference, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    (copy / ".checkpoint.pt.pyrovae-x1y2z3w4.tmp").write_bytes(b"\0" * 1000)
    (copy / ".metrics.json.pyrovae-abcdefgh.tmp").write_text("{")
    resume(copy, 3, progress=False)
    assert not list(copy.glob(".*.tmp"))


# ----------------------------------------------------------------------------- 12. evaluation.json
def test_a_corrupt_evaluation_json_is_reported_not_replaced(reference, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    (copy / "evaluation.json").write_text("{broken")
    assert main(["evaluate", str(copy), "--num-samples", "2"]) == 2
    one_line_error(capsys, f"{copy / 'evaluation.json'} cannot be read", "move it away or delete it")
    assert (copy / "evaluation.json").read_text() == "{broken"
