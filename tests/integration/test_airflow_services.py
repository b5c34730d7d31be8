"""The real services: PostgreSQL, scheduler, dag-processor and api-server with LocalExecutor.

A throwaway PostgreSQL server (``initdb`` in a temp dir, as the ``postgres`` user) holds
the metadata. The training DAG is unpaused and triggered through the REST API (``POST
/auth/token`` with a user of the simple auth manager, then ``/api/v2``), with a conf that
asks for a dry run and overrides the DPO beta; the test polls until the run succeeds and
checks that the override reached the run's params.yaml, that the run's data is
versioned, and that the gate/promotion message reached a local Slack endpoint, found
through an Airflow connection (``AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT``). Every process
started here is stopped, process group and all, and the test checks that none is left.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import orchestration as orch
from tests.integration.airflow_fixtures import (
    PG_BIN,
    Postgres,
    Services,
    airflow,
    airflow_env,
    airflow_project,
    api_server_settings,
    free_port,
    slack_recorder,
    start_airflow,
    tail,
    wait_http,
)
from tests.project import needs_shared

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    needs_shared,
    pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not installed"),
]

TRAINING = orch.TRAINING_DAG_ID
RUN_TIMEOUT_S = 900


class Api:
    """A tiny client of Airflow's REST API v2 with a bearer token."""

    def __init__(self, base: str) -> None:
        self.base, self.token = base.rstrip("/"), ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def login(self, user: str, password: str) -> None:
        status, body = self.call("POST", "/auth/token", {"username": user, "password": password})
        assert status == 201, body
        self.token = body["access_token"]


def test_trigger_through_the_rest_api_and_alert_through_a_connection(tmp_path_factory):
    project = airflow_project(tmp_path_factory.getbasetemp())
    home = tmp_path_factory.mktemp("services-home")
    port = free_port()
    api_settings, password = api_server_settings(home, port)
    services = Services(home / "service-logs")
    with Postgres() as pg, slack_recorder() as slack:
        conn = {"conn_type": "slackwebhook", "password": slack.url("/hook/ok")}
        env = airflow_env(home, project, home / "runs", {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            **api_settings,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run triggered here, not last Monday's
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT": json.dumps(conn),
            orch.RETRY_DELAY_ENV: "5",
        })
        t0 = time.perf_counter()
        airflow(["db", "migrate"], env, timeout=300)
        print(f"\ndb migrate on PostgreSQL: {time.perf_counter() - t0:.0f}s")
        try:
            start_airflow(services, env, home, port)
            wait_http(f"http://127.0.0.1:{port}/api/v2/monitor/health", 180, services)
            api = Api(f"http://127.0.0.1:{port}")
            api.login("admin", password)
            _wait_for_dag(api, services)
            print(f"services up and DAG parsed: {time.perf_counter() - t0:.0f}s")

            status, body = api.call("PATCH", f"/api/v2/dags/{TRAINING}", {"is_paused": False})
            assert status == 200, body
            conf = {"dry_run": True, "beta": 0.2}
            status, body = api.call("POST", f"/api/v2/dags/{TRAINING}/dagRuns", {"logical_date": None, "conf": conf})
            assert status == 200, body
            run_id = body["dag_run_id"]
            state = _wait_for_run(api, run_id, services)
            print(f"run {run_id}: {state} after {time.perf_counter() - t0:.0f}s")
            tis = _task_states(api, run_id)
            assert state == "success", (tis, _logs(services))

            for stage in orch.training_stages(project / "dvc.yaml"):
                assert tis[stage] == "success", (stage, tis)
            assert {tis["promoted"], tis["not_promoted"]} == {"success", "skipped"}
            ws = Path(_xcom(api, run_id, "prepare_workspace"))
            params = yaml.safe_load((ws / "params.yaml").read_text())
            assert params["train"]["dpo"]["beta"] == 0.2  # the conf's override, for this run only
            assert params["registry"]["model_name"].endswith(orch.DRY_RUN_SUFFIX)
            assert yaml.safe_load((project / "params.yaml").read_text())["train"]["dpo"]["beta"] != 0.2
            assert orch.dvc_status(ws, orch.training_stages(ws / "dvc.yaml")) == {}

            messages = [r["body"] for r in slack.requests if r["path"] == "/hook/ok"]
            outcome = [m for m in messages if m.get("text", "").startswith(f"{TRAINING}:")]
            assert len(outcome) == 1, [m.get("text") for m in messages]
            assert ("New champion" in json.dumps(outcome[0])) or ("Not promoted" in json.dumps(outcome[0]))
            assert f"http://127.0.0.1:{port}/dags/{TRAINING}/runs/" in json.dumps(outcome[0])
        finally:
            left = services.stop()
        assert left == [], f"processes left behind: {left}"


def _wait_for_dag(api: Api, services: Services, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check_alive()
        status, _ = api.call("GET", f"/api/v2/dags/{TRAINING}")
        if status == 200:
            return
        time.sleep(2)
    raise AssertionError(f"{TRAINING} was not parsed within {timeout}s:\n{_logs(services)}")


def _wait_for_run(api: Api, run_id: str, services: Services) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        services.check_alive()
        status, body = api.call("GET", f"/api/v2/dags/{TRAINING}/dagRuns/{urllib.request.quote(run_id, safe='')}")
        assert status == 200, body
        if body["state"] in ("success", "failed"):
            return body["state"]
        time.sleep(3)
    raise AssertionError(f"run {run_id} did not finish within {RUN_TIMEOUT_S}s: {_task_states(api, run_id)}")


def _task_states(api: Api, run_id: str) -> dict[str, str]:
    status, body = api.call("GET", f"/api/v2/dags/{TRAINING}/dagRuns/{urllib.request.quote(run_id, safe='')}"
                                   "/taskInstances?limit=100")
    assert status == 200, body
    return {ti["task_id"]: ti["state"] for ti in body["task_instances"]}


def _xcom(api: Api, run_id: str, task_id: str) -> Any:
    status, body = api.call("GET", f"/api/v2/dags/{TRAINING}/dagRuns/{urllib.request.quote(run_id, safe='')}"
                                   f"/taskInstances/{task_id}/xcomEntries/return_value?deserialize=true")
    assert status == 200, body
    value = body["value"]
    return json.loads(value) if isinstance(value, str) and value.startswith(('"', "{", "[")) else value


def _logs(services: Services) -> str:
    return "\n".join(f"--- {s.name}\n{tail(s.log, 3000)}" for s in services.started)
