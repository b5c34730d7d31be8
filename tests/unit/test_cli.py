"""The command line: user errors end in one readable line and a non-zero exit, not a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_rollback_with_nothing_to_roll_back_is_one_line(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = CliRunner().invoke(app, ["rollback"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("rollback:")]
    assert lines == ["rollback: model 'prefpipe-policy' has no 'champion' alias: nothing to roll back"]
    assert "Traceback" not in result.output


def test_rollback_with_an_invalid_params_file_says_which_key(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("registry:\n  no_such_key: 1\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["rollback"])
    assert result.exit_code == 1 and "no_such_key" in result.stderr


def test_every_stage_has_help():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for stage in ("ingest", "scrub", "pairs", "train", "evaluate", "gate", "promote", "drift", "rollback", "audit"):
        assert stage in result.output


def test_rollback_with_the_tracking_server_down_is_one_line(tmp_path, monkeypatch):
    from tests.integration.http_fixtures import closed_port

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = CliRunner().invoke(app, ["rollback"])
    assert result.exit_code == 3
    assert next(ln for ln in result.stderr.splitlines() if ln.startswith("rollback:")).count("unreachable") == 1
