"""Failure alerts reach Slack, and a Slack that fails (500, or no answer) never fails a run.

Four ``dag.test()`` runs of the training DAG in one Airflow process (SQLite):

- a trigger form that does not validate: ``prepare_workspace`` fails at once (the retry
  policy knows retrying cannot help) and the failure callback posts the alert;
- the same with a Slack endpoint that never answers: the run fails because of the task,
  not the alert, and the callback gives up after its timeout;
- two runs that succeed while Slack answers 500 / never answers. Their stage tasks are
  marked success by ``dag.test(mark_success_pattern=...)``: what is under test is the
  announcing task and Slack, and running the stages again would only add minutes (the
  end-to-end run is in test_airflow_dag_test.py). ``prepare_workspace``, ``outcome`` and
  ``not_promoted`` run for real.
"""

from __future__ import annotations

import json

import pytest

from pipelines import orchestration as orch
from tests.integration.airflow_fixtures import (
    airflow_env,
    airflow_project,
    run_dag_tests,
    slack_recorder,
)
from tests.project import needs_shared

pytestmark = [pytest.mark.integration, needs_shared]

TRAINING = orch.TRAINING_DAG_ID
HANG_S = 20.0
BAD_FORM = {"overrides": {"train.no_such_field": 1}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    project = airflow_project(tmp_path_factory.getbasetemp())
    home = tmp_path_factory.mktemp("slack-failures-home")
    stages = "|".join(orch.training_stages(project / "dvc.yaml"))
    with slack_recorder(hang_s=HANG_S) as slack:
        env = airflow_env(home, project, home / "runs", {"SLACK_TIMEOUT_S": "1", orch.RETRY_DELAY_ENV: "1"})
        specs = [
            {"dag_id": TRAINING, "conf": BAD_FORM, "env": {"SLACK_WEBHOOK_URL": slack.url("/hook/ok")}},
            {"dag_id": TRAINING, "conf": BAD_FORM, "env": {"SLACK_WEBHOOK_URL": slack.url("/hook/hang")}},
            {"dag_id": TRAINING, "conf": {"dry_run": True}, "mark_success": stages,
             "env": {"SLACK_WEBHOOK_URL": slack.url("/hook/500")}},
            {"dag_id": TRAINING, "conf": {"dry_run": True}, "mark_success": stages,
             "env": {"SLACK_WEBHOOK_URL": slack.url("/hook/hang")}},
        ]
        result = run_dag_tests(env, specs, timeout=600)
        requests = list(slack.requests)
    print(f"\nslack failure runs: {[r['wall_s'] for r in result.runs]} s")
    return dict(zip(["alert", "alert_hang", "slack_500", "slack_hang"], result.runs, strict=True)) | {
        "slack": requests, "stages": stages.split("|")}


def test_a_failed_task_sends_the_failure_alert(runs):
    run = runs["alert"]
    assert run["state"] == "failed"
    assert run["tasks"]["prepare_workspace"] == "failed"
    assert all(run["tasks"][s] == "upstream_failed" for s in runs["stages"])
    alerts = [r for r in runs["slack"] if r["path"] == "/hook/ok"]
    assert len(alerts) == 1, "one alert, after the only try: invalid input is not retried"
    body = alerts[0]["body"]
    text = json.dumps(body)
    assert body["text"] == f"{TRAINING}.prepare_workspace failed (InvalidOverrides)"
    assert "train.no_such_field" in text  # the reason is in the message ...
    assert "1 of 3" in text  # ... from the first and only attempt of three allowed
    assert f"/dags/{TRAINING}/runs/" in text and "tasks/prepare_workspace" in text


def test_an_unanswering_slack_does_not_change_a_failed_run(runs):
    run = runs["alert_hang"]
    assert run["state"] == "failed" and run["tasks"]["prepare_workspace"] == "failed"
    assert [r["path"] for r in runs["slack"]].count("/hook/hang") >= 1
    # the callback gave up after its 1 s timeout; it did not wait the 20 s for an answer
    assert run["wall_s"] < runs["alert"]["wall_s"] + HANG_S / 2


@pytest.mark.parametrize("case", ["slack_500", "slack_hang"])
def test_a_failing_slack_does_not_fail_the_run(runs, case):
    run = runs[case]
    assert run["state"] == "success", run["tasks"]
    assert run["tasks"]["prepare_workspace"] == "success"
    assert run["tasks"]["outcome"] == "success" and run["tasks"]["not_promoted"] == "success"
    outcome = run["xcom"]["not_promoted"]
    assert outcome["slack_delivered"] is False and outcome["promoted"] is False
    assert outcome["reason"] == "no gate verdict was written"  # the stages were marked, not run
    path = "/hook/500" if case == "slack_500" else "/hook/hang"
    assert any(r["path"] == path and "not promoted" in r["body"]["text"] for r in runs["slack"])
    if case == "slack_hang":
        assert (run["durations"]["not_promoted"] or 0) < HANG_S
