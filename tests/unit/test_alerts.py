"""pipelines.alerts: Block Kit payloads without PII or secrets, and delivery that never raises.

Delivery is tested against a real HTTP server on 127.0.0.1 (the recorder the Airflow
tests use): a webhook that answers 200, 500 or not at all, and the Web API path with a
bot token.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from pipelines import alerts
from tests.integration.airflow_fixtures import slack_recorder

PII_REASON = (
    "win_rate FAILED for john.smith@example.com (call +1 415 555 0100) from 10.1.2.3; "
    "token=xoxb-1234-5678-abcdef password=hunter2 https://hooks.slack.com/services/T0/B0/XYZ"
)
SECRETS_AND_PII = ["john.smith@example.com", "415 555 0100", "10.1.2.3", "xoxb-1234", "hunter2",
                   "hooks.slack.com/services/T0"]

OUTCOME = {
    "promoted": False, "gate_passed": False, "reason": "gate failed: win_rate",
    "reasons": ["win_rate FAILED: margin win-rate = 0.41 (required >= 0.55)",
                "min_pairs passed: held-out test pairs = 80 (required >= 20)"],
    "failed_checks": ["win_rate"], "version": "4", "champion": "3",
    "figures": {"win_rate": 0.41, "win_rate_ci_low": 0.33}, "mlflow_run_id": "abc",
}


def _texts(message: dict) -> str:
    return json.dumps(message)


def _check_blocks(message: dict) -> None:
    """Slack's structural limits, which a real workspace enforces with invalid_blocks."""
    assert message["text"] and len(message["text"]) <= 300
    assert 1 <= len(message["blocks"]) <= 50
    for block in message["blocks"]:
        assert block["type"] in {"header", "section", "context", "divider"}
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
            assert len(block.get("text", {}).get("text", "")) <= 3000


def test_clean_masks_secrets_and_pii_and_escapes():
    out = alerts.clean(PII_REASON, limit=1000)
    for leaked in SECRETS_AND_PII:
        assert leaked not in out
    assert "&lt;" in out and "<" not in out  # placeholders cannot read as Slack links
    assert alerts.clean("x" * 500, limit=50).endswith("…") and len(alerts.clean("x" * 500, limit=50)) == 50


def test_failure_message():
    msg = alerts.failure_message(dag_id="prefpipe_training", task_id="train", run_id="manual__1",
                                 error_type="StageFailed", error=PII_REASON, try_number=3, max_tries=3,
                                 links=[("Airflow run", "http://af/dags/x/runs/1"), ("bad", "javascript:x")])
    _check_blocks(msg)
    text = _texts(msg)
    assert "train failed in prefpipe_training" in text and "3 of 3" in text and "StageFailed" in text
    for leaked in SECRETS_AND_PII:
        assert leaked not in text
    assert "<http://af/dags/x/runs/1|Airflow run>" in text and "javascript" not in text


def test_gate_message_lists_every_check_and_marks_the_failed_one():
    msg = alerts.outcome_message({**OUTCOME, "reasons": [*OUTCOME["reasons"], PII_REASON]},
                                 dag_id="prefpipe_training", run_id="r1",
                                 links=[("MLflow run", "http://mlflow/#/runs/abc")])
    _check_blocks(msg)
    text = _texts(msg)
    assert msg["kind"] == "gate" and "Not promoted" in text and "gate failed: win_rate" in text
    assert ":x: win_rate FAILED" in text and ":white_check_mark: min_pairs passed" in text
    assert "Win-rate" in text and "0.41" in text
    for leaked in SECRETS_AND_PII:
        assert leaked not in text


def test_promotion_message():
    msg = alerts.outcome_message({**OUTCOME, "promoted": True, "gate_passed": True, "reason": "gate passed",
                                  "previous_champion": "3"}, dag_id="d", run_id="r")
    _check_blocks(msg)
    assert msg["kind"] == "promotion" and "New champion: version 4" in _texts(msg)


def test_drift_message():
    metrics = {"verdict": "drift", "drift_detected": True, "drift_score": 0.42, "threshold": 0.15,
               "drifted_features": ["prompt_chars", "skill"], "n_features": 9}
    msg = alerts.drift_message(metrics, dag_id="prefpipe_drift", run_id="r", retrain_requested=True)
    _check_blocks(msg)
    text = _texts(msg)
    assert "Drift detected" in text and "asked to retrain" in text and "prompt_chars" in text and "0.42" in text


def test_mlflow_link_only_with_a_ui(monkeypatch):
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert alerts.mlflow_run_url("abc") is None
    monkeypatch.setenv("MLFLOW_UI_URL", "http://mlflow:5000/")
    assert alerts.mlflow_run_url("abc") == "http://mlflow:5000/#/runs/abc"
    assert alerts.mlflow_run_url(None) is None


def test_links_never_carry_credentials(monkeypatch):
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:S3cr3tPassw0rd@mlflow.example.com")
    url = alerts.mlflow_run_url("0123abcd")
    assert url == "https://mlflow.example.com/#/runs/0123abcd"
    msg = alerts.promotion_message({"version": "4"}, dag_id="d", run_id="r",
                                   links=[("MLflow run", "https://bob:hunter2@mlflow.example.com/#/runs/1")])
    text = _texts(msg)
    assert "hunter2" not in text and "bob" not in text and "<https://mlflow.example.com/#/runs/1|MLflow run>" in text


def test_a_link_too_long_for_slack_is_left_out_whole(caplog):
    presigned = "https://bucket.s3.amazonaws.com/report.html?X-Amz-Security-Token=" + "A" * 3100
    with caplog.at_level(logging.WARNING, logger="pipelines.alerts"):
        msg = alerts.drift_message({"drift_score": 0.3}, dag_id="d", run_id="r", retrain_requested=False,
                                   links=[("Drift report", presigned), ("Airflow run", "http://af/runs/1")])
    contexts = [b for b in msg["blocks"] if b["type"] == "context"]
    assert [e["text"] for b in contexts for e in b["elements"]] == ["<http://af/runs/1|Airflow run>"]
    assert "Drift report" in caplog.text and "X-Amz" not in caplog.text
    many = [(f"report {i}", "https://example.com/" + "x" * 900) for i in range(5)]
    text = alerts.drift_message({}, dag_id="d", run_id="r", retrain_requested=False, links=many)["blocks"][-1]
    assert len(text["elements"][0]["text"]) <= 3000 and text["elements"][0]["text"].count("|report") == 3


def test_targets_from_env_and_no_secret_in_repr():
    assert alerts.target_from_env({}) is None
    assert alerts.target_from_env({"SLACK_BOT_TOKEN": "xoxb-1"}) is None  # a token needs a channel
    hook = alerts.target_from_env({"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/SECRET"})
    assert hook.kind == "webhook" and "SECRET" not in repr(hook)
    bot = alerts.target_from_env({"SLACK_BOT_TOKEN": "xoxb-SECRET", "SLACK_CHANNEL": "#ml",
                                  "SLACK_API_BASE_URL": "http://127.0.0.1:1/api/"})
    assert bot.kind == "web_api" and bot.api_base_url == "http://127.0.0.1:1/api/" and "SECRET" not in repr(bot)
    with pytest.raises(ValueError):
        alerts.SlackTarget()


def test_not_configured_logs_and_goes_on(monkeypatch, caplog):
    for key in ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL"):
        monkeypatch.delenv(key, raising=False)
    with caplog.at_level(logging.WARNING, logger="pipelines.alerts"):
        assert alerts.send(alerts.drift_message({}, dag_id="d", run_id="r", retrain_requested=False)) is False
    assert "Slack not configured" in caplog.text


def test_webhook_delivery_and_failures_never_raise(caplog):
    msg = alerts.failure_message(dag_id="d", task_id="t", run_id="r", error_type="E", error="boom")
    with slack_recorder(hang_s=4) as slack:
        assert alerts.send(msg, alerts.SlackTarget(webhook_url=slack.url("/hook/ok")), timeout=2) is True
        body = slack.bodies("/hook/ok")[0]
        assert body["blocks"] == msg["blocks"] and body["text"] == msg["text"] and "kind" not in body

        with caplog.at_level(logging.WARNING, logger="pipelines.alerts"):
            assert alerts.send(msg, alerts.SlackTarget(webhook_url=slack.url("/hook/500")), timeout=2) is False
            t0 = time.monotonic()
            assert alerts.send(msg, alerts.SlackTarget(webhook_url=slack.url("/hook/hang")), timeout=1) is False
            waited = time.monotonic() - t0
        assert waited < 4  # the client gave up; it did not wait for the answer
        assert "HTTP 500" in caplog.text
        assert "127.0.0.1" not in caplog.text  # the URL (a secret for a real webhook) is never logged
    # nothing listens any more: a connection error is a False, not an exception
    assert alerts.send(msg, alerts.SlackTarget(webhook_url=slack.url("/hook/ok")), timeout=1) is False


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "0", "-3", "soon"])
def test_a_bad_timeout_setting_falls_back_to_the_default(monkeypatch, caplog, bad):
    msg = alerts.failure_message(dag_id="d", task_id="t", run_id="r", error_type="E", error="boom")
    monkeypatch.setenv("SLACK_TIMEOUT_S", bad)
    with slack_recorder() as slack, caplog.at_level(logging.WARNING, logger="pipelines.alerts"):
        assert alerts.send(msg, alerts.SlackTarget(webhook_url=slack.url("/hook/ok"))) is True
    assert "not a positive number of seconds" in caplog.text


def test_a_bad_timeout_argument_never_raises():
    msg = alerts.failure_message(dag_id="d", task_id="t", run_id="r", error_type="E", error="boom")
    with slack_recorder() as slack:
        for bad in (float("nan"), float("inf"), -1.0):
            assert alerts.send(msg, alerts.SlackTarget(webhook_url=slack.url("/hook/ok")), timeout=bad) is True


def test_bot_token_delivery_through_the_web_api(monkeypatch):
    msg = alerts.failure_message(dag_id="d", task_id="t", run_id="r", error_type="E", error="boom")
    with slack_recorder() as slack:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
        monkeypatch.setenv("SLACK_CHANNEL", "#ml-alerts")
        monkeypatch.setenv("SLACK_API_BASE_URL", slack.url("/api/"))
        monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
        assert alerts.send(msg, timeout=2) is True
        req = slack.requests[-1]
        assert req["path"] == "/api/chat.postMessage" and req["authorization"] == "Bearer xoxb-test-token"
        body = req["body"]
        assert body["channel"] == "#ml-alerts" and body["text"] == msg["text"]
        blocks = body["blocks"] if isinstance(body["blocks"], list) else json.loads(body["blocks"])
        assert blocks == msg["blocks"]

        monkeypatch.setenv("SLACK_API_BASE_URL", slack.url("/api500/"))
        assert alerts.send(msg, timeout=2) is False


def test_tokens_known_by_their_prefix_are_masked():
    """An hf_ token (a gated base model's download failing) reached Slack as it was."""
    tokens = {
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345": "<HF_TOKEN>",
        "sk-proj-AbCdEfGhIjKlMnOpQrSt_uv-1234": "<API_KEY>",
        "sk-lf-1234abcd-5678-efgh-9012-ijklmnop": "<API_KEY>",
        "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789": "<GITHUB_TOKEN>",
    }
    for token, mask in tokens.items():
        out = alerts.clean(f"401 Unauthorized for {token} while fetching", limit=1000)
        assert token not in out and mask.replace("<", "&lt;").replace(">", "&gt;") in out, out
    assert alerts.clean("task-runner and risk-free", limit=100) == "task-runner and risk-free"
