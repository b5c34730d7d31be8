"""The judge client and the order-swap rule against a local OpenAI-compatible server.

The server on 127.0.0.1 answers ``POST /v1/chat/completions`` deterministically from the
two responses it is shown (laid out by the bundled judge prompt), so every expectation
here is exact: a fair judge, a judge that always answers "A", transient 5xx/429 errors,
timeouts, malformed answers and a refused key.
"""

from __future__ import annotations

import itertools
import time

import pytest

from pipelines import judge as J
from pipelines import prompts as P
from pipelines import tracing as T
from pipelines.config import parse_params
from tests.integration.http_fixtures import (
    LocalServer,
    Reply,
    chat_reply,
    judged_responses,
    openai_handler,
)

pytestmark = pytest.mark.integration

KEY = "sk-judge-test-secret"


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for k in (
        *T.ENV_HOSTS,
        T.ENV_PUBLIC_KEY,
        T.ENV_SECRET_KEY,
        *J.ENV_BASE_URLS,
        J.ENV_MODEL,
        *J.ENV_API_KEYS,
    ):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    P.clear_cache()
    yield
    P.clear_cache()


def judge_params(url: str, **judge):
    cfg = {
        "base_url": url + "/v1",
        "model": "judge-test",
        "backoff_s": 0.01,
        "timeout_s": 5,
        **judge,
    }
    return parse_params({"judge": cfg, "evaluate": {"bootstrap_samples": 500}})


def prompts_for(n: int) -> list[dict]:
    return [
        {"pair_id": f"p{i:02d}", "prompt": [{"role": "user", "content": f"Question number {i}?"}]}
        for i in range(n)
    ]


def keyword_judge(request: dict) -> str:
    """Fair: prefers the answer containing KEYWORD, tie when both or neither do."""
    a, b = judged_responses(request)
    ka, kb = "KEYWORD" in a, "KEYWORD" in b
    return "A" if ka and not kb else "B" if kb and not ka else "tie"


# 6 prompts where only the candidate has the keyword, 2 only the champion, 2 both
CANDIDATE = (
    [f"KEYWORD answer {i}" for i in range(6)] + ["plain 6", "plain 7"] + ["KEYWORD 8", "KEYWORD 9"]
)
CHAMPION = (
    [f"plain {i}" for i in range(6)] + ["KEYWORD 6", "KEYWORD 7"] + ["KEYWORD 8b", "KEYWORD 9b"]
)


def test_fair_judge_gives_the_expected_win_rate():
    with LocalServer(openai_handler(keyword_judge)) as srv:
        r = J.judge_pairs(prompts_for(10), CANDIDATE, CHAMPION, judge_params(srv.url))
        reqs = srv.matching("POST", "/v1/chat/completions")
    assert (r.wins, r.losses, r.ties, r.invalid, r.n) == (6, 2, 2, 0, 10)
    assert r.win_rate == pytest.approx(0.7)
    assert r.ci_low < 0.7 < r.ci_high
    assert r.p_value == pytest.approx(37 / 256)  # sign test, 6 of 8 decisive
    assert r.position[J.CANDIDATE_FIRST]["share_a"] == pytest.approx(0.6)
    assert r.position[J.CHAMPION_FIRST]["share_a"] == pytest.approx(0.2)
    assert r.position["consistency"] == 1.0
    assert [i["outcome"] for i in r.items] == ["win"] * 6 + ["loss"] * 2 + ["tie"] * 2
    assert r.usage["calls"] == 20 and r.usage["input_tokens"] == 20 * 50
    assert len(reqs) == 20
    body = reqs[0].json()
    assert body["model"] == "judge-test" and body["temperature"] == 0.0 and body["max_tokens"] == 16
    assert "Question number" in body["messages"][-1]["content"]
    assert reqs[0].headers["authorization"] == f"Bearer {KEY}"


def test_a_judge_that_always_answers_A_is_neutralised_by_the_swap():
    with LocalServer(openai_handler(lambda req: "A")) as srv:
        r = J.judge_pairs(
            prompts_for(12), [*CANDIDATE, "x", "y"], [*CHAMPION, "y", "x"], judge_params(srv.url)
        )
    assert (r.wins, r.losses, r.ties, r.invalid) == (0, 0, 12, 0)
    assert r.win_rate == 0.5
    assert r.ci_low <= 0.5 <= r.ci_high
    assert r.position[J.CANDIDATE_FIRST]["share_a"] == 1.0
    assert r.position[J.CHAMPION_FIRST]["share_a"] == 1.0
    assert r.position["first_position_share"] == 1.0 and r.position["consistency"] == 0.0
    passed, reason = J.gate_criterion(
        r,
        parse_params(
            {"judge": {"enabled": True, "gate": True, "min_items": 10, "min_win_rate": 0.55}}
        ).judge,
    )
    assert not passed and "win-rate 0.500" in reason


def test_transient_errors_are_retried_with_backoff():
    failures = iter([500, 503, 429])
    with LocalServer(openai_handler(keyword_judge, fail_first=failures)) as srv:
        params = judge_params(srv.url, max_retries=3, concurrency=1)
        r = J.judge_pairs(prompts_for(3), CANDIDATE[:3], CHAMPION[:3], params)
        n_requests = len(srv.requests)
    assert (r.wins, r.invalid, r.usage["errors"]) == (3, 0, 0)
    assert n_requests == 6 + 3


def test_chat_client_counts_attempts_and_gives_up_after_max_retries():
    slept: list[float] = []
    with LocalServer(openai_handler(lambda req: "A", fail_first=iter([502, 500]))) as srv:
        settings = J.judge_settings(judge_params(srv.url, max_retries=2, backoff_s=0.5).judge)
        with J.ChatClient(settings, sleep=slept.append) as client:
            reply = client.complete([{"role": "user", "content": "hi"}])
    assert (reply.text, reply.attempts, reply.usage) == ("A", 3, {"input": 50, "output": 1})
    assert slept == [0.0, 0.0]  # the server's Retry-After: 0 wins over our schedule
    with LocalServer(openai_handler(lambda req: Reply(500, {"error": "down"}))) as srv:
        settings = J.judge_settings(judge_params(srv.url, max_retries=2, backoff_s=0.5).judge)
        with (
            J.ChatClient(settings, sleep=slept.append) as client,
            pytest.raises(J.JudgeError, match=r"after 3 attempt\(s\): HTTP 500"),
        ):
            client.complete([{"role": "user", "content": "hi"}])
        assert len(srv.requests) == 3
    assert slept[2:] == [0.5, 1.0]


def test_an_endpoint_that_stays_down_makes_calls_invalid_not_a_crash():
    with LocalServer(openai_handler(lambda req: Reply(503, {"error": "overloaded"}))) as srv:
        r = J.judge_pairs(
            prompts_for(4), CANDIDATE[:4], CHAMPION[:4], judge_params(srv.url, max_retries=1)
        )
    assert (r.invalid, r.n, r.usage["errors"]) == (4, 0, 8)
    assert r.invalid_share == 1.0
    passed, reason = J.gate_criterion(
        r, parse_params({"judge": {"enabled": True, "gate": True}}).judge
    )
    assert not passed and "invalid share 1.000" in reason


def test_a_timeout_is_retried_then_counted_invalid():
    def slow(req: dict) -> str:
        time.sleep(1.0)
        return "A"

    with LocalServer(openai_handler(slow)) as srv:
        t0 = time.perf_counter()
        r = J.judge_pairs(
            prompts_for(1), ["a"], ["b"], judge_params(srv.url, timeout_s=0.2, max_retries=1)
        )
        elapsed = time.perf_counter() - t0
    assert r.invalid == 1 and r.usage["errors"] == 2
    assert elapsed < 5


def test_malformed_answers_count_as_invalid_or_ties_without_crashing():
    answers = itertools.cycle(
        [
            "I cannot decide.",  # unparseable verdict
            Reply(200, "<html>not json</html>", "text/html"),  # body is not JSON
            Reply(200, {"choices": []}),  # no choice
            Reply(200, chat_reply(None)),  # empty content
            "B",  # a usable verdict
        ]
    )
    with LocalServer(openai_handler(lambda req: next(answers))) as srv:
        r = J.judge_pairs(
            prompts_for(5), ["a"] * 5, ["b"] * 5, judge_params(srv.url, concurrency=1)
        )
    verdicts = [
        v for i in r.items for v in (i["verdict_candidate_first"], i["verdict_champion_first"])
    ]
    assert verdicts.count("invalid") == 8 and verdicts.count("B") == 2
    # calls run in order (concurrency 1): prompts 2 and 4 get one "B" each, the rest nothing usable
    assert [i["outcome"] for i in r.items] == ["invalid", "invalid", "tie", "invalid", "tie"]
    assert (r.n, r.invalid, r.win_rate) == (2, 3, 0.5)
    assert r.usage["errors"] == 4  # the non-JSON and the choice-less bodies


def test_a_refused_key_fails_loudly_and_fast():
    with LocalServer(
        openai_handler(lambda req: Reply(401, {"error": {"message": "bad key"}}))
    ) as srv:
        t0 = time.perf_counter()
        with pytest.raises(J.JudgeConfigError, match="HTTP 401") as err:
            J.judge_pairs(prompts_for(20), ["a"] * 20, ["b"] * 20, judge_params(srv.url))
        assert time.perf_counter() - t0 < 5
    assert KEY not in str(err.value)


def test_texts_sent_to_the_judge_are_scrubbed():
    with LocalServer(openai_handler(keyword_judge)) as srv:
        pairs = [
            {"pair_id": "p", "prompt": [{"role": "user", "content": "I am at ada@example.com"}]}
        ]
        J.judge_pairs(pairs, ["KEYWORD call 415-555-0100 now"], ["no"], judge_params(srv.url))
        sent = b"".join(r.body for r in srv.requests)
    assert b"ada@example.com" not in sent and b"555-0100" not in sent
    assert b"<EMAIL>" in sent and b"<PHONE>" in sent


def test_run_judge_end_to_end_with_two_policy_folders(tmp_path):
    """Sample test pairs, load each policy folder, generate greedily, judge: what evaluate calls."""
    import polars as pl

    from pipelines import model as M
    from pipelines.schemas import PAIR_SCHEMA

    corpus = [
        "Thanks for reaching out about the invoice, it is paid now.",
        "Hi, I cannot log in since this morning. Can you help?",
    ] * 20
    tiny = {
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 128,
    }
    folders = []
    for seed in (1, 2):
        params = parse_params({"seed": seed, "model": {"builtin": tiny}})
        tok = M.train_tokenizer(corpus, vocab_size=300, min_frequency=2)
        model = M.build_builtin_model(params, tok)
        folder = tmp_path / f"policy{seed}"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        folders.append(folder)
    rows = [
        {
            "pair_id": f"p{i:02d}",
            "prompt": [{"role": "user", "content": f"Question {i % 5}?"}],
            "chosen": "c",
            "rejected": "r",
            "pair_type": "edit",
            "source": "events",
            "tenant_id": "acme",
            "skill": "email_draft",
            "thread_id": f"t{i}",
            "source_event_ids": ["e"],
            "split": "test",
        }
        for i in range(8)
    ]
    pairs = pl.DataFrame(rows, schema=PAIR_SCHEMA)

    def longer_wins(req: dict) -> str:
        a, b = judged_responses(req)
        return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"

    with LocalServer(openai_handler(longer_wins)) as srv:
        params = parse_params(
            {
                "judge": {
                    "base_url": srv.url + "/v1",
                    "model": "judge-test",
                    "sample_size": 3,
                    "max_new_tokens": 5,
                    "backoff_s": 0.01,
                },
                "model": {"builtin": tiny},
                "evaluate": {"bootstrap_samples": 200},
            }
        )
        r = J.run_judge(folders[0], folders[1], pairs, params)
        n_calls = len(srv.requests)
    # 8 pairs but only 5 distinct prompts; 3 sampled, each judged in both orders
    assert r.n_items == 3 and n_calls == 6
    assert len({i["item_id"] for i in r.items}) == 3
    assert (
        r.invalid == 0 and r.position["consistency"] == 1.0
    )  # a length judge has no position bias
    assert r.judge["prompt"]["source"] == "fallback"


@pytest.mark.timeout(30)  # without the deadline the call waits as long as the server trickles: for ever here
def test_headers_trickled_a_byte_at_a_time_are_bounded_by_the_timeout():
    """httpx bounds each read; a server sending its status line a byte every 50 ms never trips that."""
    import socket
    import threading

    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(1)
            with conn:
                conn.recv(65536)  # the request
                for byte in itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: "):  # never ends the headers
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:  # the client shut its socket down: this call is over
                        break
                    time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        s = J.JudgeSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=0.4, max_retries=1,
                            backoff_s=0.0)
        with J.ChatClient(s, sleep=lambda _: None) as client:
            t0 = time.perf_counter()
            with pytest.raises(J.JudgeError, match="ReadTimeout"):
                client.complete([{"role": "user", "content": "x"}])
            elapsed = time.perf_counter() - t0
        assert elapsed < 2.0, elapsed  # two attempts of ~0.4 s; before: until the server gave up
        assert len(accepted) == 2  # each attempt on its own connection, each retried like a timeout
    finally:
        stop.set()
        thread.join(5)
        listener.close()
