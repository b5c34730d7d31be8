"""docker/: the compose file is valid Compose and has what the docs promise; Dockerfiles are sane.

No Docker engine runs here, so this is as far as the stack can be checked on this
machine: the compose file against the Compose Specification JSON schema, the service
graph, health checks, ports and volumes, and the Dockerfiles parsed for pinned bases and
an installed project.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.schema.json"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_validates_against_the_compose_spec(compose):
    jsonschema.validate(compose, json.loads(SCHEMA.read_text()))


def test_schema_check_is_not_blind(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["interval"] = {"not": "a duration"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_the_promised_services_exist(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "mlflow", "airflow-init", *AIRFLOW_SERVICES, "airflow-worker-gpu", "langfuse"):
        assert name in services, name
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert services["airflow-worker-gpu"]["profiles"] == ["gpu"]
    assert services["langfuse"]["profiles"] == ["langfuse"]
    assert "--queues" in services["airflow-worker-gpu"]["command"]
    assert services["airflow-worker-gpu"]["command"][services["airflow-worker-gpu"]["command"].index("--queues") + 1] == "gpu"
    devices = services["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_the_stage_secrets_reach_every_airflow_service(compose):
    """Stages run inside the Airflow workers: a secret they read must be passed through."""
    from pipelines.pseudonym import ENV_KEY

    for name in (*AIRFLOW_SERVICES, "airflow-worker-gpu"):
        env = compose["services"][name]["environment"]
        for var in (ENV_KEY, "SLACK_WEBHOOK_URL", "LANGFUSE_SECRET_KEY"):
            assert env.get(var) == f"${{{var}:-}}", (name, var)


def test_every_long_running_service_has_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        if name != "airflow-init":
            assert "healthcheck" in svc and svc["healthcheck"]["test"], name


def test_depends_on_targets_exist_and_wait_for_health(compose):
    services = compose["services"]
    for name, svc in services.items():
        for target, cond in (svc.get("depends_on") or {}).items():
            assert target in services, f"{name} -> {target}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, target)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[target], target


def test_ports_and_named_volumes(compose):
    services = compose["services"]
    assert "8080:8080" in services["airflow-apiserver"]["ports"]
    assert "5000:5000" in services["mlflow"]["ports"]
    declared = set(compose["volumes"])
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            # a ${VAR:-default} source is a bind path the user may move (after substitution)
            source = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", vol).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_mlflow_uses_postgres_and_an_artifact_store(compose):
    cmd = compose["services"]["mlflow"]["command"]
    assert "--backend-store-uri postgresql" in cmd and "--artifacts-destination" in cmd


def test_env_example_defines_every_required_variable():
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    example = {line.split("=", 1)[0] for line in (ROOT / "docker" / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required and required <= example


@pytest.mark.parametrize("name", ["Dockerfile.airflow", "Dockerfile.train"])
def test_dockerfiles_pin_their_base_and_install_the_project(name):
    text = (ROOT / "docker" / name).read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert bases, name
    for base in bases:
        _, _, tag = base.partition(":")
        assert tag and tag != "latest", base
    assert re.search(r"pip install .*-c constraints\.txt -e \.", text)
    assert "COPY pipelines ./pipelines" in text or "COPY --chown=airflow:root pipelines ./pipelines" in text
    assert "torch==2.13.0" in text
    if name == "Dockerfile.airflow":
        assert bases[0].startswith("apache/airflow:3.")
    else:
        assert bases[0].startswith("nvidia/cuda:") and "bitsandbytes" in text


def _code_text() -> str:
    return "\n".join(p.read_text() for d in ("pipelines", "dags", "plugins") for p in (ROOT / d).glob("*.py"))


@pytest.mark.parametrize("name", ["Dockerfile.airflow", "Dockerfile.train", "compose.yaml"])
def test_every_prefpipe_variable_the_images_set_is_one_the_code_reads(name):
    """The Dockerfiles set PREFPIPE_PROJECT while the code reads PREFPIPE_PROJECT_DIR."""
    text = (ROOT / "docker" / name).read_text()
    code = _code_text()
    set_here = set(re.findall(r"\b(PREFPIPE_[A-Z_]+)(?:=|:\s)", text)) - {"PREFPIPE_AIRFLOW_IMAGE",
                                                                       "PREFPIPE_TRAIN_IMAGE",
                                                                       "PREFPIPE_SHARED_DATA"}
    unread = sorted(v for v in set_here if f'"{v}"' not in code)
    assert not unread, f"{name} sets {unread}, which no module reads"


@pytest.mark.parametrize("name", ["Dockerfile.airflow", "Dockerfile.train"])
def test_images_hold_what_a_run_workspace_is_made_from(name):
    """A workspace is a DVC repository copied from the project: without .dvc/ in the image
    `prepare_workspace` failed with 'Not inside a DVC repo'."""
    text = (ROOT / "docker" / name).read_text()
    copied = " ".join(re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, flags=re.M))
    for needed in ("dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore", "dags", "plugins", "pipelines"):
        assert needed in copied, f"{name} does not copy {needed}"


def test_the_public_sets_are_mounted_where_params_yaml_looks(compose):
    """params.yaml reads ../shared/data from the project at /opt/prefpipe: /opt/shared/data."""
    params = (ROOT / "params.yaml").read_text()
    assert "../shared/data/" in params
    for service in AIRFLOW_SERVICES:
        mounts = [str(v) for v in compose["services"][service].get("volumes", [])]
        assert any(m.endswith(":/opt/shared/data:ro") for m in mounts), service
