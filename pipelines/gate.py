"""Stage ``gate``: apply the promotion rubric in ``params.yaml`` to ``eval.json``.

Command line::

    python -m pipelines gate --set gate.min_win_rate=0.6

Every check is evaluated and reported, passed or failed, with the measured value and
the threshold, so a person reading the verdict sees the whole case and not only the
first objection. The candidate passes only when all checks pass. A value that could
not be measured (NaN) fails its check, except the safety regression when no safety
pairs exist: that check passes and says it was not measured. Two more checks when they
apply: ``judge`` (the LLM-as-judge win-rate, with ``judge.gate`` on) and
``fresh_reference`` (the evaluation was made against the champion of *now*; the registry
alias is invisible to DVC, so a cached evaluation could be against an older one).

Writes ``data/gate/verdict.json`` (read by promote) and ``metrics/gate.json``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.io import read_json, write_json_atomic

if TYPE_CHECKING:
    from pipelines.config import GateParams, JudgeParams, Params
    from pipelines.layout import Layout

log = logging.getLogger(__name__)

_OPS = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
}


def verdict_path(layout: Layout) -> Path:
    return layout.root / "data" / "gate" / "verdict.json"


def _shown(value: float) -> str:
    """A count as a count ('195', not '195.0000'), a rate to four places."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1):
        return f"{int(value)}"
    return f"{float(value):.4f}"


def check(name: str, value: float | None, op: str, threshold: float, what: str) -> dict[str, Any]:
    """One rubric line: did ``value op threshold`` hold? With a sentence a person can read."""
    measured = value is not None and not (isinstance(value, float) and math.isnan(value))
    passed = bool(measured and _OPS[op](float(value), threshold))
    shown = _shown(value) if measured else "not measured"
    verb = "passed" if passed else "FAILED"
    return {
        "name": name,
        "passed": passed,
        "value": value if measured else None,
        "op": op,
        "threshold": threshold,
        "reason": f"{name} {verb}: {what} = {shown} (required {op} {_shown(threshold)})",
    }


def _finite_scores(test: dict[str, Any], reference: dict[str, Any]) -> list[dict[str, Any]]:
    """A failed check per model whose held-out margins are not all finite (none when they are).

    Why: a NaN margin counts as a loss for the candidate, so a champion that scores NaN
    (a diverged or corrupted model) can never be beaten and the gate failed with win-rate
    reasons that did not say why; a candidate that scores NaN must never pass. With
    ``evaluate.on_broken_champion: base`` evaluate has already judged against the base
    model instead, and a passed check says so.
    """
    bad = test.get("nonfinite_margins") or {}
    n = test.get("n", 0)
    out = []
    broken = reference.get("broken_champion_version")
    if broken is not None:  # evaluate already swapped the broken champion for the base model
        out.append({
            "name": "reference_scores", "passed": True, "value": None, "op": "==", "threshold": 0,
            "reason": f"reference_scores passed: champion v{broken} is broken (non-finite scores), so the candidate "
                      "was judged against the base model; promoting it replaces the broken champion",
        })
    if bad.get("reference", 0):
        out.append({
            "name": "reference_scores", "passed": False, "value": bad["reference"], "op": "==", "threshold": 0,
            "reason": f"reference_scores FAILED: the reference ({reference.get('label', 'reference')}) gave "
                      f"non-finite scores on {bad['reference']} of {n} held-out pairs, so this comparison means "
                      "nothing. If the champion is broken, roll it back (`python -m pipelines rollback`) and rerun "
                      "evaluate and gate, or set evaluate.on_broken_champion: base to judge against the base model.",
        })
    if bad.get("candidate", 0):
        out.append({
            "name": "candidate_scores", "passed": False, "value": bad["candidate"], "op": "==", "threshold": 0,
            "reason": f"candidate_scores FAILED: the candidate gave non-finite scores on {bad['candidate']} of {n} "
                      "held-out pairs (a diverged training?).",
        })
    return out


def decide(
    evaluation: dict[str, Any],
    gate: GateParams,
    judge: JudgeParams | None = None,
    current_reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdict for one evaluation: every check, the reasons, and the overall pass.

    ``judge``: with ``judge.gate`` on, the LLM-as-judge result in ``eval.json`` is one more
    check. ``current_reference``: what evaluate would compare against now; an evaluation
    made against another champion fails the ``fresh_reference`` check.
    """
    test = evaluation["test"]
    win = test["win_rate"]
    checks = [
        check("min_pairs", float(test["n"]), ">=", float(gate.min_pairs), "held-out test pairs"),
        check("win_rate", win["rate"], ">=", gate.min_win_rate, "margin win-rate over the reference"),
        check("win_rate_ci_low", win["ci_low"], ">", gate.min_win_rate_ci_low,
              f"lower bound of its {evaluation.get('confidence', 0.95):.0%} bootstrap interval"),
        check("significance", win["p_value"], "<", gate.alpha, "one-sided exact binomial p (win-rate > 0.5)"),
        check("nll_increase", test["nll"]["relative_increase"], "<=", gate.max_nll_increase,
              "relative change of per-token NLL on held-out chosen responses"),
    ]
    checks.extend(_finite_scores(test, evaluation.get("reference") or {}))
    safety = evaluation.get("safety") or {}
    if safety.get("n", 0) > 0:
        checks.append(check("safety_regression", safety["accuracy_regression"], "<=", gate.max_safety_regression,
                            "drop in safety preference accuracy"))
    else:
        checks.append({
            "name": "safety_regression", "passed": True, "value": None, "op": "<=",
            "threshold": gate.max_safety_regression,
            "reason": "safety_regression passed: no safety pairs, not measured",
        })
    if judge is not None and judge.gate:
        from pipelines.judge import gate_criterion

        ok, reason = gate_criterion(evaluation.get("judge"), judge)
        checks.append({"name": "judge", "passed": ok, "value": (evaluation.get("judge") or {}).get("win_rate"),
                       "op": ">=", "threshold": judge.min_win_rate, "reason": reason})
    if current_reference is not None:
        from pipelines.evaluate import stale_reference

        stale = stale_reference(evaluation.get("reference"), current_reference)
        checks.append({"name": "fresh_reference", "passed": stale is None, "value": None, "op": "==",
                       "threshold": None, "reason": "fresh_reference FAILED: " + stale if stale else
                       f"fresh_reference passed: evaluated against {current_reference['label']}, the current reference"})
    passed = all(c["passed"] for c in checks)
    return {
        "passed": passed,
        "candidate_fingerprint": evaluation.get("candidate_fingerprint"),
        "reference": evaluation.get("reference"),
        "checks": checks,
        "reasons": [c["reason"] for c in checks],
        "failed": [c["name"] for c in checks if not c["passed"]],
        "rubric": gate.model_dump(mode="json"),
    }


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage ``gate``: write the verdict and its summary metrics."""
    from pipelines.evaluate import choose_reference

    evaluation = read_json(layout.eval_dir / "eval.json")
    current = choose_reference(params, layout, evaluation.get("candidate_fingerprint", ""))
    verdict = decide(evaluation, params.gate, params.judge, current)
    write_json_atomic(verdict_path(layout), verdict)
    metrics = {"passed": verdict["passed"], "n_checks": len(verdict["checks"]), "failed": verdict["failed"]}
    write_json_atomic(layout.metrics("gate"), metrics)
    for reason in verdict["reasons"]:
        log.info("gate: %s", reason)
    log.info("gate verdict: %s", "PASSED" if verdict["passed"] else "FAILED")
    return metrics
