"""Where MLflow runs, artifacts and the model registry live.

Default: a SQLite file and an artifact folder inside the project (``mlflow/mlflow.db``
and ``mlflow/artifacts``, git-ignored), so ``dvc repro`` on a laptop needs no server.
``MLFLOW_TRACKING_URI`` overrides it (a server, or another SQLite file in a test); the
registry then lives in the same store, because MLflow's registry defaults to the
tracking URI.

A tracking server is asked ``GET /health`` before it is used (:func:`preflight`): MLflow's
own client retries a refused connection for about four minutes before it says so, and a
stage that cannot reach its registry should say that in seconds, in one line.

Nothing here acts at import time: callers ask for a URI or a client when they need one,
and ``mlflow`` itself is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.layout import Layout

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from pipelines.config import Params

ENV_URI = "MLFLOW_TRACKING_URI"
FINGERPRINT_TAG = "candidate_fingerprint"
"""Model-version tag holding :func:`pipelines.model.candidate_fingerprint`."""

HEALTH_ENDPOINT = "/health"
"""Answered ``OK`` by ``mlflow server`` without authentication."""
ENV_MAX_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
ENV_BACKOFF_FACTOR = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
ENV_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server did not answer; the message is one line naming the URI and the fix."""


@dataclass(frozen=True)
class PreflightPolicy:
    """How long :func:`preflight` insists: retries after the first try, backoff factor, per-try timeout."""

    retries: int = 2
    backoff_factor: float = 1.0
    timeout_s: float = 5.0


def preflight_policy(env: Mapping[str, str] | None = None) -> PreflightPolicy:
    """The check's policy: MLflow's own ``MLFLOW_HTTP_REQUEST_*`` variables where set, else short defaults.

    Why MLflow's variables: they already mean "how hard to try before the server counts
    as unreachable", so a user who raised them for a slow link gets a check that waits as
    long. Why not MLflow's defaults (7 retries, factor 2, 120 s): together about four
    minutes before a refused connection is reported; the defaults here take a few seconds.
    """
    env = os.environ if env is None else env
    default = PreflightPolicy()

    def number(key: str, fallback: float) -> float:
        raw = env.get(key, "").strip()
        try:
            return float(raw) if raw else fallback
        except ValueError:
            return fallback

    return PreflightPolicy(
        retries=max(0, int(number(ENV_MAX_RETRIES, default.retries))),
        backoff_factor=max(0.0, number(ENV_BACKOFF_FACTOR, default.backoff_factor)),
        timeout_s=max(0.1, number(ENV_TIMEOUT, default.timeout_s)),
    )


def is_server_uri(uri: str) -> bool:
    """A tracking server reached over HTTP(S), the only kind that can be down (SQLite, folders cannot)."""
    return uri.lower().startswith(("http://", "https://"))


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def short_reason(detail: str, limit: int = 120) -> str:
    """The gist of a connection error: the ``[Errno N] ...`` part when there is one, else the start.

    Why: MLflow wraps a refused connection in three nested exception texts on one line.
    """
    found = _ERRNO_RE.findall(detail)
    if found:
        return found[-1].strip()
    lowered = detail.lower()
    for hint in ("timed out", "timeout", "name or service not known", "connection refused", "ssl"):
        if hint in lowered:
            return hint
    return " ".join(detail.split())[:limit].strip()


def unavailable_message(uri: str, reason: str, tries: int) -> str:
    """One line: what failed, where, why, and what to do."""
    return (
        f"MLflow tracking server {uri} is unreachable ({reason}; {tries} tries): start it or fix "
        f"{ENV_URI}, or unset {ENV_URI} to use the project's local store; "
        f"{ENV_MAX_RETRIES}/{ENV_TIMEOUT} make this check wait longer"
    )


def preflight(uri: str, env: Mapping[str, str] | None = None) -> None:
    """Fail fast with :class:`TrackingUnavailable` when the tracking server at ``uri`` does not answer.

    Non-server URIs pass unchecked. The request goes through MLflow's own HTTP helper, so
    credentials, TLS settings and proxies are those MLflow itself would use. Any answer
    below 500 counts as reachable (a 401/403/404 is MLflow's to report, with its own
    message); a 5xx after the retries is a server that is up but not serving.
    """
    if not is_server_uri(uri):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    policy = preflight_policy(env)
    tries = policy.retries + 1
    try:
        resp = http_request(
            get_default_host_creds(uri), HEALTH_ENDPOINT, "GET", max_retries=policy.retries,
            backoff_factor=policy.backoff_factor, backoff_jitter=0.0, timeout=policy.timeout_s,
            raise_on_status=False,
        )
    except MlflowException as err:
        raise TrackingUnavailable(unavailable_message(uri, short_reason(str(err)), tries)) from None
    if resp.status_code >= 500:
        raise TrackingUnavailable(unavailable_message(uri, f"HTTP {resp.status_code} on {HEALTH_ENDPOINT}", tries))


_LOST_HINTS = ("failed with exception", "timed out", "max retries exceeded", "connection aborted")


def lost_server(err: BaseException, uri: str) -> TrackingUnavailable | None:
    """The error a stage raised, as one line, when it means the server at ``uri`` stopped answering.

    Why: :func:`preflight` covers a server that is down when a stage starts; one lost
    *during* a stage surfaces, after MLflow's own retries, as an ``MlflowException``
    ("API request to ... failed with exception ...") somewhere in the stage. None for
    every other error (those keep their traceback) and for a local store.
    """
    if not is_server_uri(uri):
        return None
    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur)
        transport = isinstance(cur, requests.exceptions.ConnectionError | requests.exceptions.Timeout)
        if transport or (isinstance(cur, MlflowException) and any(h in text.lower() for h in _LOST_HINTS)):
            return TrackingUnavailable(
                f"MLflow tracking server {uri} stopped answering during the stage ({short_reason(text)}) "
                f"after MLflow's own retries ({ENV_MAX_RETRIES}, {ENV_TIMEOUT}): what the stage wrote "
                "before is kept; rerun the stage once the server is back"
            )
        cur = cur.__cause__ or cur.__context__
    return None


def mlflow_dir(layout: Layout) -> Path:
    """The project's own MLflow folder (database + artifacts)."""
    return layout.root.resolve() / "mlflow"


def tracking_uri(layout: Layout) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's SQLite store."""
    env = os.environ.get(ENV_URI, "").strip()
    if env:
        return env
    return f"sqlite:///{mlflow_dir(layout) / 'mlflow.db'}"


def artifact_root(layout: Layout) -> str | None:
    """Artifact location for new experiments: an ``artifacts`` folder beside a SQLite store.

    That is ``mlflow/artifacts`` in the project by default, and beside the database file
    for a user-given ``sqlite:`` URI (MLflow's own default, ``./mlruns`` under whatever
    folder the process started in, would scatter artifacts). For a tracking server the
    server decides, so ``None``.
    """
    uri = tracking_uri(layout)
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "artifacts").as_uri()


def configure(layout: Layout) -> str:
    """Point the ``mlflow`` module at our store; create the local folder if needed.

    Returns the URI in use. Why a function and not module state: stages run in fresh
    processes (DVC) and in one long process (tests, Airflow), and each call must follow
    the environment of its moment. A server is checked first (:func:`preflight`) on every
    call, so a server lost between two calls of one stage is also reported at once.

    Raises:
        TrackingUnavailable: the tracking server does not answer.
    """
    import mlflow

    # one progress bar per artifact file floods stage logs; the stages log their own progress
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(layout)
    preflight(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).resolve().parent.mkdir(parents=True, exist_ok=True)
    # mlflow.set_*_uri also export MLFLOW_*_URI; undo that, or the next call (another
    # project root in the same process) would mistake our choice for the user's
    saved = {k: os.environ.get(k) for k in (ENV_URI, "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return uri


def client(layout: Layout) -> MlflowClient:
    """An ``MlflowClient`` on our tracking and registry store."""
    from mlflow import MlflowClient

    uri = configure(layout)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(params: Params, layout: Layout) -> str:
    """Create the experiment (with the project's artifact root) if missing; return its id."""
    c = client(layout)
    exp = c.get_experiment_by_name(params.registry.experiment)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(params.registry.experiment, artifact_location=artifact_root(layout))


def git_commit(root: Path) -> str:
    """The checked-out commit, with ``-dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    """MD5 of a file, the hash DVC uses for a file output, so both can be compared."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_version(layout: Layout, paths: dict[str, Path]) -> dict[str, Any]:
    """Content hashes of the data a model saw, keyed by name, plus the DVC lock's view.

    Why both: the file MD5 is what DVC would record for that file; the ``dvc.lock``
    entry (when the pipeline ran under DVC) names the folder hash that ``dvc checkout``
    restores. Either identifies the exact pairs a candidate was trained on.
    """
    out: dict[str, Any] = {}
    for name, path in paths.items():
        out[f"{name}_md5"] = file_md5(path) if path.exists() else "missing"
    lock = layout.root / "dvc.lock"
    if lock.exists():
        out["dvc_pairs_md5"] = _dvc_lock_out_md5(lock, "data/pairs")
    return out


def _dvc_lock_out_md5(lock: Path, out_path: str) -> str:
    """The md5 DVC recorded for ``out_path`` in ``dvc.lock`` (``unknown`` if absent)."""
    import yaml

    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return "unknown"
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == out_path and out.get("md5"):
                return str(out["md5"])
    return "unknown"


# --------------------------------------------------------------------------- registry reads


NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
"""MLflow error codes meaning "no such model, version or alias" (both stores, and a server relaying them).

A missing model or version is ``RESOURCE_DOES_NOT_EXIST``; a missing alias, and a version
that is not a number, ``INVALID_PARAMETER_VALUE``. A lost server or a 5xx is
``INTERNAL_ERROR`` (or another code) and must not read as "not there".
"""


def is_not_found(err: Exception) -> bool:
    """Whether an ``MlflowException`` says the thing asked for does not exist (not that the store failed)."""
    return getattr(err, "error_code", None) in NOT_FOUND_CODES


def alias_version(c: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind ``alias``, or ``None`` when the model or alias does not exist.

    Any other registry error is raised: read as "no champion", a transient server error
    would let promote move ``champion`` without recording the outgoing one (no rollback)
    and let evaluate compare a candidate with the base model instead of the champion.
    """
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise


def model_version(c: MlflowClient, name: str, version: str) -> ModelVersion | None:
    """Version ``version`` of ``name`` (``"02"`` finds version 2), or ``None`` when it does not exist.

    Callers compare ``str(result.version)``, the registry's own spelling, never the
    argument. Registry errors other than "not found" are raised, as in :func:`alias_version`.
    """
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version(name, str(version).strip())
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise


def resolve_champion(params: Params, layout: Layout) -> dict[str, Any] | None:
    """The champion's version, candidate fingerprint and run, or ``None`` before the first one."""
    v = alias_version(client(layout), params.registry.model_name, params.registry.champion_alias)
    if v is None:
        return None
    return {"version": str(v.version), "fingerprint": v.tags.get(FINGERPRINT_TAG, ""), "run_id": v.run_id}


def download_version(params: Params, layout: Layout, version: str, dst: Path) -> Path:
    """Download a registered version into ``dst`` and return its candidate folder."""
    import mlflow

    configure(layout)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{params.registry.model_name}/{version}", dst_path=str(dst)
    )
    folder = Path(local) / "artifacts" / "candidate"
    if not folder.exists():
        raise FileNotFoundError(f"version {version} has no candidate artifact under {local}")
    return folder
