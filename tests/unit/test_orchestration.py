"""pipelines.orchestration: the form mapping, the stage graph, workspaces, outcomes, drift.

The workspace tests run real git and DVC on a two-stage project made in a temporary
folder (seconds), so what they prove holds for the real thing: files copied as git
sees them, overrides validated before anything is written, the DVC cache shared, a
second run restored from the run-cache, a failing stage reported with its error line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipelines import orchestration as orch
from pipelines.config import MAX_SEED, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- the form


def test_every_form_field_overrides_a_real_params_key():
    samples = {"string": "builtin", "number": 0.3, "integer": 7}
    for f in orch.TRAINING_FORM + orch.DRIFT_FORM:
        if f.key is None:
            continue
        kinds = [t for t in f.schema["type"] if t != "null"]
        choices = [v for v in f.schema.get("enum", []) if v is not None]
        for value in choices or [samples[kinds[0]]]:  # every choice of a drop-down must be valid
            params = load_params(ROOT / "params.yaml", {f.key: value})  # unknown keys and bad values raise
            node = params.model_dump(by_alias=True)
            for part in f.key.split("."):
                node = node[part]
            assert node == value, f.key


def test_form_defaults_validate_against_their_own_schema():
    jsonschema = pytest.importorskip("jsonschema")
    for f in orch.TRAINING_FORM + orch.DRIFT_FORM:
        kwargs = f.param_kwargs()
        default = kwargs.pop("default")
        schema = {k: v for k, v in kwargs.items() if k not in ("title", "description")}
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(default, schema)
        assert kwargs["description"] and kwargs["title"]


def _schema(field_name: str, form) -> dict:
    kwargs = next(f for f in form if f.name == field_name).param_kwargs()
    return {k: v for k, v in kwargs.items() if k not in ("title", "description", "default")}


def test_the_form_accepts_what_the_ui_sends_and_refuses_what_would_fail_late():
    """A cleared JSON field arrives as null (it blocked the trigger); a seed past 2**32 - 1
    passed the form and failed only at base_model, after the data stages had run."""
    jsonschema = pytest.importorskip("jsonschema")
    for form in (orch.TRAINING_FORM, orch.DRIFT_FORM):
        jsonschema.validate(None, _schema("overrides", form))
        assert orch.form_overrides({"overrides": None}, fields=form) == {}
    seed = _schema("seed", orch.TRAINING_FORM)
    assert seed["maximum"] == MAX_SEED  # the form and params.yaml's model agree
    jsonschema.validate(2**32 - 1, seed)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(2**32, seed)


def test_empty_form_overrides_nothing():
    assert orch.form_overrides({f.name: f.default for f in orch.TRAINING_FORM}) == {}


def test_precedence_dry_run_then_fields_then_free_overrides():
    out = orch.form_overrides(
        {"dry_run": True, "max_steps": 9, "beta": 0.3, "overrides": {"train.dpo.beta": 0.5, "gate.alpha": 0.01}},
        registry={"model_name": "m", "experiment": "e"},
    )
    assert out["train.dpo.max_steps"] == 9  # the field beats the dry-run preset
    assert out["train.dpo.beta"] == 0.5  # the free-form object beats the field
    assert out["gate.alpha"] == 0.01
    assert out["registry.model_name"] == "m-dry-run" and out["registry.experiment"] == "e-dry-run"
    assert out["model.warmup.max_steps"] == orch.DRY_RUN_OVERRIDES["model.warmup.max_steps"]


def test_dry_run_preset_is_valid_and_small():
    out = orch.form_overrides({"dry_run": True}, orch.project_registry(ROOT))
    p = load_params(ROOT / "params.yaml", out)
    full = load_params(ROOT / "params.yaml")
    assert p.train.dpo.max_steps <= 10 and p.train.sft.max_steps <= 10
    assert p.model.warmup.max_steps < full.model.warmup.max_steps
    assert p.registry.model_name != full.registry.model_name  # the real champion is never touched


@pytest.mark.parametrize("bad", [{"overrides": ["train.beta"]}, {"overrides": {"train beta": 1}},
                                 {"overrides": {"": 1}}, {"overrides": {"a..b": 1}}])
def test_malformed_free_overrides_are_rejected(bad):
    with pytest.raises(orch.InvalidOverrides):
        orch.form_overrides(bad)


def test_retry_settings_default_and_env():
    default = orch.retry_settings({})
    assert default["retries"] == 2 and default["retry_delay"].total_seconds() == 120
    assert default["retry_exponential_backoff"] > 1
    fast = orch.retry_settings({orch.RETRIES_ENV: "0", orch.RETRY_DELAY_ENV: "1"})
    assert fast["retries"] == 0 and fast["retry_delay"].total_seconds() == 1


# ---------------------------------------------------------------------------- the graph


def _write_dvc_yaml(tmp_path: Path, stages: dict) -> Path:
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return path


def test_graph_edges_follow_deps_into_outs(tmp_path):
    path = _write_dvc_yaml(tmp_path, {
        "a": {"cmd": "x", "deps": ["../shared/in.csv", "src/a.py"], "outs": ["data/a"],
              "metrics": [{"metrics/a.json": {"cache": False}}]},
        "b": {"cmd": "x", "deps": ["data/a/part.parquet"], "outs": [{"data/b/out.parquet": {"persist": True}}]},
        "c": {"cmd": "x", "deps": ["data/b", "metrics/a.json"], "plots": ["plots/c.csv"]},
        "d": {"cmd": "x", "wdir": "sub", "deps": ["../plots/c.csv"], "outs": ["x"]},
        "e": {"cmd": "x", "deps": ["src/a.py"], "outs": ["data/e"]},
    })
    assert orch.stage_names(path) == ["a", "b", "c", "d", "e"]
    assert orch.read_stage_graph(path) == [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]


def test_project_graph_is_acyclic_and_in_yaml_order():
    dvc_yaml = ROOT / "dvc.yaml"
    names = orch.stage_names(dvc_yaml)
    position = {n: i for i, n in enumerate(names)}
    edges = orch.read_stage_graph(dvc_yaml)
    assert edges, "dvc.yaml has stages but no edges"
    assert all(position[u] < position[d] for u, d in edges)  # yaml order is a topological order


def test_stages_with_a_dag_of_their_own_are_not_training_stages(tmp_path):
    path = _write_dvc_yaml(tmp_path, {
        "scrub": {"cmd": "x", "outs": ["data/scrubbed"]},
        "drift": {"cmd": "x", "deps": ["data/scrubbed"], "outs": ["data/drift"]},
        "pairs": {"cmd": "x", "deps": ["data/scrubbed"], "outs": ["data/pairs"]},
    })
    assert orch.training_stages(path) == ["scrub", "pairs"]
    assert orch.training_graph(path) == [("scrub", "pairs")]
    assert ("scrub", "drift") in orch.read_stage_graph(path)


def test_foreach_stages_are_refused(tmp_path):
    path = _write_dvc_yaml(tmp_path, {"a": {"foreach": [1, 2], "do": {"cmd": "x"}}})
    with pytest.raises(ValueError, match="plain stages"):
        orch.read_stage_graph(path)


# ---------------------------------------------------------------------------- small helpers


def test_safe_run_id():
    assert orch.safe_run_id("manual__2026-01-05T04:00:00.1+00:00") == "manual__2026-01-05T04_00_00.1_00_00"
    assert orch.safe_run_id("../../etc") == "etc"
    with pytest.raises(orch.WorkspaceError):
        orch.safe_run_id("../..")


def test_last_error_line_prefers_the_exception():
    out = "Running stage 'x'\nTraceback (most recent call last):\n  File ...\nValueError: boom 3\nERROR: failed to reproduce 'x'"
    assert orch.last_error_line(out) == "ValueError: boom 3"
    assert orch.last_error_line("ok\nERROR: failed to reproduce 'x': no such file") == (
        "ERROR: failed to reproduce 'x': no such file")
    assert orch.last_error_line("") == "no output"


def test_last_error_line_prefers_the_clis_own_line_to_dvcs_generic_one():
    lost = ("train: MLflow tracking server http://mlflow:5000 stopped answering during the stage "
            "(ConnectionError) after MLflow's own retries: rerun the stage once the server is back")
    out = ("Running stage 'train':\n> python -m pipelines train\n2026-11-30 10:00:00 INFO pipelines.train: train: start\n"
           f"{lost}\nERROR: failed to reproduce 'train': failed to run: python -m pipelines train, exited with 3\n")
    assert orch.last_error_line(out) == lost                   # the stage DVC ran
    assert orch.last_error_line(out.replace("Running stage 'train':\n", ""), "train") == lost
    traceback = "drift: a line before\nTraceback (most recent call last):\n  File ...\nValueError: boom"
    assert orch.last_error_line(traceback, "drift") == "ValueError: boom"


def test_a_config_error_reaches_stagefailed_as_the_clis_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))                  # this checkout's CLI, wherever it runs
    (tmp_path / "params.yaml").write_text("drift:\n  reference: path\n")
    with pytest.raises(orch.StageFailed) as err:
        orch.run_cli_stage(tmp_path, "drift", echo=lambda _: None)
    assert err.value.returncode == 2
    assert "drift: invalid parameters in params.yaml: - drift: Value error, reference: path needs reference_path" \
        in str(err.value)


def test_a_stages_exception_line_arrives_whole_through_a_pipe(tmp_path, monkeypatch):
    """Typer's Rich traceback wraps at 80 columns on a pipe; StageFailed must get the full line."""
    monkeypatch.setenv("COLUMNS", "80")
    root = tmp_path / ("a-long-project-folder-name" * 2)
    root.mkdir()
    cmd = [sys.executable, "-m", "pipelines", "drift", "--params", str(ROOT / "params.yaml"),
           "--set", "drift.reference=time_split", "--root", str(root)]
    out = subprocess.run(cmd, cwd=ROOT, env=orch.stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True).stdout
    missing = root / "data" / "scrubbed" / "records.parquet"
    assert orch.last_error_line(out) == f"FileNotFoundError: {missing} not found: run the scrub stage first"


REAL_POPEN = subprocess.Popen


def _child_popen(code: str):
    """subprocess.Popen (run uses it too) that starts ``python -c code`` instead of the command asked for."""
    def popen(cmd, **kw):
        return REAL_POPEN([sys.executable, "-c", code], **kw)
    return popen


STRAY_BYTE_OK = "import sys; sys.stdout.buffer.write(b'Running stage drift\\nfrom a tool: caf\\xe9\\n')"
STRAY_BYTE_FAIL = ("import sys; sys.stdout.buffer.write(b'caf\\xe9\\nValueError: drift needs records\\n'); "
                   "sys.stderr.buffer.write(b'\\xff\\n'); sys.exit(1)")


def test_a_stray_byte_in_a_stages_output_keeps_its_real_result(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages:\n  drift:\n    cmd: python -m pipelines drift\n")
    lines: list[str] = []
    monkeypatch.setattr(orch.subprocess, "Popen", _child_popen(STRAY_BYTE_OK))
    assert orch.run_dvc_stage(tmp_path, "drift", echo=lines.append) == {}
    assert lines[-1] == "from a tool: caf\ufffd"
    monkeypatch.setattr(orch.subprocess, "Popen", _child_popen(STRAY_BYTE_FAIL))
    with pytest.raises(orch.StageFailed, match="ValueError: drift needs records"):
        orch.run_dvc_stage(tmp_path, "drift", echo=lines.append)
    with pytest.raises(orch.StageFailed, match="ValueError: drift needs records"):
        orch.run_cli_stage(tmp_path, "drift", echo=lines.append)      # subprocess.run uses Popen too


def test_default_dirs_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(orch.PROJECT_ENV, raising=False)
    assert orch.default_project_dir(ROOT / "dags" / "training_dag.py") == ROOT
    monkeypatch.setenv(orch.PROJECT_ENV, str(tmp_path))
    assert orch.default_project_dir(ROOT / "dags" / "x.py") == tmp_path.resolve()
    monkeypatch.delenv(orch.RUNS_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert orch.default_runs_dir() == (tmp_path / "home" / "prefpipe-runs").resolve()
    monkeypatch.setenv(orch.RUNS_ENV, str(tmp_path / "runs"))
    assert orch.default_runs_dir() == (tmp_path / "runs").resolve()


# ---------------------------------------------------------------------------- outcomes and drift


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_outcome_of_a_failed_gate_names_every_reason(tmp_path):
    checks = [{"name": "win_rate", "passed": False, "reason": "win_rate FAILED: = 0.4 (required >= 0.55)"},
              {"name": "min_pairs", "passed": True, "reason": "min_pairs passed: = 80 (required >= 20)"}]
    _write(tmp_path / "data/gate/verdict.json",
           {"passed": False, "checks": checks, "reasons": [c["reason"] for c in checks], "failed": ["win_rate"]})
    _write(tmp_path / "metrics/gate.json", {"passed": False, "failed": ["win_rate"], "n_checks": 2})
    _write(tmp_path / "metrics/promote.json",
           {"promoted": False, "reason": "gate failed: win_rate FAILED", "version": "3", "champion": "2"})
    _write(tmp_path / "metrics/evaluate.json", {"win_rate": 0.4, "other": 1})
    _write(tmp_path / "metrics/train.json", {"mlflow_run_id": "abc"})
    out = orch.training_outcome(tmp_path)
    assert out["promoted"] is False and out["gate_passed"] is False
    assert out["reason"].startswith("gate failed")
    assert out["reasons"] == [c["reason"] for c in checks]
    assert out["failed_checks"] == ["win_rate"]
    assert (out["version"], out["champion"], out["mlflow_run_id"]) == ("3", "2", "abc")
    assert out["figures"] == {"win_rate": 0.4}


def test_outcome_without_files_is_reportable(tmp_path):
    out = orch.training_outcome(tmp_path)
    assert out["promoted"] is False and out["reason"] == "no gate verdict was written"


@pytest.mark.parametrize(("metrics", "threshold", "expected"), [
    ({"verdict": "drift", "drift_detected": True}, None, True),
    ({"verdict": "no_drift", "drift_detected": False, "drift_score": 0.9, "threshold": 0.1}, None, False),
    ({"verdict": "drift"}, None, True),
    ({"verdict": "none"}, None, False),
    ({"drift_score": 0.3, "threshold": 0.15}, None, True),
    ({"drift_score": 0.3, "threshold": 0.15}, 0.5, False),
    ({"unrelated": 1}, 0.1, False),
])
def test_drift_exceeded(metrics, threshold, expected):
    assert orch.drift_exceeded(metrics, threshold) is expected


def test_prune_keeps_the_newest_and_the_current(tmp_path):
    import os
    import time

    spaces = []
    for i in range(5):
        ws = tmp_path / f"run{i}"
        ws.mkdir()
        (ws / orch.RUN_INFO_FILE).write_text("{}")
        os.utime(ws / orch.RUN_INFO_FILE, (time.time() - 100 + i, time.time() - 100 + i))
        spaces.append(ws)
    (tmp_path / "shared").symlink_to(tmp_path / "run0")
    removed = orch.prune_workspaces(tmp_path, keep=2, current=spaces[0])
    assert sorted(p.name for p in removed) == ["run1", "run2"]
    assert all(p.exists() for p in (spaces[0], spaces[3], spaces[4], tmp_path / "shared"))


# ---------------------------------------------------------------------------- workspaces (real git + DVC)

STAGE_SCRIPT = textwrap.dedent("""
    import json, sys, yaml, pathlib
    params = yaml.safe_load(open("params.yaml"))
    factor = params["toy"]["factor"]
    if factor < 0:
        raise ValueError(f"factor must be positive, got {factor}")
    text = pathlib.Path("../shared/input.txt").read_text()
    pathlib.Path("data").mkdir(exist_ok=True)
    pathlib.Path("data/out.txt").write_text(text * factor)
    pathlib.Path("metrics").mkdir(exist_ok=True)
    json.dump({"chars": len(text) * factor, "factor": factor}, open("metrics/toy.json", "w"))
""")


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=orch.stage_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def toy_project(tmp_path, monkeypatch):
    """A git + DVC project with one stage that reads ../shared and params.yaml."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused.db'}")  # no MLflow here
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "input.txt").write_text("abc")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "toy.py").write_text(STAGE_SCRIPT)
    (proj / "params.yaml").write_text("# the toy's params\ntoy:\n  factor: 2\n")
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"toy": {
        "cmd": "python toy.py", "deps": ["toy.py", "../shared/input.txt"], "params": ["toy"],
        "outs": ["data/out.txt"], "metrics": [{"metrics/toy.json": {"cache": False}}]}}}))
    (proj / ".gitignore").write_text("ignored.txt\n")
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    _run(["git", "init", "-q"], proj)
    _run([sys.executable, "-m", "dvc", "init", "-q"], proj)
    _run([*git, "add", "-A"], proj)
    _run([*git, "commit", "-qm", "toy"], proj)
    (proj / "untracked.py").write_text("# not committed yet\n")
    (proj / "ignored.txt").write_text("secret\n")
    return proj


@pytest.fixture
def toy_validation(monkeypatch):
    """The toy project's params.yaml is not prefpipe's: validate only its one field."""
    def parse(data, source="params"):
        factor = (data.get("toy") or {}).get("factor")
        if not isinstance(factor, int) or set(data) - {"toy"}:
            from pipelines.config import ConfigError
            raise ConfigError(f"invalid parameters in {source}: toy.factor must be an int")
        return parse_params({})

    monkeypatch.setattr("pipelines.config.parse_params", parse)


@pytest.mark.integration
def test_workspace_runs_a_stage_and_versions_it_like_dvc_repro(toy_project, toy_validation, tmp_path):
    runs = tmp_path / "runs"
    ws = orch.prepare_workspace(toy_project, runs, "manual__2026-01-05T04:00:00+00:00", {"toy.factor": 3})
    assert ws == runs / "manual__2026-01-05T04_00_00_00_00"
    # the project as on disk: committed and untracked files, not ignored ones; its real commit
    assert (ws / "untracked.py").exists() and not (ws / "ignored.txt").exists()
    head = _run(["git", "rev-parse", "HEAD"], toy_project).strip()
    assert _run(["git", "rev-parse", "HEAD"], ws).strip() == head
    assert (runs / "shared").resolve() == (toy_project.parent / "shared").resolve()
    assert yaml.safe_load((ws / "params.yaml").read_text())["toy"]["factor"] == 3
    assert (toy_project / "params.yaml").read_text().startswith("# the toy's params")  # project untouched
    cache = _run([sys.executable, "-m", "dvc", "cache", "dir"], ws).strip()
    assert Path(cache) == (toy_project / ".dvc" / "cache").resolve()
    # the drift cache (reference stats, embeddings) is the project's, so weekly runs reuse it
    assert (ws / ".cache" / "drift").resolve() == (toy_project / ".cache" / "drift").resolve()

    lines: list[str] = []
    metrics = orch.run_dvc_stage(ws, "toy", echo=lines.append)
    assert metrics == {"chars": 9, "factor": 3}
    assert any("Running stage 'toy'" in ln for ln in lines)
    assert orch.dvc_status(ws) == {}
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["toy"]
    assert lock["outs"][0]["path"] == "data/out.txt" and lock["outs"][0]["md5"]
    assert not (toy_project / "data").exists()  # nothing written into the project

    # a second run with the same inputs: its own folder, the stage restored from the run-cache
    ws2 = orch.prepare_workspace(toy_project, runs, "second", {"toy.factor": 3})
    lines.clear()
    assert orch.run_dvc_stage(ws2, "toy", echo=lines.append) == {"chars": 9, "factor": 3}
    assert any("is cached - skipping run" in ln for ln in lines), lines
    assert (ws / "data" / "out.txt").read_text() == "abc" * 3


@pytest.mark.integration
def test_invalid_overrides_fail_before_anything_is_written(toy_project, toy_validation, tmp_path):
    with pytest.raises(orch.InvalidOverrides, match=r"toy\.factor"):
        orch.prepare_workspace(toy_project, tmp_path / "runs", "r1", {"toy.factor": "three"})
    assert not (tmp_path / "runs" / "r1").exists()


@pytest.mark.integration
def test_a_failing_stage_raises_with_its_error_line(toy_project, toy_validation, tmp_path):
    ws = orch.prepare_workspace(toy_project, tmp_path / "runs", "r1", {"toy.factor": -1})
    with pytest.raises(orch.StageFailed) as err:
        orch.run_dvc_stage(ws, "toy", echo=lambda _: None)
    assert err.value.stage == "toy" and err.value.returncode != 0
    assert "ValueError: factor must be positive, got -1" in str(err.value)
    with pytest.raises(orch.WorkspaceError, match="not in"):
        orch.run_dvc_stage(ws, "nope")


@pytest.mark.parametrize(("cache_dir", "shared"), [
    (".cache/drift", True),  # the default: inside the project, so each workspace links to it
    ("../elsewhere/drift", False),  # outside the project: already the same for every run
    ("/abs/drift", False),
])
def test_drift_cache_inside_the_project_is_shared_by_runs(tmp_path, cache_dir, shared):
    project, ws = tmp_path / "project", tmp_path / "runs" / "r1"
    ws.mkdir(parents=True)
    link = orch._share_drift_cache(project, ws, {"drift": {"cache_dir": cache_dir}})
    assert (link is not None) == shared
    if shared:
        assert link.is_symlink() and link.resolve() == (project / cache_dir).resolve()
        assert (project / cache_dir).is_dir()
        (link / "entry").write_text("x")  # what one run stores, the next finds
        assert (project / cache_dir / "entry").read_text() == "x"


def test_workspace_must_be_outside_the_project(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(orch.WorkspaceError, match="outside"):
        orch.prepare_workspace(tmp_path, tmp_path / "runs", "r", {})
