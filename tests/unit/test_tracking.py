"""The tracking preflight: a server that does not answer is reported in seconds, in one line.

Why these tests: without the preflight, MLflow's client retries a refused connection with
its defaults (7 retries, backoff factor 2) for about four minutes before it says so. The
servers here are real sockets on 127.0.0.1: a closed port (refused at once), a listening
socket nobody accepts from (the request is never answered), and a small HTTP server
answering ``/health`` with a chosen status.
"""

from __future__ import annotations

import time

import pytest

from pipelines import tracking as T
from pipelines.layout import Layout
from tests.integration.http_fixtures import LocalServer, Reply, closed_port
from tests.integration.service_fixtures import unanswering_port

QUICK = {T.ENV_MAX_RETRIES: "1", T.ENV_BACKOFF_FACTOR: "0.1", T.ENV_TIMEOUT: "1"}
"""One quick retry: the behaviour under test is the same, the suite waits less."""


def test_policy_defaults_are_short_and_mlflow_variables_override_them():
    assert T.preflight_policy({}) == T.PreflightPolicy(retries=2, backoff_factor=1.0, timeout_s=5.0)
    assert T.preflight_policy(QUICK) == T.PreflightPolicy(retries=1, backoff_factor=0.1, timeout_s=1.0)
    # a typo falls back to the default (not a failed stage); a negative number is clamped
    assert T.preflight_policy({T.ENV_MAX_RETRIES: "many", T.ENV_TIMEOUT: "-3"}) == T.PreflightPolicy(
        retries=2, backoff_factor=1.0, timeout_s=0.1)


def test_only_http_servers_are_checked():
    assert T.is_server_uri("http://mlflow:5000") and T.is_server_uri("HTTPS://mlflow.example.org")
    assert not T.is_server_uri("sqlite:////tmp/mlflow.db")
    assert not T.is_server_uri("file:///tmp/mlruns") and not T.is_server_uri("databricks")
    T.preflight("sqlite:////nonexistent/dir/mlflow.db", QUICK)  # nothing to reach: no error


def test_short_reason_keeps_the_errno_and_drops_the_wrapping():
    wrapped = ("API request to http://127.0.0.1:9/health failed with exception HTTPConnectionPool(host='127.0.0.1', "
               "port=9): Max retries exceeded with url: /health (Caused by NewConnectionError(\"HTTPConnection("
               "host='127.0.0.1', port=9): Failed to establish a new connection: [Errno 111] Connection refused\"))")
    assert T.short_reason(wrapped) == "[Errno 111] Connection refused"
    assert T.short_reason("ReadTimeoutError: Read timed out. (read timeout=1)") == "timed out"
    assert T.short_reason("x " * 200) == ("x " * 60).strip()


def test_a_closed_port_fails_fast_with_one_line_naming_the_uri():
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(T.TrackingUnavailable) as info:
        T.preflight(uri, {})  # the shipped defaults, not the quick ones
    elapsed = time.perf_counter() - t0
    message = str(info.value)
    assert elapsed < 15, f"{elapsed:.1f}s: the check must answer in seconds"
    assert "\n" not in message
    assert message.startswith(f"MLflow tracking server {uri} is unreachable ([Errno 111] Connection refused; 3 tries)")
    assert "MLFLOW_TRACKING_URI" in message  # what to do


def test_an_unanswering_server_fails_after_the_timeout_not_mlflows_120_s():
    t0 = time.perf_counter()
    with unanswering_port() as port, pytest.raises(T.TrackingUnavailable, match="timed out; 2 tries"):
        T.preflight(f"http://127.0.0.1:{port}", QUICK)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize(("status", "reachable"), [(200, True), (401, True), (404, True), (503, False)])
def test_any_answer_below_500_counts_as_reachable(status, reachable):
    with LocalServer(lambda req: Reply(status, "OK" if status == 200 else "no", "text/plain")) as srv:
        if reachable:
            T.preflight(srv.url, QUICK)
        else:
            with pytest.raises(T.TrackingUnavailable, match=f"HTTP {status} on /health"):
                T.preflight(srv.url, QUICK)
        paths = [r.path for r in srv.requests]
    assert set(paths) == {"/health"}
    assert len(paths) == (1 if reachable else 2)  # a 5xx is retried like MLflow retries it


def test_configure_checks_the_server_before_mlflow_is_pointed_at_it(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{closed_port()}"
    for key, value in QUICK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(T.ENV_URI, uri)
    with pytest.raises(T.TrackingUnavailable, match=uri):
        T.client(Layout(tmp_path))
    assert not (tmp_path / "mlflow").exists()


def test_registry_reads_answer_none_only_for_a_missing_model_version_or_alias(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert T.alias_version(c, "no-such-model", "champion") is None
    c.create_registered_model("m")
    assert T.alias_version(c, "m", "champion") is None
    c.create_model_version("m", (tmp_path / "model").as_uri())
    c.set_registered_model_alias("m", "champion", "1")
    assert str(T.alias_version(c, "m", "champion").version) == "1"
    # a version as typed is found under the registry's own number
    assert str(T.model_version(c, "m", "01").version) == "1"
    assert T.model_version(c, "m", "9") is None and T.model_version(c, "m", "one") is None
    assert T.model_version(c, "no-such-model", "1") is None


def test_registry_reads_raise_when_the_registry_does_not_answer(monkeypatch):
    """A lost server is not "no champion": promote would move it without recording the old one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv(T.ENV_MAX_RETRIES, "0")
    monkeypatch.setenv(T.ENV_TIMEOUT, "2")
    uri = f"http://127.0.0.1:{closed_port()}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with pytest.raises(MlflowException, match="Connection refused"):
        T.alias_version(c, "m", "champion")
    with pytest.raises(MlflowException, match="Connection refused"):
        T.model_version(c, "m", "1")
