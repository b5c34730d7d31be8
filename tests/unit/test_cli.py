"""The command line: user errors end in one readable line and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
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


def _server_lost_mid_stage(tmp_path, monkeypatch, stage_fn) -> object:
    """Run ``train`` with its body replaced by ``stage_fn`` and MLflow pointed at a closed port."""
    from pipelines import cli
    from tests.integration.http_fixtures import closed_port

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(cli, "resolve", lambda stage: stage_fn)
    return CliRunner().invoke(app, ["train"])


def test_a_tracking_server_lost_mid_stage_is_one_line_and_exit_3(tmp_path, monkeypatch):
    """The preflight passed, then the server went: MLflow's own error, after its retries, becomes one line."""
    import mlflow

    def stage(params, layout):  # the stage's first tracking call after the server went away
        mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).search_experiments()

    result = _server_lost_mid_stage(tmp_path, monkeypatch, stage)
    assert result.exit_code == 3, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("train:")]
    assert len(lines) == 1 and "stopped answering during the stage (" in lines[0], result.stderr
    assert "Connection refused" in lines[0] and "rerun the stage" in lines[0]
    assert "Traceback" not in result.output


def test_the_same_training_already_running_is_one_line_and_exit_3(tmp_path, monkeypatch):
    from pipelines.train import TrainingInProgress

    def stage(params, layout):
        raise TrainingInProgress("another train run with the same inputs is running in /p (checkpoints /p/.cache)")

    result = _server_lost_mid_stage(tmp_path, monkeypatch, stage)
    assert result.exit_code == 3, result.output
    assert "train: another train run with the same inputs is running" in result.stderr
    assert "Traceback" not in result.output


def test_any_other_stage_error_keeps_its_traceback(tmp_path, monkeypatch):
    def stage(params, layout):
        raise ValueError("a bug, not an outage")

    result = _server_lost_mid_stage(tmp_path, monkeypatch, stage)
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)


def test_an_invalid_override_is_one_line_named_after_the_stage_and_exit_2():
    """The orchestrator reports this line as the stage's error, so it must be one, with the stage's name."""
    result = CliRunner().invoke(app, ["drift", "--params", str(ROOT / "params.yaml"), "--set", "drift.reference=path"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drift: invalid parameters in ")
    assert "reference: path needs reference_path" in lines[0] and "Traceback" not in result.output


def test_audit_names_a_leak_and_a_file_it_could_not_read_and_exits_1(tmp_path):
    canaries = tmp_path / "canaries.json"
    canaries.write_text('[{"entity": "EMAIL", "value": "maria.garcia@example.com"}]', encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "log.txt").write_text("sent to MARIA.GARCIA@example.com\n", encoding="utf-8")
    (tmp_path / "out" / "broken.parquet").write_bytes(b"PAR1" + b"\0" * 64)  # parquet magic, no file behind it
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "out"), "--canaries", str(canaries)])
    assert result.exit_code == 1, result.output
    assert "LEAK EMAIL (canary #0) in" in result.output and "log.txt" in result.output
    assert "NOT AUDITED" in result.output and "broken.parquet" in result.output
    assert "maria.garcia" not in result.output.lower()  # where, never what


def test_audit_of_a_path_that_does_not_exist_is_a_failure_not_a_pass(tmp_path):
    """A mistyped path scans no file; "0 hits" must not then read as "no PII"."""
    canaries = tmp_path / "canaries.json"
    canaries.write_text('[{"entity": "EMAIL", "value": "maria.garcia@example.com"}]', encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "no-such-dir"), "--canaries", str(canaries)])
    assert result.exit_code == 1, result.output
    assert "NOT AUDITED" in result.output and "no-such-dir" in result.output


def test_a_params_file_given_but_missing_is_one_line_and_exit_2_not_a_run_on_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (["ingest"], ["generate", "--out", str(tmp_path / "raw")]):
        result = CliRunner().invoke(app, [*command, "--params", str(tmp_path / "typo.yaml")])
        assert result.exit_code == 2, (command, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{command[0]}: params file ") and "typo.yaml" in lines[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "raw").exists()  # nothing ran


def test_generate_with_a_bad_option_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for option in (["--set", "generate.n_interactions"], ["--format", "xml"], ["--shift", "sideways"]):
        result = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "raw"), *option])
        assert result.exit_code == 2, (option, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("generate: "), (option, result.stderr)
    assert not (tmp_path / "raw").exists()


def test_a_judge_without_an_endpoint_is_one_line_and_exit_2_before_any_model_runs(tmp_path, monkeypatch):
    """It used to run the whole evaluation, then end in a traceback (exit 1)."""
    monkeypatch.chdir(tmp_path)
    for var in ("JUDGE_BASE_URL", "OPENAI_BASE_URL", "JUDGE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["evaluate", "--set", "judge.enabled=true", "--root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: the judge needs a base URL"), lines


def test_a_bad_override_is_said_to_come_from_the_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["ingest", "--set", "pairs.min_edit_raito=0.3"])
    assert result.exit_code == 2 and "+ overrides" in result.stderr, result.output
