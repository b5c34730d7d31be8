"""Real servers for the scale-out tests: Redis, an S3 endpoint (moto), an MLflow tracking server.

Each is a context manager that starts the real program on a free port of 127.0.0.1, in
a process group of its own (:class:`~tests.integration.airflow_fixtures.Services`),
waits until it answers, and stops the whole group on the way out, also when the test
failed. PostgreSQL, the process helpers and the Airflow environment are in
:mod:`tests.integration.airflow_fixtures`; these build on them.

- :class:`Redis`: ``redis-server`` (Debian's package, see ``scripts/test-services.sh``),
  no persistence, its files in a temp dir; the Celery broker.
- :class:`MotoS3`: ``moto_server`` (``moto[server]``), an S3 API with fake credentials.
- :class:`MlflowServer`: ``mlflow server`` with a PostgreSQL backend store and a local
  folder as artifact destination, artifacts served through the server.
- :func:`unanswering_port`: a hung host (connections accepted by the kernel, never answered).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.airflow_fixtures import Postgres, Services, free_port, tail, wait_http
from tests.project import VENV_BIN

REDIS_SERVER = shutil.which("redis-server")
T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, services: Services | None = None,
               every: float = 1.0) -> T:
    """Call ``probe`` until it returns something truthy (returned); fail after ``timeout`` s or if a service died."""
    deadline = time.monotonic() + timeout
    while True:
        if services is not None:
            services.check_alive()
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s" + (f"\n{services_log(services)}" if services else ""))
        time.sleep(every)


@contextlib.contextmanager
def unanswering_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose connections complete (the kernel's backlog) but are never answered.

    Why: a hung host is the case where a client's timeout, not a refused connection, has
    to end the wait.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def pg_rows(pg: Postgres, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    """Run one query on ``pg``'s database; the rows as dicts."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, dbname=pg.db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            cols = [c.name for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def services_log(services: Services, n: int = 3000) -> str:
    """The end of each service's log, for a failure message."""
    return "\n".join(f"--- {s.name}\n{tail(s.log, n)}" for s in services.started)


@dataclass
class _Server:
    """One program in its own process group, logs in ``root``; stopped with everything it forked."""

    root: Path
    port: int = 0
    services: Services = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.services = Services(self.root / "logs")

    def __exit__(self, *exc: Any) -> None:
        left = self.services.stop()
        assert left == [], f"{type(self).__name__}: processes left behind: {left}"


class Redis(_Server):
    """``redis-server`` on 127.0.0.1, nothing saved to disk; ``url`` is a Celery broker URL."""

    def __enter__(self) -> Redis:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server not installed (scripts/test-services.sh installs it)")
        self.port = free_port()
        self.services.start("redis", [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                                      "--dir", str(self.root), "--save", "", "--appendonly", "no",
                                      "--protected-mode", "no"], {}, self.root)
        wait_until("redis answers PING", self._ping, 30, self.services, every=0.2)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class MotoS3(_Server):
    """``moto_server`` on 127.0.0.1: an S3 API; :meth:`env` gives fake credentials for clients."""

    def __enter__(self) -> MotoS3:
        self.port = free_port()
        self.services.start("moto", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                            {"PATH": str(VENV_BIN), **self.env()}, self.root)
        wait_http(f"{self.url}/moto-api/", 60, self.services)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def env() -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@dataclass
class MlflowServer(_Server):
    """``mlflow server`` on a PostgreSQL backend store, artifacts under ``root/artifacts`` served by it.

    :meth:`stop` and :meth:`start` take it down and bring it back on the same port, backend
    store and artifact folder: an outage as clients see it, with nothing lost on the server.
    """

    pg: Postgres | None = None

    def __enter__(self) -> MlflowServer:
        assert self.pg is not None, "MlflowServer needs a running Postgres"
        self.port = free_port()
        self.artifacts = self.root / "artifacts"
        self.start()
        return self

    def start(self) -> None:
        """Start the server on ``port`` and wait until ``/health`` answers."""
        assert self.pg is not None
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(self.root), "PYTHONUNBUFFERED": "1"}
        self.services.start("mlflow", [
            str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1", "--backend-store-uri", self.pg.url,
            "--artifacts-destination", str(self.artifacts), "--serve-artifacts",
        ], env, self.root)
        wait_http(f"{self.url}/health", 180, self.services)

    def stop(self) -> None:
        """Stop the server and everything it forked (its store and artifacts stay); fail if any process is left."""
        left = self.services.stop()
        self.services.started.clear()  # a stopped server is not a crashed one for check_alive
        assert left == [], f"mlflow server: processes left behind: {left}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
