"""Slack from Airflow: the target, links back to the run, and the failure notifier.

Where messages go, first match wins:

1. ``SLACK_WEBHOOK_URL`` in the environment (an incoming webhook);
2. ``SLACK_BOT_TOKEN`` + ``SLACK_CHANNEL`` (``SLACK_API_BASE_URL`` for another Web API host);
3. the Airflow connection ``$PREFPIPE_SLACK_CONN_ID`` (default ``slack_webhook_default``):
   type ``slackwebhook`` (the webhook URL, or its ``T.../B.../...`` token, in the
   password) or type ``slack`` (bot token in the password, ``channel`` in the extra).

With none of them, alerts log "Slack not configured" and the run goes on; a Slack error
is logged and swallowed. Message content is built by :mod:`pipelines.alerts`.

In a DAG::

    from prefpipe_slack import SlackAlertNotifier
    default_args = {"on_failure_callback": [SlackAlertNotifier()]}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from pipelines import alerts

log = logging.getLogger(__name__)

CONN_ENV = "PREFPIPE_SLACK_CONN_ID"
DEFAULT_CONN_ID = "slack_webhook_default"


def target_from_connection(conn_id: str | None = None) -> alerts.SlackTarget | None:
    """The Slack target of an Airflow connection, or ``None`` when there is none (or it is unusable)."""
    conn_id = conn_id or os.environ.get(CONN_ENV, "").strip() or DEFAULT_CONN_ID
    try:
        from airflow.sdk import Connection

        conn = Connection.get(conn_id)
    except Exception as err:  # not found, no API server, no secrets backend: all mean "none"
        log.debug("no Slack connection %r: %s", conn_id, type(err).__name__)
        return None
    if conn is None:
        return None
    secret = (conn.password or "").strip()
    extra: Mapping[str, Any] = conn.extra_dejson or {}
    if not secret:
        return None
    if conn.conn_type == "slack":
        channel = str(extra.get("channel") or os.environ.get("SLACK_CHANNEL", "")).strip()
        if not channel:
            log.warning("Slack connection %r has a token but no channel (extra.channel)", conn_id)
            return None
        return alerts.SlackTarget(token=secret, channel=channel, api_base_url=extra.get("base_url") or None)
    if "://" in secret:
        url = secret
    else:  # the provider's convention: host is the endpoint, password the webhook token
        host = (conn.host or "hooks.slack.com/services").strip()
        base = host if "://" in host else f"{conn.schema or 'https'}://{host}"
        url = base.rstrip("/") + "/" + secret.lstrip("/")
    return alerts.SlackTarget(webhook_url=url)


def resolve_target() -> alerts.SlackTarget | None:
    """Environment first (explicit, per process), then the Airflow connection."""
    return alerts.target_from_env() or target_from_connection()


def send_alert(message: Mapping[str, Any]) -> bool:
    """Send a :mod:`pipelines.alerts` message to the resolved target; never raises."""
    try:
        target = resolve_target()
    except Exception as err:
        log.warning("could not resolve the Slack target: %s", type(err).__name__)
        target = None
    return alerts.send(message, target)


def api_base_url() -> str:
    """The Airflow UI's base URL (``[api] base_url``), for links in messages."""
    try:
        from airflow.sdk.configuration import conf

        return conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    except Exception:
        return "http://localhost:8080"


def run_url(dag_id: str, run_id: str) -> str:
    """The Airflow UI page of a DAG run."""
    return f"{api_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def run_links(dag_id: str, run_id: str, mlflow_run_id: str | None = None) -> list[alerts.Link]:
    """Links for a message: the Airflow run, and the MLflow run when there is one and a UI to show it."""
    links: list[alerts.Link] = [("Airflow run", run_url(dag_id, run_id))]
    mlflow = alerts.mlflow_run_url(mlflow_run_id)
    if mlflow:
        links.append(("MLflow run", mlflow))
    return links


class SlackAlertNotifier(BaseNotifier):
    """``on_failure_callback`` that posts the failed task, its run and the error class to Slack.

    The error text is cleaned (PII scrubbed, secrets masked) and capped; the full
    traceback stays in the task log, which the message links to.
    """

    template_fields: Sequence[str] = ()

    def notify(self, context: Mapping[str, Any]) -> None:
        try:
            send_alert(failure_from_context(context))
        except Exception as err:  # a notifier must never turn a failure into a crash
            log.warning("failure alert not built: %s", type(err).__name__)


def failure_from_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The failure message for an Airflow task context (``ti``, ``exception``)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = str(getattr(ti, "dag_id", None) or context.get("dag_id") or "?")
    task_id = str(getattr(ti, "task_id", None) or "?")
    run_id = str(getattr(ti, "run_id", None) or context.get("run_id") or "?")
    error = context.get("exception")
    error_type = type(error).__name__ if isinstance(error, BaseException) else "Failure"
    links = [("Airflow run", run_url(dag_id, run_id))]
    log_url = getattr(ti, "log_url", None)
    if isinstance(log_url, str):
        links.append(("Task log", log_url))
    retries = getattr(ti, "max_tries", None)  # Airflow's max_tries counts the retries, not the tries
    return alerts.failure_message(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        error_type=error_type,
        error=str(error) if error is not None else "see the task log",
        try_number=getattr(ti, "try_number", None),
        max_tries=retries + 1 if isinstance(retries, int) else None,
        links=links,
    )
