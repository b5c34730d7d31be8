"""
# prefpipe scale-out: per-skill fan-out on the Celery workers, one step on the training queue

The shape a scaled-out training takes, on real data and real workers, with **light work
only**: it reads the preference pairs, reports on each skill in a task instance of its
own, and joins the reports into per-skill sampling weights on the training queue. **It
does not train a model** (the training DAG does; its `train` task goes to the same
queue). Run it to check that a Celery deployment fans out and places work where it
should, in seconds instead of the minutes a training takes.

| task | what it does | queue |
|---|---|---|
| `find_skills` | the skills that have training pairs | `default` |
| `skill_report` | mapped, one instance per skill: pairs per split and type, tenants, lengths (`skill=<name>.json`) | `default` |
| `training_mix` | per-skill sampling weights (share of training pairs, capped), and the accelerator it found | `$PREFPIPE_TRAIN_QUEUE` (`default` when unset) |

**Inputs**: the form's `pairs_dir`, else the project's `data/pairs` (Variable
`prefpipe_project_dir`, else `$PREFPIPE_PROJECT_DIR`, else this checkout). **Outputs**: JSON
files in `$PREFPIPE_RUNS_DIR/prefpipe_scaleout/<run_id>/` (or Variable `prefpipe_runs_dir`).

Manual runs only (no schedule). The logic is in `pipelines/scaleout.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Param, Variable, dag, task
from prefpipe_slack import SlackAlertNotifier

from pipelines import orchestration as orch
from pipelines import scaleout

DAG_ID = "prefpipe_scaleout"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "prefpipe",
    **orch.retry_settings(),
    "on_failure_callback": [SlackAlertNotifier()],
}


def _pairs_dir(params: dict[str, Any] | None) -> str:
    given = str((params or {}).get("pairs_dir") or "").strip()
    if given:
        return given
    configured = Variable.get("prefpipe_project_dir", default=None)
    project = Path(configured) if configured else orch.default_project_dir(__file__)
    return str(project / "data" / "pairs")


def _out_dir(run_id: str | None) -> str:
    configured = Variable.get("prefpipe_runs_dir", default=None)
    runs = Path(configured) if configured else orch.default_runs_dir()
    return str(runs / DAG_ID / orch.safe_run_id(str(run_id)))


@task
def find_skills(params: dict[str, Any] | None = None) -> list[str]:
    """The skills with training pairs: the list the next task maps over."""
    return scaleout.skills(_pairs_dir(params))


@task
def skill_report(skill: str, params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
    """One skill's pairs per split and type, tenants and lengths (one task instance per skill)."""
    return scaleout.skill_report(_pairs_dir(params), skill, _out_dir(run_id))


@task(queue=scaleout.train_queue())
def training_mix(reports: list[dict[str, Any]], run_id: str | None = None) -> dict[str, Any]:
    """Per-skill sampling weights, on the training queue; records the accelerator found there."""
    return scaleout.training_mix(reports, _out_dir(run_id))


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args=DEFAULT_ARGS,
    params={
        "pairs_dir": Param(
            "", type="string", title="Pairs folder",
            description="Folder with train/val/test.parquet; empty: the project's data/pairs.",
        ),
    },
    doc_md=__doc__,
    tags=["prefpipe", "scale-out"],
)
def prefpipe_scaleout() -> None:
    reports = skill_report.expand(skill=find_skills())
    training_mix(reports)


prefpipe_scaleout()
