"""``dag.test()`` of the training DAG end to end on the embedded default, then of the drift DAG.

One fresh Airflow process (SQLite metadata database in a temporary ``AIRFLOW_HOME``)
runs both DAGs for real: every stage of dvc.yaml through DVC in the run's workspace,
MLflow in the project's store, Slack to a recorder on 127.0.0.1. The training run uses
the trigger form's defaults, i.e. ``params.yaml`` as it is.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import orchestration as orch
from tests.integration.airflow_fixtures import (
    airflow_env,
    airflow_project,
    run_dag_tests,
    slack_recorder,
    task_logs,
)
from tests.project import needs_shared

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              needs_shared]

TRAINING, DRIFT = orch.TRAINING_DAG_ID, orch.DRIFT_DAG_ID


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both DAGs run once; the tests below read what happened."""
    project = airflow_project(tmp_path_factory.getbasetemp())
    home = tmp_path_factory.mktemp("dag-test-home")
    with slack_recorder() as slack:
        env = airflow_env(home, project, home / "runs", {
            "SLACK_WEBHOOK_URL": slack.url("/hook/ok"),
            orch.RETRY_DELAY_ENV: "5",  # a transient failure still retries, without minutes of waiting
        })
        result = run_dag_tests(env, [{"dag_id": TRAINING, "conf": {}}, {"dag_id": DRIFT, "conf": {}}],
                               timeout=1500)
        requests = list(slack.requests)
    training, drift = result.runs
    print(f"\ndag.test(): training {training['wall_s']}s, drift {drift['wall_s']}s, process {result.wall_s:.0f}s")
    print("stage durations:", {k: round(v or 0, 1) for k, v in training["durations"].items()})
    return {"project": project, "home": home, "training": training, "drift": drift, "slack": requests,
            "output": result.output}


def _stages(project: Path) -> list[str]:
    return orch.training_stages(project / "dvc.yaml")


def test_training_run_succeeds_with_every_stage(runs):
    run = runs["training"]
    tasks = run["tasks"]
    assert run["state"] == "success", run["tasks"]
    for stage in _stages(runs["project"]):
        assert tasks[stage] == "success", (stage, tasks)
        metrics = run["xcom"][stage]
        assert isinstance(metrics, dict) and len(json.dumps(metrics)) < 32_000  # XCom: small metrics only
    assert {tasks["promoted"], tasks["not_promoted"]} == {"success", "skipped"}


def test_run_data_is_versioned_like_dvc_repro(runs):
    project = runs["project"]
    ws = Path(runs["training"]["xcom"]["prepare_workspace"])
    assert ws.parent.parent == runs["home"] / "runs" and ws.parent.name == TRAINING
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *_stages(project)], cwd=ws,
                            capture_output=True, text=True, env=orch.stage_env(), check=True)
    assert json.loads(status.stdout or "{}") == {}, status.stdout  # every stage it ran is up to date
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    for stage in _stages(project):
        outs = lock[stage].get("outs", [])
        assert outs and all(o.get("md5") for o in outs), (stage, outs)
    # the outputs live in the project's cache, and nothing was written into the project
    cache = Path(subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=ws, capture_output=True,
                                text=True, env=orch.stage_env(), check=True).stdout.strip())
    assert cache == (project / ".dvc" / "cache").resolve()
    model_md5 = next(o["md5"] for o in lock["train"]["outs"] if o["path"] == "data/models/candidate")
    assert (cache / "files" / "md5" / model_md5[:2] / model_md5[2:]).exists()
    assert not (project / "data" / "models").exists() and not (project / "data" / "ingested").exists()
    assert (ws / "params.yaml").read_text() == (project / "params.yaml").read_text()  # no overrides: as is


def test_mlflow_store_is_the_projects(runs):
    project, ws = runs["project"], Path(runs["training"]["xcom"]["prepare_workspace"])
    assert (ws / "mlflow").resolve() == (project / "mlflow").resolve()
    experiment = yaml.safe_load((project / "params.yaml").read_text())["registry"]["experiment"]
    with sqlite3.connect(project / "mlflow" / "mlflow.db") as db:
        (location,) = db.execute("select artifact_location from experiments where name = ?", (experiment,)).fetchone()
    assert location.startswith((project / "mlflow").resolve().as_uri()), location  # survives the workspace


def test_outcome_was_announced_once_with_links(runs):
    run = runs["training"]
    decided = "promoted" if run["tasks"]["promoted"] == "success" else "not_promoted"
    outcome = run["xcom"][decided]
    assert outcome["slack_delivered"] is True
    assert outcome["promoted"] is (decided == "promoted")
    assert outcome["reasons"], "the gate's reasons are part of the outcome"
    messages = [r["body"] for r in runs["slack"] if TRAINING in r["body"].get("text", "")]
    assert len(messages) == 1, [m["text"] for m in messages]
    text = json.dumps(messages[0])
    assert ("New champion" in text) if outcome["promoted"] else ("Not promoted" in text)
    assert f"/dags/{TRAINING}/runs/" in text and "Airflow run" in text
    assert not [r for r in runs["slack"] if " failed (" in r["body"].get("text", "")]  # no failure alerts


def test_drift_dag_runs_the_check_or_skips_saying_why(runs):
    run = runs["drift"]
    tasks = run["tasks"]
    assert run["state"] == "success", tasks
    drift_messages = [r for r in runs["slack"] if DRIFT in r["body"].get("text", "")]
    if not orch.drift_available():
        assert tasks == {t: "skipped" for t in tasks}
        assert "drift check not available: pipelines.drift does not exist yet" in (
            task_logs(runs["home"], DRIFT, "check_drift") + runs["output"])
        assert drift_messages == []
        return
    metrics = run["xcom"]["check_drift"]
    assert tasks["check_drift"] == "success" and tasks["drift_exceeds_threshold"] == "success"
    assert "drift_detected" in metrics or "verdict" in metrics, metrics
    if orch.drift_exceeded(metrics):
        assert tasks["alert_drift"] == tasks["request_retraining"] == "success"
        assert len(drift_messages) == 1  # the DAG's alert only: the stage's own is turned off under Airflow
    else:
        assert tasks["alert_drift"] == tasks["request_retraining"] == "skipped"
        assert drift_messages == []
