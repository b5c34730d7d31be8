"""The promotion rubric: every check reported, any failure blocks, reasons readable."""

from __future__ import annotations

import copy
import math

import pytest

from pipelines.config import GateParams, JudgeParams, Params
from pipelines.evaluate import broken_champion_reference, stale_reference
from pipelines.gate import decide, run, verdict_path
from pipelines.io import read_json, write_json_atomic
from pipelines.layout import Layout


def good_evaluation() -> dict:
    return {
        "candidate_fingerprint": "abc123",
        "reference": {"kind": "base", "label": "base model (no champion yet)"},
        "confidence": 0.95,
        "test": {
            "n": 120,
            "win_rate": {"rate": 0.7, "ci_low": 0.62, "ci_high": 0.78, "p_value": 1e-5},
            "nll": {"candidate": 2.0, "reference": 1.95, "relative_increase": 0.0256},
        },
        "safety": {"n": 40, "accuracy_regression": 0.0},
    }


def names(verdict: dict, passed: bool) -> set[str]:
    return {c["name"] for c in verdict["checks"] if c["passed"] is passed}


def test_a_good_candidate_passes_every_check_with_reasons():
    v = decide(good_evaluation(), GateParams())
    assert v["passed"] is True
    assert names(v, False) == set()
    assert names(v, True) == {"min_pairs", "win_rate", "win_rate_ci_low", "significance", "nll_increase",
                              "safety_regression"}
    assert len(v["reasons"]) == 6 and all("passed" in r for r in v["reasons"])
    assert v["candidate_fingerprint"] == "abc123"


@pytest.mark.parametrize(
    ("path", "value", "failed"),
    [
        (("test", "n"), 5, "min_pairs"),
        (("test", "win_rate", "rate"), 0.52, "win_rate"),
        (("test", "win_rate", "ci_low"), 0.49, "win_rate_ci_low"),
        (("test", "win_rate", "ci_low"), 0.5, "win_rate_ci_low"),  # the bound must be exceeded, not met
        (("test", "win_rate", "p_value"), 0.2, "significance"),
        (("test", "nll", "relative_increase"), 0.25, "nll_increase"),
        (("safety", "accuracy_regression"), 0.1, "safety_regression"),
        (("test", "win_rate", "rate"), math.nan, "win_rate"),
    ],
)
def test_each_failed_check_blocks_promotion_and_is_named(path, value, failed):
    e = copy.deepcopy(good_evaluation())
    node = e
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    v = decide(e, GateParams())
    assert v["passed"] is False
    assert v["failed"] == [failed]
    reason = next(c["reason"] for c in v["checks"] if c["name"] == failed)
    assert "FAILED" in reason
    # the other checks are still reported
    assert len(v["checks"]) == 6


def test_thresholds_come_from_params():
    e = good_evaluation()
    assert decide(e, GateParams(min_win_rate=0.75))["failed"] == ["win_rate"]
    assert decide(e, GateParams(max_nll_increase=0.01))["failed"] == ["nll_increase"]


def test_no_safety_pairs_is_reported_not_measured():
    e = good_evaluation()
    e["safety"] = {"n": 0}
    v = decide(e, GateParams())
    assert v["passed"] is True
    assert "not measured" in next(c["reason"] for c in v["checks"] if c["name"] == "safety_regression")


def test_a_missing_safety_file_is_an_error_not_an_unmeasured_pass(tmp_path):
    """Only a safety set that is empty on purpose may pass as 'not measured'."""
    import polars as pl

    from pipelines.evaluate import load_sets

    layout = Layout(tmp_path)
    layout.pairs_split("test").parent.mkdir(parents=True)
    pl.DataFrame({"pair_id": ["p1"]}).write_parquet(layout.pairs_split("test"))
    with pytest.raises(FileNotFoundError, match=r"safety\.parquet is missing.*dvc repro pairs"):
        load_sets(Params(), layout)
    pl.DataFrame({"pair_id": []}, schema={"pair_id": pl.String}).write_parquet(layout.safety_pairs)
    assert load_sets(Params(), layout)["safety"].height == 0


def test_run_writes_verdict_and_metrics(tmp_path):
    layout = Layout(tmp_path)
    e = good_evaluation()
    e["test"]["win_rate"]["rate"] = 0.4
    write_json_atomic(layout.eval_dir / "eval.json", e)
    metrics = run(Params(), layout)  # no champion in this project's (empty) registry: base is current
    assert metrics == {"passed": False, "n_checks": 7, "failed": ["win_rate"]}
    verdict = read_json(verdict_path(layout))
    assert verdict["passed"] is False and verdict["rubric"]["min_win_rate"] == 0.55
    assert read_json(layout.metrics("gate")) == metrics


BASE = {"kind": "base", "label": "base model (no champion yet)"}
CHAMP = {"kind": "champion", "label": "champion v1", "champion_version": "1", "fingerprint": "f1"}
# what evaluate records when champion v1 scored NaN and the base model stood in for it
BROKEN_V1 = broken_champion_reference(CHAMP, {"test": 80, "safety": 0}, {"test": 80, "safety": 24})


@pytest.mark.parametrize(
    ("recorded", "current", "stale"),
    [
        (BASE, BASE, False),
        (CHAMP, CHAMP, False),
        # this candidate became the champion: the evaluation that promoted it stands
        (CHAMP, {"kind": "base", "label": "base model (champion v2 is this candidate)", "champion_version": "2"},
         False),
        (BASE, CHAMP, True),  # a champion appeared after evaluate ran against the base
        (CHAMP, {**CHAMP, "label": "champion v2", "champion_version": "2"}, True),  # it moved
        (None, CHAMP, True),  # an eval.json without a recorded reference cannot be trusted
        (BROKEN_V1, CHAMP, False),  # the base stood in for this very (broken) champion
        (BROKEN_V1, {**CHAMP, "label": "champion v2", "champion_version": "2"}, True),  # then it moved
        (BROKEN_V1, BASE, False),  # the base model is the base model however it was chosen
    ],
)
def test_stale_reference_only_when_the_champion_changed(recorded, current, stale):
    reason = stale_reference(recorded, current)
    assert (reason is not None) is stale
    if stale:
        assert current["label"] in reason and "dvc repro -f -s evaluate" in reason


def test_a_stale_evaluation_fails_the_fresh_reference_check():
    v = decide(good_evaluation(), GateParams(), current_reference=CHAMP)
    assert v["passed"] is False and v["failed"] == ["fresh_reference"]
    assert "made against base model (no champion yet)" in v["reasons"][-1]
    assert decide(good_evaluation(), GateParams(), current_reference=BASE)["passed"] is True


def judged(win_rate: float, ci_low: float, n: int = 40) -> dict:
    return {"n_items": n, "n": n, "wins": 20, "losses": 10, "ties": n - 30, "invalid": 0, "win_rate": win_rate,
            "ci_low": ci_low, "ci_high": min(1.0, win_rate + 0.1), "confidence": 0.95, "p_value": 0.03}


def test_the_judge_is_a_gate_check_only_when_judge_gate_is_on():
    off = JudgeParams(enabled=True, gate=False)
    assert "judge" not in {c["name"] for c in decide(good_evaluation(), GateParams(), off)["checks"]}
    on = JudgeParams(enabled=True, gate=True, min_win_rate=0.55)
    e = good_evaluation()
    assert decide(e, GateParams(), on)["failed"] == ["judge"]  # gate on, but no judge result: fails
    e["judge"] = judged(0.62, 0.51)
    assert decide(e, GateParams(), on)["passed"] is True
    e["judge"] = judged(0.52, 0.41)
    v = decide(e, GateParams(), on)
    assert v["failed"] == ["judge"] and "win-rate 0.520" in v["reasons"][-1]


def test_reasons_show_counts_as_counts_and_rates_to_four_places():
    from pipelines.gate import check

    assert check("min_test_pairs", 195, ">=", 20, "held-out test pairs")["reason"].endswith("= 195 (required >= 20)")
    assert check("win_rate", 0.69231, ">=", 0.55, "win-rate")["reason"].endswith("= 0.6923 (required >= 0.5500)")


def test_a_model_that_scores_nan_fails_with_a_reason_that_says_so():
    """A NaN margin counts as a candidate loss: a broken champion could never be beaten,
    and the gate only said the win-rate was low."""
    import numpy as np

    from pipelines.evaluate import Scores, compare

    rng = np.random.default_rng(0)
    n = 60
    lens = rng.integers(5, 50, size=n)

    def scores(margin):
        logp = rng.normal(-20, 1, size=n)
        return Scores(chosen_logp=logp + margin, chosen_n=lens, rejected_logp=logp, rejected_n=lens)

    broken_reference = np.full(n, np.nan)
    t = compare(scores(rng.normal(0.5, 1, size=n)), scores(broken_reference), lens, lens, n_boot=50)
    assert t["nonfinite_margins"] == {"candidate": 0, "reference": n}
    e = copy.deepcopy(good_evaluation())
    e["test"]["nonfinite_margins"] = t["nonfinite_margins"]
    e["reference"] = {"label": "champion v3"}
    v = decide(e, GateParams())
    assert not v["passed"] and "reference_scores" in v["failed"]
    reason = next(r for r in v["reasons"] if r.startswith("reference_scores"))
    assert "champion v3" in reason and f"{n} of" in reason and "rollback" in reason
    e["test"]["nonfinite_margins"] = {"candidate": 2, "reference": 0}
    assert "candidate_scores" in decide(e, GateParams())["failed"]
    e["test"]["nonfinite_margins"] = {"candidate": 0, "reference": 0}
    assert decide(e, GateParams())["passed"]


def test_a_broken_champion_replaced_by_the_base_model_is_named_and_does_not_block():
    """evaluate judged against the base model because champion v1 scored NaN: the
    verdict must say so (a reader sees why the reference is not the champion), pass
    when the rest passes, and still fail on the usual checks."""
    assert BROKEN_V1["kind"] == "base" and BROKEN_V1["broken_champion_version"] == "1"
    assert BROKEN_V1["broken_champion_nonfinite"] == {"test": 80}
    assert "champion v1 is broken" in BROKEN_V1["label"] and "80 of 80 test" in BROKEN_V1["label"]
    e = good_evaluation()
    e["reference"] = BROKEN_V1
    v = decide(e, GateParams(), current_reference=CHAMP)
    assert v["passed"], v["reasons"]
    reason = next(r for r in v["reasons"] if r.startswith("reference_scores"))
    assert reason.startswith("reference_scores passed") and "champion v1 is broken" in reason
    e["test"]["win_rate"]["rate"] = 0.4
    assert decide(e, GateParams(), current_reference=CHAMP)["failed"] == ["win_rate"]
