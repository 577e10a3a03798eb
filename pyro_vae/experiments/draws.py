"""One semi-supervised setting repeated over several draws of its labelled images.

With 100 labels the accuracy of M2 depends on *which* 100 images keep their label as much as on
the method; Pyro's SS-VAE tutorial reports the mean over 5 draws with its 95% interval. Draw s
trains the run ``OUT/label-seed-S`` with ``config.data.label_seed = s`` and everything else
unchanged (the training seed too), so the draws differ only in their labels. Finished draws are
read back on a rerun, and interrupted ones resumed.

The summary gives, over the draws, the mean and the half-width of the Student-t 95% interval of
M2's q(y|x) test accuracy, of the baseline's, and of their paired difference (the same labels).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from pyro_vae.atomic import atomic_write_text
from pyro_vae.config import MAX_SEED, RunConfig
from pyro_vae.errors import ConfigError
from pyro_vae.experiments.class_weight import fit_with_selection, resume_with_selection
from pyro_vae.training.runfolder import RunLock, run_folder, run_state

SUMMARIZED = {
    "accuracy": "M2 q(y|x) test accuracy",
    "baseline_accuracy": "baseline classifier",
    "difference": "M2 − baseline (paired)",
    "label_fidelity": "label fidelity",
    "label_sensitivity": "label sensitivity",
}


def draw_dir(out_dir: str | Path, label_seed: int) -> Path:
    """The run folder of the draw with ``label_seed``: ``OUT/label-seed-S``."""
    return Path(out_dir) / f"label-seed-{label_seed}"


def _train_draw(config: RunConfig, run_dir: Path, progress: bool) -> dict:

    state = run_state(run_dir)
    if state == "finished":
        final = json.loads((run_dir / "metrics.json").read_text())["final"]
    elif state == "resumable":
        final = resume_with_selection(run_dir, progress=progress).metrics["final"]
    else:
        final = fit_with_selection(config, run_dir, progress=progress).metrics["final"]
    return final


def label_draws(
    config: RunConfig, label_seeds: Sequence[int], out_dir: str | Path, *, progress: bool = False
) -> tuple[list[dict], dict]:
    """Train ``config`` once per label seed into ``out_dir`` and summarize the draws.

    :param config: a run of a semi-supervised model (``semi_supervised``) with ``config.data.labels``.
    :param label_seeds: at least two distinct seeds of the labelled subset.
    :returns: ``(rows, summary)``: one row per draw (its label seed and final metrics), and for each
        key of :data:`SUMMARIZED` present in every row, ``{"mean", "half_width", "draws"}``. Both are
        also written to ``out_dir/draws.json`` and ``draws.md``.
    :raises ConfigError: when the config keeps every label, or the seeds are fewer than two or repeat.
    """
    from pyro_vae.models.registry import get_model, semi_supervised

    if not get_model(config.model.model).semi_supervised:
        which = ", ".join(semi_supervised())
        raise ConfigError(
            "model", f"must be a semi-supervised model for label draws ({which}), got {config.model.model}"
        )
    if config.data.labels is None:
        raise ConfigError("labels", "is required for label draws: pass the number of labels to keep, e.g. 100")
    if len(label_seeds) < 2 or len(set(label_seeds)) != len(label_seeds):
        raise ConfigError("label_seeds", f"needs at least two distinct seeds for an interval, got {list(label_seeds)}")
    bad = [s for s in label_seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if bad:  # every seed before the first draw trains
        raise ConfigError("label_seeds", f"must be integers between 0 and {MAX_SEED}, got {bad[0]!r}")
    out_dir = run_folder(out_dir)
    rows = []
    with RunLock(out_dir):
        for seed in label_seeds:
            cfg = copy.deepcopy(config)
            cfg.data.label_seed = seed
            final = _train_draw(cfg, draw_dir(out_dir, seed), progress)
            row = {"label_seed": seed, **final}
            if "accuracy" in final and "baseline_accuracy" in final:
                row["difference"] = final["accuracy"] - final["baseline_accuracy"]
            rows.append(row)
        summary = summarize_draws(rows)
        atomic_write_text(out_dir / "draws.json", json.dumps({"draws": rows, "summary": summary}, indent=2) + "\n")
        atomic_write_text(out_dir / "draws.md", draws_markdown(rows, summary))
    return rows, summary


def summarize_draws(rows: list[dict]) -> dict:
    """Mean and Student-t 95% half-width over the draws of each :data:`SUMMARIZED` key in every row."""
    summary = {}
    for key in SUMMARIZED:
        values = [r[key] for r in rows if key in r]
        if values and len(values) == len(rows):
            mean, half = mean_interval(values)
            summary[key] = {"mean": mean, "half_width": half, "draws": len(values)}
    return summary


def draws_markdown(rows: list[dict], summary: dict) -> str:
    """A table with one row per draw and a last row of means ± 95% half-widths."""
    keys = [k for k in SUMMARIZED if k in summary]
    lines = [
        "| label seed | " + " | ".join(SUMMARIZED[k] for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    lines += [f"| {r['label_seed']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    lines.append(
        f"| mean ± 95% interval ({len(rows)} draws) | "
        + " | ".join(f"{summary[k]['mean']:.4f} ± {summary[k]['half_width']:.4f}" for k in keys)
        + " |"
    )
    return "\n".join(lines) + "\n"


__all__ = ["label_draws", "summarize_draws", "draws_markdown", "draw_dir", "SUMMARIZED"]


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The mean of repeated runs (e.g. label draws) and the half-width of its Student-t interval.

    :returns: ``(mean, half_width)``; the half-width is ``nan`` for a single value.
    """
    import scipy.stats

    v = torch.as_tensor(values, dtype=torch.float64)
    if len(v) < 2:
        return v.mean().item(), float("nan")
    t = scipy.stats.t.ppf(0.5 + level / 2, len(v) - 1)
    return v.mean().item(), (t * v.std() / len(v) ** 0.5).item()
