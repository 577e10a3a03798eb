"""Compare guides × estimators on equal footing: the same data, budget and seeds.

Each cell (guide, estimator, K, seed) is an ordinary run folder under ``OUT/cells/``, trained by
:func:`pyro_vae.fit` and then measured: test ELBO, importance-sampled log p(x), their gap, active
units, encoder and decoder gradient SNR of the cell's own estimator, and seconds per epoch. A cell
whose ``cell.json`` exists is kept, so a rerun after an interruption skips it (a cell stopped
mid-training resumes from its checkpoint), but only when its ``fingerprint.json`` matches the
grid's settings. ``results.csv``, ``results.md`` and the plots are
rewritten from all cells at the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from . import plots
from .config import ConfigError, RunConfig, _registry, check_options, option
from .data import load_data
from .diagnostics import active_units, gradient_snr
from .elbos import ELBOS, IncompatiblePair, build_elbo
from .io import atomic_write_text
from .runfolder import CHECKPOINT_NAME, LOCK_NAME, RunLock, run_state
from .train import fit, load_run, resolve_device, resume

COLUMNS = [
    "guide",
    "elbo",
    "K",
    "pixels",
    "seeds",
    "epochs",
    "test_elbo",
    "is_log_px",
    "is_K",
    "gap",
    "active_units",
    "encoder_snr",
    "decoder_snr",
    "seconds_per_epoch",
]
_MEASURED = ["test_elbo", "is_log_px", "gap", "active_units", "encoder_snr", "decoder_snr", "seconds_per_epoch"]


@dataclass
class CompareConfig:
    """A grid of cells; every cell shares ``base`` (data, model, optimizer, epochs or seconds).

    ``elbos`` entries may carry their own K as ``"iwae:50"``; otherwise ``base.train.particles``.
    """

    guides: tuple[str, ...] = option(
        ("diag",), "q(z|x) families, comma-separated", choices=_registry("guides", "GUIDES")
    )
    elbos: tuple[str, ...] = option(("trace",), "estimators, comma-separated NAME or NAME:K, e.g. trace,iwae:5")
    seeds: tuple[int, ...] = option((0,), "seeds, comma-separated; several give mean ± sd", minimum=0)
    base: RunConfig = field(default_factory=RunConfig)
    snr_estimates: int = option(64, "gradient draws per cell for the SNR", minimum=2)
    snr_batch_size: int = option(128, "the fixed training minibatch the SNR is measured on", positive=True)
    workers: int = option(
        1, "cells trained at once, each in its own process with its share of the CPU threads (or a GPU)", positive=True
    )

    def cells(self) -> list[tuple[str, str, int, int]]:
        """(guide, estimator, K, seed) for every cell; checks every option and name first.

        :raises ConfigError: naming the option, the value and what is expected.
        """
        check_options(self)
        self.base.validate()
        out = []
        for guide in self.guides:
            for entry in self.elbos:
                name, _, k = entry.partition(":")
                if name not in ELBOS:
                    raise ConfigError("elbos", f"must name estimators from {', '.join(ELBOS)}, got {name!r}")
                try:
                    particles = int(k) if k else self.base.train.particles
                except ValueError:
                    raise ConfigError("elbos", f"entry {entry!r} is not NAME or NAME:K, e.g. iwae:50") from None
                if particles < 1:
                    raise ConfigError("elbos", f"entry {entry!r} needs K ≥ 1")
                out.extend((guide, name, particles, seed) for seed in self.seeds)
        return out

    def cell_config(self, guide: str, elbo: str, particles: int, seed: int) -> RunConfig:
        config = RunConfig.from_dict(self.base.to_dict())
        config.model.guide, config.train.elbo, config.train.particles, config.train.seed = guide, elbo, particles, seed
        return config

    def fingerprint(self, config: RunConfig) -> dict:
        """Everything that defines a cell's results: its run config (data, pixels, budget, model,
        estimator, seed; not the device, whether the networks are compiled, the data's memory budget,
        nor whether a TensorBoard log is written) and the SNR measurement; grids made before these options match."""
        run = config.to_dict()
        for key in ("device", "compile", "tensorboard", "fidelity_samples"):  # the last: conditional models only
            run["train"].pop(key)
        for key in ("max_data_memory", "label_seed"):  # the last: ssvae only
            run["data"].pop(key)
        fingerprint = {"run": run, "snr_estimates": self.snr_estimates, "snr_batch_size": self.snr_batch_size}
        return json.loads(json.dumps(fingerprint))  # as fingerprint.json reads back (tuples as lists)


class GridMismatch(ValueError):
    """A grid folder holds cells made with other settings than the grid asked for."""


FINGERPRINT_NAME = "fingerprint.json"


def cell_name(guide: str, elbo: str, particles: int, seed: int) -> str:
    return f"{guide}-{elbo}-K{particles}-seed{seed}"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _recorded(cell_dir: Path) -> dict | None:
    """The fingerprint a cell was made with; None for a cell with nothing trained."""
    if not ((cell_dir / "cell.json").is_file() or (cell_dir / CHECKPOINT_NAME).is_file()):
        return None
    try:
        return json.loads((cell_dir / FINGERPRINT_NAME).read_text())
    except (OSError, ValueError):
        return {"unknown": "no fingerprint (made by an older pyro_vae)"}


def changes(old: dict, new: dict) -> list[str]:
    """``key old → new`` for every setting that differs between two fingerprints."""
    old, new = _flat(old), _flat(new)
    # an option added since a grid was made is no change while it is left out (None)
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k, None) != new.get(k, None)]
    return [f"{k.removeprefix('run.')} {old.get(k, '(unset)')!r} → {new.get(k, '(unset)')!r}" for k in keys]


def run_cell(cfg: CompareConfig, guide: str, elbo: str, particles: int, seed: int, cell_dir: Path, data, progress):
    """Train (or resume) one cell and measure it; writes and returns ``cell.json``'s dict."""
    config = cfg.cell_config(guide, elbo, particles, seed)
    identity = {"guide": guide, "elbo": elbo, "K": particles, "seed": seed, "pixels": config.data.pixels}
    with RunLock(cell_dir):
        try:
            state = run_state(cell_dir)
            if state == "finished":  # trained, but stopped before its cell.json
                run, _ = load_run(cell_dir, config.train.device)
                run.metrics = json.loads((cell_dir / "metrics.json").read_text())
            elif state == "resumable":
                run = resume(cell_dir, progress=progress)
            else:
                atomic_write_text(cell_dir / FINGERPRINT_NAME, json.dumps(cfg.fingerprint(config), indent=2) + "\n")
                run = fit(config, cell_dir, progress=progress, data=data)
        except IncompatiblePair as e:
            result = {**identity, "error": str(e)}
            atomic_write_text(cell_dir / "cell.json", json.dumps(result, indent=2) + "\n")
            return result
        vae, final = run.vae, run.metrics["final"]
        n_active, _ = active_units(vae.posterior, run.data.test_x)
        gen = torch.Generator().manual_seed(seed)
        images = run.data.train_images
        rows = torch.randperm(len(images), generator=gen)[: cfg.snr_batch_size].to(images.device)
        pyro.set_rng_seed(seed)
        snr = gradient_snr(
            build_elbo(elbo, particles, config.train.alpha),
            vae.model,
            vae.guide,
            {"encoder": vae.encoder.parameters(), "decoder": vae.decoder.parameters()},
            images[rows],
            num_estimates=cfg.snr_estimates,
        )
        epochs = run.metrics["epochs"]
        result = {
            **identity,
            "epochs": len(epochs),
            "test_elbo": final["elbo"],
            "is_log_px": final["is_log_px"],
            "is_K": final["is_num_samples"],
            "gap": final["gap"],
            "active_units": n_active,
            "encoder_snr": snr["encoder"]["snr"],
            "decoder_snr": snr["decoder"]["snr"],
            "encoder_grad_variance": snr["encoder"]["variance"],
            "decoder_grad_variance": snr["decoder"]["variance"],
            "seconds_per_epoch": statistics.mean(r["seconds"] for r in epochs),
            "curve": [(r["seconds"], r["test_elbo"]) for r in epochs],
        }
        atomic_write_text(cell_dir / "cell.json", json.dumps(result, indent=2) + "\n")
        return result


def _print(line: str) -> None:
    print(line, flush=True)


def compare(
    cfg: CompareConfig,
    out_dir: str | Path,
    *,
    progress: bool = False,
    log=_print,
    restart_changed: bool = False,
) -> list[dict]:
    """Run every cell of the grid into ``out_dir`` and write the tables and plots.

    A cell already in ``out_dir`` is kept (finished) or resumed (interrupted) only when it was made
    with the same settings (:meth:`CompareConfig.fingerprint`).

    :param bool restart_changed: train cells made with other settings afresh, instead of refusing.
    :returns: one row per (guide, estimator, K), seeds aggregated as mean and sd.
    :raises GridMismatch: when cells were made with other settings and ``restart_changed`` is off.
    :raises pyro_vae.runfolder.RunLocked: when another process is writing ``out_dir``.
    """
    cells = cfg.cells()
    out_dir = Path(out_dir)
    with RunLock(out_dir):
        check_cells(cfg, cells, out_dir, restart_changed, log)
        cfg.base.save(out_dir / "base_config.json")
        todo = []
        for cell in cells:
            cell_dir = out_dir / "cells" / cell_name(*cell)
            if (cell_dir / "cell.json").is_file():
                log(f"{cell_dir.name}: kept from an earlier run")
            else:
                todo.append(cell)
        if cfg.workers > 1 and len(todo) > 1:
            from .grid import run_in_workers

            run_in_workers(cfg, out_dir, todo, log)
        else:
            data = None
            for cell in todo:
                if data is None:
                    data = load_data(cfg.base.data, resolve_device(cfg.base.train.device))
                cell_dir = out_dir / "cells" / cell_name(*cell)
                log(_one_line(cell_dir.name, run_cell(cfg, *cell, cell_dir, data, progress)))
        results = [json.loads((out_dir / "cells" / cell_name(*c) / "cell.json").read_text()) for c in cells]
        rows = aggregate(results)
        write_results(rows, results, out_dir)
        return rows


def check_cells(cfg: CompareConfig, cells: list[tuple], out_dir: Path, restart_changed: bool, log=_print) -> None:
    """Refuse (or, with ``restart_changed``, clear) the cells of ``out_dir`` made with other settings.

    :raises GridMismatch: naming the first changed cell and its changed settings.
    """
    changed = {}
    for cell in cells:
        cell_dir = out_dir / "cells" / cell_name(*cell)
        old, new = _recorded(cell_dir), cfg.fingerprint(cfg.cell_config(*cell))
        if old is not None and old != new:
            changed[cell_dir] = changes(old, new)
    if changed and not restart_changed:
        first, diff = next(iter(changed.items()))
        others = f" (and {len(changed) - 1} more cells)" if len(changed) > 1 else ""
        raise GridMismatch(
            f"{first}{others} was made with other settings ({'; '.join(diff)}); rerun with --restart-changed "
            "to train the changed cells afresh, or choose another --out"
        )
    for cell_dir in changed:
        with RunLock(cell_dir):
            for p in cell_dir.iterdir():
                if p.name != LOCK_NAME:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        log(f"{cell_dir.name}: made with other settings, trained afresh")
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)


def _one_line(name: str, r: dict) -> str:
    if "error" in r:
        return f"{name}: skipped: {r['error']}"
    return (
        f"{name}: test ELBO {r['test_elbo']:.2f}, IS log p(x) {r['is_log_px']:.2f} (K={r['is_K']}), "
        f"gap {r['gap']:.2f}, {r['active_units']} active units, {r['seconds_per_epoch']:.1f} s/epoch"
    )


def aggregate(results: list[dict]) -> list[dict]:
    """Group cells by (guide, estimator, K): the mean and, with several seeds, the sd of each metric."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["guide"], r["elbo"], r["K"]), []).append(r)
    rows = []
    for (guide, elbo, k), cells in groups.items():
        row = {"guide": guide, "elbo": elbo, "K": k, "pixels": cells[0]["pixels"], "seeds": len(cells)}
        ok = [c for c in cells if "error" not in c]
        if not ok:
            rows.append({**row, "error": cells[0]["error"]})
            continue
        row["epochs"] = ok[0]["epochs"]
        row["is_K"] = ok[0]["is_K"]
        for key in _MEASURED:
            values = [float(c[key]) for c in ok]
            row[key] = statistics.mean(values)
            row[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else float("nan")
        rows.append(row)
    return rows


def _fmt(row: dict, key: str, digits: int = 2) -> str:
    value, sd = row[key], row.get(key + "_sd", float("nan"))
    return f"{value:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def results_markdown(rows: list[dict]) -> str:
    """The comparison table; ± is the sd over seeds (absent with one seed)."""
    header = (
        "| guide | elbo | K | pixels | test ELBO | IS log p(x) | gap | active units | encoder SNR | decoder SNR "
        "| s/epoch |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['guide']} | {r['elbo']} | {r['K']} | {r['pixels']} | n/a: {r['error']} |||||||")
            continue
        lines.append(
            f"| {r['guide']} | {r['elbo']} | {r['K']} | {r['pixels']} | {_fmt(r, 'test_elbo')} "
            f"| {_fmt(r, 'is_log_px')} (K={r['is_K']}) | {_fmt(r, 'gap')} | {_fmt(r, 'active_units', 1)} "
            f"| {_fmt(r, 'encoder_snr', 3)} | {_fmt(r, 'decoder_snr', 3)} | {_fmt(r, 'seconds_per_epoch', 1)} |"
        )
    return header + "\n".join(lines) + "\n"


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = COLUMNS + [k + "_sd" for k in _MEASURED] + ["error"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buf.getvalue()


def write_results(rows: list[dict], results: list[dict], out_dir: Path) -> None:
    """``results.md``, ``results.csv``, ``elbo_vs_time.png`` and ``gradient_snr.png``, atomically."""
    atomic_write_text(out_dir / "results.md", results_markdown(rows))
    atomic_write_text(out_dir / "results.csv", results_csv(rows))
    ok = [r for r in results if "error" not in r]
    if ok:
        plots.elbo_vs_time(ok, out_dir / "elbo_vs_time.png")
        plots.snr_bars([r for r in rows if "error" not in r], out_dir / "gradient_snr.png")
