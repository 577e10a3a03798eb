"""The notebooks' helper: claims asserted in full runs and skipped at smoke sizes, and the closing cost line."""

import json

import pytest
import torch

from pyro_vae.notebook import ClaimFailed, Claims, cost_note, smoke_mode


def test_a_false_claim_stops_a_full_run_with_its_sentence():
    claims = Claims(smoke=False)
    assert claims.check(2 > 1, "two is larger than one") is None  # a cell ending in a check shows no value
    with pytest.raises(ClaimFailed, match="claim failed: the gap is 0.5 nats, below 0.1") as failure:
        claims.check(0.5 < 0.1, "the gap is 0.5 nats, below 0.1")
    assert isinstance(failure.value, AssertionError)
    assert (claims.checked, claims.skipped) == (1, 0)


def test_smoke_mode_skips_claims_about_results_but_not_exact_ones():
    claims = Claims(smoke=True)
    claims.check(False, "IWAE's bound is tighter")
    claims.check(True, "the identity holds to round-off", exact=True)
    assert (claims.checked, claims.skipped) == (1, 1)
    with pytest.raises(ClaimFailed, match="K = 1 equals Trace_ELBO"):
        claims.check(False, "K = 1 equals Trace_ELBO", exact=True)
    assert claims.report() == (
        "**Claims (smoke mode):** 1 claim checked, and every one held; 1 about results not checked at these sizes."
    )


def test_claims_take_tensors_and_count_for_the_report():
    claims = Claims(smoke=False)
    claims.check(torch.tensor(3.0) > 2, "a tensor comparison")
    claims.check((torch.arange(3) >= 0).all(), "every element")
    with pytest.raises(ClaimFailed):
        claims.check(torch.tensor(False), "a false tensor")
    assert claims.report() == "**Claims:** 2 claims checked, and every one held."


def test_state_displays_the_sentence_only_after_it_held(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    claims = Claims(smoke=False)
    claims.state(True, "**the ELBO** is below log p(x)")
    with pytest.raises(ClaimFailed):
        claims.state(False, "never shown")
    assert shown == ["**the ELBO** is below log p(x)"]


def test_smoke_mode_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYRO_VAE_SMOKE", "1")
    assert smoke_mode() and Claims().smoke
    monkeypatch.setenv("PYRO_VAE_SMOKE", "0")
    assert not smoke_mode() and not Claims().smoke
    monkeypatch.delenv("PYRO_VAE_SMOKE")
    assert not Claims().smoke


def test_cost_note_states_each_recorded_run_and_how_to_run_it(tmp_path):
    timings = tmp_path / "timings.json"
    run_it = (
        "**Run it:** `python tutorials/run.py 02` runs it in full and saves the outputs into the notebook; "
        "add `--smoke` for tiny sizes."
    )
    assert cost_note("02_vae_mnist", timings) == "**Cost:** not measured yet. " + run_it
    record = {"seconds": 93.64, "load_1min": 0.52, "cpus": 2, "threads": 1, "date": "2026-11-29 04:00 UTC"}
    smoke = {**record, "seconds": 17.2, "threads": None}
    timings.write_text(json.dumps({"02_vae_mnist": {"full": record, "smoke": smoke}}))
    assert cost_note("02_vae_mnist", timings) == (
        "**Cost:** full run 94 s (2 CPU cores, 1 thread, load average 0.5, 2026-11-29 04:00 UTC); "
        "smoke run 17 s (2 CPU cores, default threads, load average 0.5, 2026-11-29 04:00 UTC). " + run_it
    )
    assert cost_note("01_kl_and_elbo", timings).startswith("**Cost:** not measured yet. ")
