"""Service faults at stage level: MLflow unreachable when a stage starts, Langfuse down while evaluate traces.

- **MLflow unreachable at start**: ``python -m pipelines train`` with ``MLFLOW_TRACKING_URI``
  on a closed port must stop within seconds (MLflow's own client retries for about four
  minutes) with exit code 3 and one line naming the URI and what to do, and leave the
  pairs it read untouched. Mid-run outages (the server stopped after ``train``, then
  back) are in tests/integration/test_mlflow_server.py; the check itself, against closed
  and unanswering ports, in tests/unit/test_tracking.py.
- **Langfuse down while tracing**: evaluate's judge step (:func:`pipelines.evaluate.judge_step`:
  tracer, prompt fetch, judged generations, tracer shutdown, exactly what the stage
  runs) with a real judge endpoint and Langfuse on a closed port or on a port that
  accepts connections and never answers. The step must return the same result as
  without Langfuse, fall back to the bundled prompt, and take no longer than a few
  configured timeouts more. Prompt fetches to a dead host alone are covered in
  tests/integration/test_langfuse.py.

Slack down or slow is covered in tests/integration/test_slack_failures.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines import judge as J
from pipelines import prompts as P
from pipelines import tracing as T
from pipelines.config import Params
from pipelines.layout import Layout
from tests.integration.http_fixtures import (
    LocalServer,
    closed_port,
    judged_responses,
    openai_handler,
)
from tests.integration.service_fixtures import unanswering_port
from tests.integration.training_fixtures import make_pairs, tiny_params, write_pairs
from tests.project import project_env
from tests.reliability.helpers import sha256, tally

pytestmark = pytest.mark.integration

NODE = "tests/reliability/test_service_faults.py"
FAIL_FAST_S = 60
"""Process start and the stage's imports included; MLflow's own retries alone take about 240 s."""
LANGFUSE_TIMEOUT_S = 1
EXTRA_TIMEOUTS = 4
"""Langfuse down may cost this many of its timeouts (two prompt fetches, the final export) ..."""
SLACK_S = 8.0
"""... plus this much for a shared machine's noise."""


# --------------------------------------------------------------------------- MLflow unreachable at start


def _files(root: Path) -> dict[str, str | None]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted((root / "data").rglob("*")) if p.is_file()}


def test_train_with_mlflow_unreachable_fails_fast_in_one_line_and_keeps_its_inputs(tmp_path):
    root = tmp_path / "project"
    write_pairs(Layout(root), n_train=16, n_val=4, n_test=4, n_safety=2)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params().model_dump(mode="json", by_alias=True)))
    before = _files(root)
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in project_env().items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": uri}
    row = tally("MLflow tracking unreachable at stage start", f"pytest {NODE}::{sys._getframe().f_code.co_name}",
                unit="stages")
    row.runs += 1
    row.inputs += 1

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines", "train", "--root", str(root)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    after = _files(root)
    row.losses += sum(1 for path, digest in before.items() if after.get(path) != digest)
    print(f"\ntrain with {uri} closed: exit {proc.returncode} after {elapsed:.1f}s")

    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train: MLflow tracking server {uri} is unreachable ([Errno 111] Connection refused"), last
    assert "MLFLOW_TRACKING_URI" in last and "Traceback" not in proc.stderr and proc.stdout == ""
    assert elapsed < FAIL_FAST_S
    assert after == before  # the pairs it read are as they were, and no candidate appeared
    assert not (root / "mlflow").exists() and not (root / "mlruns").exists()


# --------------------------------------------------------------------------- Langfuse down while evaluate traces


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny policy folders that differ (two seeds): what evaluate hands the judge step."""
    from pipelines import model as M

    folder = tmp_path_factory.mktemp("policies")
    texts = [t for row in make_pairs(40, "train", 3).iter_rows(named=True) for t in (row["chosen"], row["rejected"])]
    out = []
    for seed in (1, 2):
        params = tiny_params(seed=seed)
        tok = M.train_tokenizer(texts, vocab_size=300, min_frequency=2)
        M.build_builtin_model(params, tok).save_pretrained(folder / f"policy{seed}")
        tok.save_pretrained(folder / f"policy{seed}")
        out.append(folder / f"policy{seed}")
    return out[0], out[1]


@pytest.fixture
def hung_port() -> Iterator[int]:
    with unanswering_port() as port:
        yield port


@pytest.fixture(autouse=True)
def _no_ambient_services(monkeypatch):
    for key in (*T.ENV_HOSTS, T.ENV_PUBLIC_KEY, *J.ENV_BASE_URLS, J.ENV_MODEL, *J.ENV_API_KEYS):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("JUDGE_API_KEY", "sk-judge-test")
    monkeypatch.setenv(T.ENV_SECRET_KEY, "sk-lf-test")
    P.clear_cache()
    yield
    P.clear_cache()


def _judge_params(judge_url: str, langfuse_host: str | None) -> Params:
    langfuse = {"host": langfuse_host, "public_key": f"pk-lf-{uuid.uuid4().hex[:12]}",
                "timeout_s": LANGFUSE_TIMEOUT_S, "prompt_retries": 0} if langfuse_host else {}
    return tiny_params(**{"judge.enabled": True, "judge.base_url": judge_url + "/v1", "judge.model": "judge-test",
                          "judge.sample_size": 4, "judge.max_new_tokens": 4, "judge.backoff_s": 0.01,
                          "evaluate.bootstrap_samples": 200, "langfuse": langfuse})


def _timed_judge_step(policies: tuple[Path, Path], params: Params, root: Path) -> tuple[object, float]:
    from pipelines.evaluate import judge_step

    test = make_pairs(8, "test", 5)
    t0 = time.perf_counter()
    result = judge_step(policies[0], policies[1], test, params, Layout(root))
    return result, time.perf_counter() - t0


def _longer_wins(request: dict) -> str:
    a, b = judged_responses(request)
    return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"


@pytest.mark.parametrize("down", ["refused", "unanswered"])
def test_evaluate_judge_step_with_langfuse_down_neither_fails_nor_hangs(down, policies, hung_port, tmp_path,
                                                                        caplog):
    port = closed_port() if down == "refused" else hung_port
    row = tally("Langfuse down while evaluate traces (judge step)", f"pytest {NODE}::"
                "test_evaluate_judge_step_with_langfuse_down_neither_fails_nor_hangs", unit="hosts")
    row.inputs += 1
    with LocalServer(openai_handler(_longer_wins)) as judge_server:
        untraced, base_s = _timed_judge_step(policies, _judge_params(judge_server.url, None), tmp_path)
        params = _judge_params(judge_server.url, f"http://127.0.0.1:{port}")
        assert T.tracer(params).enabled  # tracing is on, towards the dead host
        P.clear_cache()
        traced, down_s = _timed_judge_step(policies, params, tmp_path)
    row.runs += 2
    bound = base_s + EXTRA_TIMEOUTS * LANGFUSE_TIMEOUT_S + SLACK_S
    print(f"\njudge step: {base_s:.1f}s without Langfuse, {down_s:.1f}s with Langfuse {down} (bound {bound:.1f}s)")

    assert traced.invalid == 0 and traced.n_items == 4
    same = ("wins", "losses", "ties", "n", "win_rate")
    assert {k: getattr(traced, k) for k in same} == {k: getattr(untraced, k) for k in same}
    assert traced.judge["prompt"]["source"] == "fallback"  # the prompt came from the bundled file
    assert "using the bundled fallback" in caplog.text
    assert down_s < bound, f"{down_s:.1f}s with Langfuse {down}: more than {EXTRA_TIMEOUTS} timeouts over {base_s:.1f}s"
