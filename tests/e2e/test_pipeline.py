"""End to end: the whole `dvc repro` on the embedded default, in a copy of the project.

This is what `make run` does after set-up: every stage from raw events to a promoted
champion. Then a second `dvc repro` must change nothing, and no canary PII may be
found anywhere the pipeline wrote (data outside data/raw, metrics, the MLflow store).

The run also has every optional endpoint switched on, each a local server on 127.0.0.1
speaking the real protocol: Langfuse (prompt API answering 404, so the bundled prompts
are used, and the OTLP/HTTP trace receiver), an OpenAI-compatible judge (evaluate runs
the LLM-as-judge) and Slack (the drift stage alerts through it; after the run the test
posts the messages the Airflow DAG would post from the run's outputs, and a failure alert
whose error text carries a canary). The PII audit then covers the data, the MLflow store,
every Slack payload, every exported span and the run's logs: zero canary hits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipelines.audit import load_canaries, scan, without_public
from tests.integration.airflow_fixtures import slack_recorder
from tests.integration.http_fixtures import (
    LocalServer,
    exported_spans,
    judged_responses,
    langfuse_handler,
    openai_handler,
)
from tests.project import KNOWN_INPUTS, SHARED, VENV_BIN, copy_project, project_env, run

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not SHARED.exists(), reason="../shared not present")]


JUDGE_SAMPLE = 8


def longer_answer_wins(request: dict) -> str:
    a, b = judged_responses(request)
    return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"


@pytest.fixture(scope="module")
def services():
    """Local Langfuse, judge and Slack endpoints for the whole module."""
    with (
        LocalServer(langfuse_handler({})) as langfuse,
        LocalServer(openai_handler(longer_answer_wins)) as judge,
        slack_recorder() as slack,
    ):
        yield langfuse, judge, slack


def enable_judge(params_yaml: Path) -> None:
    """Switch the judge on in the copy's params.yaml (a small sample; endpoint from env)."""
    text = params_yaml.read_text()
    for old, new in (("judge:", None), ("  enabled: false", "  enabled: true"),
                     ("  sample_size: 50", f"  sample_size: {JUDGE_SAMPLE}"),
                     ("  max_new_tokens: 96", "  max_new_tokens: 24")):
        if new is None:
            head, sep, judge = text.partition("\n" + old)
            assert sep, "params.yaml has no judge section"
            continue
        assert old in judge, old
        judge = judge.replace(old, new, 1)
    params_yaml.write_text(head + sep + judge)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, services):
    langfuse, judge, slack = services
    dest = copy_project(tmp_path_factory.mktemp("e2e"))
    enable_judge(dest / "params.yaml")
    env = project_env({
        "LANGFUSE_HOST": langfuse.url, "LANGFUSE_PUBLIC_KEY": "pk-lf-e2e", "LANGFUSE_SECRET_KEY": "sk-lf-e2e",
        "JUDGE_BASE_URL": judge.url + "/v1", "JUDGE_MODEL": "judge-e2e", "JUDGE_API_KEY": "sk-judge-e2e",
        "SLACK_WEBHOOK_URL": slack.url("/hook/ok"),
    })
    env.pop("MLFLOW_TRACKING_URI", None)  # the default: a SQLite store inside the project
    start = time.perf_counter()
    proc = run([str(VENV_BIN / "dvc"), "repro"], dest, env=env, timeout=1500)
    print(f"\nfull dvc repro: {time.perf_counter() - start:.0f} s")
    logs = dest.parent / "logs"
    logs.mkdir()
    (logs / "dvc-repro.log").write_text(proc.stdout + "\n" + proc.stderr)
    return dest, env, proc.stdout


def test_every_stage_ran_and_champion_exists(repo):
    dest, _env, _ = repo
    import yaml

    stages = list(yaml.safe_load((dest / "dvc.yaml").read_text())["stages"])
    lock = yaml.safe_load((dest / "dvc.lock").read_text())["stages"]
    assert set(stages) <= set(lock)
    promote = json.loads((dest / "metrics" / "promote.json").read_text())
    assert promote["promoted"] and promote["champion"], promote
    # the registry itself agrees: the alias points at the version promote reported
    from mlflow import MlflowClient

    # the registry URI too: unset, it follows whatever store an earlier test in this process set
    store = f"sqlite:///{dest / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("prefpipe-policy", "champion")
    assert str(version.version) == str(promote["champion"])


def test_rerun_changes_nothing(repo):
    dest, env, _ = repo
    out = run([str(VENV_BIN / "dvc"), "repro"], dest, env=env).stdout
    assert "Running stage" not in out, out
    assert "up to date" in run([str(VENV_BIN / "dvc"), "status"], dest, env=env).stdout


def test_the_judge_ran_and_was_traced(repo, services):
    dest, _, _ = repo
    langfuse, judge, _ = services
    ev = json.loads((dest / "data" / "eval" / "eval.json").read_text())
    assert ev["judge"]["n_items"] == JUDGE_SAMPLE and ev["judge"]["invalid"] == 0
    assert len(judge.requests) == 2 * JUDGE_SAMPLE  # every prompt judged in both orders
    assert "LLM-as-judge" in (dest / "data" / "eval" / "report.md").read_text()
    names = {s["name"] for s in exported_spans(langfuse)}
    assert len(names) >= 2, names  # generations of both policies and the judge calls


def post_run_alerts(dest: Path, slack) -> None:
    """Post what the training and drift DAGs would post for this run, plus a failure alert.

    The failure's error text carries a real canary: the alert must scrub it.
    """
    from pipelines import alerts
    from pipelines.orchestration import training_outcome

    target = alerts.target_from_env({"SLACK_WEBHOOK_URL": slack.url("/hook/ok")})
    outcome = training_outcome(dest)
    drift = json.loads((dest / "metrics" / "drift.json").read_text())
    email = next(v for t, v in load_canaries(dest / "data" / "raw" / "canaries.json") if t == "EMAIL")
    messages = [
        alerts.outcome_message(outcome, dag_id="prefpipe_training", run_id="e2e"),
        alerts.drift_message(drift, dag_id="prefpipe_drift", run_id="e2e", retrain_requested=False),
        alerts.failure_message(dag_id="prefpipe_training", task_id="ingest", run_id="e2e", error_type="ValueError",
                               error=f"could not parse the row of {email}: expected an object"),
    ]
    assert all(alerts.send(m, target) for m in messages)


def test_no_canary_anywhere_the_pipeline_wrote_sent_or_logged(repo, services):
    dest, _, _ = repo
    langfuse, _, slack = services
    post_run_alerts(dest, slack)
    sent = dest.parent / "sent"
    sent.mkdir(exist_ok=True)
    assert len(slack.requests) >= 3
    (sent / "slack.jsonl").write_text("\n".join(r["raw"] for r in slack.requests))
    spans = exported_spans(langfuse)
    assert spans
    (sent / "spans.json").write_text(json.dumps(spans, default=str))
    canaries, _ = without_public(load_canaries(dest / "data" / "raw" / "canaries.json"), KNOWN_INPUTS)
    roots = [p for p in (dest / "data").iterdir() if p.name != "raw"]
    roots += [dest / "metrics", dest / "mlflow", sent, dest.parent / "logs"]
    hits, n_files = scan(roots, canaries)
    assert n_files > 20
    assert hits == [], [(h.path, h.entity) for h in hits]
