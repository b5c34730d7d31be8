"""`python -m pipelines summary`: every stage's metrics, readable, in dvc.yaml's order."""

from __future__ import annotations

import json
import shutil

import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.run_summary import NOT_RUN, fmt_value, metric_lines, metrics_files, summary
from tests.project import ROOT


def _project(tmp_path, metrics: dict[str, object]):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "metrics").mkdir()
    for stage, data in metrics.items():
        text = data if isinstance(data, str) else json.dumps(data)
        (tmp_path / "metrics" / f"{stage}.json").write_text(text)
    return tmp_path


def test_stages_come_in_dvc_yaml_order_with_every_metrics_file():
    files = metrics_files(ROOT / "dvc.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    with_metrics = [name for name, spec in stages.items() if spec.get("metrics")]
    assert [stage for stage, _ in files] == with_metrics
    assert files[0] == ("ingest", ROOT / "metrics" / "ingest.json")


def test_values_read_like_numbers_a_person_writes():
    assert [fmt_value(v) for v in (10144, 0.692307692, 1.2e-7, True, None, "gate passed")] == [
        "10,144", "0.6923", "1.2e-07", "true", "-", "gate passed",
    ]


def test_scalars_share_a_line_and_each_group_gets_its_own():
    lines = list(metric_lines({
        "lines_in": 10144, "quarantined": 12,
        "quarantined_by_reason": {"invalid_json": 1, "wrong_type": 2},
        "fields": {"prompt": {"EMAIL": 167}, "context": {}},
        "skills_below_min": [],
    }))
    assert lines == [
        "lines_in\xa010,144 · quarantined\xa012",
        "quarantined_by_reason: invalid_json\xa01, wrong_type\xa02",
        "fields.prompt: EMAIL\xa0167",
        "fields.context: (none)",
        "skills_below_min: (none)",
    ]


def test_summary_wraps_without_splitting_a_name_from_its_value(tmp_path):
    reasons = {f"reason_{i}": i for i in range(20)}
    root = _project(tmp_path, {"ingest": {"lines_in": 5, "quarantined_by_reason": reasons}})
    text = summary(root, width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    for key, value in reasons.items():
        assert f"{key} {value}" in text  # on one line, never "reason_3\n 3"
    assert "\xa0" not in text


def test_missing_and_unreadable_metrics_are_said_not_hidden(tmp_path):
    root = _project(tmp_path, {"ingest": {"lines_in": 5}, "scrub": "{not json"})
    lines = {line.split()[0]: line for line in summary(root, width=100).splitlines() if not line.startswith(" ")}
    assert "lines_in 5" in lines["ingest"]
    assert "unreadable scrub.json" in lines["scrub"]
    assert lines["drift"].endswith(NOT_RUN)


def test_cli_summary(tmp_path):
    root = _project(tmp_path, {"gate": {"passed": True, "reasons": ["win-rate above 0.55"]}})
    result = CliRunner().invoke(app, ["summary", "--root", str(root), "--width", "100"])
    assert result.exit_code == 0, result.output
    assert "\ngate            passed true\n" in result.output and "reasons: win-rate above 0.55" in result.output
    missing = CliRunner().invoke(app, ["summary", "--root", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
