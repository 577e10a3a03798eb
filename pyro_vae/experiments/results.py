"""The tables of a ``compare`` grid: one row per (guide, estimator, K) over its seeds, as
``results.md`` and ``results.csv``, with the ELBO-against-time and gradient-SNR plots."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from pyro_vae import plots
from pyro_vae.atomic import atomic_write_text

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
    "is_diff",
    "is_diff_se",
    "reference",
    "gap",
    "active_units",
    "encoder_snr",
    "decoder_snr",
    "seconds_per_epoch",
]


_MEASURED = ["test_elbo", "is_log_px", "gap", "active_units", "encoder_snr", "decoder_snr", "seconds_per_epoch"]
_PAIRED = ["is_diff", "is_diff_se"]  # against the reference, where both runs kept their per-image log p(x)


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
        for key in _MEASURED + [k for k in _PAIRED if all(k in c for c in ok)]:
            values = [float(c[key]) for c in ok]
            row[key] = statistics.mean(values)
            row[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else float("nan")
        if "is_diff" in row:
            row["reference"] = ok[0]["reference"]
        rows.append(row)
    return rows


def _fmt(row: dict, key: str, digits: int = 2) -> str:
    value, sd = row[key], row.get(key + "_sd", float("nan"))
    return f"{value:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def _fmt_diff(row: dict) -> str:
    if "is_diff" not in row:
        return "n/a"
    if row["is_diff"] == 0 and row["is_diff_se"] == 0:
        return "0 (reference)"
    sd = row.get("is_diff_sd", float("nan"))
    return f"{row['is_diff']:+.2f}" + ("" if math.isnan(sd) else f" ± {sd:.2f}") + f" (s.e. {row['is_diff_se']:.2f})"


def results_markdown(rows: list[dict]) -> str:
    """The comparison table; ± is the sd over seeds (absent with one seed). Δ is a row's IS log p(x)
    minus the reference's on the same test images, with its paired standard error (mean over seeds)."""
    refs = list(dict.fromkeys(r["reference"] for r in rows if "reference" in r))
    note = f"Δ: IS log p(x) minus that of {' / '.join(refs)}, image by image, with its paired s.e.\n\n" if refs else ""
    header = (
        "| guide | elbo | K | pixels | test ELBO | IS log p(x) | Δ IS log p(x) | gap | active units | encoder SNR "
        "| decoder SNR | s/epoch |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['guide']} | {r['elbo']} | {r['K']} | {r['pixels']} | n/a: {r['error']} ||||||||")
            continue
        lines.append(
            f"| {r['guide']} | {r['elbo']} | {r['K']} | {r['pixels']} | {_fmt(r, 'test_elbo')} "
            f"| {_fmt(r, 'is_log_px')} (K={r['is_K']}) | {_fmt_diff(r)} | {_fmt(r, 'gap')} "
            f"| {_fmt(r, 'active_units', 1)} | {_fmt(r, 'encoder_snr', 3)} | {_fmt(r, 'decoder_snr', 3)} "
            f"| {_fmt(r, 'seconds_per_epoch', 1)} |"
        )
    return note + header + "\n".join(lines) + "\n"


def results_csv(rows: list[dict]) -> str:
    """The rows of :func:`aggregate` as CSV: the :data:`COLUMNS`, the standard deviations over seeds, and any error."""
    buf = io.StringIO()
    fields = COLUMNS + [k + "_sd" for k in _MEASURED + _PAIRED] + ["error"]
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
