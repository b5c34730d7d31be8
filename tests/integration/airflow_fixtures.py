"""Real components for the Airflow tests: a project copy, Airflow homes, PostgreSQL, a Slack recorder.

Imported by the Airflow test modules (not a conftest, to stay out of the fixtures of the
other tests in this folder). Nothing here fakes Airflow: ``dag.test()`` runs in a fresh
Python process with its own ``AIRFLOW_HOME`` and SQLite database, because Airflow reads
its configuration once per process, at import; the services test starts the real
scheduler, dag-processor and api-server. Every process started here runs in its own
session (process group) and is stopped, group and all, on the way out.

- :func:`airflow_project`: one copy of the project per test session (its DVC cache and
  MLflow store are shared by every run in the session, as in a deployment), with the raw
  sample generated and committed when the checkout has none yet.
- :func:`airflow_env`: the environment of an Airflow process for that project.
- :func:`run_dag_tests`: ``dag.test()`` of one or more runs in a subprocess; returns the
  states, XComs and durations of each run.
- :class:`SlackRecorder`: an HTTP server on 127.0.0.1 that records what is posted; the
  path picks the answer (``/hook/ok`` 200, ``/hook/500``, ``/hook/hang``, ``/api/...`` for
  the Web API).
- :class:`Postgres`: a throwaway server (``initdb`` as the ``postgres`` user in a temp dir).
- :class:`Services`: start commands in their own process groups; stop them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.project import ROOT, VENV_BIN, copy_project, project_env, run

AIRFLOW_BIN = VENV_BIN / "airflow"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
RESULT_MARK = "DAG_TEST_RESULT "


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- project


def airflow_project(base: Path) -> Path:
    """The session's project copy under ``base`` (``tmp_path_factory.getbasetemp()``), made once.

    Why one per session: every Airflow test then runs against the same DVC cache and
    MLflow store, as runs do in a deployment, so a later test restores unchanged stages
    from the run-cache instead of recomputing them. Works alone too (just slower).
    """
    parent = base / "airflow-project"
    parent.mkdir(exist_ok=True)
    with open(parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        repo = parent / "repo"
        if not (repo / ".ready").exists():
            if repo.exists():
                shutil.rmtree(repo)
            repo = copy_project(parent)
            if not (repo / "data" / "raw" / "events").exists():  # until the sample is bundled
                run([sys.executable, "-m", "pipelines", "generate", "--out", "data/raw"], repo)
                git = ["git", "-c", "user.email=test@example.org", "-c", "user.name=test"]
                run([*git, "add", "-A"], repo)
                run([*git, "commit", "-qm", "raw sample"], repo)
            (repo / ".ready").write_text("ok\n")
    return repo


def airflow_env(home: Path, project: Path, runs: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an Airflow process on ``project``: its dags/ and plugins/, SQLite in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = project_env()
    for key in [k for k in env if k.startswith(("AIRFLOW_", "AIRFLOW__", "SLACK_", "PREFPIPE_", "MLFLOW_"))]:
        del env[key]
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PREFPIPE_RUNS_DIR": str(runs),
        "SLACK_TIMEOUT_S": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def api_server_settings(home: Path, port: int) -> tuple[dict[str, str], str]:
    """Settings for an api-server on ``127.0.0.1:port`` and the password of its user ``admin``.

    The scheduler's and workers' task runners reach the execution API at that address;
    the simple auth manager reads the password from ``home/passwords.json``.
    """
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    return {
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
    }, password


def start_airflow(services: Services, env: dict[str, str], home: Path, port: int) -> None:
    """Start the api-server (on ``port``), the scheduler and the dag-processor, each in its own group."""
    services.start("api-server", [str(AIRFLOW_BIN), "api-server", "--host", "127.0.0.1", "--port", str(port)],
                   env, home)
    services.start("scheduler", [str(AIRFLOW_BIN), "scheduler"], env, home)
    services.start("dag-processor", [str(AIRFLOW_BIN), "dag-processor"], env, home)


def airflow(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the ``airflow`` CLI; raise with its output on failure."""
    return run([str(AIRFLOW_BIN), *args], ROOT, env=env, timeout=timeout)


# ---------------------------------------------------------------------------- dag.test()

_DAG_TEST_SCRIPT = r"""
import copy, json, os, sys, time
from pathlib import Path

specs = json.loads(Path(sys.argv[1]).read_text())
from airflow.utils.db import resetdb
resetdb(skip_init=False)
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
if bag.import_errors:
    print("IMPORT ERRORS", bag.import_errors, flush=True)
    sys.exit(3)
# dag.test() runs tasks in this process, where a run's conf stays in the task's params
# for the next run; a full conf (defaults + the spec's) keeps each run to its own values
defaults = {dag_id: {k: copy.deepcopy(dag.params.get_param(k).value) for k in dag.params}
            for dag_id, dag in bag.dags.items()}
results = []
for spec in specs:
    for key in spec.get("unset", []):
        os.environ.pop(key, None)
    os.environ.update(spec.get("env", {}))
    dag = bag.dags[spec["dag_id"]]
    conf = {**copy.deepcopy(defaults[spec["dag_id"]]), **(spec.get("conf") or {})}
    t0 = time.perf_counter()
    dr = dag.test(run_conf=conf, mark_success_pattern=spec.get("mark_success"))
    wall = time.perf_counter() - t0
    with create_session() as session:
        tis = {ti.task_id: ti for ti in dr.get_task_instances(session=session)}
        rows = session.scalars(XComModel.get_many(run_id=dr.run_id, dag_ids=dr.dag_id, key="return_value")).all()
        xcoms = {r.task_id: XComModel.deserialize_value(r) for r in rows}
        results.append({
            "dag_id": dr.dag_id,
            "run_id": dr.run_id,
            "state": str(dr.state),
            "wall_s": round(wall, 1),
            "tasks": {k: str(ti.state) for k, ti in tis.items()},
            "durations": {k: ti.duration for k, ti in tis.items()},
            "xcom": xcoms,
        })
    print(f"[dag-test] {dr.dag_id} {dr.run_id}: {dr.state} in {wall:.1f}s", flush=True)
print("DAG_TEST_RESULT " + json.dumps(results, default=str), flush=True)
"""


@dataclass
class DagTestResult:
    """The outcome of :func:`run_dag_tests`: one dict per run, and the process output."""

    runs: list[dict[str, Any]]
    output: str
    wall_s: float


def run_dag_tests(env: dict[str, str], specs: list[dict[str, Any]], timeout: int = 900) -> DagTestResult:
    """``dag.test()`` each spec (``dag_id``, ``conf``, ``env``, ``unset``, ``mark_success``) in one fresh process.

    The metadata database is created first (``resetdb``, SQLite in ``AIRFLOW_HOME``).
    Tasks run inside that process, so a spec's ``env`` reaches them (e.g. a different
    Slack webhook per run).
    """
    home = Path(env["AIRFLOW_HOME"])
    spec_file = home / f"dag-test-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(specs))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _DAG_TEST_SCRIPT, str(spec_file)], cwd=home, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"dag.test() ran past {timeout}s:\n{out[-6000:]}") from None
    finally:
        kill_group(proc)
    (home / "dag-test.log").write_text(out)
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"dag.test() process failed ({proc.returncode}):\n{out[-8000:]}")
    return DagTestResult(json.loads(lines[-1][len(RESULT_MARK):]), out, wall)


def task_logs(home: Path, dag_id: str, task_id: str) -> str:
    """Every log file Airflow wrote for a task (any run, any try), concatenated."""
    logs = sorted((home / "logs").glob(f"dag_id={dag_id}/run_id=*/task_id={task_id}/**/*.log"))
    return "\n".join(p.read_text(errors="replace") for p in logs)


# ---------------------------------------------------------------------------- Slack


@dataclass
class SlackRecorder:
    """A local stand-in for Slack's endpoints that records every request.

    Paths: ``/hook/ok`` answers 200 "ok" (an incoming webhook), ``/hook/500`` answers 500,
    ``/hook/hang`` answers after ``hang_s`` seconds (longer than the client waits),
    ``/api/chat.postMessage`` answers like the Web API, ``/api500/...`` with 500.
    """

    hang_s: float = 6.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __enter__(self) -> SlackRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = {"_raw": raw}
                recorder.requests.append({
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "body": body,
                    "raw": raw,
                    "at": time.time(),
                })
                if self.path.startswith("/hook/hang"):
                    time.sleep(recorder.hang_s)
                if "/500" in self.path or self.path.startswith("/api500"):
                    self._answer(500, "text/plain", b"internal error")
                elif self.path.startswith("/api"):
                    self._answer(200, "application/json", b'{"ok": true, "channel": "C1", "ts": "1.2"}')
                else:
                    self._answer(200, "text/plain", b"ok")

            def _answer(self, status: int, ctype: str, payload: bytes) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def bodies(self, path_prefix: str = "") -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"].startswith(path_prefix)]


# ---------------------------------------------------------------------------- processes


def kill_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL what is left after ``grace`` seconds."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (from /proc), to check that nothing was left."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    exits: list[int] = field(default_factory=list)  # exit codes of the runs :meth:`Services.revive` replaced


@dataclass
class Services:
    """Commands started in their own sessions; :meth:`stop` ends every group, in reverse order."""

    logdir: Path
    started: list[Service] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Service:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        svc = Service(name, self._popen(cmd, env, cwd or self.logdir, log), log, cmd, env, cwd or self.logdir)
        self.started.append(svc)
        return svc

    @staticmethod
    def _popen(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
        with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def revive(self) -> list[str]:
        """Start again every service that exited, as ``restart: unless-stopped`` in docker/compose.yaml does.

        What is left of the exited run's process group is stopped first, and must be
        gone. Returns the names started again; their old exit codes are in ``exits``.
        """
        revived = []
        for svc in self.started:
            if svc.proc.poll() is None:
                continue
            kill_group(svc.proc)
            left = group_members(svc.proc.pid)
            assert left == [], f"{svc.name}: processes of the exited run left behind: {left}"
            svc.exits.append(svc.proc.returncode)
            with open(svc.log, "a") as fh:
                fh.write(f"\n--- exited ({svc.proc.returncode}); started again, as restart: unless-stopped would\n")
            svc.proc = self._popen(svc.cmd, svc.env, svc.cwd or self.logdir, svc.log)
            revived.append(svc.name)
        return revived

    def check_alive(self) -> None:
        for svc in self.started:
            if svc.proc.poll() is not None:
                raise AssertionError(f"{svc.name} exited ({svc.proc.returncode}):\n{tail(svc.log)}")

    def stop(self) -> list[int]:
        """Stop everything; return the PIDs still alive afterwards (should be none)."""
        left: list[int] = []
        for svc in reversed(self.started):
            kill_group(svc.proc)
        for svc in self.started:
            left.extend(group_members(svc.proc.pid))
        return left


def tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def wait_http(url: str, timeout: float, services: Services | None = None) -> None:
    """Poll ``url`` until it answers (any HTTP status), checking the services stay up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if services:
            services.check_alive()
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s")


# ---------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1: ``initdb`` in a temp dir as the ``postgres`` user.

    Why ``postgres``: initdb refuses to run as root. The data folder is made with
    :func:`tempfile.mkdtemp` (not pytest's tmp, which other users cannot enter).
    """

    db: str = "airflow"
    user: str = "airflow"
    port: int = 0
    root: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.db}"

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def __enter__(self) -> Postgres:
        if PG_BIN is None:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="prefpipe-pg-"))
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        subprocess.run(
            self._as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust",
                               "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True, timeout=120,
        )
        self.port = free_port()
        self._launch()
        self._wait_and_create()
        return self

    def _launch(self) -> None:
        """Start ``postgres`` on the data folder and port (in a process group of its own)."""
        assert PG_BIN is not None and self.root is not None
        with open(self.root / "postgres.log", "ab") as log:
            self.proc = subprocess.Popen(
                self._as_postgres([str(PG_BIN / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
                                   "-k", str(self.root / "sock"), "-c", "listen_addresses=127.0.0.1",
                                   "-c", "fsync=off", "-c", "max_connections=200"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _wait_ready(self) -> Any:
        """A connection to the ``postgres`` database once the server accepts one (60 s at most)."""
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{tail(self.root / 'postgres.log')}")
            try:
                return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def restart(self, down_s: float = 0.0) -> float:
        """``pg_ctl restart`` with a pause: fast shutdown (every session ended, data kept), ``down_s`` s
        down, then the same data folder and port again; returns how long clients could not connect.

        Why a pause: a restart that takes a blink can fall between two queries of every
        client; a few seconds down makes the clients meet the outage.
        """
        assert PG_BIN is not None and self.root is not None and self.proc is not None
        t0 = time.monotonic()
        subprocess.run(self._as_postgres([str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.root / "data"),
                                          "-m", "fast", "-w"]), check=True, capture_output=True, timeout=60)
        self.proc.wait(timeout=30)
        time.sleep(down_s)
        self._launch()
        self._wait_ready().close()
        return time.monotonic() - t0

    def _wait_and_create(self) -> None:
        conn = self._wait_ready()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.db}"')
        conn.close()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace=10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def slack_recorder(hang_s: float = 6.0) -> Iterator[SlackRecorder]:
    """``with slack_recorder() as slack:`` a :class:`SlackRecorder` that is shut down afterwards."""
    with SlackRecorder(hang_s=hang_s) as rec:
        yield rec
