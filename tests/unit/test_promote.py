"""Promotion and rollback against a real MLflow SQLite registry, without a trained model.

Why these tests: the registry aliases (``champion``, ``previous_champion``) and the
version tags are what serving, rollback and a person auditing a promotion rely on.
Each test drives ``promote.run`` / ``promote.rollback`` through evaluate's and gate's
files on disk and asserts the registry state afterwards. The candidate is a folder with
a fake weights file, and logging it as a pyfunc (torch, transformers) is replaced by a
trivial pyfunc, so registering a version takes a second, not a training run.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines import evaluate, gate, promote, tracking
from pipelines.config import Params
from pipelines.io import read_json, write_json_atomic
from pipelines.layout import Layout
from pipelines.model import candidate_fingerprint

NAME = Params().registry.model_name
WINS = {"rate": 0.7, "ci_low": 0.62, "p": 1e-5}
LOSES = {"rate": 0.30, "ci_low": 0.22, "p": 0.99}
NEAR_EVEN = {"rate": 0.52, "ci_low": 0.45, "p": 0.4}


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return model_input  # a DataFrame hint: MLflow infers no schema from it (and does not warn)


def _log_stub(params: Params, layout: Layout, manifest: dict[str, Any]) -> tuple[str, str]:
    """Stands in for ``promote._log_policy``: a run with a trivial pyfunc, no torch."""
    exp = tracking.ensure_experiment(params, layout)
    with mlflow.start_run(experiment_id=exp, run_name="register") as run:
        info = mlflow.pyfunc.log_model(name="policy", python_model=_Echo(), pip_requirements=[])
        return info.model_uri, run.info.run_id


@pytest.fixture
def params(tmp_path, monkeypatch) -> Params:
    monkeypatch.setenv(tracking.ENV_URI, f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(promote, "_log_policy", _log_stub)
    monkeypatch.setenv("PREFPIPE_ACTOR", "tester")
    return Params()


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(tmp_path / "project")


def put_candidate(layout: Layout, weights: str) -> str:
    """A candidate folder on disk; the same ``weights`` give the same fingerprint."""
    cand = layout.candidate
    shutil.rmtree(cand, ignore_errors=True)
    cand.mkdir(parents=True)
    (cand / "weights.bin").write_text(f"weights {weights}")
    (cand / "manifest.json").write_text(json.dumps({"base": {"source": "builtin", "fingerprint": "0" * 64},
                                                     "data": {}, "params": {}}))
    return candidate_fingerprint(cand)


def write_evaluation(params: Params, layout: Layout, fp: str, score: dict[str, float]) -> dict[str, Any]:
    """``eval.json`` as evaluate writes it, against the reference evaluate would choose now."""
    reference = evaluate.choose_reference(params, layout, fp)
    write_json_atomic(layout.eval_dir / "eval.json", {
        "candidate_fingerprint": fp, "reference": reference, "confidence": 0.95,
        "test": {"n": 120, "win_rate": {"rate": score["rate"], "ci_low": score["ci_low"], "ci_high": 0.8,
                                        "p_value": score["p"]},
                 "nll": {"candidate": 2.0, "reference": 2.0, "relative_increase": 0.0}},
        "safety": {"n": 40, "accuracy_regression": 0.0},
        "headline": {"win_rate": score["rate"]},
    })
    return reference


def cycle(params: Params, layout: Layout, weights: str, score: dict[str, float] = WINS) -> dict[str, Any]:
    """candidate -> evaluate (files) -> gate -> promote."""
    fp = put_candidate(layout, weights)
    write_evaluation(params, layout, fp, score)
    gate.run(params, layout)
    return promote.run(params, layout)


def aliases(params: Params, layout: Layout) -> tuple[str | None, str | None]:
    c = tracking.client(layout)
    r = params.registry
    champ = tracking.alias_version(c, NAME, r.champion_alias)
    prev = tracking.alias_version(c, NAME, r.previous_alias)
    return (str(champ.version) if champ else None, str(prev.version) if prev else None)


def tags(layout: Layout, version: str) -> dict[str, str]:
    return dict(tracking.client(layout).get_model_version(NAME, version).tags)


def history(params: Params, layout: Layout, n: int) -> None:
    """Versions 1..n, each promoted over the one before (v_k replaced v_{k-1})."""
    for k in range(1, n + 1):
        assert cycle(params, layout, f"w{k}")["promoted"]
    assert aliases(params, layout) == (str(n), str(n - 1) if n > 1 else None)


# ------------------------------------------------------------------- the verdict judges this evaluation


def test_a_passed_verdict_about_another_reference_promotes_nothing(params, layout, tmp_path):
    """Evaluate rerun against a new champion, gate not rerun: the old "passed" must not count."""
    fp = put_candidate(layout, "X")
    write_evaluation(params, layout, fp, WINS)  # against the base model: no champion yet
    gate.run(params, layout)
    assert read_json(gate.verdict_path(layout))["passed"]

    other = Layout(tmp_path / "workspace_b")  # same registry: another run promotes Y meanwhile
    assert cycle(params, other, "Y")["promoted"]
    assert aliases(params, layout) == ("1", None)

    write_evaluation(params, layout, fp, LOSES)  # X against champion v1: X loses
    result = promote.run(params, layout)

    assert not result["promoted"] and result["champion"] == "1"
    assert result["reason"] == ("gate verdict is for base model (no champion yet), evaluation is against "
                                "champion v1: rerun the gate")
    assert aliases(params, layout) == ("1", None)
    x = tags(layout, result["version"])
    assert "gate" not in x and "promoted_by" not in x  # no record of a verdict that never judged this
    assert x["last_eval.evaluated_against"] == "champion v1" and "rerun the gate" in x["last_eval.outcome"]

    gate.run(params, layout)  # the gate judges the evaluation on disk: it fails, with reasons
    again = promote.run(params, layout)
    assert not again["promoted"] and again["reason"].startswith("gate failed: win_rate FAILED")
    assert tags(layout, result["version"])["gate"] == "failed"


# ------------------------------------------------------------------- registry errors are not "no champion"


def test_a_failed_champion_read_moves_nothing_and_the_retry_keeps_the_rollback_chain(params, layout, monkeypatch):
    history(params, layout, 1)
    put_candidate(layout, "w2")
    write_evaluation(params, layout, candidate_fingerprint(layout.candidate), WINS)
    gate.run(params, layout)

    real = MlflowClient.get_model_version_by_alias
    calls = {"n": 0}

    def lost_once(self: MlflowClient, name: str, alias: str) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # what MLflow raises when the server is lost after its retries
            raise MlflowException("API request failed: Max retries exceeded", error_code="INTERNAL_ERROR")
        return real(self, name, alias)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", lost_once)
    with pytest.raises(MlflowException, match="Max retries exceeded"):
        promote.run(params, layout)
    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", real)
    assert aliases(params, layout) == ("1", None)

    result = promote.run(params, layout)  # the retry
    assert result["promoted"] and result["previous_champion"] == "1"
    assert aliases(params, layout) == ("2", "1") and tags(layout, "2")["replaced_version"] == "1"
    assert promote.rollback(params, layout=layout)["champion"] == "1"


# ------------------------------------------------------------------- rollback validates before it writes


def test_rollback_to_a_deleted_version_names_it_and_moves_nothing(params, layout):
    history(params, layout, 3)
    tracking.client(layout).delete_model_version(NAME, "2")  # also drops previous_champion, which pointed at it
    with pytest.raises(promote.NothingToRollBack, match=r"has no version '2' \(the champion v3 replaced it"):
        promote.rollback(params, layout=layout)
    assert aliases(params, layout) == ("3", None)
    assert "rolled_back_at" not in tags(layout, "3")


def test_rollback_whose_previous_step_was_deleted_names_it_and_moves_nothing(params, layout):
    history(params, layout, 3)
    tracking.client(layout).delete_model_version(NAME, "1")
    with pytest.raises(promote.NothingToRollBack, match=r"has no version '1' \(v2 replaced it"):
        promote.rollback(params, layout=layout)
    assert aliases(params, layout) == ("3", "2")
    assert "rolled_back_at" not in tags(layout, "3") and "restored_at" not in tags(layout, "2")
    # the way out the message names: an explicit target
    assert promote.rollback(params, to_version="2", layout=layout)["champion"] == "2"
    assert aliases(params, layout) == ("2", "3")


def test_rollback_to_a_version_that_does_not_exist_is_a_clear_error(params, layout):
    history(params, layout, 1)
    with pytest.raises(promote.NothingToRollBack, match=r"has no version '7'"):
        promote.rollback(params, to_version="7", layout=layout)
    assert aliases(params, layout) == ("1", None)


# ------------------------------------------------------------------- rollback --to-version is normalised


def test_rollback_to_the_champion_spelled_differently_changes_nothing(params, layout):
    history(params, layout, 2)
    result = promote.rollback(params, to_version="02", layout=layout)
    assert result == {"champion": "2", "from_version": "2", "changed": False}
    assert aliases(params, layout) == ("2", "1") and tags(layout, "2")["replaced_version"] == "1"
    assert promote.rollback(params, layout=layout)["champion"] == "1"  # the chain still goes back
    assert aliases(params, layout) == ("1", None)


def test_rollback_to_another_version_spelled_differently_records_the_registry_number(params, layout):
    history(params, layout, 2)
    result = promote.rollback(params, to_version="01", layout=layout)
    assert result["champion"] == "1" and result["previous_champion"] == "2"
    assert aliases(params, layout) == ("1", "2") and tags(layout, "1")["replaced_version"] == "2"


# ------------------------------------------------------------------- a promotion record is not overwritten


def test_the_champions_own_rerun_keeps_the_record_it_was_promoted_on(params, layout):
    history(params, layout, 2)
    before = tags(layout, "2")
    description = tracking.client(layout).get_model_version(NAME, "2").description
    assert before["gate"] == "passed" and before["evaluated_against"] == "champion v1"

    # forced rerun of the champion's own candidate: now evaluated against the base model, and weaker there
    result = cycle(params, layout, "w2", NEAR_EVEN)

    after = tags(layout, "2")
    for key in ("gate", "gate_reasons", "evaluated_against", "metric.win_rate", "promotion_reason"):
        assert after[key] == before[key], key
    assert not result["promoted"] and result["reason"].startswith("already champion")
    assert result["champion"] == "2" and result["previous_champion"] == "1"
    assert tracking.client(layout).get_model_version(NAME, "2").description == description
    assert after["last_eval.gate"] == "failed" and after["last_eval.metric.win_rate"] == "0.52"
    assert after["last_eval.evaluated_against"].startswith("base model (champion v2 is this candidate)")
    assert aliases(params, layout) == ("2", "1")


def test_a_stale_evaluation_does_not_overwrite_a_versions_record(params, layout):
    history(params, layout, 1)
    assert not cycle(params, layout, "B", LOSES)["promoted"]  # v2: rejected against champion v1
    assert tags(layout, "2")["metric.win_rate"] == "0.3"
    assert cycle(params, layout, "C")["promoted"]  # v3 is champion now
    # B again with an evaluation made against v1 (restored from a cache): stale, the gate says so
    fp = put_candidate(layout, "B")
    write_json_atomic(layout.eval_dir / "eval.json", {
        **read_json(layout.eval_dir / "eval.json"), "candidate_fingerprint": fp,
        "reference": {"kind": "champion", "label": "champion v1", "champion_version": "1",
                      "fingerprint": tags(layout, "1")[tracking.FINGERPRINT_TAG]},
        "headline": {"win_rate": 0.52}})
    gate.run(params, layout)
    result = promote.run(params, layout)
    assert not result["promoted"] and "fresh_reference FAILED" in result["reason"]
    assert tags(layout, "2")["metric.win_rate"] == "0.3" and tags(layout, "2")["last_eval.metric.win_rate"] == "0.52"
    assert aliases(params, layout) == ("3", "1")


# ------------------------------------------------------------------- champion moves last


def test_promote_dying_before_the_alias_moves_is_finished_by_its_rerun(params, layout, monkeypatch):
    history(params, layout, 1)
    real = MlflowClient.set_model_version_tag

    def dies_on_promoted_by(self: MlflowClient, name: str, version: str, key: str, value: str) -> None:
        if key == "promoted_by":
            raise ConnectionError("simulated: process killed here")
        real(self, name, version, key, value)

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", dies_on_promoted_by)
    with pytest.raises(ConnectionError):
        cycle(params, layout, "w2")
    monkeypatch.setattr(MlflowClient, "set_model_version_tag", real)
    assert aliases(params, layout) == ("1", None)  # a champion without a promotion record never exists

    result = promote.run(params, layout)
    assert result["promoted"] and result["previous_champion"] == "1"
    assert aliases(params, layout) == ("2", "1")
    v2 = tags(layout, "2")
    assert v2["promoted_by"] == "tester" and v2["promoted_at"] and v2["promotion_reason"].startswith("gate passed")


def test_a_champion_without_its_promotion_record_gets_it_and_never_replaces_itself(params, layout):
    """A champion left by an older promote that died after the alias moved (or an alias set by hand)."""
    history(params, layout, 2)
    c = tracking.client(layout)
    for key in ("promoted_by", "promoted_at", "promotion_reason"):
        c.delete_model_version_tag(NAME, "2", key)

    result = promote.run(params, layout)  # the retry, with the verdict that promoted it still on disk

    assert result["reason"] == "already champion" and not result["promoted"]
    assert result["previous_champion"] == "1" and result["champion"] == "2"
    v2 = tags(layout, "2")
    assert v2["promoted_by"] == "tester" and v2["promoted_at"]
    assert v2["promotion_reason"].startswith("gate passed: ")
    assert not any(k.startswith("last_eval.") for k in v2)  # the evaluation on disk is its record
    assert aliases(params, layout) == ("2", "1")
