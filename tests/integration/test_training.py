"""Gate correctness end to end: real training, a real MLflow SQLite registry, real promotion.

One story, in order (each step depends on the registry state the previous one left):

1. a candidate DPO-trained on the true pairs is promoted over the base model (v1);
2. a candidate trained on label-flipped pairs is registered but rejected, with the
   failed checks as reasons, and ``champion`` stays on v1 (the LLM-as-judge runs in
   evaluate against a local OpenAI-compatible server and is one of the gate's checks);
3. a better-trained true candidate beats v1 and becomes champion (v3), v1 is kept as
   ``previous_champion``; the champion loads through MLflow's pyfunc and scores;
4. ``rollback`` puts v1 back; a second rollback has nowhere to go;
5. after the champion moves, the evaluation on disk is stale: gate and promote refuse it;
6. the champion's weights are corrupted in the store (it scores NaN): with
   ``evaluate.on_broken_champion: fail`` the gate says so and names the rollback; by
   default the candidate is judged against the base model and replaces the broken champion.

A tiny model (64 hidden, 2 layers) on synthetic support-style pairs keeps it to about a
minute on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import evaluate, gate, promote, train
from pipelines import model as base_model
from pipelines.config import JudgeParams
from pipelines.io import read_json
from pipelines.layout import Layout
from pipelines.tracking import alias_version, client
from tests.integration.http_fixtures import LocalServer, openai_handler
from tests.integration.training_fixtures import tiny_params, torch_threads, write_pairs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def cycle(params, layout: Layout) -> tuple[dict, dict, dict]:
    """train -> evaluate -> gate -> promote; returns (evaluation headline, verdict, promote result)."""
    train.run(params, layout)
    head = evaluate.run(params, layout)
    gate.run(params, layout)
    verdict = read_json(gate.verdict_path(layout))
    return head, verdict, promote.run(params, layout)


def aliases(params, layout: Layout) -> tuple[str | None, str | None]:
    c = client(layout)
    champ = alias_version(c, params.registry.model_name, params.registry.champion_alias)
    prev = alias_version(c, params.registry.model_name, params.registry.previous_alias)
    return (str(champ.version) if champ else None, str(prev.version) if prev else None)


def corrupt_in_store(params, layout: Layout, version: str) -> int:
    """Overwrite every weight of a registered version's artifact, in the store itself, with NaN.

    Why in the store: that is what a bad upload or a diverged run promoted by hand leaves
    behind, and evaluate downloads the champion from there. Returns the tensors changed.
    """
    from urllib.parse import unquote, urlparse

    import torch
    from safetensors.torch import load_file, save_file

    c = client(layout)
    location = urlparse(c.get_model_version_download_uri(params.registry.model_name, version))
    changed = 0
    for path in (Path(unquote(location.path)) / "artifacts" / "candidate").rglob("*.safetensors"):
        tensors = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                   for k, v in load_file(path).items()}
        save_file(tensors, path)
        changed += len(tensors)
    return changed


def test_true_pairs_promoted_flipped_rejected_and_rollback_restores(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    layout = Layout(tmp_path / "project")
    write_pairs(layout)
    params = tiny_params(**{"train.dpo.max_steps": 16})
    base_model.run(params, layout)

    # 1. true pairs: promoted over the base model
    head, verdict, result = cycle(params, layout)
    assert read_json(layout.eval_dir / "eval.json")["reference"]["kind"] == "base"
    assert verdict["passed"], verdict["reasons"]
    assert head["win_rate"] > 0.8 and head["win_rate_ci_low"] > 0.5
    assert result["promoted"] and result["version"] == "1"
    assert aliases(params, layout) == ("1", None)
    report = (layout.eval_dir / "report.md").read_text()
    assert "margin win-rate" in report and (layout.eval_dir / "figures" / "slices.png").stat().st_size > 1000

    # the same candidate again: nothing new is registered, nothing moves
    again = promote.run(params, layout)
    assert again["version"] == "1" and not again["registered"] and again["reason"] == "already champion"

    # 2. label-flipped pairs: evaluated against champion v1, rejected with reasons. The
    # LLM-as-judge runs in evaluate and is a gate check here: a judge that always answers
    # "A" (position bias) is neutralised by the order swap into all ties, win-rate 0.5
    write_pairs(layout, flip=True)
    with LocalServer(openai_handler(lambda req: "A")) as judge_server:
        judged = params.model_copy(update={"judge": JudgeParams(
            enabled=True, gate=True, base_url=judge_server.url + "/v1", model="judge-test", sample_size=6,
            max_new_tokens=8, min_items=4, min_win_rate=0.55, backoff_s=0.01)})
        head, verdict, result = cycle(judged, layout)
        n_judge_calls = len(judge_server.requests)
    ev = read_json(layout.eval_dir / "eval.json")
    assert n_judge_calls == 2 * ev["judge"]["n_items"] and ev["judge"]["n"] == ev["judge"]["ties"] > 0
    assert head["judge_win_rate"] == 0.5 and "judge" in verdict["failed"]
    assert "LLM-as-judge" in (layout.eval_dir / "report.md").read_text()
    assert read_json(layout.eval_dir / "eval.json")["reference"] == {
        "kind": "champion", "label": "champion v1", "champion_version": "1",
        "fingerprint": read_json(layout.eval_dir / "eval.json")["reference"]["fingerprint"]}
    assert head["win_rate"] < 0.2
    assert not verdict["passed"]
    assert {"win_rate", "win_rate_ci_low", "significance"} <= set(verdict["failed"])
    assert not result["promoted"] and result["version"] == "2"
    assert "win_rate FAILED" in result["reason"]
    assert aliases(params, layout) == ("1", None)
    v2 = client(layout).get_model_version(params.registry.model_name, "2")
    assert v2.tags["gate"] == "failed" and "win_rate FAILED" in v2.tags["gate_reasons"]

    # 3. true pairs, trained longer: beats v1, v1 stays findable as previous_champion
    write_pairs(layout)
    stronger = tiny_params(**{"train.dpo.max_steps": 40})
    head, verdict, result = cycle(stronger, layout)
    assert verdict["passed"], verdict["reasons"]
    assert result["promoted"] and result["version"] == "3" and result["previous_champion"] == "1"
    assert aliases(params, layout) == ("3", "1")
    v3 = client(layout).get_model_version(params.registry.model_name, "3")
    for tag in ("promoted_by", "promoted_at", "promotion_reason", "data.train_pairs_md5", "metric.win_rate",
                "git_commit", "replaced_version"):
        assert v3.tags.get(tag), tag
    assert "gate: **PASSED**" in (layout.root / "data" / "registry" / "model_card.md").read_text()

    import mlflow
    import pandas as pd

    policy = mlflow.pyfunc.load_model(f"models:/{params.registry.model_name}@champion")
    prompt = json.dumps([{"role": "user", "content": "Hi, this is Ana. I have a problem with the refund."}])
    scored = policy.predict(pd.DataFrame({
        "prompt": [prompt, prompt],
        "response": ["Thanks for reaching out about the refund. I fixed it.", "Not my problem."],
    }))
    assert scored["n_tokens"].min() > 0 and scored["logp"].notna().all()

    # 4. rollback: v1 is champion again, then there is nothing further back
    rolled = promote.rollback(params, layout=layout)
    assert rolled["champion"] == "1" and rolled["from_version"] == "3"
    assert aliases(params, layout) == ("1", None)
    with pytest.raises(RuntimeError, match="nothing to roll back"):
        promote.rollback(params, layout=layout)
    # an explicit target is a manual promotion that a rollback can undo
    promote.rollback(params, to_version="3", layout=layout)
    assert aliases(params, layout) == ("3", "1")
    promote.rollback(params, layout=layout)
    assert aliases(params, layout) == ("1", None)

    # 5. the champion moves after evaluate ran (a manual promotion of v2): the evaluation on
    # disk (v3's candidate against champion v1) is stale, so gate and promote refuse it
    promote.rollback(params, to_version="2", layout=layout)
    gate.run(params, layout)
    verdict = read_json(gate.verdict_path(layout))
    assert verdict["failed"] == ["fresh_reference"], verdict["reasons"]
    assert "made against champion v1" in " ".join(verdict["reasons"])
    result = promote.run(params, layout)
    assert not result["promoted"] and "fresh_reference FAILED" in result["reason"]
    assert aliases(params, layout) == ("2", "1")

    # 6. champion v2's weights turn to NaN in the store. Asked to fail, the gate says why
    # and names the rollback; by default v3's candidate is judged against the base model
    # instead and replaces the broken champion
    assert corrupt_in_store(params, layout, "2") > 0
    strict = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"on_broken_champion": "fail"})})
    evaluate.run(strict, layout)
    gate.run(strict, layout)
    verdict = read_json(gate.verdict_path(layout))
    assert "reference_scores" in verdict["failed"] and "rollback" in " ".join(verdict["reasons"])
    assert not promote.run(strict, layout)["promoted"] and aliases(params, layout) == ("2", "1")
    head = evaluate.run(params, layout)
    reference = read_json(layout.eval_dir / "eval.json")["reference"]
    assert reference["kind"] == "base" and reference["broken_champion_version"] == "2", reference
    assert reference["broken_champion_nonfinite"]["test"] == head["n_test"]
    gate.run(params, layout)
    verdict = read_json(gate.verdict_path(layout))
    assert verdict["passed"], verdict["reasons"]
    assert any("champion v2 is broken" in r for r in verdict["reasons"])
    result = promote.run(params, layout)
    assert result["promoted"] and result["version"] == "3" and "broken champion v2" in result["reason"]
    assert aliases(params, layout) == ("3", "2")
