"""
# prefpipe training: interaction logs → preference pairs → LoRA/DPO candidate → gate → champion

The stages of `dvc.yaml`, one task each, with the same dependencies (`drift` runs in its
own DAG, `prefpipe_drift`). Every run works in
a **workspace of its own** (`$PREFPIPE_RUNS_DIR/prefpipe_training/<run_id>`): a copy of
the project with the DVC cache shared, in which each task runs
`dvc repro --single-item <stage>`. The data a run writes is therefore versioned exactly
as `dvc repro` versions it (the workspace's `dvc.lock`, the shared cache), runs never
share files, and a stage whose inputs did not change is restored from DVC's run-cache.

| task | what it does |
|---|---|
| `prepare_workspace` | copy the project, write this run's overrides into its `params.yaml` |
| `ingest` … `promote` | `dvc repro --single-item <stage>` in the workspace; XCom = the stage's metrics |
| `train` | the same, on the Celery queue `$PREFPIPE_TRAIN_QUEUE` (`default` when unset; `gpu` sends it to a GPU worker) |
| `outcome` | reads the gate verdict and the registry result; picks one of the next two |
| `promoted` / `not_promoted` | the decision, with every gate reason, in the log, XCom and Slack |

**When it runs**: weekly (Monday 04:00 UTC), when the drift DAG requests a retraining
(asset `prefpipe_retrain_requested`), or from **Trigger** with the form: base model,
DPO beta, learning rate, steps, LoRA rank, seed, a *dry run* (tiny model, separate
registry name), and any other `params.yaml` key as `{"dotted.key": value}`. Empty
fields keep `params.yaml`'s value. One run at a time.

**Failures**: tasks retry twice with exponential backoff (transient errors); a form that
does not validate fails at once. A failed gate is not a failure: the run succeeds and
`not_promoted` says why. A task that fails for good posts to Slack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    Variable,
    dag,
    task,
)
from prefpipe_retry import BAD_INPUT_FAILS_AT_ONCE
from prefpipe_slack import SlackAlertNotifier, run_links, send_alert

from pipelines import orchestration as orch
from pipelines.scaleout import train_queue
from pipelines.stages import STAGE_HELP

DAG_ID = orch.TRAINING_DAG_ID
RETRAIN_REQUESTED = Asset(name=orch.RETRAIN_ASSET_NAME, uri=orch.RETRAIN_ASSET_URI)
NEW_CHAMPION = Asset(name="prefpipe_new_champion", uri="x-prefpipe://registry/champion")

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "prefpipe",
    **orch.retry_settings(),
    "retry_policy": BAD_INPUT_FAILS_AT_ONCE,
    "on_failure_callback": [SlackAlertNotifier()],
}


def _project() -> Path:
    """The project checkout: Variable `prefpipe_project_dir`, else `$PREFPIPE_PROJECT_DIR`, else this repo."""
    configured = Variable.get("prefpipe_project_dir", default=None)
    return Path(configured) if configured else orch.default_project_dir(__file__)


def _runs_dir() -> Path:
    """Workspaces of this DAG: Variable `prefpipe_runs_dir`, else `$PREFPIPE_RUNS_DIR`, else `$AIRFLOW_HOME`."""
    configured = Variable.get("prefpipe_runs_dir", default=None)
    return (Path(configured) if configured else orch.default_runs_dir()) / DAG_ID


@task
def prepare_workspace(params: dict[str, Any] | None = None, run_id: str | None = None) -> str:
    """Copy the project for this run and write the form's overrides into its params.yaml."""
    project = _project()
    overrides = orch.form_overrides(params or {}, orch.project_registry(project))
    workspace = orch.prepare_workspace(project, _runs_dir(), str(run_id), overrides)
    orch.prune_workspaces(_runs_dir(), keep=int(Variable.get("prefpipe_keep_runs", default=10)), current=workspace)
    return str(workspace)


@task
def dvc_stage(workspace: str, stage: str) -> dict[str, Any]:
    """`dvc repro --single-item <stage>` in the run's workspace; returns the stage's metrics."""
    return orch.run_dvc_stage(Path(workspace), stage)


def stage(name: str, workspace: Any) -> Any:
    """The task of one dvc.yaml stage, named after it and documented with its help text.

    `train` goes to the training queue (`$PREFPIPE_TRAIN_QUEUE`, read when this file is parsed).
    """
    placement = {"queue": train_queue()} if name == "train" else {}
    return dvc_stage.override(task_id=name, doc_md=STAGE_HELP.get(name), **placement)(workspace, name)


@task.branch
def outcome(workspace: str) -> str:
    """Promoted or not: read from what gate and promote wrote, not inferred."""
    return "promoted" if orch.training_outcome(Path(workspace))["promoted"] else "not_promoted"


@task(outlets=[NEW_CHAMPION])
def promoted(workspace: str, run_id: str | None = None) -> dict[str, Any]:
    """The candidate is the new champion: say so in Slack; other DAGs may schedule on the asset."""
    return _announce(Path(workspace), str(run_id))


@task
def not_promoted(workspace: str, run_id: str | None = None) -> dict[str, Any]:
    """The gate (or the registry) kept the champion: every reason in the log, XCom and Slack."""
    return _announce(Path(workspace), str(run_id))


def _announce(workspace: Path, run_id: str) -> dict[str, Any]:
    import logging

    from pipelines import alerts

    result = orch.training_outcome(workspace)
    log = logging.getLogger("prefpipe.outcome")
    log.info("%s: %s", "PROMOTED" if result["promoted"] else "NOT PROMOTED", result["reason"])
    for reason in result["reasons"]:
        log.info("  %s", reason)
    links = run_links(DAG_ID, run_id, result.get("mlflow_run_id"))
    result["slack_delivered"] = send_alert(alerts.outcome_message(result, dag_id=DAG_ID, run_id=run_id, links=links))
    return result


@dag(
    dag_id=DAG_ID,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * 1", timezone="UTC"), assets=RETRAIN_REQUESTED
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={f.name: Param(**f.param_kwargs()) for f in orch.TRAINING_FORM},
    doc_md=__doc__,
    tags=["prefpipe", "training"],
)
def prefpipe_training() -> None:
    ws = prepare_workspace()

    ingest = stage("ingest", ws)
    scrub = stage("scrub", ws)
    validate = stage("validate", ws)
    pairs = stage("pairs", ws)
    validate_pairs = stage("validate_pairs", ws)
    base_model = stage("base_model", ws)
    train = stage("train", ws)
    evaluate = stage("evaluate", ws)
    gate = stage("gate", ws)
    promote = stage("promote", ws)

    # exactly dvc.yaml's dependencies (a dep of B inside an out of A); the integrity test holds them together
    ingest >> [scrub, validate]
    scrub >> [validate, pairs, promote]  # promote tags the version with the scrubbed records it came from
    validate >> pairs
    pairs >> [validate_pairs, base_model, train, evaluate]
    validate_pairs >> base_model
    base_model >> [train, evaluate]
    train >> [evaluate, promote]
    evaluate >> [gate, promote]
    gate >> promote

    promote >> outcome(ws) >> [promoted(ws), not_promoted(ws)]


prefpipe_training()
