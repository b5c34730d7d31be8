"""Slack messages for the pipeline: task failures, gate verdicts, promotions, drift.

Messages are Block Kit payloads built from small dicts (stage names, counts, metrics,
verdict reasons, run ids, links), never from data: no prompt, response or record text
ever reaches a message. Every free-text string (an exception message, a gate reason)
still goes through :func:`clean` as a second line of defence: PII placeholders, secret
patterns masked, Slack markup escaped, length capped.

Delivery goes through ``slack-sdk``: an incoming webhook (``SLACK_WEBHOOK_URL``) or a
bot token (``SLACK_BOT_TOKEN`` + ``SLACK_CHANNEL``; ``SLACK_API_BASE_URL`` points the
Web API client elsewhere, e.g. at a test server). The Airflow side may resolve the
target from a connection instead (``plugins/prefpipe_slack.py``). :func:`send` never
raises: with no target it logs "Slack not configured" and returns ``False``; a Slack
error or timeout is logged (without the URL or token) and returns ``False``. An alert
must never fail the pipeline it reports on.

Example::

    from pipelines import alerts
    msg = alerts.failure_message(dag_id="prefpipe_training", task_id="train", run_id="manual__1",
                                 error_type="StageFailed", error="stage 'train' failed (exit 1)")
    alerts.send(msg)        # False and a log line when Slack is not configured
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
MAX_TEXT = 2800  # a section's text may hold 3,000 characters
MAX_FIELD = 1900  # a field may hold 2,000
MAX_CONTEXT = 2900  # a context element's text may hold 3,000: every link together
MAX_LINK = 2800  # one URL; a longer one (a presigned URL) is dropped, never cut into a broken link
MAX_LABEL = 80
LINK_SEPARATOR = "  •  "

Link = tuple[str, str]
"""``(label, url)`` shown in the message's context line."""


@dataclass(frozen=True)
class SlackTarget:
    """Where messages go: a webhook URL, or a bot token and a channel."""

    webhook_url: str | None = None
    token: str | None = None
    channel: str | None = None
    api_base_url: str | None = None

    def __post_init__(self) -> None:
        if not self.webhook_url and not (self.token and self.channel):
            raise ValueError("a SlackTarget needs a webhook_url, or a token and a channel")

    def __repr__(self) -> str:  # never print the secret parts
        kind = "webhook" if self.webhook_url else f"bot token -> {self.channel}"
        return f"SlackTarget({kind})"

    @property
    def kind(self) -> str:
        return "webhook" if self.webhook_url else "web_api"


def target_from_env(env: Mapping[str, str] | None = None) -> SlackTarget | None:
    """``SLACK_WEBHOOK_URL``, else ``SLACK_BOT_TOKEN`` + ``SLACK_CHANNEL``; ``None`` when neither."""
    env = os.environ if env is None else env
    url = env.get("SLACK_WEBHOOK_URL", "").strip()
    if url:
        return SlackTarget(webhook_url=url)
    token, channel = env.get("SLACK_BOT_TOKEN", "").strip(), env.get("SLACK_CHANNEL", "").strip()
    if token and channel:
        return SlackTarget(token=token, channel=channel, api_base_url=env.get("SLACK_API_BASE_URL", "").strip() or None)
    return None


# ---------------------------------------------------------------------------- cleaning

_SECRETS = [
    (re.compile(r"xox[abposr]-[A-Za-z0-9-]+"), "<SLACK_TOKEN>"),
    (re.compile(r"https?://hooks\.slack\.com/\S+"), "<SLACK_WEBHOOK>"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer <SECRET>"),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)(\s*[=:]\s*)[^\s,;]+"),
     r"\1\2<SECRET>"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/:@]+:[^\s/@]+@", re.IGNORECASE), r"\1<USER>:<SECRET>@"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "<AWS_KEY>"),
    # tokens recognisable by their prefix: Hugging Face, OpenAI-style and Langfuse keys
    # (the judge's, the tracer's), GitHub
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "<HF_TOKEN>"),
    (re.compile(r"\b(?:sk|pk)-[A-Za-z0-9_-]{16,}"), "<API_KEY>"),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), "<GITHUB_TOKEN>"),
]
_FALLBACK_PII = [
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "<EMAIL>"),
    (re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b"), "<IP_ADDRESS>"),
    (re.compile(r"\+?\d[\d ()-]{7,}\d"), "<NUMBER>"),
]


def _scrub_pii(text: str) -> str:
    """The pipeline's own PII scrubber when it is importable, else a few conservative patterns."""
    try:
        from pipelines.pii import scrub_text
    except ImportError:
        scrub_text = None
    if scrub_text is not None:
        try:
            return scrub_text(text)[0]
        except Exception:  # a scrubber bug must not stop an alert; fall back below
            log.warning("pipelines.pii.scrub_text failed; using the fallback patterns")
    for pattern, placeholder in _FALLBACK_PII:
        text = pattern.sub(placeholder, text)
    return text


def escape(text: str) -> str:
    """Escape Slack's control characters (``<EMAIL>`` would otherwise read as a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clean(text: Any, limit: int = 300) -> str:
    """Free text made safe for a message: secrets masked, PII scrubbed, escaped, capped.

    Why secrets first: a token can look like a name or a number to the PII scrubber and
    come out half-masked.
    """
    s = " ".join(str(text).split())
    for pattern, repl in _SECRETS:
        s = pattern.sub(repl, s)
    s = _scrub_pii(s)
    if len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    return escape(s)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "–"
    return escape(" ".join(str(value).split())[:120])  # ids and names, not free text: no scrub


# ---------------------------------------------------------------------------- blocks


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def _fields(pairs: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Sections of up to 10 ``*label*\\nvalue`` fields (Slack's limit per section)."""
    fields = [{"type": "mrkdwn", "text": f"*{escape(k)}*\n{_fmt(v)}"[:MAX_FIELD]} for k, v in pairs]
    return [{"type": "section", "fields": fields[i: i + 10]} for i in range(0, len(fields), 10)]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_TEXT]}}


def _links(links: Sequence[Link] | None) -> list[dict[str, Any]]:
    """The context line of links: credentials stripped, each link whole, within Slack's limit.

    Why drop rather than cut: a cut URL is a broken link; a message over the limit is
    rejected by Slack as a whole, and the alert is lost.
    """
    parts: list[str] = []
    size = 0
    for label, url in links or []:
        part = _link(label, url)
        if part is None:
            continue
        if size + len(part) + len(LINK_SEPARATOR) > MAX_CONTEXT:
            log.warning("Slack link %r left out: the links would exceed %d characters", label, MAX_CONTEXT)
            continue
        parts.append(part)
        size += len(part) + len(LINK_SEPARATOR)
    if not parts:
        return []
    return [{"type": "context", "elements": [{"type": "mrkdwn", "text": LINK_SEPARATOR.join(parts)}]}]


def _link(label: str, url: str | None) -> str | None:
    """``<url|label>`` for an http(s) URL without credentials; None (logged when too long) otherwise."""
    safe = without_userinfo(url) if url and _is_http(url) else None
    if safe is None:
        return None
    if len(safe) > MAX_LINK:
        log.warning("Slack link %r left out: its URL has %d characters (at most %d)", label, len(safe), MAX_LINK)
        return None
    return f"<{safe}|{escape(' '.join(str(label).split())[:MAX_LABEL])}>"


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://")) and not re.search(r"[\s<>|]", url)


def without_userinfo(url: str) -> str | None:
    """``url`` without ``user:password@`` (None when it does not parse).

    Why: MLFLOW_TRACKING_URI may carry basic-auth credentials, and a link built from
    it would post them to every channel member.
    """
    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    except ValueError:      # e.g. a malformed IPv6 host
        return None


def _message(kind: str, text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """A payload: ``text`` is the notification fallback, ``blocks`` the rich message."""
    return {"kind": kind, "text": text[:300], "blocks": blocks}


def failure_message(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    error_type: str,
    error: str,
    try_number: int | None = None,
    max_tries: int | None = None,
    links: Sequence[Link] | None = None,
) -> dict[str, Any]:
    """A task failed for good (retries spent, or a failure that retrying cannot fix)."""
    attempt = f"{try_number} of {max_tries}" if try_number and max_tries else (str(try_number or "–"))
    blocks = [
        _header(f":x: {task_id} failed in {dag_id}"),
        *_fields([("DAG", dag_id), ("Task", task_id), ("Run", run_id), ("Attempt", attempt)]),
        _section(f"*{escape(error_type)}*\n```{clean(error, 600)}```"),
        *_links(links),
    ]
    return _message("failure", f"{dag_id}.{task_id} failed ({error_type})", blocks)


def _figures(outcome: Mapping[str, Any]) -> list[tuple[str, Any]]:
    names = {
        "win_rate": "Win-rate", "win_rate_ci_low": "Win-rate CI low", "win_rate_p_value": "p-value",
        "candidate_accuracy": "Candidate accuracy", "reference_accuracy": "Reference accuracy",
        "nll_relative_increase": "NLL change",
    }
    figures = outcome.get("figures") or {}
    return [(label, figures[key]) for key, label in names.items() if key in figures]


def gate_message(
    outcome: Mapping[str, Any], *, dag_id: str, run_id: str, links: Sequence[Link] | None = None
) -> dict[str, Any]:
    """The gate's verdict when the candidate was *not* promoted: every reason, as worded by the gate."""
    passed = bool(outcome.get("gate_passed"))
    reason = clean(outcome.get("reason") or ("gate passed" if passed else "gate failed"), 400)
    failed = set(outcome.get("failed_checks") or [])
    lines = []
    for r in outcome.get("reasons") or []:
        mark = ":x:" if any(str(r).startswith(f"{name} ") for name in failed) else ":white_check_mark:"
        lines.append(f"{mark} {clean(r, 300)}")
    blocks = [
        _header(f":no_entry: Not promoted: {dag_id}"),
        _section(f"*Why:* {reason}"),
        *_fields([
            ("Gate", "passed" if passed else "failed"),
            ("Candidate version", outcome.get("version")),
            ("Champion", outcome.get("champion")),
            ("Run", run_id),
            *_figures(outcome),
        ]),
    ]
    if lines:
        blocks.append(_section("*Checks*\n" + "\n".join(lines)))
    blocks.extend(_links(links))
    return _message("gate", f"{dag_id}: candidate not promoted ({clean(outcome.get('reason') or '', 200)})", blocks)


def promotion_message(
    outcome: Mapping[str, Any], *, dag_id: str, run_id: str, links: Sequence[Link] | None = None
) -> dict[str, Any]:
    """The gate passed and the candidate is the new champion."""
    blocks = [
        _header(f":rocket: New champion: version {outcome.get('version', '?')}"),
        _section(f"*{escape(dag_id)}* promoted the candidate: {clean(outcome.get('reason') or 'gate passed', 300)}"),
        *_fields([
            ("Version", outcome.get("version")),
            ("Previous champion", outcome.get("previous_champion")),
            ("Run", run_id),
            *_figures(outcome),
        ]),
        *_links(links),
    ]
    return _message("promotion", f"{dag_id}: version {outcome.get('version', '?')} promoted to champion", blocks)


def outcome_message(
    outcome: Mapping[str, Any], *, dag_id: str, run_id: str, links: Sequence[Link] | None = None
) -> dict[str, Any]:
    """The message for a finished training run: a promotion, or the gate's verdict."""
    build = promotion_message if outcome.get("promoted") else gate_message
    return build(outcome, dag_id=dag_id, run_id=run_id, links=links)


def drift_message(
    metrics: Mapping[str, Any],
    *,
    dag_id: str,
    run_id: str,
    retrain_requested: bool,
    links: Sequence[Link] | None = None,
) -> dict[str, Any]:
    """Drift above the threshold: the headline figures, and whether a retraining was requested."""
    figures = [(k.replace("_", " "), v) for k, v in metrics.items() if isinstance(v, int | float | bool)][:16]
    drifted = metrics.get("drifted_features") or metrics.get("drifted")
    blocks = [
        _header(f":chart_with_upwards_trend: Drift detected: {dag_id}"),
        _section(
            "This week's events differ from the reference window beyond the threshold. "
            + ("The training DAG was asked to retrain." if retrain_requested else "No retraining was requested.")
        ),
        *_fields([("Run", run_id), *figures]),
    ]
    if isinstance(drifted, list) and drifted:
        blocks.append(_section("*Drifted features:* " + ", ".join(escape(str(x))[:60] for x in drifted[:20])))
    blocks.extend(_links(links))
    return _message("drift", f"{dag_id}: drift detected", blocks)


def mlflow_run_url(run_id: str | None, ui_base: str | None = None) -> str | None:
    """A link to an MLflow run: ``$MLFLOW_UI_URL`` (or an http tracking URI) + ``/#/runs/<id>``."""
    if not run_id:
        return None
    base = ui_base or os.environ.get("MLFLOW_UI_URL", "").strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not base.startswith(("http://", "https://")):
        return None
    safe = without_userinfo(base)
    return f"{safe.rstrip('/')}/#/runs/{run_id}" if safe else None


# ---------------------------------------------------------------------------- sending


def timeout_seconds(timeout: Any = None) -> int:
    """Whole seconds for the Slack client: ``timeout``, else ``$SLACK_TIMEOUT_S``, else the default.

    Why the checks: ``round()`` raises on NaN and infinity, and a zero or negative
    timeout is no timeout; any of them falls back to the default with a warning.
    """
    raw = os.environ.get("SLACK_TIMEOUT_S", "").strip() if timeout is None else timeout
    if raw in ("", None):
        return round(DEFAULT_TIMEOUT_S)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        log.warning("Slack timeout %r is not a positive number of seconds; using %g", raw, DEFAULT_TIMEOUT_S)
        value = DEFAULT_TIMEOUT_S
    return max(1, round(value))


def send(message: Mapping[str, Any], target: SlackTarget | None = None, timeout: float | None = None) -> bool:
    """Post a message; ``True`` when Slack accepted it. Never raises.

    ``target`` defaults to :func:`target_from_env`. ``timeout`` (seconds) defaults to
    ``$SLACK_TIMEOUT_S`` or 5: a slow Slack must not hold a task for long.
    """
    kind = message.get("kind", "message")
    try:
        target = target or target_from_env()
    except ValueError:
        target = None
    if target is None:
        log.warning("Slack not configured: %s alert not sent (set SLACK_WEBHOOK_URL or a connection)", kind)
        return False
    try:
        seconds = timeout_seconds(timeout)
        text, blocks = str(message.get("text", "")), list(message.get("blocks", []))
        if target.webhook_url:
            from slack_sdk.webhook import WebhookClient

            resp = WebhookClient(target.webhook_url, timeout=seconds).send(text=text, blocks=blocks)
            ok = resp.status_code == 200
            detail = f"HTTP {resp.status_code}"
        else:
            from slack_sdk import WebClient

            kwargs: dict[str, Any] = {"token": target.token, "timeout": seconds}
            if target.api_base_url:
                kwargs["base_url"] = target.api_base_url.rstrip("/") + "/"
            resp = WebClient(**kwargs).chat_postMessage(channel=target.channel, text=text, blocks=blocks)
            ok = bool(resp.get("ok"))
            detail = f"HTTP {resp.status_code}"
    except Exception as err:  # network, timeout, SlackApiError: all reported, none raised
        log.warning("Slack %s alert not delivered via %s: %s", kind, target.kind, type(err).__name__)
        return False
    if ok:
        log.info("Slack %s alert delivered via %s", kind, target.kind)
    else:
        log.warning("Slack %s alert not delivered via %s: %s", kind, target.kind, detail)
    return ok
