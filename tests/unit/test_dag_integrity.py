"""The DAG files: they import cleanly and fast, and the training DAG is dvc.yaml's graph.

Each file is parsed by Airflow's own ``DagBag`` in a fresh Python process (with a
throwaway ``AIRFLOW_HOME``), after ``airflow.sdk`` is imported, as in the dag-processor,
so the measured time is the file's own: its imports and building its DAG. The budget
is 1 s of CPU per file; CPU rather than wall time because this machine is shared and
wall time would measure the neighbours (both are printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import orchestration as orch

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = {"torch", "transformers", "trl", "peft", "polars", "pandas", "pyarrow", "dvc", "mlflow",
         "great_expectations", "evidently", "sentence_transformers", "datasets", "slack_sdk", "sklearn"}
PARSE_BUDGET_S = 1.0

_PARSE = r"""
import json, sys, time
path = sys.argv[1]
import airflow.sdk  # already loaded in any Airflow parser
from airflow.dag_processing.dagbag import DagBag

before = set(sys.modules)
t0, c0 = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=path)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
new_modules = sorted({m.split(".")[0] for m in set(sys.modules) - before})
from pipelines.orchestration import InvalidOverrides
dags = {}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        tasks[t.task_id] = {
            "downstream": sorted(t.downstream_task_ids),
            "retries": t.retries,
            "backoff": t.retry_exponential_backoff,
            "callbacks": [type(c).__name__ for c in (t.on_failure_callback or [])],
            "outlets": [getattr(a, "name", str(a)) for a in t.outlets],
            "retry_policy": type(t.retry_policy).__name__ if t.retry_policy else None,
            "on_bad_form": t.retry_policy.evaluate(InvalidOverrides("bad form"), 1, 3).action.value
            if t.retry_policy else None,
        }
    params = {k: {"default": dag.params.get_param(k).value, "schema": dag.params.get_param(k).schema,
                  "description": dag.params.get_param(k).description} for k in dag.params}
    dags[dag_id] = {"tasks": tasks, "params": params, "timetable": repr(dag.timetable),
                    "catchup": dag.catchup, "max_active_runs": dag.max_active_runs, "doc_md": dag.doc_md or ""}
print("PARSE_RESULT " + json.dumps({"errors": bag.import_errors, "wall": wall, "cpu": cpu,
                                    "new_modules": new_modules, "dags": dags}, default=str))
"""


def _parse(path: Path, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow' / 'airflow.db'}",
    })
    proc = subprocess.run([sys.executable, "-c", _PARSE, str(path)], env=env, cwd=tmp, capture_output=True,
                          text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PARSE_RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("PARSE_RESULT "):])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict[str, dict]:
    return {p.name: _parse(p, tmp_path_factory.mktemp(p.stem)) for p in DAG_FILES}


def _dag(parsed: dict, dag_id: str) -> dict:
    for result in parsed.values():
        if dag_id in result["dags"]:
            return result["dags"][dag_id]
    raise AssertionError(f"{dag_id} not found in any DAG file")


def test_there_are_dag_files():
    assert {p.name for p in DAG_FILES} >= {"training_dag.py", "drift_dag.py"}


@pytest.mark.parametrize("name", [p.name for p in DAG_FILES])
def test_dag_file_imports_without_errors_quickly_and_lightly(parsed, name):
    result = parsed[name]
    print(f"\n{name}: parse {result['wall']:.3f}s wall, {result['cpu']:.3f}s CPU")
    assert result["errors"] == {}
    assert result["dags"], f"{name} defines no DAG"
    assert result["cpu"] <= PARSE_BUDGET_S, f"{name} took {result['cpu']:.2f}s of CPU to parse"
    assert result["wall"] <= 3 * PARSE_BUDGET_S, f"{name} took {result['wall']:.2f}s to parse"
    assert not HEAVY & set(result["new_modules"]), f"heavy imports at parse time: {HEAVY & set(result['new_modules'])}"
    for dag in result["dags"].values():
        assert dag["doc_md"].lstrip().startswith("#")  # the module docstring (Markdown) is the DAG's doc


def test_training_dag_is_the_dvc_stage_graph(parsed):
    dag = _dag(parsed, orch.TRAINING_DAG_ID)
    tasks = dag["tasks"]
    stages = orch.training_stages(ROOT / "dvc.yaml")
    assert set(stages) <= set(tasks), f"stages without a task: {set(stages) - set(tasks)}"
    dag_edges = {(up, down) for up in stages for down in tasks[up]["downstream"] if down in stages}
    dvc_edges = set(orch.training_graph(ROOT / "dvc.yaml"))
    assert dag_edges == dvc_edges, (
        f"in the DAG only: {sorted(dag_edges - dvc_edges)}; in dvc.yaml only: {sorted(dvc_edges - dag_edges)}"
    )
    # dvc.yaml's order is an order the DAG can run in
    position = {s: i for i, s in enumerate(stages)}
    assert all(position[u] < position[d] for u, d in dag_edges)
    # the run's workspace comes first; the decision comes after promote
    assert set(stages) <= set(tasks["prepare_workspace"]["downstream"])
    other = set(tasks) - set(stages) - {"prepare_workspace"}
    assert other == {"outcome", "promoted", "not_promoted"}
    assert tasks["promote"]["downstream"] == ["outcome"]
    assert tasks["outcome"]["downstream"] == ["not_promoted", "promoted"]


def test_every_dvc_stage_has_a_dag(parsed):
    """A stage left out of the training DAG must be one that another DAG runs."""
    all_stages = orch.stage_names(ROOT / "dvc.yaml")
    for stage in all_stages:
        if stage in orch.OWN_DAG_STAGES:
            assert orch.OWN_DAG_STAGES[stage] != orch.TRAINING_DAG_ID
            _dag(parsed, orch.OWN_DAG_STAGES[stage])  # exists
        else:
            assert stage in _dag(parsed, orch.TRAINING_DAG_ID)["tasks"], stage


def test_training_dag_schedule_form_and_failure_handling(parsed):
    dag = _dag(parsed, orch.TRAINING_DAG_ID)
    assert "0 4 * * 1" in dag["timetable"] and orch.RETRAIN_ASSET_NAME in dag["timetable"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert list(dag["params"]) == [f.name for f in orch.TRAINING_FORM]
    for f in orch.TRAINING_FORM:
        p = dag["params"][f.name]
        assert p["default"] == f.default and p["description"] == f.description
        assert p["schema"]["title"] == f.title and p["schema"]["type"] == f.schema["type"]
    assert dag["params"]["beta"]["schema"]["exclusiveMinimum"] == 0
    for task_id, t in dag["tasks"].items():
        assert t["callbacks"] == ["SlackAlertNotifier"], task_id
        assert t["retries"] >= 1 and t["backoff"] > 1, task_id
        assert t["retry_policy"] == "ExceptionRetryPolicy", task_id


def test_drift_dag_requests_retraining_through_the_training_dags_asset(parsed):
    drift = _dag(parsed, orch.DRIFT_DAG_ID)
    tasks = drift["tasks"]
    assert "drift_exceeds_threshold" in tasks["check_drift"]["downstream"]
    # the short-circuit guards both the alert and the retraining request
    assert tasks["drift_exceeds_threshold"]["downstream"] == ["alert_drift", "request_retraining"]
    assert tasks["request_retraining"]["outlets"] == [orch.RETRAIN_ASSET_NAME]
    assert "0 2 * * 4" in drift["timetable"] and drift["catchup"] is False
    assert list(drift["params"]) == [f.name for f in orch.DRIFT_FORM]
    assert all(t["callbacks"] == ["SlackAlertNotifier"] for t in tasks.values())


@pytest.mark.parametrize("dag_id", [orch.TRAINING_DAG_ID, orch.DRIFT_DAG_ID])
def test_a_form_that_does_not_validate_fails_at_once_instead_of_retrying(parsed, dag_id):
    """Both forms take ``overrides``; an invalid one must not wait out two backoffs before failing."""
    tasks = _dag(parsed, dag_id)["tasks"]
    assert {t["on_bad_form"] for t in tasks.values()} == {"fail"}, {k: t["on_bad_form"] for k, t in tasks.items()}


def test_train_queue_comes_from_the_environment():
    from pipelines.scaleout import train_queue

    assert train_queue({}) == "default"
    assert train_queue({"PREFPIPE_TRAIN_QUEUE": " "}) == "default"
    assert train_queue({"PREFPIPE_TRAIN_QUEUE": "gpu"}) == "gpu"


_QUEUES = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print("QUEUES " + json.dumps({d: {t.task_id: t.queue for t in dag.tasks} for d, dag in bag.dags.items()}))
"""


def test_training_steps_go_to_the_configured_queue_and_nothing_else_does(tmp_path):
    """With ``PREFPIPE_TRAIN_QUEUE=gpu`` where the DAGs are parsed, only the training steps move there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "PREFPIPE_TRAIN_QUEUE": "gpu",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}"})
    proc = subprocess.run([sys.executable, "-c", _QUEUES, str(ROOT / "dags")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("QUEUES ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    queues = json.loads(lines[-1][len("QUEUES "):])
    on_gpu = {(d, t) for d, tasks in queues.items() for t, q in tasks.items() if q == "gpu"}
    assert on_gpu == {(orch.TRAINING_DAG_ID, "train"), ("prefpipe_scaleout", "training_mix")}
    assert all(q in ("gpu", "default") for tasks in queues.values() for q in tasks.values())
