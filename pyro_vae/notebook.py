"""What the tutorial notebooks share: the note that opens each one with its measured cost.

``tutorials/run.py`` times every run of a notebook and records it in ``tutorials/timings.json``;
:func:`show_cost` renders that record as the notebook's first output, so the time a notebook states
is the time its saved outputs took.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

TIMINGS = Path(__file__).resolve().parents[1] / "tutorials" / "timings.json"


def cost_note(stem: str, timings: Path = TIMINGS) -> str:
    """One line of Markdown: the wall time of each recorded run (``full``, ``smoke``) of notebook ``stem``.

    :param stem: the notebook's name without suffix, e.g. ``"02_vae_mnist"``.
    """
    runs = json.loads(timings.read_text()).get(stem, {}) if timings.exists() else {}
    measured = "; ".join(
        f"{mode} run {t['seconds']:.0f} s on {t['cpus']} CPU cores, {t['threads']} threads, "
        f"load average {t['load_1min']:.1f} ({t['date']})"
        for mode, t in sorted(runs.items())
    )
    return "**Cost** (wall time of the last `tutorials/run.py` run): " + (measured or "not measured yet")


def show_cost(stem: str) -> None:
    """Display :func:`cost_note` in the notebook, and silence tqdm's notice that ipywidgets is missing
    (``tqdm.auto``, imported by Pyro, prints it as a warning in every notebook without ipywidgets)."""
    from IPython.display import Markdown, display

    warnings.filterwarnings("ignore", message="IProgress not found")
    display(Markdown(cost_note(stem)))
