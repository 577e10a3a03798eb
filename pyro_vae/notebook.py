"""What the tutorial notebooks share: claims checked where they are made, and the closing line with the
notebook's measured cost.

- :class:`Claims`: a sentence about a result is rendered by the cell that computes it, and in a full run
  the cell asserts it, so the committed outputs show only claims that held. In smoke mode
  (``PYRO_VAE_SMOKE=1``, tiny sizes) claims about results are not asserted; exact ones still are.
- :func:`show_cost`: ``tutorials/run.py`` times every run of a notebook and records it in
  ``tutorials/timings.json``; the notebook's last cell renders that record and how to run it, so the time
  a notebook states is the time its saved outputs took.

Importing this module silences tqdm's notice that ipywidgets is missing (``tqdm.auto``, imported by Pyro,
prints it as a warning in every notebook without ipywidgets): a notebook imports it before Pyro.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

TIMINGS = Path(__file__).resolve().parents[1] / "tutorials" / "timings.json"
SMOKE_VARIABLE = "PYRO_VAE_SMOKE"  #: the environment variable that selects smoke mode (value ``"1"``)

warnings.filterwarnings("ignore", message="IProgress not found")


def smoke_mode() -> bool:
    """Whether the notebook runs in smoke mode: ``PYRO_VAE_SMOKE=1`` in the environment."""
    return os.environ.get(SMOKE_VARIABLE) == "1"


class ClaimFailed(AssertionError):
    """A claim a notebook makes about its results does not hold for the values it computed."""


class Claims:
    """The claims one notebook makes about its results, each checked in the cell that makes it.

    :meth:`check` asserts a claim, :meth:`state` asserts it and renders its sentence as Markdown. A claim
    about a result (larger, smaller, within so many standard errors, …) is asserted in a full run only:
    at smoke sizes it may not hold, and it is counted as skipped. An ``exact`` claim (an identity that
    holds at any size, up to round-off) is asserted in both modes. :meth:`report` says how many were
    checked; a failed claim raises :class:`ClaimFailed` with its sentence, which stops the run.

    :param smoke: smoke mode; by default read from the environment (:func:`smoke_mode`).
    """

    def __init__(self, smoke: bool | None = None):
        self.smoke = smoke_mode() if smoke is None else bool(smoke)
        self.checked = 0
        self.skipped = 0

    def check(self, condition, sentence: str, *, exact: bool = False) -> None:
        """Assert ``condition`` (anything ``bool()`` accepts, such as a one-element tensor), unless in smoke mode
        and not ``exact``. Returns nothing, so that a cell ending in a check shows no value.

        :raises ClaimFailed: with ``sentence``, if it is asserted and false."""
        if self.smoke and not exact:
            self.skipped += 1
            return
        if not bool(condition):
            raise ClaimFailed(f"claim failed: {sentence}")
        self.checked += 1

    def state(self, condition, sentence: str, *, exact: bool = False) -> None:
        """:meth:`check` the claim, then display ``sentence`` as Markdown."""
        from IPython.display import Markdown, display

        self.check(condition, sentence, exact=exact)
        display(Markdown(sentence))

    def report(self) -> str:
        """One sentence: how many claims were checked (all of them held, or the run would have stopped), and in
        smoke mode how many were skipped."""
        held = f"{self.checked} claim{'s' if self.checked != 1 else ''} checked, and every one held"
        if not self.smoke:
            return f"**Claims:** {held}."
        return f"**Claims (smoke mode):** {held}; {self.skipped} about results not checked at these sizes."

    def show_report(self) -> None:
        """Display :meth:`report` as Markdown: the cell before a notebook's last."""
        from IPython.display import Markdown, display

        display(Markdown(self.report()))


def _plural(n, word: str) -> str:
    if n is None:
        return f"default {word}s"
    return f"{n} {word}{'s' if n != 1 else ''}"


def cost_note(stem: str, timings: Path = TIMINGS) -> str:
    """One line of Markdown: the wall time of each recorded run (``full``, ``smoke``) of notebook ``stem``, and
    the commands that run it.

    :param stem: the notebook's name without suffix, e.g. ``"02_vae_mnist"``.
    """
    runs = json.loads(timings.read_text()).get(stem, {}) if timings.exists() else {}
    measured = "; ".join(
        f"{mode} run {t['seconds']:.0f} s ({_plural(t['cpus'], 'CPU core')}, {_plural(t['threads'], 'thread')}, "
        f"load average {t['load_1min']:.1f}, {t['date']})"
        for mode, t in sorted(runs.items())
    )
    number = stem.split("_")[0]
    return (
        f"**Cost:** {measured or 'not measured yet'}. **Run it:** `python tutorials/run.py {number}` runs it in full "
        "and saves the outputs into the notebook; add `--smoke` for tiny sizes."
    )


def show_cost(stem: str) -> None:
    """Display :func:`cost_note` in the notebook: its last cell, which ``tutorials/run.py`` executes again
    after a full run so that it states the time of that run."""
    from IPython.display import Markdown, display

    display(Markdown(cost_note(stem)))
