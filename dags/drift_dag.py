"""
# prefpipe drift: this week's events vs the reference window

Weekly (Thursday 02:00 UTC, between two weekly trainings) the drift check compares the
last days of scrubbed events with a reference window (tabular features and prompt
embeddings; `params.yaml` → `drift`). It runs in a workspace of its own, like the
training DAG, so the project checkout is never written. The stage resolves the reference
itself: by default the scrubbed events the current `champion` was trained on (read from
the MLflow registry the workspace shares with the project), the time split before there
is one; `reference_source` in its metrics and drift.json says which.

| task | what it does |
|---|---|
| `check_drift` | the `drift` stage (with its upstream) in a fresh workspace; XCom = its metrics |
| `drift_exceeds_threshold` | short-circuit: the rest runs only when the verdict is *drift* |
| `alert_drift` | Slack: the figures, and whether a retraining was requested |
| `request_retraining` | emits the `prefpipe_retrain_requested` asset event, which starts the training DAG |

Until `pipelines.drift` exists, `check_drift` is **skipped** with a message saying so
(and so is everything after it): the DAG is wired, the check is not there yet.

Trigger it by hand with a different threshold, or with retraining off, from the form.
A form that does not validate fails at once (retrying the same form cannot help); other
failures retry twice with exponential backoff, and a task that fails for good posts to Slack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import (
    Asset,
    CronTriggerTimetable,
    Param,
    Variable,
    dag,
    task,
)
from prefpipe_retry import BAD_INPUT_FAILS_AT_ONCE
from prefpipe_slack import SlackAlertNotifier, run_links, send_alert

from pipelines import orchestration as orch

DAG_ID = orch.DRIFT_DAG_ID
RETRAIN_REQUESTED = Asset(name=orch.RETRAIN_ASSET_NAME, uri=orch.RETRAIN_ASSET_URI)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "prefpipe",
    **orch.retry_settings(),
    "retry_policy": BAD_INPUT_FAILS_AT_ONCE,
    "on_failure_callback": [SlackAlertNotifier()],
}


@task
def check_drift(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Run the drift stage in a fresh workspace; skip, saying why, while it does not exist."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not orch.drift_available():
        raise AirflowSkipException(
            "drift check not available: pipelines.drift does not exist yet, so nothing was compared "
            "and no retraining was requested"
        )
    configured = Variable.get("prefpipe_project_dir", default=None)
    project = Path(configured) if configured else orch.default_project_dir(__file__)
    runs = Variable.get("prefpipe_runs_dir", default=None)
    runs_dir = (Path(runs) if runs else orch.default_runs_dir()) / DAG_ID
    overrides = {**orch.DRIFT_DAG_OVERRIDES, **orch.form_overrides(params or {}, fields=orch.DRIFT_FORM)}
    workspace = orch.prepare_workspace(project, runs_dir, str(run_id), overrides)
    orch.prune_workspaces(runs_dir, keep=int(Variable.get("prefpipe_keep_runs", default=10)), current=workspace)
    return orch.run_drift(workspace)


@task.short_circuit
def drift_exceeds_threshold(metrics: dict[str, Any], params: dict[str, Any] | None = None) -> bool:
    """True when the stage's verdict is drift (or its share is above the form's threshold)."""
    return orch.drift_exceeded(metrics, (params or {}).get("threshold"))


@task
def alert_drift(metrics: dict[str, Any], params: dict[str, Any] | None = None, run_id: str | None = None) -> bool:
    """Post the drift figures to Slack (or log that Slack is not configured)."""
    from pipelines import alerts

    message = alerts.drift_message(
        metrics,
        dag_id=DAG_ID,
        run_id=str(run_id),
        retrain_requested=bool((params or {}).get("request_retraining", True)),
        links=run_links(DAG_ID, str(run_id)),
    )
    return send_alert(message)


@task(outlets=[RETRAIN_REQUESTED])
def request_retraining(params: dict[str, Any] | None = None) -> str:
    """Emit the asset event the training DAG is scheduled on (unless the form turned it off)."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not (params or {}).get("request_retraining", True):
        raise AirflowSkipException("retraining on drift is turned off for this run")
    return orch.TRAINING_DAG_ID


@dag(
    dag_id=DAG_ID,
    schedule=CronTriggerTimetable("0 2 * * 4", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={f.name: Param(**f.param_kwargs()) for f in orch.DRIFT_FORM},
    doc_md=__doc__,
    tags=["prefpipe", "drift"],
)
def prefpipe_drift() -> None:
    metrics = check_drift()
    drift_exceeds_threshold(metrics) >> [alert_drift(metrics), request_retraining()]


prefpipe_drift()
