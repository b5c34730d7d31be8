"""The real Langfuse SDK against local endpoints: prompts served or not, spans exported, scrubbed.

A small HTTP server on 127.0.0.1 plays the two Langfuse endpoints the pipeline uses:
``GET /api/public/v2/prompts/{name}`` and the OTLP/HTTP receiver
``POST /api/public/otel/v1/traces``, whose protobuf ``ExportTraceServiceRequest`` bodies
are decoded with ``opentelemetry.proto``. Each test uses its own public key, because the
SDK keeps one exporter per public key for the life of the process.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid

import pytest

from pipelines import judge as J
from pipelines import prompts as P
from pipelines import tracing as T
from pipelines.config import parse_params
from tests.integration.http_fixtures import (
    TRACES_PATH,
    LocalServer,
    closed_port,
    exported_spans,
    judged_responses,
    langfuse_handler,
    openai_handler,
    prompt_body,
)

pytestmark = pytest.mark.integration

SECRET = "sk-lf-test-secret"
PII_TEXT = (
    "grace.hopper@navy-example.org, or call (415) 555-0172; my card is 4111 1111 1111 1111, "
    "IBAN DE89 3704 0044 0532 0130 00 and SSN 123-45-6789"
)
"""PII planted in generation inputs and outputs; none of CANARY_VALUES may reach the receiver."""
CANARY_VALUES = (
    "grace.hopper@navy-example.org",
    "555-0172",
    "4111 1111 1111 1111",
    "4111111111111111",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
)
JUDGE_TEXT = (
    "Judge this.\n{{conversation}}\n\n### Response A\n{{response_a}}\n\n"
    "### Response B\n{{response_b}}\n\nOne word."
)
SYSTEM_TEXT = "You are the Langfuse-served assistant v2."


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for k in (*T.ENV_HOSTS, T.ENV_PUBLIC_KEY, *J.ENV_BASE_URLS, J.ENV_MODEL, *J.ENV_API_KEYS):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(T.ENV_SECRET_KEY, SECRET)
    P.clear_cache()
    yield
    P.clear_cache()


def served_prompts() -> dict:
    return {
        "judge_pairwise": prompt_body("judge_pairwise", JUDGE_TEXT, version=7),
        "generation_system": prompt_body(
            "generation_system", [{"role": "system", "content": SYSTEM_TEXT}], version=2
        ),
    }


def lf_params(host: str, **extra):
    public_key = f"pk-lf-{uuid.uuid4().hex[:12]}"
    return parse_params(
        {
            "langfuse": {
                "host": host,
                "public_key": public_key,
                "prompt_retries": 0,
                "timeout_s": 2,
                **extra.pop("langfuse", {}),
            },
            **extra,
        }
    )


# --------------------------------------------------------------------------- prompts


def test_prompt_served_by_langfuse_is_used_once_per_process():
    with LocalServer(langfuse_handler(served_prompts())) as lf:
        params = lf_params(lf.url)
        p = P.get_prompt("judge_pairwise", params, required=J.JUDGE_VARIABLES)
        assert (p.source, p.version, p.text) == ("langfuse", 7, JUDGE_TEXT)
        again = P.get_prompt("judge_pairwise", params, required=J.JUDGE_VARIABLES)
        chat = P.get_prompt("generation_system", params)
        fetches = lf.matching("GET", "/api/public/v2/prompts/")
    assert again is p
    assert chat.kind == "chat" and chat.version == 2
    assert chat.to_messages() == [{"role": "system", "content": SYSTEM_TEXT}]
    assert [r.path for r in fetches] == [
        "/api/public/v2/prompts/judge_pairwise",
        "/api/public/v2/prompts/generation_system",
    ]
    assert fetches[0].query["label"] == ["production"]
    pk = params.langfuse.public_key
    assert (
        fetches[0].headers["authorization"]
        == "Basic " + base64.b64encode(f"{pk}:{SECRET}".encode()).decode()
    )


def test_unknown_prompt_or_one_lacking_a_variable_falls_back(caplog):
    with LocalServer(langfuse_handler(served_prompts())) as lf:
        params = lf_params(lf.url, langfuse={"label": "staging"})
        with caplog.at_level(logging.WARNING, logger="pipelines.prompts"):
            wrong_label = P.get_prompt("judge_pairwise", params)
    lacking_b = {
        "judge_pairwise": prompt_body(
            "judge_pairwise", "{{conversation}} {{response_a}}", version=9
        )
    }
    with (
        LocalServer(langfuse_handler(lacking_b)) as lf,
        caplog.at_level(logging.WARNING, logger="pipelines.prompts"),
    ):
        lacking = P.get_prompt("judge_pairwise", lf_params(lf.url), required=J.JUDGE_VARIABLES)
    assert wrong_label.source == "fallback" and "NotFoundError" in caplog.text
    assert lacking.source == "fallback" and "lacks variables ['response_b']" in caplog.text


def test_unreachable_host_falls_back_quickly_without_an_exception(caplog):
    params = lf_params(f"http://127.0.0.1:{closed_port()}")
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="pipelines.prompts"):
        p = P.get_prompt("judge_pairwise", params, required=J.JUDGE_VARIABLES)
    assert p.source == "fallback" and p.version is None
    assert p.missing(J.JUDGE_VARIABLES) == []
    assert "using the bundled fallback" in caplog.text
    assert time.perf_counter() - t0 < 10


def test_sdk_raises_without_keys_even_with_a_fallback_but_get_prompt_does_not(monkeypatch):
    from langfuse import Langfuse

    monkeypatch.delenv(T.ENV_SECRET_KEY)
    with pytest.raises(Exception, match="not correctly initialized"):
        Langfuse(base_url="http://127.0.0.1:9").get_prompt("judge_pairwise", fallback="x {{y}}")
    params = parse_params(
        {"langfuse": {"host": "http://127.0.0.1:9", "public_key": "pk-no-secret"}}
    )
    assert P.get_prompt("judge_pairwise", params).source == "fallback"
    assert not T.tracer(params).enabled


# --------------------------------------------------------------------------- tracing


def _all_bytes(server: LocalServer) -> bytes:
    return b"".join(r.body for r in server.matching("POST", TRACES_PATH))


def test_generation_and_judge_spans_are_exported_scrubbed():
    pii = PII_TEXT

    def fair_judge(request: dict) -> str:
        a, b = judged_responses(request)
        return (
            "A"
            if "KEYWORD" in a and "KEYWORD" not in b
            else "B"
            if "KEYWORD" in b and "KEYWORD" not in a
            else "tie"
        )

    with (
        LocalServer(langfuse_handler(served_prompts())) as lf,
        LocalServer(openai_handler(fair_judge)) as oa,
    ):
        params = lf_params(
            lf.url, judge={"base_url": oa.url + "/v1", "model": "judge-big", "backoff_s": 0.01}
        )
        t = T.tracer(params)
        assert t.enabled
        system = P.get_prompt("generation_system", params)
        with t.generation(
            "eval.generate",
            model="candidate",
            prompt=system,
            input=[{"role": "user", "content": f"Write to me at {pii}"}],
            model_parameters={"max_new_tokens": 8},
        ) as g:
            g.update(output=f"Sure, I noted {pii}.", usage={"input": 21, "output": 8})
        pairs = [
            {
                "pair_id": f"p{i}",
                "prompt": [{"role": "user", "content": f"Question {i}, reply to {pii}"}],
            }
            for i in range(3)
        ]
        result = J.judge_pairs(
            pairs,
            [f"KEYWORD answer {i} {pii}" for i in range(3)],
            [f"plain answer {i}" for i in range(3)],
            params,
            t,
        )
        t.flush()
        spans = exported_spans(lf)
        received = _all_bytes(lf)
        judge_seen = b"".join(r.body for r in oa.requests)

    assert result.wins == 3 and result.win_rate == 1.0
    assert result.judge["prompt"] == {"name": "judge_pairwise", "version": 7, "source": "langfuse"}
    by_name: dict[str, list[dict]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    assert sorted(by_name) == ["eval.generate", "judge.pairs", "judge.pairwise"]
    assert {s["scope"] for s in spans} == {"langfuse-sdk"}

    gen = by_name["eval.generate"][0]["attributes"]
    assert gen["langfuse.observation.type"] == "generation"
    assert gen["langfuse.observation.model.name"] == "candidate"
    assert gen["langfuse.observation.prompt.name"] == "generation_system"
    assert gen["langfuse.observation.prompt.version"] == 2
    assert '"input": 21' in gen["langfuse.observation.usage_details"]
    assert '"total": 29' in gen["langfuse.observation.usage_details"]
    assert '"max_new_tokens": 8' in gen["langfuse.observation.model.parameters"]
    assert (
        "<EMAIL>" in gen["langfuse.observation.input"]
        and "<CREDIT_CARD>" in gen["langfuse.observation.output"]
    )
    assert float(gen["langfuse.observation.metadata.latency_ms"]) >= 0

    run = by_name["judge.pairs"][0]
    assert run["attributes"]["langfuse.observation.type"] == "evaluator"
    calls = by_name["judge.pairwise"]
    assert len(calls) == 6
    for c in calls:
        a = c["attributes"]
        assert c["parent_span_id"] == run["span_id"] and c["trace_id"] == run["trace_id"]
        assert a["langfuse.observation.model.name"] == "judge-big"
        assert a["langfuse.observation.prompt.name"] == "judge_pairwise"
        assert a["langfuse.observation.prompt.version"] == 7
        assert '"input": 50' in a["langfuse.observation.usage_details"]
        assert '"temperature": 0.0' in a["langfuse.observation.model.parameters"]
    orders = sorted(c["attributes"]["langfuse.observation.metadata.order"] for c in calls)
    assert orders == ['"candidate_first"'] * 3 + ['"champion_first"'] * 3

    assert b"<EMAIL>" in received and b"<PHONE>" in received  # the text did arrive, scrubbed
    for value in CANARY_VALUES:
        assert value.encode() not in received, value
        assert value.encode() not in judge_seen, value
    assert SECRET.encode() not in received


def test_generate_responses_are_traced_with_token_counts():
    from pipelines import model as M

    corpus = [
        "Thanks for reaching out about the invoice, it is paid now.",
        "Hi, I cannot log in since this morning. Can you help?",
    ] * 20
    tok = M.train_tokenizer(corpus, vocab_size=300, min_frequency=2)
    with LocalServer(langfuse_handler(served_prompts())) as lf:
        params = lf_params(
            lf.url,
            judge={"max_new_tokens": 6},
            model={
                "builtin": {
                    "hidden_size": 16,
                    "num_layers": 1,
                    "num_heads": 2,
                    "intermediate_size": 32,
                    "max_position_embeddings": 128,
                }
            },
        )
        model = M.build_builtin_model(params, tok)
        t = T.tracer(params)
        prompts = [
            [{"role": "user", "content": "Can you help? Mail me at grace.hopper@navy-example.org"}],
            [{"role": "user", "content": "Is the invoice paid?"}],
        ]
        first = J.generate_responses(model, tok, prompts, params, t, model_name="candidate")
        second = J.generate_responses(model, tok, prompts, params, None, model_name="candidate")
        t.flush()
        spans = [s for s in exported_spans(lf) if s["name"] == J.GENERATION_SPAN]
        received = _all_bytes(lf)

    assert first == second and len(first) == 2 and all(isinstance(x, str) for x in first)
    assert len(spans) == 2  # the second run had no tracer
    for s in spans:
        a = s["attributes"]
        assert a["langfuse.observation.model.name"] == "candidate"
        assert a["langfuse.observation.prompt.version"] == 2
        assert SYSTEM_TEXT in a["langfuse.observation.input"]  # the served system prompt was used
        usage = a["langfuse.observation.usage_details"]
        assert '"output": ' in usage and '"input": ' in usage
        n_out = int(usage.split('"output": ')[1].split(",")[0])
        assert 1 <= n_out <= 6
    assert b"grace.hopper" not in received


def test_tracing_to_an_unreachable_host_never_raises():
    params = lf_params(f"http://127.0.0.1:{closed_port()}", langfuse={"timeout_s": 1})
    t = T.tracer(params)
    assert t.enabled
    t0 = time.perf_counter()
    with t.generation("eval.generate", model="m", input="hello") as g:
        g.update(output="world", usage={"input": 1, "output": 1})
    t.flush()
    assert time.perf_counter() - t0 < 15


def test_no_configuration_means_a_silent_no_op_tracer():
    params = parse_params({})
    t = T.tracer(params)
    assert not t.enabled
    with t.generation("eval.generate", model="m", input="x") as g:
        g.update(output="y", usage={"input": 1})
        assert not g.recording
    with pytest.raises(ZeroDivisionError), t.judge_span(model="m"):
        1 / 0  # noqa: B018 - errors inside a traced block propagate unchanged
    t.flush()
    t.shutdown()
