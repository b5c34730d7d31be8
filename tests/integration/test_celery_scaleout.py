"""CeleryExecutor for real: Redis broker, PostgreSQL, two workers on two queues, a mapped fan-out.

What runs: ``redis-server`` (no persistence), a throwaway PostgreSQL (metadata and
Celery's result backend, ``db+postgresql://``), Airflow's api-server (the workers' tasks
talk to its execution API), scheduler and dag-processor with
``AIRFLOW__CORE__EXECUTOR=CeleryExecutor``, and two Celery workers:

- ``w-default``: ``airflow celery worker -q default``, concurrency 2;
- ``w-gpu``: ``airflow celery worker -q gpu``, concurrency 1 (a GPU host's worker).

The project's ``dags/scaleout_dag.py`` is triggered through the REST API on synthetic
pairs of three skills, with ``PREFPIPE_TRAIN_QUEUE=gpu`` in the dag-processor's
environment. The test asserts, from the ``task_instance`` table, that the run succeeded,
that ``skill_report`` fanned out into one mapped instance per skill, all on the
``default`` worker, and that ``training_mix`` ran on the ``gpu`` queue's worker and only
it; and that the files the tasks wrote are there. Both workers run on this one machine,
so they report the same host name: each gets its own ``hostname_callable`` (a two-line
module in the temp home that returns the worker's name) so that the ``hostname`` column
tells them apart, as distinct hosts would in a deployment.

The ``gpu`` worker serves only its queue, as in ``docker/compose.yaml``: default-queue
work (the mapped instances) never lands there, which the test checks too.

The metadata database restarts in the middle of the run: as soon as the first
``skill_report`` instance is running, PostgreSQL is stopped (fast shutdown: every
session ended), kept down a few seconds and started again on the same data folder and
port. What Airflow 3 does then: the running task's calls to the execution API fail
(500) and are retried until the database is back; the api-server reconnects; the
scheduler and the dag-processor exit (code 1, the connection error in their log) and
are started again the way ``restart: unless-stopped`` in ``docker/compose.yaml`` starts
them (:meth:`Services.revive`). Task instances a worker receives while the database is
down are dropped by Celery (it records ``STARTED`` in its result backend, the same
PostgreSQL, before running a task) and stay ``queued``: the new scheduler adopts them
once the old one's heartbeat is stale and requeues them after ``task_queued_timeout``.
Those three timers are shortened here (``QUICK_RECOVERY``; the defaults add up to
10-15 minutes). The run must end in success with every task's file written; the tries
each task needed are printed.

About 2 minutes on two shared cores: starting the services and workers, and waiting for the
recovery after the restart (about a minute), are most of it.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

import pytest

from pipelines import orchestration as orch
from pipelines.layout import Layout
from tests.integration.airflow_fixtures import (
    AIRFLOW_BIN,
    PG_BIN,
    Postgres,
    Services,
    airflow,
    airflow_env,
    api_server_settings,
    free_port,
    start_airflow,
    wait_http,
)
from tests.integration.service_fixtures import (
    REDIS_SERVER,
    Redis,
    pg_rows,
    services_log,
    wait_until,
)
from tests.integration.test_airflow_services import Api
from tests.integration.training_fixtures import SKILLS, write_pairs
from tests.project import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not installed"),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (scripts/test-services.sh)"),
]

DAG_ID = "prefpipe_scaleout"
WORKERS = {"w-default": ("default", 2), "w-gpu": ("gpu", 1)}
RUN_TIMEOUT_S = 300
PG_DOWN_S = 5.0
"""How long the metadata database stays down: longer than the scheduler's heartbeat (2 s)."""
QUICK_RECOVERY = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",  # default 30 s: when a silent scheduler is dead
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",  # default 300 s: when its tasks are adopted
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "30",  # default 600 s: when a task lost in delivery is requeued
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
}
"""The recovery timers after a metadata database restart, shortened to fit a test."""
WORKER_NAME_MODULE = '''import os


def worker_name():
    return os.environ["PREFPIPE_TEST_WORKER"]
'''


def test_mapped_fan_out_on_the_default_worker_and_training_step_on_the_gpu_worker(tmp_path):
    home = tmp_path / "home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy2(ROOT / "dags" / "scaleout_dag.py", dags)  # only this DAG: the others would cost parse time
    (home / "prefpipe_worker_name.py").write_text(WORKER_NAME_MODULE)
    data = tmp_path / "data"
    write_pairs(Layout(data), n_train=60, n_val=12, n_test=12, n_safety=4)
    port = free_port()
    api_settings, password = api_server_settings(home, port)
    services = Services(home / "service-logs")
    t0 = time.perf_counter()
    with Redis(tmp_path / "redis") as redis, Postgres() as pg:
        env = airflow_env(home, ROOT, home / "runs", {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.url,  # postgresql+psycopg2: plain postgresql picks psycopg 3
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            **api_settings,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "PREFPIPE_TRAIN_QUEUE": "gpu",
            "PYTHONPATH": str(home),
            orch.RETRY_DELAY_ENV: "5",  # a task the restart fails retries in seconds, not minutes
            **QUICK_RECOVERY,
        })
        airflow(["db", "migrate"], env, timeout=300)
        print(f"\nredis, PostgreSQL and db migrate: {time.perf_counter() - t0:.0f}s")
        try:
            start_airflow(services, env, home, port)
            for name, (queue, concurrency) in WORKERS.items():
                worker_env = {**env, "PREFPIPE_TEST_WORKER": name,
                              "AIRFLOW__CORE__HOSTNAME_CALLABLE": "prefpipe_worker_name.worker_name"}
                services.start(name, [str(AIRFLOW_BIN), "celery", "worker", "--queues", queue,
                                      "--celery-hostname", f"{name}@%h", "--concurrency", str(concurrency),
                                      "--skip-serve-logs", "--pid", str(home / f"{name}.pid")], worker_env, home)
            api = Api(f"http://127.0.0.1:{port}")
            wait_http(f"http://127.0.0.1:{port}/api/v2/monitor/health", 180, services)
            api.login("admin", password)
            wait_until(f"{DAG_ID} parsed", lambda: api.call("GET", f"/api/v2/dags/{DAG_ID}")[0] == 200, 180, services)
            for name in WORKERS:
                wait_until(f"{name} ready", lambda n=name: f"{n}@" in _text(services, n) and " ready." in _text(services, n),
                           180, services)
            print(f"services and workers up, DAG parsed: {time.perf_counter() - t0:.0f}s")

            status, body = api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
            assert status == 200, body
            status, body = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                    {"logical_date": None, "conf": {"pairs_dir": str(Layout(data).pairs_dir)}})
            assert status == 200, body
            run_id = body["dag_run_id"]
            seen = wait_until("a skill_report instance started", lambda: _first_report_state(pg, run_id),
                              RUN_TIMEOUT_S, services, 0.2)
            # the restart should hit a running task; one that got past unseen is fine as long as
            # the run itself is still going (the training step follows the fan-out)
            assert seen == "running" or _run_state(api, run_id) is None, f"the run ended before the restart ({seen})"
            down = pg.restart(down_s=PG_DOWN_S)
            print(f"PostgreSQL restarted while skill_report ran: {down:.1f}s without a database")
            revived: list[str] = []

            def finished() -> str | None:
                revived.extend(services.revive())  # what the deployment's supervisor does
                return _run_state(api, run_id)

            try:
                state = wait_until(f"run {run_id} finished", finished, RUN_TIMEOUT_S, every=2)
            except AssertionError as err:
                raise AssertionError(f"{err}\n{services_log(services)}") from None
            exits = {svc.name: svc.exits for svc in services.started if svc.exits}
            requeued = _text(services, "scheduler").count("Task stuck in queued; will try to requeue")
            print(f"run {state} after {time.perf_counter() - t0:.0f}s; exited and started again: {exits}; "
                  f"task instances requeued after the restart: {requeued}")
            tis = _task_instances(pg, run_id)
            assert state == "success", (tis, services_log(services))
            print("tries:", {f"{ti['task_id']}[{ti['map_index']}]": ti["try_number"] for ti in tis})
            for name in set(revived):  # an exit says why: the database connection, in the service's log
                assert "psycopg2.OperationalError" in _text(services, name), name

            mapped = [ti for ti in tis if ti["task_id"] == "skill_report"]
            assert sorted(ti["map_index"] for ti in mapped) == list(range(len(SKILLS)))
            for ti in tis:
                assert ti["state"] == "success", ti
            on = {(ti["task_id"], ti["map_index"]): ti["hostname"] for ti in tis}
            queue = {ti["task_id"]: ti["queue"] for ti in tis}
            print("ran on:", {f"{t}[{i}]" if i >= 0 else t: h for (t, i), h in sorted(on.items())})
            assert {on[("skill_report", i)] for i in range(len(SKILLS))} == {"w-default"}
            assert queue["skill_report"] == queue["find_skills"] == "default"
            assert on[("find_skills", -1)] == "w-default"
            assert on[("training_mix", -1)] == "w-gpu" and queue["training_mix"] == "gpu"
            assert set(on.values()) == set(WORKERS)  # both workers took work, and nothing else did

            out = home / "runs" / DAG_ID / orch.safe_run_id(run_id)
            reports = {json.loads(p.read_text())["skill"]: json.loads(p.read_text()) for p in out.glob("skill=*.json")}
            assert set(reports) == set(SKILLS)
            assert sum(r["per_split"]["train"] for r in reports.values()) == 60
            mix = json.loads((out / "training_mix.json").read_text())
            assert set(mix["weights"]) == set(SKILLS) and abs(sum(mix["weights"].values()) - 1) < 1e-4  # rounded to 6 places
            assert mix["accelerator"]["kind"] in ("cpu", "cuda")
        finally:
            left = services.stop()
        assert left == [], f"processes left behind: {left}"
    print(f"total {time.perf_counter() - t0:.0f}s")


def _text(services: Services, name: str) -> str:
    svc = next(s for s in services.started if s.name == name)
    return svc.log.read_text(errors="replace")


def _run_state(api: Api, run_id: str) -> str | None:
    status, body = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run_id, safe='')}")
    if status >= 500:  # the api-server met the database restarting: ask again
        return None
    assert status == 200, body
    return body["state"] if body["state"] in ("success", "failed") else None


def _task_instances(pg: Postgres, run_id: str) -> list[dict]:
    """Every task instance of the run, read from the metadata database itself."""
    return pg_rows(pg, "SELECT task_id, map_index, state, hostname, queue, try_number FROM task_instance "
                       "WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index", (DAG_ID, run_id))


def _first_report_state(pg: Postgres, run_id: str) -> str | None:
    """``running`` once a skill_report instance runs; a finished state if one got past unseen; else None."""
    states = {ti["state"] for ti in _task_instances(pg, run_id) if ti["task_id"] == "skill_report"}
    return next((s for s in ("running", "success", "failed", "up_for_retry") if s in states), None)
